"""Executes one grid task, in its own process: ``python -m benchmark.grid.worker TASK.json``.

Why a process per task: a cell that crashes the interpreter (segfault in a kernel, OOM
kill, a NaN that raises) takes only its own process down; the runner sees an exit code and
carries on with the rest of the grid. The same :func:`execute_task` runs inside a Slurm job
(submitit) where the job is the process.
"""

from __future__ import annotations

import ctypes
import json
import os
import resource
import select
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from benchmark.grid.locks import run_lock
from benchmark.tracking.failure import sigterm_interrupts
from benchmark.tracking.liveness import pid_alive

PARENT_PID_ENV = "MSD_GRID_PARENT_PID"
PROFILE_ENV = "MSD_GRID_PROFILE_DIR"  # set: each task runs under cProfile and leaves TASK.prof there


def run_data(task: dict[str, Any]) -> dict[str, Any]:
    """Make a synthetic (or easy-VQA) dataset if its files are missing or out of date.

    A directory that already holds the dataset's files without the generator's manifest is
    a user's real MMF data: it is used as it is, never regenerated. A grid that says
    ``data: {generate: false}`` (paper scale, on a user's data) never generates: a missing
    file is a :class:`DataError` naming it, before any teacher starts.
    """
    from benchmark.config.loader import dataset_node
    from benchmark.data.make import make_dataset, read_manifest
    from benchmark.distill.fingerprint import dataset_files
    from benchmark.errors import DataError

    config = OmegaConf.create(task["config"])
    node = dataset_node(config)
    files = dataset_files(node, ("train", "val", "test"))
    roots = _generator_roots(task, node)
    root = roots[0]
    if not task.get("generate", True):
        missing = [str(p) for p in files if not p.exists()]
        if missing:
            raise DataError(
                f"{task['dataset']}: this grid uses existing MMF data only (data.generate: false), and "
                f"{len(missing)} file(s) are missing under {node.data_dir}: {', '.join(missing[:4])}"
                f"{' ...' if len(missing) > 4 else ''}. Point env.data_dir (DATA_DIR= / MSD_DATA_DIR) at "
                f"an MMF data directory holding {task['dataset']}, or leave the dataset out with --only."
            )
        print(f"{task['dataset']}: using the existing data under {root}")
        return {"skipped": True, "real_data": all(read_manifest(r) is None for r in roots)}
    if files and all(p.exists() for p in files) and all(read_manifest(r) is None for r in roots):
        print(f"{task['dataset']}: using the existing (non-generated) data under {root}")
        return {"skipped": True, "real_data": True}
    summary = make_dataset(task["dataset"], task["data_dir"], size=task.get("size"), seed=int(task.get("seed") or 0))
    print(f"{task['dataset']}: {'up to date' if summary.get('skipped') else 'generated'} under {task['data_dir']}")
    return {"skipped": bool(summary.get("skipped"))}


def _generator_roots(task: dict[str, Any], node: Any) -> list[Path]:
    """Where the dataset's generator keeps its manifest: the generator's own roots.

    Why not ``<dataset node data_dir>/<name>/defaults``: MM-IMDB's node, as in MMF, is
    ``env.data_dir`` itself (its paths start with ``datasets/``), so that guess missed its
    manifest, took generated data for a user's real data and never regenerated it when the
    generator changed. A dataset without a generator (a user's own) keeps the guess.
    """
    from benchmark.errors import ConfigError
    from benchmark.registry import registry

    try:
        generator = registry.get_generator(task["dataset"])
    except ConfigError:  # no generator registered under this name: real data only
        return [Path(str(node.data_dir)) / task["dataset"] / "defaults"]
    return list(generator.root_dirs(Path(str(task["data_dir"])).expanduser().resolve()))


def make_data_first(tasks: Any) -> bool:
    """Run the data tasks of a plan here, before any cell's run id is trusted; True when one
    wrote data. Why first: a run id holds the content of the data, so ids computed while a
    dataset is still missing name runs that will never exist; the grid expands again after."""
    made = False
    for task in tasks:
        if task.kind == "data":
            made |= not run_data(task.payload).get("skipped", False)
    return made


def run_cache(task: dict[str, Any]) -> dict[str, Any]:
    """Build (or validate) the teacher-output cache once, before its students start."""
    import torch

    from benchmark.data.build import build_dataset
    from benchmark.distill.cache import full_split_config, get_teacher_cache
    from benchmark.distill.teacher import load_teacher
    from benchmark.train.batching import resolve_device

    config = _config(task)
    if config.training.get("threads"):
        torch.set_num_threads(int(config.training.threads))
    device = resolve_device(str(config.training.device))
    info = build_dataset(full_split_config(config), "val").info
    teacher = load_teacher(config, info, device)
    cache = get_teacher_cache(config, teacher, device, spot_check_samples=int(config.distill.cache_spot_check))
    print(f"teacher cache for {task['teacher']}: {cache.path}")
    if launcher_rank() == 0:  # W&B lineage: a run of job type "cache" between teacher and students
        from benchmark.tracking.wandb_logger import log_cache_lineage

        log_cache_lineage(config, cache.path, group=task.get("group"), name=f"{task['name']}/cache")
    return {"cache": str(cache.path)}


