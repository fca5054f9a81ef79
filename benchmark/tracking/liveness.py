"""Is the process behind a run (or an HPO trial) still alive? One answer for the whole suite.

Why two signals: on the host that started it, a process is alive when its pid exists *and*
has the start time recorded with it (pids are reused, a bare ``kill(pid, 0)`` can name a
stranger). From another host (a login node looking at a Slurm job's run) pids mean nothing,
so a run also writes a heartbeat every :data:`HEARTBEAT_INTERVAL_S` seconds and counts as
dead once it is older than :data:`STALE_AFTER_S`. A ``kill -9`` or a lost node cannot be
handled by the dying process; these two checks are how the survivors find out.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmark.tracking.atomic import write_json_atomic

HEARTBEAT_FILE = "heartbeat.json"
# Every 5 s: one ~150-byte atomic write, nothing measurable next to a training step, and
# a dead run on another host is recognised within a minute.
HEARTBEAT_INTERVAL_S = 5.0
# 12 missed beats: tolerates a machine so loaded that the beat thread starves for a while,
# NFS attribute caching (up to 30 s by default) and small clock skew between nodes.
STALE_AFTER_S = float(os.environ.get("MSD_HEARTBEAT_STALE_S", 60.0))


def pid_alive(pid: int) -> bool:
    """True when a live process with this pid exists on this host (ours or another user's)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    fields = _stat_fields(pid)  # a zombie (exited, not yet reaped by its parent) trains nothing
    return not (fields and fields[0] in ("Z", "X"))


def _stat_fields(pid: int) -> list[str] | None:
    """``/proc/<pid>/stat`` after the command name (state first); None where /proc is absent."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def process_start(pid: int) -> int | None:
    """Process start time in clock ticks since boot (Linux); None where /proc is absent."""
    fields = _stat_fields(pid)
    try:
        return int(fields[19]) if fields else None
    except (IndexError, ValueError):
        return None


def owner_record() -> dict[str, Any]:
    """Who this process is: host, pid and its start time (so a reused pid is not taken for it)."""
    return {"host": socket.gethostname(), "pid": os.getpid(), "start": process_start(os.getpid())}


def owner_alive(owner: Any) -> bool | None:
    """True/False for an owner on this host; None when it is on another host (cannot tell)."""
    if not isinstance(owner, dict) or owner.get("host") != socket.gethostname():
        return None
    pid = int(owner.get("pid", -1))
    if not pid_alive(pid):
        return False
    start = owner.get("start")
    return start is None or process_start(pid) == start


def heartbeat_alive(beat: dict[str, Any] | None, *, now: float | None = None,
                    stale_after: float = STALE_AFTER_S) -> bool:
    """Whether the process that wrote ``beat`` is alive: by pid on its own host, else by age."""
    if not beat:
        return False
    same_host = owner_alive(beat)
    if same_host is not None:
        return same_host
    age = (time.time() if now is None else now) - float(beat.get("beat_at", 0.0))
    return age <= stale_after


def read_heartbeat(run_path: str | Path) -> dict[str, Any] | None:
    import json

    try:
        return json.loads((Path(run_path) / HEARTBEAT_FILE).read_text())
    except (OSError, ValueError):
        return None


class Heartbeat:
    """A daemon thread that rewrites ``<run>/heartbeat.json`` every ``interval`` seconds.

    ``progress`` returns small facts to include (step, epoch), read without locks: a beat
    may show a step one behind, never a wrong run. A failed write (full disk) is skipped,
    never raised: the heartbeat must not be what kills a run.
    """

    def __init__(self, run_path: str | Path, *, interval: float = HEARTBEAT_INTERVAL_S,
                 progress: Callable[[], dict[str, Any]] | None = None) -> None:
        self.path = Path(run_path) / HEARTBEAT_FILE
        self.interval = interval
        self.progress = progress
        self.owner = owner_record()
        self.started_at = time.time()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="msd-heartbeat", daemon=True)

    def beat(self) -> None:
        payload = {**self.owner, "started_at": self.started_at, "beat_at": time.time(), "interval_s": self.interval}
        try:
            if self.progress is not None:
                payload.update(self.progress())
        except Exception:  # noqa: BLE001 - progress is a nicety
            pass
        with contextlib.suppress(OSError):
            write_json_atomic(self.path, payload)

    def start(self) -> Heartbeat:
        self.beat()
        self._thread.start()
        return self

    def stop(self, *, remove: bool = True) -> None:
        """Stop beating; the file goes once the run's final status is on disk."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2 * self.interval)
        if remove:
            with contextlib.suppress(OSError):
                self.path.unlink()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.beat()
