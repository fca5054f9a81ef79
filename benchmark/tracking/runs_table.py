"""The table of ``msd runs list``: every run with its true status, progress and headline.

Why the run id is never cut: it is what a user copies into ``teacher=``, ``msd eval`` or a
path. The table is fitted to the terminal by dropping whole columns, least useful first
(:data:`DROP_ORDER`), never by shortening an id; the id column is as wide as the longest id.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table

from benchmark.errors import UserError
from benchmark.tracking.run_status import STATUSES
from benchmark.tracking.run_store import RunStore

STYLES = {"completed": "green", "running": "cyan", "failed": "red", "interrupted": "yellow", "todo": "white"}
COLUMNS = ("run id", "status", "epochs/updates", "val", "test", "method", "seed", "dataset")
# Dropped in this order when the terminal is too narrow: the id starts with the dataset and
# the method, so those go first; then the least looked-at figures.
DROP_ORDER = ("dataset", "seed", "method", "test", "epochs/updates", "val", "status")


@dataclass
class RunRow:
    run_id: str
    status: str
    summary: dict[str, Any]
    progress: tuple[int | None, int | None, int | None]

    @property
    def method(self) -> str:
        method = str(self.summary.get("method") or "-")
        weighting = self.summary.get("weighting")
        return f"{method}-{weighting}" if weighting else method

    def cells(self) -> dict[str, str]:
        head = self.summary.get("headline") or {}
        epochs, updates, total = self.progress
        if updates is None:
            done = "-"
        else:
            done = f"{'-' if epochs is None else epochs}/{updates}"
            if total and self.status != "completed":
                done += f" of {total}"
        style = STYLES.get(self.status, "white")
        return {
            "run id": self.run_id,
            "status": f"[{style}]{self.status}[/{style}]",
            "epochs/updates": done,
            "method": self.method,
            "seed": str(self.summary.get("seed", "-")),
            "val": _fmt(head.get("val")),
            "test": _fmt(head.get("test")),
            "dataset": str(self.summary.get("dataset") or "-"),
        }


def _fmt(value: Any) -> str:
    return "-" if not isinstance(value, (int, float)) else f"{value:.4f}"


def collect_rows(store: RunStore, *, dataset: str | None = None, method: str | None = None,
                 status: str | None = None) -> list[RunRow]:
    """The store's runs matching every filter given (``method`` matches ``msd`` or ``msd-instance``)."""
    if status is not None and status not in (*STATUSES, "scored", "pruned"):
        raise UserError(f"--status {status!r} is not a run status; use one of {', '.join(STATUSES)}.")
    rows = []
    for run in store:
        summary = run.read_summary()
        if summary is None:
            continue
        row = RunRow(run.run_id, run.status, summary, run.progress())
        if dataset is not None and summary.get("dataset") != dataset:
            continue
        if method is not None and method not in (summary.get("method"), row.method):
            continue
        if status is not None and row.status != status:
            continue
        rows.append(row)
    return rows


def runs_table(rows: list[RunRow], console: Console, *, title: str | None = None) -> Table:
    """A table that fits ``console.width`` with every run id whole (folded only when the
    terminal is narrower than one id)."""
    columns = list(COLUMNS)
    for drop in (None, *DROP_ORDER):
        if drop is not None:
            columns.remove(drop)
        table = _build(rows, columns, title)
        unbounded = console.options.update(width=10**6)
        if console.measure(table, options=unbounded).maximum <= console.width:  # every cell whole
            return table
    return table


def _build(rows: list[RunRow], columns: list[str], title: str | None) -> Table:
    # No cell wraps, so the table's measured minimum is its real width and columns are
    # dropped whole rather than folded into unreadable slivers.
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, padding=(0, 1), pad_edge=False,
                  show_edge=False, collapse_padding=True)
    for name in columns:
        if name == "run id":  # narrower than one id: folded onto two lines, never cut
            table.add_column(name, overflow="fold")
        else:
            table.add_column(name, no_wrap=True, justify="right" if name in ("val", "test", "seed") else "left")
    for row in rows:
        cells = row.cells()
        table.add_row(*(cells[name] for name in columns))
    return table


def headline_caption(rows: list[RunRow]) -> str:
    """Which metric the val/test columns hold, per dataset."""
    metrics = sorted({(str(r.summary.get("dataset")), str(r.summary.get("headline_metric")))
                      for r in rows if r.summary.get("headline_metric")})
    return "val/test: " + ", ".join(f"{d} {m}" for d, m in metrics) if metrics else ""

