"""How a crashed run ends: a final status, a non-empty ``error.log``, and one paragraph for the user.

Why a module of its own: the trainer, the grid worker and ``msd run`` all see the same
crashes (a NaN loss, a full disk, out of memory, a SIGTERM from Slurm) and must say the
same thing about them. The advice for each kind of exception is a registry
(:data:`ADVICE`), looked up along the exception's class hierarchy.

A full disk is the hard case: the files that record the failure need space themselves. A
run therefore keeps a small pre-allocated :class:`DiskReserve` in its directory and deletes
it before writing ``error.log`` and the summary; the one-line message is written and
flushed before the traceback, and when even that fails the traceback goes to stderr with
a sentence saying so.
"""

from __future__ import annotations

import errno
import os
import signal
import sys
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from benchmark.errors import UserError
from benchmark.tracking.atomic import write_json_atomic

RESERVE_FILE = ".failure-reserve"
RESERVE_BYTES = 256 * 1024  # a summary plus a long traceback, several times over
ERROR_LOG = "error.log"


class Terminated(KeyboardInterrupt):
    """SIGTERM (Slurm preemption, ``kill``): like Ctrl-C, the run ends ``interrupted`` and resumes."""

    def __init__(self, signum: int = signal.SIGTERM) -> None:
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = signum


@contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """Within the block, SIGTERM raises :class:`Terminated` in the main thread (so the run's
    own failure path records ``interrupted``) instead of killing the process silently."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise Terminated(signum)

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# -- what to tell the user ---------------------------------------------------------------------
def _oom_host(exc: BaseException) -> str:
    return ("out of host memory. Lower training.batch_size (raise training.update_frequency to keep the "
            "global batch), training.num_workers, or the model size; the run resumes from its last checkpoint.")


def _oom_gpu(exc: BaseException) -> str:
    return ("out of GPU memory. Lower training.batch_size (raise training.update_frequency to keep the "
            "global batch), use training.fp16=true, or a smaller model; the run resumes from its last checkpoint.")


def _os_error(exc: BaseException) -> str:
    assert isinstance(exc, OSError)
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        where = f" while writing {exc.filename}" if exc.filename else ""
        return (f"the disk is full{where}. Free space on that file system (env.save_dir, env.cache_dir, "
                "tracking.wandb.dir) or point those keys elsewhere; the same command resumes the run from "
                "its last checkpoint.")
    return f"{type(exc).__name__}: {exc}"


# torch.save reports a failed write (a full disk) by these messages, without the errno.
TORCH_WRITE_FAILURES = ("unexpected pos", "basic_ios::clear", "file write failed", "PytorchStreamWriter failed")


def _runtime_error(exc: BaseException) -> str:
    chain = [exc, exc.__cause__, exc.__context__]
    if any(isinstance(e, RuntimeError) and any(m in str(e) for m in TORCH_WRITE_FAILURES) for e in chain):
        return ("a checkpoint could not be written (torch: " + str(exc).strip()[:120] + "), which is how a "
                "full disk shows. Free space on the file system of env.save_dir or point it elsewhere; the "
                "same command resumes the run from its last checkpoint.")
    return f"{type(exc).__name__}: {exc}"


def _interrupted(exc: BaseException) -> str:
    how = str(exc) if isinstance(exc, Terminated) else "interrupted (Ctrl-C)"
    return f"{how}. The run is marked interrupted; the same command resumes it from its last checkpoint."


def _own_words(exc: BaseException) -> str:
    """Errors written for the user (a NaN loss, a UserError) already say what to do."""
    return str(exc)


def _gpu_oom_type() -> type[BaseException] | None:
    try:
        import torch

        return torch.cuda.OutOfMemoryError
    except (ImportError, AttributeError):
        return None


ADVICE: dict[type[BaseException] | str, Callable[[BaseException], str]] = {
    MemoryError: _oom_host,
    OSError: _os_error,
    RuntimeError: _runtime_error,
    KeyboardInterrupt: _interrupted,
    UserError: _own_words,
    # by class name: the trainer defines it, and this module must not import the trainer
    "TrainingDivergedError": _own_words,
}
if _gpu_oom_type() is not None:
    ADVICE[_gpu_oom_type()] = _oom_gpu  # type: ignore[index]


def describe(exc: BaseException) -> str:
    """One sentence or two on what happened and what to change. A full disk or memory
    error raised while handling another error (``raise ... from``) is the one named."""
    for cause in (exc.__cause__, exc.__context__):
        disk_full = isinstance(cause, OSError) and cause.errno in (errno.ENOSPC, errno.EDQUOT)
        if (disk_full or isinstance(cause, MemoryError)) and not isinstance(exc, KeyboardInterrupt):
            exc = cause
            break
    for cls in type(exc).__mro__:
        advice = ADVICE.get(cls) or ADVICE.get(cls.__name__)
        if advice is not None:
            return advice(exc)
    return f"{type(exc).__name__}: {exc}"


@dataclass
class RunFailure:
    """Attached to the exception a run ended with, for the CLI to print as one paragraph."""

    run_id: str
    status: str
    message: str
    error_log: Path | None
    note: str = ""

    def paragraph(self) -> str:
        where = f" Details: {self.error_log}." if self.error_log else ""
        note = f" {self.note}" if self.note else ""
        return (f"run {self.run_id} {self.status}: {self.message}{where}{note} "
                "(full traceback: --debug or MSD_DEBUG=1)")

    @property
    def exit_code(self) -> int:
        if self.status == "interrupted":
            return 143 if self.message.startswith("stopped by SIGTERM") else 130
        return 1


def run_failure_of(exc: BaseException) -> RunFailure | None:
    return getattr(exc, "run_failure", None)


# -- writing the record ------------------------------------------------------------------------
class DiskReserve:
    """A few hundred KiB held in the run directory, given back when a failure must be written."""

    def __init__(self, run_path: str | Path, size: int = RESERVE_BYTES) -> None:
        self.path = Path(run_path) / RESERVE_FILE
        self.size = size

    def create(self) -> None:
        """Best effort: a run on a nearly full disk still starts (and fails where it would have)."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o644)
            try:
                os.posix_fallocate(fd, 0, self.size)
            finally:
                os.close(fd)
        except (OSError, AttributeError):
            self.release()

    def release(self) -> None:
        with suppress(OSError):
            self.path.unlink()


