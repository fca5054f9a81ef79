"""The states a run can be in, and the one function that says which state a run is truly in.

Why "truly": ``summary.json`` says ``running`` from the first step, and a process killed with
``kill -9`` (or lost with its node) can never change that. A reader therefore trusts a
``running`` summary only while the run's process is alive (``benchmark.tracking.liveness``);
otherwise the run is ``interrupted`` and resumes from its ``last.pt`` when started again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmark.tracking.liveness import heartbeat_alive, read_heartbeat

RUNNING = "running"
COMPLETED = "completed"
FAILED = "failed"
INTERRUPTED = "interrupted"  # Ctrl-C, SIGTERM (Slurm preemption) or a dead process: resumable
SCORED = "scored"  # run_type=val|test|predict: a checkpoint scored, nothing trained
TODO = "todo"  # no summary yet
UNKNOWN = "unknown"
STATUSES = (RUNNING, COMPLETED, FAILED, INTERRUPTED, TODO)


def true_status(summary: dict[str, Any] | None, run_path: str | Path) -> str:
    """``summary``'s status, except that a ``running`` run whose process is gone is ``interrupted``."""
    if summary is None:
        return TODO
    status = str(summary.get("status", UNKNOWN))
    if status == RUNNING and not heartbeat_alive(read_heartbeat(run_path)):
        return INTERRUPTED
    return status
