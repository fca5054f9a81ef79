"""The ``slurm`` launcher: tasks go out through submitit as job arrays.

Per-cell resources come from the grid file; a job is a submitit ``Checkpointable`` so a
preempted or timed-out job is requeued and the trainer resumes it from ``last.pt``; every
job has its own log under ``<grid state>/submitit/<job id>/``. ``cluster="local"`` runs
the same code path with submitit's local executor (how CI tests it without Slurm).

A training cell that asks for N > 1 GPUs is one DDP run: one Slurm task per GPU
(``tasks_per_node=N``, ``gpus_per_node=N``), each exporting torch.distributed's variables
(submitit's ``TorchDistributedEnvironment``) before the trainer reads them with
``training.distributed=auto``. Rank 0 alone reports the cell's result. Data and teacher-cache
tasks are single processes, so they get one task and at most one GPU.
"""

from __future__ import annotations

import contextlib
import logging
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import submitit
from submitit.helpers import Checkpointable

from benchmark.grid.backend import Launcher, Outcome, last_error_line
from benchmark.grid.dag import TRAIN, Task
from benchmark.grid.spec import Resources
from benchmark.grid.worker import execute_task
from benchmark.registry import registry


class GridJob(Checkpointable):
    """The function a Slurm job runs; a submitit ``Checkpointable`` so preemption requeues it.

    On preemption or timeout submitit calls ``checkpoint`` (inherited), which resubmits the
    same task; the trainer then resumes from the run's ``last.pt``.
    """

    def __call__(self, task: dict[str, Any]) -> dict[str, Any] | None:
        world = export_distributed_environment()
        result = execute_task(task)
        return result if world.rank == 0 else None


def export_distributed_environment() -> submitit.helpers.TorchDistributedEnvironment:
    """RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT of this task, as torchrun sets them.

    Exported in every job (a single task gets WORLD_SIZE=1), overwriting what the runner's
    shell may have passed down, so a job never inherits another launch's world. The trainer
    picks ``cuda:<LOCAL_RANK>`` itself, so ``CUDA_VISIBLE_DEVICES`` is left as Slurm set it.
    """
    world = submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)
    if world.world_size > 1:
        print(f"DDP: rank {world.rank} of {world.world_size} (local rank {world.local_rank}), "
              f"master {world.master_addr}:{world.master_port}", flush=True)
    return world


def job_parameters(resources: Resources, kind: str) -> dict[str, Any]:
    """submitit parameters of one job: N GPUs for a training cell = N tasks, one per GPU."""
    gpus = int(resources.gpus or 0)
    distributed = kind == TRAIN and gpus > 1
    params: dict[str, Any] = {
        "name": "msd-grid", "timeout_min": int(resources.timeout_min), "mem_gb": float(resources.mem_gb),
        "cpus_per_task": int(resources.cpus), "tasks_per_node": gpus if distributed else 1,
    }
    if gpus:
        params["gpus_per_node"] = gpus if distributed else 1
    if resources.partition:
        params["slurm_partition"] = resources.partition
    if resources.slurm:
        params["slurm_additional_parameters"] = dict(resources.slurm)
    return params


