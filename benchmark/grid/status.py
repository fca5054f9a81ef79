"""What state each cell of a grid is in, read from the run store (``msd grid show``).

Why from the run store, locks and heartbeats only: the store is the record of truth (a
grid's own memory can be lost with a killed runner); a run's lock or heartbeat says whether
a live process is training it right now, so a "running" summary left by a killed worker
shows as ``interrupted`` (it resumes), not as running forever.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.table import Table

from benchmark.grid.cells import Cell, ExpandedGrid
from benchmark.grid.locks import is_locked, run_lock_path
from benchmark.tracking.run_status import FAILED, INTERRUPTED, RUNNING, TODO, true_status
from benchmark.tracking.run_store import RunDir

# A cell's states: the run's own (benchmark.tracking.run_status) plus the grid's view of them.
DONE, PARTIAL, BLOCKED = "done", "partial", "blocked"
STYLES = {DONE: "green", RUNNING: "cyan", FAILED: "red", PARTIAL: "yellow", TODO: "white", BLOCKED: "magenta",
          "skipped": "green", INTERRUPTED: "yellow"}


@dataclass
class CellStatus:
    cell: Cell
    status: str
    summary: dict[str, Any]

    @property
    def run_dir(self) -> Path:
        return Path(str(self.cell.config.env.save_dir)) / self.cell.run_id

    @property
    def detail(self) -> str:
        if self.status == DONE:
            head = (self.summary.get("headline") or {}).get("val")
            metric = self.summary.get("headline_metric") or "headline"
            return f"val {metric} {head:.4f}" if isinstance(head, (int, float)) else ""
        if self.status in (FAILED, BLOCKED):
            return str(self.summary.get("error") or "")[:120]
        if self.status == INTERRUPTED:
            return "resumes from last.pt" if (self.run_dir / "last.pt").exists() else "restarts (no checkpoint yet)"
        if self.status == PARTIAL:
            return "incomplete: redone"
        return ""


def run_status(cell: Cell) -> tuple[str, dict[str, Any]]:
    """One cell's status and summary (``{}`` when it has none)."""
    save_dir = str(cell.config.env.save_dir)
    run = RunDir(Path(save_dir) / cell.run_id)
    summary = run.read_summary() or {}
    if run.is_complete():
        return DONE, summary
    if is_locked(run_lock_path(save_dir, cell.run_id)):
        return RUNNING, summary
    state = true_status(summary or None, run.path)  # alive by heartbeat (another host), or dead
    if state in (TODO, RUNNING, FAILED, INTERRUPTED):
        return state, summary
    return PARTIAL, summary  # "completed" with files missing, or a status of its own: redone


def grid_status(grid: ExpandedGrid, cells: list[Cell] | None = None) -> list[CellStatus]:
    """Statuses of ``cells`` (default: all); students of a failed teacher are ``blocked``."""
    cells = cells if cells is not None else grid.cells
    by_name = grid.by_name()
    cache: dict[str, tuple[str, dict[str, Any]]] = {}

    def status_of(cell: Cell) -> tuple[str, dict[str, Any]]:
        if cell.name not in cache:
            cache[cell.name] = run_status(cell)
        return cache[cell.name]

    out = []
    for cell in cells:
        status, summary = status_of(cell)
        if cell.teacher and status in (TODO, PARTIAL, INTERRUPTED) and status_of(by_name[cell.teacher])[0] == FAILED:
            status = BLOCKED
            summary = {**summary, "error": f"teacher {cell.teacher} failed"}
        out.append(CellStatus(cell, status, summary))
    return out


def counts(statuses: list[CellStatus]) -> dict[str, int]:
    out = dict.fromkeys((DONE, RUNNING, FAILED, BLOCKED, INTERRUPTED, PARTIAL, TODO), 0)
    for s in statuses:
        out[s.status] = out.get(s.status, 0) + 1
    return out


def status_table(grid: ExpandedGrid, statuses: list[CellStatus], *, title: str | None = None) -> Table:
    table = Table(title=title or f"grid {grid.spec.group} ({grid.spec.path.name})", title_justify="left")
    for column in ("cell", "role", "run id", "status", "detail"):
        table.add_column(column, overflow="fold")
    for s in statuses:
        name = s.cell.name + (f" (= {', '.join(s.cell.aliases)})" if s.cell.aliases else "")
        style = STYLES.get(s.status, "white")
        table.add_row(name, s.cell.role, s.cell.run_id, f"[{style}]{s.status}[/{style}]", s.detail)
    c = counts(statuses)
    table.caption = " · ".join(f"{v} {k}" for k, v in c.items() if v) + f" · {len(statuses)} cells"
    return table
