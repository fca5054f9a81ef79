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


@pytest.mark.slow  # default suite under 10 min on 2 cores; `make test-all` runs it
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


# -- DDP: one task per GPU ---------------------------------------------------------------------
def _task(kind: str, resources, name: str = "cell"):
    from benchmark.grid.dag import Task

    return Task(id=f"{kind}:{name}", kind=kind, label=name, deps=(), payload={"kind": kind}, resources=resources)


@pytest.fixture
def fake_sbatch(tmp_path, monkeypatch) -> Path:
    """``srun``/``sbatch`` stand-ins on PATH: each submission's batch script is kept, nothing runs."""
    bin_dir, scripts = tmp_path / "bin", tmp_path / "submitted"
    bin_dir.mkdir()
    scripts.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "sbatch").write_text(
        "#!/bin/sh\n"
        f'n=$(ls "{scripts}" | wc -l)\n'
        f'cp "$1" "{scripts}/$n.sh"\n'
        'echo "Submitted batch job $((4200 + n))"\n'
    )
    for tool in ("srun", "sbatch"):
        (bin_dir / tool).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    return scripts


def test_a_training_cell_asking_for_n_gpus_is_submitted_as_one_task_per_gpu(tmp_path, fake_sbatch):
    """What Slurm receives: the batch scripts submitit writes for the launcher's jobs."""
    from benchmark.grid.dag import CACHE, DATA, TRAIN
    from benchmark.grid.slurm import SlurmLauncher
    from benchmark.grid.spec import Resources

    four = Resources(cpus=6, mem_gb=64, timeout_min=600, gpus=4, partition="gpu", slurm=(("account", "lab"),))
    launcher = SlurmLauncher(tmp_path / "state", cluster="slurm", workers=8)
    for task in (_task(TRAIN, four), _task(CACHE, four), _task(DATA, Resources())):
        launcher.launch([task])
    train, cache, data = (Path(fake_sbatch / f"{i}.sh").read_text() for i in range(3))
    for line in ("--ntasks-per-node=4", "--gpus-per-node=4", "--cpus-per-task=6", "--partition=gpu",
                 "--account=lab", "--time=600", "--mem=64GB"):
        assert f"#SBATCH {line}\n" in train, line
    # the teacher cache is built once, by one process on one GPU; data needs no GPU
    assert "#SBATCH --ntasks-per-node=1\n" in cache and "#SBATCH --gpus-per-node=1\n" in cache
    assert "#SBATCH --ntasks-per-node=1\n" in data and "gpus-per-node" not in data
    assert "srun" in train  # one srun step runs the job's tasks


def _as_submitit_task(monkeypatch, rank: int, world: int) -> None:
    """The environment submitit's local executor gives task ``rank`` of a ``world``-task job."""
    for var, value in {"SUBMITIT_EXECUTOR": "local", "SUBMITIT_LOCAL_JOB_ID": "31337",
                       "SUBMITIT_LOCAL_NTASKS": str(world), "SUBMITIT_LOCAL_JOB_NUM_NODES": "1",
                       "SUBMITIT_LOCAL_NODEID": "0", "SUBMITIT_LOCAL_GLOBALID": str(rank),
                       "SUBMITIT_LOCAL_LOCALID": str(rank)}.items():
        monkeypatch.setenv(var, value)


@pytest.mark.parametrize("rank", [0, 1])
def test_each_task_exports_torch_distributed_variables_and_only_rank0_reports(monkeypatch, rank):
    import socket

    from benchmark.grid import slurm

    _as_submitit_task(monkeypatch, rank, world=2)
    monkeypatch.setenv("RANK", "7")  # a stale launch's variables in the submitting shell
    monkeypatch.setenv("WORLD_SIZE", "9")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5")
    seen: dict[str, str] = {}

    def fake_execute(task):
        seen.update({k: os.environ[k] for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT",
                                                "CUDA_VISIBLE_DEVICES")})
        return {"task": task["id"], "status": "completed"}

    monkeypatch.setattr(slurm, "execute_task", fake_execute)
    result = slurm.GridJob()({"id": "train:x", "kind": "train"})
    assert seen["RANK"] == str(rank) and seen["WORLD_SIZE"] == "2" and seen["LOCAL_RANK"] == str(rank)
    assert seen["MASTER_ADDR"] == socket.gethostname() and 20000 <= int(seen["MASTER_PORT"]) <= 60000
    assert seen["CUDA_VISIBLE_DEVICES"] == "4,5"  # the trainer picks cuda:<LOCAL_RANK> among Slurm's GPUs
    assert result == ({"task": "train:x", "status": "completed"} if rank == 0 else None)


@pytest.mark.slow  # ~20-30 s: three fresh interpreters (a data job, then a job of two tasks)
def test_a_two_gpu_cell_runs_as_one_ddp_run_through_submitits_local_executor(tmp_path, grid_tools):
    """Two tasks of one job train one run together (gloo on CPU): one run directory, world size 2."""
    path = grid_tools.tiny_grid(tmp_path / "ddp.yaml", ["teacher"], name="ddp-local",
                                resources={"gpus": 2, "cpus": 1, "timeout_min": 10})
    report = run_grid(path, extra_args=grid_tools.env_args(tmp_path), launcher="slurm", cluster="local", workers=1)
    assert report.exit_code == 0, [(t, s.error, s.log) for t, s in report.states.items() if s.error]
    (run,) = list(RunStore(tmp_path / "runs"))
    summary = run.read_summary()
    assert run.is_complete() and summary["world_size"] == 2
    logs = sorted(p.read_text() for p in (report.plan.state_dir / "submitit").rglob("*_log.out"))
    assert [any(f"DDP: rank {r} of 2" in text for text in logs) for r in (0, 1)] == [True, True]