@registry.register_launcher("slurm")
class SlurmLauncher(Launcher):
    """Slurm through submitit: ready tasks go out as job arrays, grouped by resources.

    ``cluster="local"`` runs the same code path with submitit's local executor (the CI test);
    ``workers`` caps how many array tasks run at once (``slurm_array_parallelism``).
    """

    name = "slurm"
    QUEUE_CHECK_S = 15.0  # how often squeue is asked which jobs still exist

    def __init__(self, state_dir: Path, *, workers: int | None = None, threads: int | None = None,
                 cluster: str = "slurm", partition: str | None = None, **options: Any) -> None:
        super().__init__(state_dir, workers=workers, threads=threads, **options)
        self.cluster = cluster
        self.partition = partition
        self.folder = self.state_dir / "submitit"
        self._executor()  # fail now (no srun, unknown cluster), not at the first launch
        self.jobs: dict[str, tuple[Any, float, Resources]] = {}
        self.max_running = int(workers) if workers else 256
        self._last_queue_check = time.time()
        self._missing_once: set[str] = set()
        logging.getLogger("submitit").setLevel(logging.ERROR)  # "Bypassing sacct error" every poll

    def _executor(self) -> submitit.AutoExecutor:
        return submitit.AutoExecutor(folder=self.folder / "%j", cluster=self.cluster)

    def describe(self) -> str:
        return f"slurm via submitit ({self.cluster}), up to {self.max_running} job(s) at once"

    def slots(self) -> int:
        return self.max_running - len(self.jobs)

    def threads_for(self, task: Task) -> int:
        return int(self.threads or task.resources.cpus)

    def launch(self, tasks: list[Task]) -> None:
        groups: dict[tuple[Resources, bool], list[Task]] = {}
        for task in tasks:
            groups.setdefault((task.resources, task.kind == TRAIN), []).append(task)
        for (resources, _train), group in groups.items():
            params = {**job_parameters(resources, group[0].kind), "slurm_array_parallelism": self.max_running}
            if self.partition:
                params["slurm_partition"] = self.partition
            if self.cluster != "slurm":
                params = {k: v for k, v in params.items() if not k.startswith("slurm_")}
            executor = self._executor()  # a fresh one: parameters of an earlier group must not leak
            executor.update_parameters(**params)
            payloads = [self._task_file(t, {"threads": self.threads_for(t)}) for t in group]
            with executor.batch():
                jobs = [executor.submit(GridJob(), p) for p in payloads]
            now = time.time()
            for task, job in zip(group, jobs):
                self.jobs[task.id] = (job, now, resources)
                self.started[task.id] = now

    def poll(self) -> list[Outcome]:
        done = []
        vanished = self._vanished()
        for task_id, (job, submitted, _resources) in list(self.jobs.items()):
            log = Path(job.paths.stdout)
            if job.job_id in vanished:
                # Gone from the queue without a result (OOM kill, node failure, scancel):
                # job.result() would wait forever without accounting, so decide here.
                outcome = Outcome(task_id, ok=False, killed=True, log=log,
                                  error=last_error_line(log) or f"job {job.job_id} left the queue without a result")
            elif not self._finished(job):
                continue
            else:
                try:
                    outcome = Outcome(task_id, ok=True, log=log, result=_rank0_result(job))
                except Exception as exc:  # noqa: BLE001 - FailedJobError, UncompletedJobError, ...
                    outcome = Outcome(task_id, ok=False, log=log, error=_job_error(exc),
                                      killed="UncompletedJobError" in type(exc).__name__)
            outcome.seconds = time.time() - self.started.pop(task_id, submitted)
            del self.jobs[task_id]
            done.append(outcome)
        return done

    def _finished(self, job: Any) -> bool:
        if self.cluster != "slurm":
            return bool(job.done())
        # The result files are the signal (one per task of a DDP job); submitit's own check
        # calls sacct, which fails (loudly, every few seconds) on clusters without accounting.
        return all(Path(job.task(i).paths.result_pickle).exists() for i in range(job.num_tasks))

    def _vanished(self) -> set[str]:
        """Slurm jobs absent from ``squeue`` twice in a row (checked every 15 s) with no result."""
        if self.cluster != "slurm" or time.time() - self._last_queue_check < self.QUEUE_CHECK_S:
            return set()
        self._last_queue_check = time.time()
        try:
            out = subprocess.run(["squeue", "-h", "-r", "-o", "%i"], capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            return set()
        if out.returncode != 0:
            return set()
        queued = set(out.stdout.split())
        missing = {job.job_id for job, *_ in self.jobs.values()
                   if job.job_id not in queued and not Path(job.paths.result_pickle).exists()}
        vanished, self._missing_once = missing & self._missing_once, missing
        return vanished

    def stop(self, grace_s: float = 10.0) -> None:
        for job, *_ in self.jobs.values():
            with contextlib.suppress(Exception):  # best effort on shutdown
                job.cancel(check=False)


def _rank0_result(job: Any) -> Any:
    """What the grid records: rank 0's result (a multi-task job fails if any rank failed)."""
    return job.results()[0] if job.num_tasks > 1 else job.result()


def _job_error(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    lines = [line for line in text if re.match(r"^[A-Za-z_][\w.]*(Error|Exception)\b", line.strip())]
    return (lines[-1] if lines else (text[-1] if text else type(exc).__name__)).strip()[:500]