def write_error_log(path: Path, message: str, exc: BaseException) -> str:
    """The one-line message first (flushed), then the traceback. Returns a note for the user
    when the file could not be written whole: the traceback then goes to stderr."""
    tb = "".join(traceback.format_exception(exc))
    try:
        with open(path, "w") as handle:
            handle.write(message.rstrip() + "\n\n")
            handle.flush()
            handle.write(tb)
        return ""
    except OSError as err:
        written = path.exists() and path.stat().st_size > 0
        print(f"[msd] could not write {path} whole ({err}); the traceback follows here:\n{tb}",
              file=sys.stderr, flush=True)
        return (f"error.log holds only the first line ({err}); the traceback was printed to stderr."
                if written else f"error.log could not be written ({err}); the traceback was printed to stderr.")


def record_failure(run_path: Path, summary: dict[str, Any], message: str, exc: BaseException,
                   reserve: DiskReserve | None) -> tuple[Path | None, str]:
    """Write ``error.log`` and the failed/interrupted summary, never raising: the exception
    being recorded is what the caller must see. Returns (error.log or None, note)."""
    if reserve is not None:
        reserve.release()
    notes = []
    log = run_path / ERROR_LOG
    try:
        run_path.mkdir(parents=True, exist_ok=True)
        note = write_error_log(log, message, exc)
    except OSError as err:
        note = f"error.log could not be written ({err})."
    if note:
        notes.append(note)
    try:
        write_json_atomic(run_path / "summary.json", summary)
    except (OSError, TypeError, ValueError) as err:
        notes.append(f"summary.json could not be updated ({err}); the run reads as interrupted and resumes.")
        print(f"[msd] could not write {run_path / 'summary.json'}: {err}", file=sys.stderr, flush=True)
    ok_log = log.exists() and log.stat().st_size > 0
    return (log if ok_log else None), " ".join(notes)
