"""HPO as its users expect (issue 13): trials name their W&B run, studies name their metrics
(plots and optuna-dashboard say ``val/hateful_memes/roc_auc``, not "Objective Value"), and
``msd hpo dashboard`` serves a study on a free localhost port until it is stopped."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import warnings
from pathlib import Path

import optuna
import pytest

from benchmark.errors import UserError
from benchmark.hpo.dashboard import make_dashboard, resolve_target
from benchmark.hpo.plots import target_kwargs
from benchmark.hpo.spec import load_search
from benchmark.hpo.study import open_study, run_search
from benchmark.tracking.wandb_logger import wandb_run_id

REPO = Path(__file__).resolve().parents[2]
METRIC = "val/hateful_memes/roc_auc"


def _study_with_a_trial(tmp_path: Path, name: str = "dash") -> tuple[str, optuna.Study]:
    url = f"sqlite:///{tmp_path / 'hpo' / f'{name}.db'}"
    (tmp_path / "hpo").mkdir(exist_ok=True)
    study = optuna.create_study(study_name=name, storage=url, direction="maximize")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names([METRIC])
    study.add_trial(optuna.trial.create_trial(params={"distill.alpha": 0.5}, value=0.7,
                                              distributions={"distill.alpha": optuna.distributions.FloatDistribution(0, 1)}))
    return url, study


def _get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.status, response.read().decode()


def test_trials_store_their_wandb_run_and_studies_name_their_metrics(write_search, tmp_path, monkeypatch, quiet):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    spec = load_search(write_search("kd", name="kd_wandb", base={"tracking.wandb.enabled": True},
                                    budget={"trials": 1}))
    report = run_search(spec, budget=spec.budget, log=quiet.append)
    (trial,) = report.trials
    assert trial.state == optuna.trial.TrialState.COMPLETE
    assert trial.user_attrs["wandb_run_id"] == wandb_run_id(trial.user_attrs["run_id"])
    assert trial.user_attrs["wandb_project"] == "msd-benchmark"
    offline = list((tmp_path / "wandb" / "wandb").glob(f"offline-run-*-{trial.user_attrs['wandb_run_id']}"))
    assert len(offline) == 1  # the trial's run, under the id the trial names
    study = optuna.load_study(study_name="kd_wandb", storage=report.storage)
    assert study.metric_names == [METRIC]
    assert target_kwargs(study)["target_name"] == METRIC  # the history plot's axis


def test_a_study_created_without_metric_names_gets_them_when_loaded(write_search, tmp_path):
    spec = load_search(write_search("kd", name="old_study"))
    url = f"sqlite:///{tmp_path / 'old.db'}"
    optuna.create_study(study_name="old_study", storage=url, direction="maximize")
    assert open_study(spec, url, "old_study").metric_names == [METRIC]


@pytest.mark.slow  # default suite under 10 min on 2 cores; `make test-all` runs it
def test_dashboard_serves_a_study_on_a_free_port_then_stops(tmp_path):
    _, study = _study_with_a_trial(tmp_path)
    env = {**os.environ, "MSD_HPO_DIR": str(tmp_path / "hpo"), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "benchmark.cli", "hpo", "dashboard", "dash", "--port", "0"],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        line = proc.stdout.readline()  # the URL, printed once the server listens
        assert "optuna-dashboard: http://127.0.0.1:" in line, line + proc.stdout.read() if proc.poll() else line
        url = line.split()[1]
        port = int(url.split(":")[2].split("/")[0])
        assert port != 8080 and url.endswith(f"/dashboard/studies/{study._study_id}")
        status, page = _get(url)
        assert status == 200 and "<html" in page.lower()
        status, body = _get(f"http://127.0.0.1:{port}/api/studies/{study._study_id}")
        assert status == 200 and json.loads(body)["objective_names"] == [METRIC]
    finally:
        proc.send_signal(signal.SIGTERM)  # as Ctrl-C (SIGINT may be ignored in a background job)
        try:
            out, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()  # never leave a server behind
            proc.communicate()
            raise
    assert proc.returncode == 0 and "dashboard stopped" in out


def test_dashboard_opens_a_storage_file_and_refuses_what_is_not_there(tmp_path):
    url, _ = _study_with_a_trial(tmp_path, "by_file")
    target = resolve_target(str(tmp_path / "hpo" / "by_file.db"))
    assert target.url == url and target.study is None
    server, page = make_dashboard(target, port=0)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    try:
        started = time.monotonic()
        status, _ = _get(page)
        assert status == 200 and time.monotonic() - started < 30
    finally:
        server.shutdown()
        server.server_close()
    with pytest.raises(UserError, match="No study storage"):
        resolve_target(str(tmp_path / "missing.db"))
    with pytest.raises(UserError, match="No study 'nope'"):
        resolve_target("nope", f"sqlite:///{tmp_path / 'hpo' / 'by_file.db'}")
