"""A grid killed with ``kill -9`` (runner and, with it, its workers) resumes on the next run:
interrupted runs continue from their ``last.pt``; no run is lost or duplicated."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from benchmark.grid.cells import expand
from benchmark.grid.locks import is_locked, run_lock_path
from benchmark.grid.runner import run_grid
from benchmark.grid.spec import load_grid
from benchmark.grid.status import grid_status
from benchmark.tracking.run_store import RunStore


def _wait(predicate, timeout: float, what: str) -> None:
    deadline = time.time() + timeout
    while not predicate():
        if time.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.mark.slow  # default suite under 10 min on 2 cores; `make test-all` runs it
def test_kill_9_of_the_runner_then_rerun_resumes_and_completes(tmp_path, grid_tools):
    # 8 updates per epoch x 3 epochs, a checkpoint (last.pt) every 2 updates: long enough to
    # kill the grid in the middle of its teacher.
    path = grid_tools.tiny_grid(tmp_path / "kill.yaml", ["teacher", "student_only"], name="kill",
                                base={"training.max_epochs": 3, "training.batch_size": 8,
                                      "training.evaluation_interval": 2})
    args = grid_tools.env_args(tmp_path)
    runs = tmp_path / "runs"
    runner = subprocess.Popen(
        [sys.executable, "-c", "from benchmark.cli import main; main()", "grid", "run", str(path),
         "--workers", "2", "--no-progress", *args],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        _wait(lambda: any(runs.glob("*/last.pt")) or runner.poll() is not None, 120, "a first checkpoint")
        assert runner.poll() is None, f"the grid ended (exit {runner.returncode}) before it could be killed"
        os.kill(runner.pid, signal.SIGKILL)
        runner.wait(10)
    finally:
        if runner.poll() is None:
            runner.kill()
    grid = expand(load_grid(path), args)
    interrupted = {p.parent.name for p in runs.glob("*/last.pt")}
    # The workers die with the runner (their locks are released by the kernel) ...
    _wait(lambda: not any(is_locked(run_lock_path(runs, c.run_id)) for c in grid.cells), 30, "workers to die")
    statuses = {s.cell.run_id: s.status for s in grid_status(grid)}
    assert all(statuses[r] == "interrupted" for r in interrupted if r in statuses)  # stale "running": resumable

    report = run_grid(path, extra_args=args, workers=2)  # ... and a new runner finishes the grid
    assert report.exit_code == 0, [(t, s.error) for t, s in report.states.items() if s.error]
    store = list(RunStore(runs))
    assert sorted(r.run_id for r in store) == sorted(c.run_id for c in grid.cells)  # nothing duplicated
    assert all(r.is_complete() for r in store)
    resumed = [r.read_summary() for r in store if r.run_id in interrupted]
    assert resumed and all(s["resumed_from_step"] > 0 and s["attempt"] >= 2 for s in resumed)
