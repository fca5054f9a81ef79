"""The work of a grid as a DAG: data → teachers → teacher caches → students.

Why the cache is its own node: students of one teacher run in parallel, and each would
otherwise find the cache missing and build it at the same moment (a race on the same
directory, and the same work done N times). Building it once, before any of them starts,
makes the students pure readers.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from benchmark.config.loader import dataset_node
from benchmark.distill.fingerprint import digest
from benchmark.grid.cells import Cell, ExpandedGrid
from benchmark.grid.spec import Resources

DATA, CACHE, TRAIN = "data", "cache", "train"


@dataclass
class Task:
    id: str
    kind: str
    label: str
    deps: tuple[str, ...]
    payload: dict[str, Any]
    resources: Resources = field(default_factory=Resources)
    cell: Cell | None = None

    @property
    def log_path(self) -> Path | None:
        """Where a local worker's output goes: the run directory for training tasks."""
        if self.cell is None:
            return None
        return Path(str(self.cell.config.env.save_dir)) / self.cell.run_id / "log.txt"


@dataclass
class Plan:
    grid: ExpandedGrid
    cells: list[Cell]
    tasks: dict[str, Task]  # in a topological order

    @property
    def save_dir(self) -> Path:
        return Path(str(self.cells[0].config.env.save_dir))

    @property
    def state_dir(self) -> Path:
        """Per-grid runner state (lock, task files, logs), next to the run store."""
        return self.save_dir.parent / "grids" / self.grid.spec.group.replace("/", "_")

    def dependents(self, task_id: str) -> set[str]:
        """Every task that (transitively) needs ``task_id``."""
        children: dict[str, list[str]] = {}
        for task in self.tasks.values():
            for dep in task.deps:
                children.setdefault(dep, []).append(task.id)
        out: set[str] = set()
        stack = [task_id]
        while stack:
            for child in children.get(stack.pop(), []):
                if child not in out:
                    out.add(child)
                    stack.append(child)
        return out

    def train_tasks(self) -> list[Task]:
        return [t for t in self.tasks.values() if t.kind == TRAIN]


def build_plan(grid: ExpandedGrid, only: str | Iterable[str] | None = None) -> Plan:
    """Tasks for the selected cells (and the teachers they need), dependencies wired."""
    cells = grid.select(list(only) if only is not None and not isinstance(only, str) else only)
    tasks: dict[str, Task] = {}
    by_name = grid.by_name()
    for cell in cells:
        data_id = _data_task(cell, grid, tasks)
        deps = [data_id]
        if cell.teacher:
            teacher = by_name[cell.teacher]
            deps.append(train_id(teacher))
            if cell.needs_cache:
                deps.append(_cache_task(cell, teacher, data_id, grid, tasks))
        tasks.setdefault(train_id(cell), Task(
            id=train_id(cell), kind=TRAIN, label=cell.name, deps=tuple(deps), cell=cell,
            resources=cell.resources, payload=_train_payload(cell, grid),
        ))
    order = _topological(tasks)
    return Plan(grid=grid, cells=cells, tasks={t: tasks[t] for t in order})


def train_id(cell: Cell) -> str:
    return f"{TRAIN}:{cell.run_id}"


def _train_payload(cell: Cell, grid: ExpandedGrid) -> dict[str, Any]:
    return {
        "kind": TRAIN, "run_id": cell.run_id, "name": cell.name, "role": cell.role,
        "group": grid.spec.group, "config": OmegaConf.to_container(cell.config, resolve=True),
    }


def _data_task(cell: Cell, grid: ExpandedGrid, tasks: dict[str, Task]) -> str:
    data_dir = str(cell.config.env.data_dir)
    task_id = f"{DATA}:{cell.dataset}@{data_dir}"
    if task_id not in tasks:
        spec = grid.spec.data
        tasks[task_id] = Task(
            id=task_id, kind=DATA, label=f"data {cell.dataset}", deps=(),
            payload={"kind": DATA, "dataset": cell.dataset, "data_dir": data_dir, "size": spec.size,
                     "seed": spec.seed, "generate": spec.generate,
                     "config": OmegaConf.to_container(cell.config, resolve=True)},
        )
    return task_id


def _cache_task(cell: Cell, teacher: Cell, data_id: str, grid: ExpandedGrid, tasks: dict[str, Task]) -> str:
    """One cache per (teacher, dataset preprocessing): what the cache key depends on."""
    node = OmegaConf.to_container(dataset_node(cell.config), resolve=True)
    task_id = f"{CACHE}:{teacher.run_id}:{digest(node)[:8]}@{cell.config.env.cache_dir}"
    if task_id not in tasks:
        tasks[task_id] = Task(
            id=task_id, kind=CACHE, label=f"cache {teacher.name}", deps=(data_id, train_id(teacher)),
            resources=teacher.resources,
            payload={"kind": CACHE, "teacher": teacher.run_id, "name": teacher.name, "group": grid.spec.group,
                     "config": OmegaConf.to_container(cell.config, resolve=True)},
        )
    return task_id


def _topological(tasks: dict[str, Task]) -> list[str]:
    """Kahn's algorithm, stable: data first, then the order in which cells were listed."""
    rank = {DATA: 0, TRAIN: 1, CACHE: 1}
    pending = {tid: set(t.deps) for tid, t in tasks.items()}
    order: list[str] = []
    position = {tid: i for i, tid in enumerate(tasks)}
    while pending:
        ready = sorted((tid for tid, deps in pending.items() if not deps),
                       key=lambda t: (rank[tasks[t].kind], position[t]))
        if not ready:
            raise RuntimeError(f"dependency cycle among {sorted(pending)}")
        for tid in ready:
            order.append(tid)
            del pending[tid]
        for deps in pending.values():
            deps.difference_update(ready)
    return order
