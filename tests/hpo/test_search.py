"""Searches end to end on tiny data: trials are real runs, linked both ways; storages; pruning;
best config; fairness table; plots; the tuned grid."""

from __future__ import annotations

import json
import os
import shlex

import optuna
import pandas as pd
import pytest
from omegaconf import OmegaConf
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState
from typer.testing import CliRunner

from benchmark.config.loader import build_config
from benchmark.hpo.best import best_config, tuned_grid, write_tuned_grid
from benchmark.hpo.compare import COLUMNS, run_comparison, write_table
from benchmark.hpo.plots import write_plots
from benchmark.hpo.spec import Budget, load_search
from benchmark.hpo.study import load_existing, run_search
from benchmark.tracking.run_id import compute_run_id
from benchmark.tracking.run_store import RunDir


def test_trials_are_runs_linked_both_ways_in_default_sqlite(write_search, tmp_path, quiet):
    spec = load_search(write_search("kd", name="kd_link"))
    report = run_search(spec, budget=spec.budget, log=quiet.append)
    db = tmp_path / "hpo" / "kd_link.db"  # MSD_HPO_DIR/<study>.db
    assert report.storage == f"sqlite:///{db}" and db.is_file()
    trials = report.trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2
    for trial in trials:
        run = RunDir(trial.user_attrs["run_dir"])
        config = run.read_config()
        assert run.run_id == trial.user_attrs["run_id"] == compute_run_id(config)
        assert (config.hpo.study, config.hpo.trial) == ("kd_link", trial.number)
        assert {"study": "kd_link", "trial": trial.number} in run.read_summary()["hpo_trials"]
        assert config.distill.alpha == trial.params["distill.alpha"]
        assert trial.user_attrs["cpu_s"] > 0 and trial.intermediate_values  # reported every evaluation
        assert trial.values[0] == run.read_summary()["metrics"]["val/hateful_memes/roc_auc"]

    # Best config: a key=value line the loader accepts, reproducing the best trial's run id.
    study, url = load_existing("kd_link")
    best = best_config(study, url)
    config = build_config(shlex.split(best.line()))
    assert compute_run_id(config) == best.run_id == report.best().user_attrs["run_id"]
    assert best.params == report.best().params

    # The same command again: the budget is used, nothing runs, no trial is added.
    again = run_search(spec, budget=spec.budget, log=quiet.append)
    assert len(again.trials) == 2 and any("already used" in line for line in quiet)

    paths, _ = write_plots(study, tmp_path / "figures")
    assert {p.name for p in paths} >= {"history.png", "parallel_coordinate.png", "intermediate_values.png"}


def test_plots_history_importances_parallel_coordinates(tmp_path):
    study = optuna.create_study(study_name="synthetic", direction="maximize")
    dist = {"distill.alpha": FloatDistribution(0.1, 0.9), "optimizer.params.lr": FloatDistribution(1e-4, 3e-3, log=True)}
    for i in range(6):
        alpha, lr = 0.1 + 0.15 * i, 1e-4 * (i + 1)
        study.add_trial(optuna.trial.create_trial(params={"distill.alpha": alpha, "optimizer.params.lr": lr},
                                                  distributions=dist, value=0.5 + 0.4 * alpha,
                                                  intermediate_values={1: 0.5, 2: 0.5 + 0.2 * alpha}))
    paths, skipped = write_plots(study, tmp_path / "figures")
    assert {p.name for p in paths} >= {"history.png", "importances.png", "parallel_coordinate.png",
                                       "intermediate_values.png"}
    assert all(p.parent == tmp_path / "figures" / "synthetic" and p.stat().st_size > 1000 for p in paths)
    assert not skipped


def test_cli_best_prints_key_value_line_and_writes_yaml(write_search, tmp_path):
    from benchmark.cli import app

    path = write_search("kd", name="kd_cli")
    result = CliRunner().invoke(app, ["hpo", "run", str(path), "--trials", "1", "--no-plots", "--no-wandb"])
    assert result.exit_code == 0, result.output
    assert "best config:" in result.output
    out = CliRunner().invoke(app, ["hpo", "best", "kd_cli"])
    assert out.exit_code == 0, out.output
    line = out.output.split("best config:\n", 1)[1].splitlines()[0]
    assert "distill.alpha=" in line and "teacher=" in line
    build_config(shlex.split(line))
    saved = OmegaConf.load(tmp_path / "hpo" / "kd_cli.best.yaml")
    assert saved.study == "kd_cli" and "distill.temperature" in saved.overrides


