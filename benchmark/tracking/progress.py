"""Progress of a training run: a live rich bar on a terminal, plain lines in a log.

Why two forms: a live bar redraws one line in place, which a terminal shows and a file
cannot; under Slurm, CI or ``| tee`` it collapses into a single final line, so a log would
not say how far a run got or how fast it went. When the console is not a terminal, each
evaluation prints one self-contained line (run id, update/total, epoch, loss, validation
metric, elapsed, ETA) that ``grep`` and ``tail -f`` can read.
"""

from __future__ import annotations

import math
import time
from datetime import timedelta
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class TrainingProgress:
    """One bar per run: updates done / total, loss, last validation metric, ETA.

    ``update(step, loss=…)`` moves it; ``update(step, metric=…, epoch=…)`` is an evaluation,
    which is when the plain form prints its line.
    """

    def __init__(self, name: str, total: int, enabled: bool = True, console: Console | None = None) -> None:
        self.enabled = enabled
        self.total = total
        self._fields: dict[str, float] = {"loss": float("nan"), "metric": float("nan")}
        self._console = console or Console(stderr=True)
        self.plain = enabled and not self._console.is_terminal
        self._progress = (
            Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]:.4f} val {task.fields[metric]:.4f}"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=self._console,
                transient=False,
            )
            if enabled and not self.plain
            else None
        )
        self._task = None
        self._name = name
        self._started: float | None = None
        self._first_step: int | None = None  # a resumed run's ETA counts only this process's updates

    def __enter__(self) -> TrainingProgress:
        self._started = time.monotonic()
        if self._progress is not None:
            self._progress.start()
            self._task = self._progress.add_task(self._name, total=self.total, **self._fields)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._progress is not None:
            self._progress.stop()

    def advance_to(self, step: int) -> None:
        self.update(step)

    def update(self, step: int, **fields: float) -> None:
        if self._first_step is None:
            self._first_step = step
        evaluation = "metric" in fields
        epoch = fields.pop("epoch", None)
        self._fields.update(fields)
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, completed=step, **self._fields)
        elif self.plain and evaluation:
            self._console.print(self.line(step, epoch), markup=False, highlight=False, soft_wrap=True)

    def line(self, step: int, epoch: float | None = None) -> str:
        """``<run id>  update 40/200 (20%)  epoch 1.00  loss 0.6931  val 0.5012  elapsed 0:00:12  eta 0:00:48``"""
        elapsed = time.monotonic() - (self._started or time.monotonic())
        done = step - (self._first_step or 0)
        eta = elapsed / done * (self.total - step) if done > 0 else float("nan")
        parts = [self._name, f"update {step}/{self.total} ({100 * step / max(1, self.total):.0f}%)"]
        if epoch is not None:
            parts.append(f"epoch {epoch:.2f}")
        parts += [f"loss {self._fields['loss']:.4f}", f"val {self._fields['metric']:.4f}",
                  f"elapsed {_clock(elapsed)}", f"eta {_clock(eta)}"]
        return "  ".join(parts)


def _clock(seconds: float) -> str:
    return "-" if not math.isfinite(seconds) else str(timedelta(seconds=round(seconds)))
