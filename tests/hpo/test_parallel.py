"""Several processes on one study: PostgreSQL (a real server), SQLite ``--workers``, and a
worker killed with SIGKILL in the middle of a trial.

These start ``msd hpo run`` processes (several seconds of imports each), so they are not in
the default suite: ``pytest -m postgres tests/hpo`` and ``pytest -m slow tests/hpo``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from benchmark.hpo.recovery import FAIL_REASON
from benchmark.hpo.spec import load_search
from benchmark.hpo.study import run_search
from benchmark.tracking.run_store import RunDir

REPO = Path(__file__).resolve().parents[2]


def _msd_hpo_run(path: Path, *extra: str, cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-m", "benchmark.cli", "hpo", "run", str(path), "--no-plots",
                             "--no-wandb", *extra], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def _assert_distinct_complete(study: optuna.Study, n: int) -> list[optuna.trial.FrozenTrial]:
    numbers = [t.number for t in study.trials]
    assert len(numbers) == len(set(numbers)) and sorted(numbers) == list(range(len(numbers)))
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(complete) == n, [(t.number, t.state.name, t.user_attrs.get(FAIL_REASON)) for t in study.trials]
    # Any extra trial is one a worker gave back because the budget was already used up.
    assert all(t.user_attrs.get(FAIL_REASON) == "surplus" for t in study.trials if t.state != TrialState.COMPLETE)
    assert len({t.user_attrs["run_id"] for t in complete}) == n
    return complete


@pytest.mark.postgres
def test_two_processes_share_a_postgres_study(write_search, postgres_url, tmp_path):
    n = 6
    path = write_search("kd", name="pg_shared", budget={"trials": n})
    procs = [_msd_hpo_run(path, "--storage", postgres_url, cwd=tmp_path) for _ in range(2)]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n\n".join(outputs)
    complete = _assert_distinct_complete(optuna.load_study(study_name="pg_shared", storage=postgres_url), n)
    owners = {t.user_attrs["owner"]["pid"] for t in complete}
    assert owners <= {p.pid for p in procs}
    assert len(owners) == 2, f"one process ran every trial: {outputs}"


@pytest.mark.slow
def test_workers_share_a_sqlite_study(write_search, tmp_path):
    path = write_search("kd", name="workers", budget={"trials": 4})
    proc = _msd_hpo_run(path, "--workers", "2", cwd=tmp_path)
    output = proc.communicate(timeout=600)[0]
    assert proc.returncode == 0, output
    assert "2 workers started" in output and "best config:" in output
    storage = f"sqlite:///{tmp_path / 'hpo' / 'workers.db'}"
    complete = _assert_distinct_complete(optuna.load_study(study_name="workers", storage=storage), 4)
    assert len({t.user_attrs["owner"]["pid"] for t in complete}) == 2


@pytest.mark.slow
def test_sigkill_mid_trial_then_resume(write_search, tmp_path, quiet):
    # Long enough trials (40 epochs of 2 updates) that the kill lands inside one.
    path = write_search("kd", name="killed", budget={"trials": 2}, base={"training.max_epochs": 40})
    storage = f"sqlite:///{tmp_path / 'hpo' / 'killed.db'}"
    proc = _msd_hpo_run(path, cwd=tmp_path)
    deadline = time.time() + 120
    victim = None
    while time.time() < deadline and victim is None:
        time.sleep(0.5)
        try:
            running = optuna.load_study(study_name="killed", storage=storage).get_trials(states=(TrialState.RUNNING,))
        except (KeyError, Exception):  # noqa: BLE001 - the study is not created yet
            continue
        checkpointed = [t for t in running if "run_dir" in t.user_attrs
                        and (Path(t.user_attrs["run_dir"]) / "last.pt").exists()]
        victim = checkpointed[0] if checkpointed else None
    assert victim is not None, "no trial reached a checkpoint in time"
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)

    spec = load_search(path)
    report = run_search(spec, budget=spec.budget, log=quiet.append)
    killed = next(t for t in report.trials if t.number == victim.number)
    assert killed.state == TrialState.FAIL and killed.user_attrs[FAIL_REASON] == "dead_owner"
    retry = next(t for t in report.trials if t.system_attrs.get("failed_trial") == victim.number)
    assert retry.state == TrialState.COMPLETE and retry.user_attrs["run_id"] == victim.user_attrs["run_id"]
    assert RunDir(retry.user_attrs["run_dir"]).read_summary().get("resumed_from_step", 0) > 0
    assert sum(t.state == TrialState.COMPLETE for t in report.trials) == 2
