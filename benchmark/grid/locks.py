"""Advisory file locks that die with their owner.

Why ``flock`` and not a PID written into ``summary.json``: the kernel releases an ``flock``
when its process dies, even by ``kill -9``, so a "running" run whose worker was killed is
recognisably *not* running (its lock is free) and the next ``msd grid run`` resumes it. A
PID file alone can be stale or, worse, name a reused PID.

The per-run lock is taken by every command that trains a run (``msd run``, grid workers,
HPO trials), so one run is never trained by two processes at once. The file records the
holder's pid and host, so the one who has to wait (or is refused) is told for whom.
"""

from __future__ import annotations

import fcntl
import os
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from benchmark.errors import UserError

LOCK_DIR = ".locks"


def run_lock_path(save_dir: str | Path, run_id: str) -> Path:
    """Per-run lock, outside the run directory so the run store never lists it."""
    return Path(save_dir) / LOCK_DIR / f"{run_id}.lock"


class FileLock:
    """``with FileLock(path): ...`` holds an exclusive lock; ``owner()`` reads who holds it."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._handle: IO[str] | None = None

    def acquire(self, blocking: bool = True) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")  # noqa: SIM115 - held open while the lock is held
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            handle.close()
            return False
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()} {socket.gethostname()} {time.strftime('%Y-%m-%d %H:%M:%S %Z')}\n")
        handle.flush()
        self._handle = handle
        return True

    def release(self) -> None:
        if self._handle is not None:
            fcntl.flock(self._handle.fileno(), fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None

    def __enter__(self) -> FileLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def owner(self) -> int | None:
        """The holder's pid (None when the file is empty or unreadable)."""
        words = self._record().split()
        return int(words[0]) if words and words[0].isdigit() else None

    def holder(self) -> str:
        """Who holds the lock, in words: ``pid 123 on host node1 since 2026-01-01 10:00:00 UTC``."""
        words = self._record().split(maxsplit=2)
        if not words or not words[0].isdigit():
            return "another process (not yet recorded)"
        text = f"pid {words[0]}"
        if len(words) > 1:
            text += f" on host {words[1]}"
        if len(words) > 2:
            text += f" since {words[2]}"
        return text

    def _record(self) -> str:
        try:
            return self.path.read_text().strip()
        except OSError:
            return ""


def is_locked(path: str | Path) -> bool:
    """True while some live process holds the lock (probing does not disturb it)."""
    path = Path(path)
    if not path.exists():
        return False
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
        return False


class RunBusyError(UserError):
    """Another process holds the run's lock and the caller asked not to wait."""


@contextmanager
def run_lock(save_dir: str | Path, run_id: str, *, wait: bool = True, enabled: bool = True,
             announce: Callable[[str], None] = print) -> Iterator[FileLock | None]:
    """Hold the run's lock for the block; wait for its holder (saying for whom) or refuse.

    ``enabled=False`` (ranks other than 0 of a distributed launch) holds nothing: rank 0
    holds it for the whole process group.
    """
    if not enabled:
        yield None
        return
    lock = FileLock(run_lock_path(save_dir, run_id))
    if not lock.acquire(blocking=False):
        holder = lock.holder()
        if not wait:
            raise RunBusyError(
                f"Run {run_id} is being trained by {holder} (lock {lock.path}). Wait for it (without "
                "--no-wait, a single process waits for it), or stop that process first; its run resumes from "
                "its last checkpoint."
            )
        announce(f"{run_id} is being trained by {holder}; waiting for it to finish (Ctrl-C to stop waiting)")
        lock.acquire(blocking=True)
    try:
        yield lock
    finally:
        lock.release()
