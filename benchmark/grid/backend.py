"""What the runner needs from a launcher, and the pieces launchers share.

The runner owns the DAG and asks a launcher only three things: how many tasks it can take
now, to start some, and which of them have finished. That keeps scheduling, retries and
reporting identical whatever executes the work (``local`` worker processes or ``slurm``).
"""

from __future__ import annotations

import abc
import json
import os
import re
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmark.grid.dag import Task


@dataclass
class Outcome:
    """A finished task: ``ok`` says whether its process/job ended without error."""

    task_id: str
    ok: bool
    error: str | None = None
    log: Path | None = None
    result: dict[str, Any] | None = None
    seconds: float = 0.0
    killed: bool = False  # ended by a signal / scheduler, not by an exception of its own


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def safe_name(task_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", task_id)[:150]


class Launcher(abc.ABC):
    """Base class; subclasses implement ``slots``, ``threads_for``, ``launch`` and ``poll``."""

    name = "base"

    def __init__(self, state_dir: Path, *, workers: int | None = None, threads: int | None = None,
                 **options: Any) -> None:
        self.state_dir = Path(state_dir)
        self.workers = workers
        self.threads = threads
        self.options = options
        self.started: dict[str, float] = {}

    @classmethod  # noqa: B027 - an optional hook
    def warm_up(cls, **options: Any) -> None:
        """Called with the launcher's options once the runner knows there is work, before it
        validates the cells and makes the data: start what takes long to start."""

    @abc.abstractmethod
    def slots(self) -> int:
        """How many tasks may run at once."""

    @abc.abstractmethod
    def threads_for(self, task: Task) -> int:
        """torch threads for one task, so workers do not oversubscribe."""

    @abc.abstractmethod
    def launch(self, tasks: list[Task]) -> None:
        """Start these tasks."""

    @abc.abstractmethod
    def poll(self) -> list[Outcome]:
        """Outcomes of tasks that ended since the last poll."""

    def stop(self, grace_s: float = 10.0) -> None:  # noqa: B027 - optional hook
        """Interrupt what is running (Ctrl-C of the runner)."""

    def describe(self) -> str:
        return self.name

    def _task_file(self, task: Task, extra: dict[str, Any]) -> dict[str, Any]:
        payload = {**task.payload, "id": task.id, **extra}
        path = self.state_dir / "tasks" / f"{safe_name(task.id)}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(payload))
        return payload


def describe_exit(code: int, log: Path | None) -> str:
    if code < 0:
        name = signal.Signals(-code).name if -code in signal.Signals._value2member_map_ else str(-code)
        hint = " (out of memory?)" if -code == signal.SIGKILL else ""
        return f"worker killed by {name}{hint}"
    last = last_error_line(log)
    return last or f"worker exited with code {code}"


def last_error_line(log: Path | None) -> str | None:
    """The exception line of a traceback at the end of a log: what a user needs to see."""
    if log is None or not log.exists():
        return None
    with open(log, "rb") as handle:
        handle.seek(0, os.SEEK_END)
        handle.seek(max(0, handle.tell() - 20000))
        lines = handle.read().decode(errors="replace").splitlines()
    for line in reversed(lines):
        if re.match(r"^[A-Za-z_][\w.]*(Error|Exception|Interrupt)\b.*", line) or line.startswith("benchmark."):
            return line.strip()[:500]
    return None


