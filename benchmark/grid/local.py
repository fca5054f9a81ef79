"""The ``local`` launcher: N worker processes on this machine, one process per task."""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmark.grid.backend import Launcher, Outcome, cpu_count, describe_exit, safe_name
from benchmark.grid.dag import Task
from benchmark.grid.spec import GridError
from benchmark.grid.worker import PARENT_PID_ENV, child_main
from benchmark.registry import registry


@registry.register_launcher("local")
class LocalLauncher(Launcher):
    """N worker processes on this machine, one process per task.

    Threads: each worker gets ``threads`` torch threads (``training.threads``, OMP/MKL env),
    1 unless ``--threads`` says otherwise (never derived from the cores: results must not
    depend on the machine); workers default to ``cores // threads``, so parallel cells do
    not fight over the CPU and run slower than serial ones.

    Start methods: ``forkserver`` (default on Linux) forks each task from a server that has
    already imported torch & co. (:mod:`benchmark.grid.preload`), saving seconds per cell;
    ``exec`` starts a brand-new interpreter (``python -m benchmark.grid.worker TASK.json``).
    Either way a task that crashes takes down only its own process.
    """

    name = "local"
    START_METHODS = ("forkserver", "exec")

    def __init__(self, state_dir: Path, *, workers: int | None = None, threads: int | None = None,
                 start: str | None = None, **options: Any) -> None:
        super().__init__(state_dir, workers=workers, threads=threads, **options)
        self.workers, self.threads = self._resolve(workers, threads)
        if start is None:
            start = self._default_start()
        if start not in self.START_METHODS:
            raise GridError(f"Unknown start method {start!r}; use one of {', '.join(self.START_METHODS)}.")
        self.start = start
        self.procs: dict[str, _Proc] = {}
        self._context: Any = None

    @classmethod
    def warm_up(cls, *, workers: int | None = None, threads: int | None = None, start: str | None = None,
                **options: Any) -> None:
        """Start the fork server now, so that its preload (torch, wandb, pandas: 10-20 s of a loaded
        2-core machine) overlaps the runner's own validation and data checks instead of
        delaying the first task. The server is the process-wide one multiprocessing keeps, so
        the launcher built later finds it running."""
        threads = cls._resolve(workers, threads)[1]
        if (start or cls._default_start()) != "forkserver":
            return
        from multiprocessing import forkserver

        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["benchmark.grid.preload"])
        with _temporary_env(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads)):
            forkserver.ensure_running()

    @staticmethod
    def _default_start() -> str:
        return "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "exec"

    @staticmethod
    def _resolve(workers: int | None, threads: int | None) -> tuple[int, int]:
        """(workers, threads): threads default to 1 whatever the workers and cores, workers to
        ``cores // threads``.

        Why not ``cores // workers`` threads (as before): the thread count changes a run's
        float reductions (1 vs 2 threads: a loss differs in its last bit at step 20 and the
        runs drift apart, docs/reproducibility.md), so a run's numbers would depend on the
        machine's cores and on ``--workers``. One thread is also the fastest setting for
        these small models on a loaded machine. ``--threads N`` opts out, recorded in
        ``training.threads`` of the run's config."""
        threads = int(threads) if threads else 1
        return (int(workers) if workers else max(1, cpu_count() // threads)), threads

    def describe(self) -> str:
        return f"local ({self.start}): {self.workers} worker(s) × {self.threads} thread(s)"

    def slots(self) -> int:
        return self.workers - len(self.procs)

    def threads_for(self, task: Task) -> int:
        return self.threads

    def launch(self, tasks: list[Task]) -> None:
        for task in tasks:
            self._task_file(task, {"threads": self.threads})
            task_file = self.state_dir / "tasks" / f"{safe_name(task.id)}.json"
            task_file.with_suffix(".result.json").unlink(missing_ok=True)
            log = task.log_path or self.state_dir / "logs" / f"{safe_name(task.id)}.log"
            log.parent.mkdir(parents=True, exist_ok=True)
            self.procs[task.id] = (self._fork if self.start == "forkserver" else self._exec)(task_file, log)
            self.started[task.id] = time.time()

    def _exec(self, task_file: Path, log: Path) -> _Proc:
        handle = open(log, "a")  # noqa: SIM115 - stays open for the worker's lifetime
        env = {**os.environ, PARENT_PID_ENV: str(os.getpid()), "OMP_NUM_THREADS": str(self.threads),
               "MKL_NUM_THREADS": str(self.threads), "PYTHONUNBUFFERED": "1"}
        proc = subprocess.Popen([sys.executable, "-m", "benchmark.grid.worker", str(task_file)],
                                stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
        return _Proc(task_file, log, popen=proc, handle=handle)

    def _fork(self, task_file: Path, log: Path) -> _Proc:
        environ = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": str(self.threads),
                   "MKL_NUM_THREADS": str(self.threads)}
        if self._context is None:
            self._context = multiprocessing.get_context("forkserver")
            self._context.set_forkserver_preload(["benchmark.grid.preload"])
        proc = self._context.Process(target=child_main, args=(str(task_file), str(log), environ, os.getpid()),
                                     daemon=False)
        # The server (started by the first task) loads torch with the environment it inherits:
        # cap its thread pools there, without changing this process's environment for good.
        with _temporary_env(OMP_NUM_THREADS=str(self.threads), MKL_NUM_THREADS=str(self.threads)):
            proc.start()
        return _Proc(task_file, log, process=proc)

    def poll(self) -> list[Outcome]:
        done = []
        for task_id, proc in list(self.procs.items()):
            code = proc.exitcode()
            if code is None:
                continue
            proc.close()
            del self.procs[task_id]
            result_file = proc.task_file.with_suffix(".result.json")
            result = json.loads(result_file.read_text()) if result_file.exists() else None
            error = None if code == 0 else describe_exit(code, proc.log)
            done.append(Outcome(task_id, ok=code == 0, error=error, log=proc.log, result=result,
                                seconds=time.time() - self.started.pop(task_id), killed=code < 0))
        return done

    def stop(self, grace_s: float = 10.0) -> None:
        for proc in self.procs.values():
            proc.signal(signal.SIGINT)
        deadline = time.time() + grace_s
        for proc in self.procs.values():
            while proc.exitcode() is None and time.time() < deadline:
                time.sleep(0.1)
            if proc.exitcode() is None:
                proc.signal(signal.SIGKILL)


@contextlib.contextmanager
def _temporary_env(**values: str) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@dataclass
class _Proc:
    """A running task, started either way; one interface for the launcher."""

    task_file: Path
    log: Path
    popen: subprocess.Popen | None = None
    handle: Any = None
    process: Any = None  # multiprocessing.Process

    def exitcode(self) -> int | None:
        if self.popen is not None:
            return self.popen.poll()
        return self.process.exitcode

    def signal(self, sig: int) -> None:
        pid = self.popen.pid if self.popen is not None else self.process.pid
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)

    def close(self) -> None:
        if self.handle is not None:
            self.handle.close()
        if self.process is not None:
            self.process.join(0)