def run_train(task: dict[str, Any]) -> dict[str, Any]:
    """Train (or resume, or skip) one cell, with the W&B logger attached.

    Under DDP (a Slurm job with one task per GPU) every rank runs this; rank 0 alone holds
    the run's lock and the W&B logger. A non-zero rank waiting on the lock would deadlock
    against rank 0 waiting for it in the process group.
    """
    from benchmark.tracking.run_id import compute_run_id
    from benchmark.tracking.wandb_logger import wandb_callbacks
    from benchmark.train.trainer import run_experiment

    config = _config(task)
    run_id = compute_run_id(config)
    if run_id != task["run_id"]:
        raise RuntimeError(f"config of {task['name']} hashes to {run_id}, the runner expected {task['run_id']}")
    main_rank = launcher_rank() == 0
    with run_lock(config.env.save_dir, run_id, enabled=main_rank):
        callbacks = wandb_callbacks(config, name=task["name"], group=task.get("group"),
                                    job_type="teacher" if task.get("role") == "teacher" else "student") if main_rank else ()
        result = run_experiment(config, progress=False, callbacks=callbacks)
    status = "skipped (already complete)" if result.skipped else result.summary.get("status")
    print(f"{task['name']} -> {result.run_dir.path}: {status}")
    return {"run_id": result.run_id, "status": result.summary.get("status"), "skipped": result.skipped,
            "wall_time_s": result.summary.get("wall_time_s")}


def launcher_rank() -> int:
    """This process's rank in a distributed launch (``RANK``, as torchrun or submitit exports it)."""
    return int(os.environ.get("RANK") or 0)


HANDLERS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "data": run_data, "cache": run_cache, "train": run_train,
}


def execute_task(task: dict[str, Any]) -> dict[str, Any]:
    """Run a task dict (see :mod:`benchmark.grid.dag`) in this process."""
    threads = task.get("threads")
    if threads:
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ.setdefault(var, str(threads))
    started = time.time()
    profile_dir = os.environ.get(PROFILE_ENV)
    if profile_dir:  # bench/reproduce_profile.py: where a cell's time goes, one .prof per task
        import cProfile

        profiler = cProfile.Profile()
        try:
            result = profiler.runcall(HANDLERS[task["kind"]], task)
        finally:
            Path(profile_dir).mkdir(parents=True, exist_ok=True)
            profiler.dump_stats(str(Path(profile_dir) / f"{_safe(task['id'])}.prof"))
    else:
        result = HANDLERS[task["kind"]](task)
    usage = resource.getrusage(resource.RUSAGE_SELF)  # CPU of this task (a forked child's own)
    return {**result, "task": task["id"], "seconds": round(time.time() - started, 3),
            "cpu_s": round(usage.ru_utime + usage.ru_stime, 3)}


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)[:150]


def _config(task: dict[str, Any]) -> DictConfig:
    config = OmegaConf.create(task["config"])
    if task.get("threads"):
        config.training.threads = int(task["threads"])  # volatile: the run id does not change
    return config


def _watch_runner(pid: int) -> None:
    """Kill this process (like ``kill -9``: resumable) as soon as the runner ``pid`` is gone."""

    def watch() -> None:
        try:
            fd = os.pidfd_open(pid)  # Linux >= 5.3: readable when the process exits
        except (AttributeError, OSError):
            while pid_alive(pid):
                time.sleep(1.0)
        else:
            select.select([fd], [], [])
        os.kill(os.getpid(), signal.SIGKILL)

    if not pid_alive(pid):
        os._exit(75)
    threading.Thread(target=watch, name="watch-runner", daemon=True).start()


def _die_with_parent() -> None:
    """A runner killed with -9 must not leave orphans training on: ask for SIGKILL with it."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL("libc.so.6", use_errno=True)
            libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except OSError:
            return
    expected = os.environ.get(PARENT_PID_ENV)
    if expected and os.getppid() != int(expected):
        os._exit(75)  # the runner died before prctl took effect


def child_main(task_file: str, log: str, environ: dict[str, str], runner_pid: int) -> None:
    """Entry of a cell forked from the launcher's fork server: own log, own exit code.

    The fork server's environment is the runner's at the time the server started;
    ``environ`` is the runner's environment now, as ``subprocess`` would have passed it.
    The parent is the fork server, which outlives a killed runner as long as any of its
    children lives, so the child watches the runner itself.
    """
    _watch_runner(runner_pid)
    os.environ.clear()
    os.environ.update(environ)
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    sys.stderr.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    code = main([task_file], die_with_parent=False)
    sys.stdout.flush()
    sys.stderr.flush()
    if code:
        sys.exit(code)


def main(argv: list[str] | None = None, *, die_with_parent: bool = True) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m benchmark.grid.worker TASK.json", file=sys.stderr)
        return 2
    if die_with_parent:
        _die_with_parent()
    task = json.loads(Path(argv[0]).read_text())
    print(f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} {task['id']} (pid {os.getpid()})", flush=True)
    with sigterm_interrupts():  # a SIGTERM (Slurm preemption) ends the run "interrupted", resumable
        result = execute_task(task)
    Path(argv[0]).with_suffix(".result.json").write_text(json.dumps(result, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
