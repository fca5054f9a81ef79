"""Progress display for long work (rich), silent when disabled or not interactive."""

from __future__ import annotations

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
    """One bar per run: updates done / total, loss, last validation metric, ETA."""

    def __init__(self, name: str, total: int, enabled: bool = True, console: Console | None = None) -> None:
        self.enabled = enabled
        self.total = total
        self._fields = {"loss": float("nan"), "metric": float("nan")}
        self._progress = (
            Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]:.4f} val {task.fields[metric]:.4f}"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=console or Console(stderr=True),
                transient=False,
            )
            if enabled
            else None
        )
        self._task = None
        self._name = name

    def __enter__(self) -> TrainingProgress:
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
        self._fields.update(fields)
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, completed=step, **self._fields)
