"""The live progress view of ``msd grid run`` and its final report.

Why counts + ETA + the running list and nothing more: with tens of cells the question is
"how far along, how long to go, is anything stuck or failing" — the per-run training bars
live in each run's ``log.txt``.
"""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

from benchmark.grid.status import STYLES


def fmt_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class GridView:
    """Renders the runner's state; a plain line per finished task when not interactive."""

    def __init__(self, title: str, total_cells: int, parallel: int, *, live: bool, console: Console) -> None:
        self.title = title
        self.total = total_cells
        self.parallel = max(1, parallel)
        self.console = console
        self.started = time.time()
        self.durations: list[float] = []
        self.progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 console=console)
        self.task = self.progress.add_task("cells", total=total_cells)
        self._live = Live(console=console, refresh_per_second=4, transient=True) if live else None
        self._running: dict[str, float] = {}
        self._counts: dict[str, int] = {}

    def __enter__(self) -> GridView:
        if self._live is not None:
            self._live.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._live is not None:
            self._live.stop()

    def finished(self, label: str, status: str, seconds: float, detail: str = "", *, is_cell: bool) -> None:
        if is_cell and status == "done":
            self.durations.append(seconds)
        style = STYLES.get(status, "white")
        extra = f"  [dim]{detail}[/dim]" if detail else ""
        self.console.print(f"[{style}]{status:>8}[/{style}]  {label}  [dim]{fmt_seconds(seconds)}[/dim]{extra}",
                           highlight=False)

    def update(self, counts: dict[str, int], running: dict[str, float]) -> None:
        self._counts, self._running = counts, running
        if self._live is not None:
            self._live.update(self._render())

    def eta(self) -> float | None:
        remaining = self._counts.get("todo", 0) + self._counts.get("running", 0)
        if not remaining:
            return 0.0
        if not self.durations:
            return None
        mean = sum(self.durations) / len(self.durations)
        return remaining * mean / min(self.parallel, remaining)

    def _render(self) -> Group:
        c = self._counts
        finished = c.get("done", 0) + c.get("failed", 0) + c.get("blocked", 0)
        info = (f"[green]{c.get('done', 0)} done[/] · [cyan]{c.get('running', 0)} running[/] · "
                f"[red]{c.get('failed', 0)} failed[/] · [magenta]{c.get('blocked', 0)} blocked[/] · "
                f"{c.get('todo', 0)} todo · elapsed {fmt_seconds(time.time() - self.started)} · "
                f"ETA {fmt_seconds(self.eta())}")
        self.progress.update(self.task, completed=finished)
        table = Table(show_header=False, box=None, pad_edge=False)
        now = time.time()
        for label, since in sorted(self._running.items(), key=lambda kv: kv[1]):
            table.add_row("[cyan]running[/]", label, fmt_seconds(now - since))
        return Group(f"[bold]{self.title}[/bold]", self.progress, info, table)
