"""The Slurm launcher: submitit's local executor in the default suite, a real single-node
Slurm (tests/services/slurm.sh) behind the ``slurm`` marker."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from benchmark.grid.runner import run_grid
from benchmark.tracking.run_store import RunStore

SLURM_SH = Path(__file__).resolve().parents[1] / "services" / "slurm.sh"


def _run_two_cells(tmp_path, grid_tools, cluster: str):
    path = grid_tools.tiny_grid(tmp_path / "two.yaml", ["teacher", "student_only"], name=f"two-{cluster}")
    report = run_grid(path, extra_args=grid_tools.env_args(tmp_path), launcher="slurm", cluster=cluster, workers=2)
    assert report.exit_code == 0, [(t, s.error, s.log) for t, s in report.states.items() if s.error]
    runs = list(RunStore(tmp_path / "runs"))
    assert len(runs) == 2 and all(run.is_complete() for run in runs)
    logs = [state.log for state in report.states.values()]
    assert logs and all(log is not None and log.exists() for log in logs)  # one log per job
    assert all(report.plan.state_dir / "submitit" in log.parents for log in logs)
    return report


def test_two_cell_grid_through_submitits_local_executor(tmp_path, grid_tools):
    _run_two_cells(tmp_path, grid_tools, "local")


@pytest.fixture
def slurm_cluster(tmp_path, monkeypatch):
    """Start a real single-node Slurm (installing it if needed), stop it afterwards."""
    # Not under tmp_path: pytest's tmp root is 0700, and slurmctld runs as the slurm user.
    state = Path(tempfile.mkdtemp(prefix="msd-slurm-", dir="/run" if os.access("/run", os.W_OK) else None))
    env = {"MSD_SLURM_DIR": str(state), "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    log = tmp_path / "slurm-start.log"
    try:
        with open(log, "w") as out:  # a file, not a pipe: daemons must not keep the caller waiting
            started = subprocess.run(["bash", str(SLURM_SH), "start"], stdout=out, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, timeout=600, env=env)
    except (OSError, subprocess.TimeoutExpired) as exc:
        subprocess.run(["bash", str(SLURM_SH), "stop"], capture_output=True, env=env, timeout=120)
        shutil.rmtree(state, ignore_errors=True)
        pytest.skip(f"cannot start Slurm here: {exc}")
    if started.returncode != 0:
        subprocess.run(["bash", str(SLURM_SH), "stop"], capture_output=True, env=env, timeout=120)
        shutil.rmtree(state, ignore_errors=True)
        pytest.skip(f"cannot start Slurm here: {log.read_text().strip()[-500:]}")
    monkeypatch.setenv("SLURM_CONF", str(state / "slurm.conf"))
    yield
    subprocess.run(["bash", str(SLURM_SH), "stop"], capture_output=True, env=env, timeout=120)
    shutil.rmtree(state, ignore_errors=True)


@pytest.mark.slurm
def test_two_cell_grid_on_a_real_single_node_slurm(tmp_path, grid_tools, slurm_cluster):
    report = _run_two_cells(tmp_path, grid_tools, "slurm")
    ids = [p.name for p in (report.plan.state_dir / "submitit").iterdir()]
    assert any("_" in i for i in ids)  # the two cells went out as one job array