def test_journal_storage(write_search, tmp_path, quiet):
    spec = load_search(write_search("msd", "instance", name="journal_study"))
    url = f"journal:{tmp_path / 'journal' / '{study}.log'}"
    report = run_search(spec, budget=Budget(trials=2), storage=url, log=quiet.append)
    assert (tmp_path / "journal" / "journal_study.log").is_file()
    fresh = optuna.load_study(study_name="journal_study", storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(tmp_path / "journal" / "journal_study.log"))))
    assert [t.number for t in fresh.trials] == [0, 1] == [t.number for t in report.trials]
    assert all("distill.weighting_params.temperature" in t.params for t in fresh.trials)


def test_a_pruner_that_always_prunes_prunes_every_trial(write_search, quiet):
    # roc_auc <= 1 < lower: every first report is below the threshold.
    spec = load_search(write_search("kd", name="pruned", pruner={"type": "threshold", "lower": 1.01}))
    report = run_search(spec, budget=spec.budget, log=quiet.append)
    assert [t.state for t in report.trials] == [TrialState.PRUNED] * 2
    for trial in report.trials:
        summary = RunDir(trial.user_attrs["run_dir"]).read_summary()
        assert summary["status"] == "pruned" and "pruned at update 1" in summary["error"]
        assert list(trial.intermediate_values) == [1]
    assert any("PRUNED" in line for line in quiet)


def test_multi_objective_nsga2(write_search, quiet):
    spec = load_search(write_search("kd", name="pareto", sampler={"type": "nsga2", "seed": 0},
                                    objective=[{"metric": None}, {"metric": "train_time_s"}]))
    report = run_search(spec, budget=spec.budget, log=quiet.append)
    assert all(len(t.values) == 2 for t in report.trials)
    study, url = load_existing("pareto")
    assert best_config(study, url).pareto_size >= 1


@pytest.mark.slow  # default suite under 10 min on 2 cores; `make test-all` runs it
def test_fairness_table_and_tuned_grid(write_search, tmp_path, quiet):
    files = [write_search("kd", name="fair_kd"), write_search("msd", "instance", name="fair_msd")]
    frame = run_comparison(files, trials=2, log=quiet.append)
    assert list(frame.columns) == list(COLUMNS)
    assert list(frame["method"]) == ["KD", "MSD-instance"]
    assert list(frame["study"]) == ["fair_kd-fair-t2", "fair_msd-fair-t2"]
    assert (frame["trials_used"] == 2).all() and (frame["cpu_s"] > 0).all() and frame["best_value"].notna().all()
    csv_path, md_path = write_table(frame, tmp_path / "tables")
    assert list(pd.read_csv(csv_path).columns) == list(COLUMNS)
    assert md_path.read_text().startswith("| method | dataset | metric |") and "**" in md_path.read_text()

    from benchmark.grid.cells import expand
    from benchmark.grid.spec import load_grid

    bests = [best_config(*load_existing(name)) for name in frame["study"]]
    path = write_tuned_grid(tuned_grid(bests, [0, 1]), tmp_path / "table2_tuned.yaml")
    cells = expand(load_grid(path), [f"env.save_dir={tmp_path / 'grid'}"]).cells
    students = [c for c in cells if c.role == "student"]
    assert len([c for c in cells if c.role == "teacher"]) == 2 and len(students) == 4
    msd = next(c for c in students if c.config.method == "msd")
    assert msd.config.distill.weighting == "instance"
    assert abs(msd.config.distill.weighting_params.temperature - bests[1].params["distill.weighting_params.temperature"]) < 1e-3


def test_worker_threads_are_set_and_volatile(write_search, quiet):
    spec = load_search(write_search("kd", name="threads"))
    report = run_search(spec, budget=Budget(trials=1), threads=1, log=quiet.append)
    (trial,) = report.trials
    config = RunDir(trial.user_attrs["run_dir"]).read_config()
    assert config.training.threads == 1 and "training.threads=1" not in trial.user_attrs["args"]
    assert os.environ.get("WANDB_MODE") == "disabled"
    assert json.loads(json.dumps(trial.user_attrs["owner"]))["pid"] == os.getpid()


def test_cpu_seconds_budget_stops_starting_trials(write_search, quiet):
    spec = load_search(write_search("kd", name="cpu_budget"))
    report = run_search(spec, budget=Budget(cpu_s=0.01), log=quiet.append)
    # The first trial alone uses more than 0.01 CPU-s: no second one starts.
    assert len(report.trials) == 1 and report.cpu_s >= 0.01
    again = run_search(spec, budget=Budget(cpu_s=0.01), log=quiet.append)
    assert len(again.trials) == 1 and any("budget of 0.01 CPU-seconds already used" in line for line in quiet)
