"""Advisory file locks that die with their owner.

Why ``flock`` and not a PID written into ``summary.json``: the kernel releases an ``flock``
when its process dies, even by ``kill -9``, so a "running" run whose worker was killed is
recognisably *not* running (its lock is free) and the next ``msd grid run`` resumes it. A
PID file alone can be stale or, worse, name a reused PID.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import IO

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
        handle.write(f"{os.getpid()}\n")
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
        try:
            text = self.path.read_text().strip()
        except OSError:
            return None
        return int(text) if text.isdigit() else None


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
