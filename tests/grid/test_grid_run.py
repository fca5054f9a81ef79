"""Running grids for real (tiny data, one epoch): completion, idempotency, status, failure
isolation and the offline W&B files of every run."""

from __future__ import annotations

import json
import time

import pytest
from typer.testing import CliRunner

from benchmark.cli import app
from benchmark.grid.cells import expand
from benchmark.grid.locks import FileLock, run_lock_path
from benchmark.grid.runner import SKIPPED, run_grid
from benchmark.grid.spec import load_grid
from benchmark.grid.status import grid_status
from benchmark.tracking.run_store import RunDir, RunStore

CELLS = {"hateful_memes/teacher/seed0", "hateful_memes/student_only/seed0", "hateful_memes/kd/seed0",
         "hateful_memes/msd-instance/seed0"}


def _runs(root):
    return list(RunStore(root / "runs"))


def test_smoke_grid_trains_every_cell_once(finished_smoke):
    root, report = finished_smoke
    assert report.exit_code == 0, [(t, s.error) for t, s in report.states.items() if s.error]
    assert report.counts()["trained"] == 4
    runs = _runs(root)
    assert len(runs) == 4 and all(run.is_complete() and run.file("log.txt").exists() for run in runs)
    caches = list((root / "cache" / "teacher").iterdir())
    assert len(caches) == 1  # built once by its own task, then only read by the students
    students = [run.read_summary() for run in runs if run.read_summary()["method"] in ("kd", "msd")]
    assert {s["method_details"]["teacher_cache"] for s in students} == {str(caches[0])}
    teacher = next(run for run in runs if run.read_summary()["method"] == "teacher")
    assert {s["teacher"] for s in students} == {teacher.run_id}
    assert all(run.read_config().training.threads == 1 for run in runs)  # 2 workers x 1 thread on 2 cores
    assert report.plan.state_dir == root / "grids" / "smoke"


def test_rerunning_a_finished_grid_trains_nothing(finished_smoke, grid_tools):
    root, _ = finished_smoke
    stamps = {run.run_id: run.file("summary.json").stat().st_mtime_ns for run in _runs(root)}
    started = time.time()
    report = run_grid(grid_tools.smoke, extra_args=grid_tools.env_args(root), workers=2)
    assert report.exit_code == 0 and report.counts()["trained"] == 0 and report.counts()["skipped"] == 4
    assert all(state.status == SKIPPED for state in report.states.values())  # no data/cache task either
    assert {run.run_id: run.file("summary.json").stat().st_mtime_ns for run in _runs(root)} == stamps
    assert time.time() - started < 10


def test_show_prints_each_cell_with_its_status(finished_smoke, grid_tools):
    root, _ = finished_smoke
    result = CliRunner().invoke(app, ["grid", "show", str(grid_tools.smoke), *grid_tools.env_args(root)],
                                env={"COLUMNS": "220"})
    assert result.exit_code == 0, result.output
    rows = [line for line in result.output.splitlines() if "hateful_memes/" in line]
    assert len(rows) == 4 and all(" done " in row for row in rows)
    assert {name for name in CELLS if any(name in row for row in rows)} == CELLS
    assert "4 done" in result.output


def test_status_tells_failed_partial_running_and_blocked_apart(tmp_path, grid_tools):
    path = grid_tools.tiny_grid(tmp_path / "g.yaml", ["teacher", "student_only", "kd"])
    grid = expand(load_grid(path), grid_tools.env_args(tmp_path))
    cells = grid.by_name()
    store = tmp_path / "runs"
    teacher, alone, kd = (cells[f"hateful_memes/{m}/seed0"] for m in ("teacher", "student_only", "kd"))
    RunDir(store / teacher.run_id).path.mkdir(parents=True)
    RunDir(store / teacher.run_id).write_summary({"status": "failed", "error": "boom"})
    RunDir(store / alone.run_id).path.mkdir(parents=True)
    RunDir(store / alone.run_id).write_summary({"status": "running"})  # left by a killed worker
    assert {s.cell.name: s.status for s in grid_status(grid)} == {
        teacher.name: "failed", alone.name: "interrupted", kd.name: "blocked"}
    with FileLock(run_lock_path(store, alone.run_id)):  # a live process trains it
        assert {s.cell.name: s.status for s in grid_status(grid)}[alone.name] == "running"


def test_a_failing_cell_does_not_stop_the_grid(tmp_path, grid_tools):
    # The teacher's early-stopping criterion names no metric: it raises at its first evaluation.
    path = grid_tools.tiny_grid(tmp_path / "fail.yaml", ["teacher", "student_only", "kd"], name="fail",
                                teachers={"overrides": {"training.early_stop.criteria": "val/hateful_memes/nope"}})
    result = CliRunner().invoke(app, ["grid", "run", str(path), "--workers", "2", "--no-progress",
                                      *grid_tools.env_args(tmp_path)], env={"COLUMNS": "220"})
    assert result.exit_code == 1, result.output
    assert "1 trained" in result.output and "1 failed" in result.output and "1 blocked" in result.output
    grid = expand(load_grid(path), grid_tools.env_args(tmp_path))
    statuses = {s.cell.name: s for s in grid_status(grid)}
    teacher = statuses["hateful_memes/teacher/seed0"]
    assert teacher.status == "failed" and "nope" in teacher.summary["error"]
    assert (teacher.run_dir / "error.log").exists() and (teacher.run_dir / "log.txt").exists()
    assert statuses["hateful_memes/student_only/seed0"].status == "done"
    assert statuses["hateful_memes/kd/seed0"].status == "blocked"
    assert "nope" in result.output  # the report names the error
    # The failed run's W&B mirror finished cleanly, as failed.
    runs = {r["name"]: r for r in grid_tools.offline_runs(tmp_path / "wandb")}
    assert runs["hateful_memes/teacher/seed0"]["exit_code"] == 1
    assert runs["hateful_memes/student_only/seed0"]["exit_code"] == 0


def test_offline_wandb_runs_hold_config_metrics_and_group(finished_smoke, grid_tools):
    root, _ = finished_smoke
    offline = grid_tools.offline_runs(root / "wandb")
    runs = {r["name"]: r for r in offline if r["job_type"] != "cache"}
    assert set(runs) == CELLS
    (cache_run,) = [r for r in offline if r["job_type"] == "cache"]  # the one teacher cache, between
    assert cache_run["group"] == "smoke" and cache_run["exit_code"] == 0  # the teacher and its students
    run_ids = {run.run_id for run in _runs(root)}
    for name, run in runs.items():
        assert run["group"] == "smoke" and run["project"] == "msd-benchmark" and run["exit_code"] == 0
        assert run["job_type"] == ("teacher" if name.endswith("teacher/seed0") else "student")
        assert run["config"]["training"]["seed"] == 0 and run["config"]["run_id"] in run_ids
        final = [row for row in run["history"] if "test/hateful_memes/roc_auc@image" in row]
        assert final and final[-1]["trainer/global_step"] > 0 and "val/hateful_memes/roc_auc" in final[-1]
        (model,) = [a for a in run["artifacts"] if a["type"] == "model" and not a["used"]]
        assert "checkpoint.pt" in model["entries"] and not any(r.startswith("file://") for r in model["refs"])
    msd = runs["hateful_memes/msd-instance/seed0"]
    hist = next(row["weight/image_hist"] for row in msd["history"] if "weight/image_hist" in row)
    assert hist["_type"] == "histogram" and len(hist["bins"]) == 21 and len(hist["values"]) == 20
    assert [a["name"] for a in msd["artifacts"] if a["type"] == "teacher-cache" and a["used"]] == \
        [a["name"] for a in cache_run["artifacts"] if a["type"] == "teacher-cache" and not a["used"]]
    assert any("predictions" in row for row in msd["history"])
    assert json.loads(json.dumps(msd["config"]))["method"] == "msd"


@pytest.mark.slow  # default suite under 10 min on 2 cores; `make test-all` runs it
def test_fork_server_preload_covers_what_a_child_re_imports():
    """A forked cell re-runs the ``msd`` entry script; none of its benchmark imports may be
    read from disk then (a source edit during a grid would mix old and new modules)."""
    import subprocess
    import sys

    script = (
        "import sys, runpy, shutil\n"
        "import benchmark.grid.preload\n"
        "before = {m for m in sys.modules if m.startswith('benchmark')}\n"
        "import benchmark.cli\n"
        "print(sorted({m for m in sys.modules if m.startswith('benchmark')} - before))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", f"imported after the preload: {out.stdout}"
