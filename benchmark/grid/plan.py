"""``msd grid plan``: what a grid will cost before it is submitted.

For every cell: the optimizer updates it will make (train size, epochs, ``max_updates``, batch
size and ``update_frequency``, by the trainer's own rule) and the device hours that takes, from
step times measured on the spot (:mod:`benchmark.grid.plan_timing`) or read from a file of
measurements made on the target machine. Teacher caches are priced as rows of their own, and
validation and final scoring are included. Every number that is an assumption (dataset sizes
and their source, epochs as an upper bound under early stopping, DDP scaling) is printed with
the table, so the estimate can be checked rather than trusted.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from benchmark import VIEWS
from benchmark.config.loader import size_preset
from benchmark.grid.cells import TEACHER, Cell, expand
from benchmark.grid.dag import CACHE, TRAIN, build_plan
from benchmark.grid.plan_data import CellData, DataCatalog, PlanError
from benchmark.grid.plan_timing import (
    MEASURED,
    Probe,
    StepTime,
    StepTimer,
    StepTimesFile,
    forward_probe,
    load_step_times,
    method_kind,
    train_probe,
)
from benchmark.grid.spec import DEFAULT_SCALE, load_grid
from benchmark.train.batching import resolve_device
from benchmark.train.sampler import EpochBatches, update_schedule

ROLES = (TEACHER, "student", "cache")


def count_updates(train_size: int, batch_size: int, update_frequency: int, max_epochs: int | None,
                  max_updates: int | None, world_size: int = 1) -> int:
    """Optimizer updates of a run, as the trainer counts them.

    An epoch is ``ceil(train_size / batch_size)`` global batches (``batch_size`` is global, as in
    MMF; the sampler drops a last batch smaller than the world size), an update takes
    ``update_frequency`` of them (the last one of an epoch may take fewer), and the run stops at
    ``max_epochs`` epochs or ``max_updates`` updates, whichever comes first.
    """
    if batch_size < 1 or update_frequency < 1:
        raise PlanError(f"training.batch_size ({batch_size}) and training.update_frequency ({update_frequency}) "
                        "must be at least 1.")
    batches = EpochBatches(train_size, batch_size, 0, world_size=world_size, shuffle=False).batches_per_epoch()
    if max_epochs is None and not max_updates:
        raise PlanError("training.max_epochs and training.max_updates are both unset: the run would never stop.")
    return update_schedule(batches, update_frequency, max_epochs, max_updates)[1]


@dataclass
class CostRow:
    """One line of the plan: a training cell, or a teacher-cache build (role ``cache``)."""

    name: str
    role: str
    dataset: str
    model: str
    size: str
    kind: str
    samples: int  # training samples (cache: records of all splits)
    epochs: int | None
    max_updates: int | None
    batch_size: int
    update_frequency: int
    gpus: int
    updates: int  # cache: forward batches
    update_s: float  # seconds per update (cache: per batch)
    train_h: float
    eval_h: float
    step_source: str
    estimated_elsewhere: bool = False  # a step time measured here although a file was given

    @property
    def hours(self) -> float:
        return self.train_h + self.eval_h

    @property
    def gpu_hours(self) -> float | None:
        return self.hours * self.gpus if self.gpus else None


@dataclass
class Totals:
    cells: int = 0
    updates: int = 0
    train_h: float = 0.0
    eval_h: float = 0.0
    gpu_h: float = 0.0

    def add(self, row: CostRow) -> None:
        self.cells += 1
        self.updates += row.updates if row.role != "cache" else 0
        self.train_h += row.train_h
        self.eval_h += row.eval_h
        self.gpu_h += row.gpu_hours or 0.0

    @property
    def hours(self) -> float:
        return self.train_h + self.eval_h


@dataclass
class CostPlan:
    grid: str
    scale: str
    device: str
    rows: list[CostRow]
    assumptions: list[str]
    datasets: dict[str, dict[str, Any]] = field(default_factory=dict)
    step_times: dict[Probe, StepTime] = field(default_factory=dict)

    def totals(self) -> dict[str, Totals]:
        out = {role: Totals() for role in ROLES}
        overall = Totals()
        for row in self.rows:
            out[row.role].add(row)
            overall.add(row)
        return {**{r: t for r, t in out.items() if t.cells}, "all": overall}

    def to_dict(self) -> dict[str, Any]:
        return {
            "grid": self.grid, "scale": self.scale, "device": self.device,
            "rows": [{**asdict(r), "hours": r.hours, "gpu_hours": r.gpu_hours} for r in self.rows],
            "totals": {role: {**asdict(t), "hours": t.hours} for role, t in self.totals().items()},
            "datasets": self.datasets, "assumptions": self.assumptions,
            "step_times": [{**asdict(p), **asdict(t)} for p, t in self.step_times.items()],
        }


class _Times:
    """Step times by probe: from the file where it has them, else measured here (once each)."""

    def __init__(self, timer: StepTimer, file: StepTimesFile | None, log: Callable[[str], None]) -> None:
        self.timer = timer
        self.file = file
        self.log = log
        self.known: dict[Probe, StepTime] = {}
        self.measured_here: set[Probe] = set()

    def get(self, probe: Probe, config: DictConfig, data: CellData, teacher: DictConfig | None = None) -> StepTime:
        if probe not in self.known:
            found = self.file.lookup(probe) if self.file else None
            if found is None:
                self.log(f"timing {probe.describe()} on {self.timer.device.type} ...")
                found = self.timer.measure(probe, config, data, teacher)
                self.measured_here.add(probe)
            self.known[probe] = found
        return self.known[probe]


def build_cost_plan(
    file: str | Path, scale: str = DEFAULT_SCALE, extra_args: list[str] | None = None, only: str | None = None, *,
    step_times: str | Path | None = None, device: str = "auto", threads: int = 1, warmup: int = 2, repeats: int = 5,
    log: Callable[[str], None] = lambda _: None,
) -> CostPlan:
    """Price every selected cell of a grid (and its teacher caches); nothing is written."""
    spec = load_grid(file, scale)
    file_times = load_step_times(step_times) if step_times else None
    grid = expand(spec, list(extra_args or []))
    dag = build_plan(grid, only)
    timer = StepTimer(resolve_device(device), threads, warmup=warmup, repeats=repeats)
    times = _Times(timer, file_times, log)
    by_name = grid.by_name()
    rows: list[CostRow] = []
    with DataCatalog() as catalog:
        data_of = lambda cell: catalog.for_cell(cell.config, cell.args, spec.data.size, spec.data.seed)  # noqa: E731
        for task in dag.tasks.values():
            if task.kind == TRAIN:
                rows.append(_train_row(task.cell, data_of(task.cell), times, by_name))
            elif task.kind == CACHE:
                teacher = by_name[task.payload["name"]]
                student = next(c for c in dag.cells if c.teacher == teacher.name and c.needs_cache)
                rows.append(_cache_row(teacher, student.config, data_of(student), times, task.resources.gpus))
        datasets = {d.dataset: {"records": d.records, "source": d.source, "detail": d.detail, "inputs": d.inputs}
                    for d in catalog.loaded()}
    device_text = timer.description
    if file_times:
        device_text = file_times.device + (f"; rows marked * partly on {timer.description}" if times.measured_here else "")
    plan = CostPlan(spec.name, scale, device_text, rows, [], datasets, dict(times.known))
    plan.assumptions = _assumptions(plan, times, file_times, dag.cells)
    return plan


def _world(gpus: int) -> int:
    return max(1, int(gpus))


def _train_row(cell: Cell, data: CellData, times: _Times, by_name: dict[str, Cell]) -> CostRow:
    c = cell.config
    t = c.training
    world = _world(cell.resources.gpus)
    batch_size, frequency = int(t.batch_size), int(t.get("update_frequency", 1) or 1)
    samples = data.train_size(c)
    max_epochs = None if t.get("max_epochs") is None else int(t.max_epochs)
    max_updates = int(t.max_updates) if t.get("max_updates") else None
    updates = count_updates(samples, batch_size, frequency, max_epochs, max_updates, world)
    teacher = by_name[cell.teacher].config if cell.teacher else None
    step = times.get(train_probe(c, math.ceil(batch_size / world)), c, data, teacher)
    eval_s, eval_times = _evaluation_seconds(c, data, updates, samples, batch_size, frequency, world, times)
    return CostRow(
        name=cell.name, role=cell.role, dataset=cell.dataset, model=str(c.model), size=size_preset(c),
        kind=method_kind(c), samples=samples, epochs=max_epochs, max_updates=max_updates, batch_size=batch_size,
        update_frequency=frequency, gpus=int(cell.resources.gpus), updates=updates,
        update_s=step.update_seconds(frequency), train_h=updates * step.update_seconds(frequency) / 3600,
        eval_h=eval_s / 3600, step_source=step.source,
        estimated_elsewhere=times.file is not None and any(t.source == MEASURED for t in (step, *eval_times)),
    )


def _evaluation_seconds(c: DictConfig, data: CellData, updates: int, samples: int, batch_size: int,
                        frequency: int, world: int, times: _Times) -> tuple[float, tuple[StepTime, ...]]:
    """Validation every ``evaluation_interval`` updates (default: once per epoch) on the views
    scored during training, then the final scoring of every evaluation split on every view."""
    per_device = max(1, 2 * batch_size // world)
    batches = lambda n: math.ceil(math.ceil(n / world) / per_device)  # noqa: E731 - each rank's shard
    per_epoch = update_schedule(EpochBatches(samples, batch_size, 0, world_size=world, shuffle=False)
                                .batches_per_epoch(), frequency, 1, None)[0]
    interval = int(c.training.get("evaluation_interval") or per_epoch)
    during = tuple(c.evaluation.get("views_during_training") or ("multi",))
    final_views = tuple(c.evaluation.views)
    splits = list(dict.fromkeys([*map(str, c.evaluation.splits), "val"]))
    validation = times.get(forward_probe(c, during, per_device), c, data)
    final = times.get(forward_probe(c, final_views, per_device), c, data)
    seconds = math.ceil(updates / interval) * batches(data.records["val"]) * validation.seconds
    return seconds + sum(batches(data.records[s]) * final.seconds for s in splits), (validation, final)


def _cache_row(teacher: Cell, student: DictConfig, data: CellData, times: _Times, gpus: int) -> CostRow:
    """The teacher's three views over every record of train, val and test, at the students'
    evaluation batch (``2 x training.batch_size``), on one device."""
    batch = 2 * int(student.training.batch_size)
    records = sum(data.records.values())
    batches = math.ceil(records / batch)
    step = times.get(forward_probe(teacher.config, VIEWS, batch), teacher.config, data)
    return CostRow(
        name=f"cache {teacher.name}", role="cache", dataset=teacher.dataset, model=str(teacher.config.model),
        size=size_preset(teacher.config), kind="forward:" + "+".join(VIEWS), samples=records, epochs=None,
        max_updates=None, batch_size=batch, update_frequency=1, gpus=int(gpus), updates=batches,
        update_s=step.seconds, train_h=batches * step.seconds / 3600, eval_h=0.0, step_source=step.source,
        estimated_elsewhere=times.file is not None and step.source == MEASURED,
    )


def _assumptions(plan: CostPlan, times: _Times, file: StepTimesFile | None, cells: list[Cell]) -> list[str]:
    timer = times.timer
    out = []
    measured = (f"measured here on {timer.description}: median of {timer.repeats} steps after {timer.warmup} "
                "warm-up steps, per distinct (model, size preset, dataset, per-device batch, method kind, precision)"
                + _load_note())
    if file is None:
        out.append(f"Step times {measured}.")
    else:
        out.append(f"Step times read from {file.path} ({file.device}).")
        if times.measured_here:
            out.append(f"{len(times.measured_here)} probe(s) missing from that file were {measured} (rows marked *): "
                       + "; ".join(p.describe() for p in sorted(times.measured_here, key=Probe.describe)) + ".")
    for name, info in plan.datasets.items():
        r = info["records"]
        out.append(f"{name}: {r['train']:,} train / {r['val']:,} val / {r['test']:,} test records ({info['source']}: "
                   f"{info['detail']}); step inputs: {info['inputs']}.")
    meta = {(float(c.config.data.meta_split.fraction), str(c.config.data.meta_split.hold_out)) for c in cells}
    out.append("Train samples exclude the held-out meta split (data.meta_split: "
               + ", ".join(f"fraction {f}, hold_out {h}" for f, h in sorted(meta)) + ").")
    patience = sorted({int(c.config.training.early_stop.patience) for c in cells
                       if c.config.training.early_stop.enabled})
    stop = (f"early stopping (patience {', '.join(map(str, patience))} evaluations) may end runs sooner, so the "
            "updates and hours are upper bounds" if patience else "early stopping is off: runs make every update")
    out.append("Updates = ceil(ceil(train samples / batch_size) / update_frequency) per epoch x max_epochs, capped "
               f"by max_updates (the trainer's rule; batch_size is the global batch); {stop}.")
    out.append("An update = update_frequency x (forward + backward of one batch) + one optimizer step. A cell with "
               "G > 1 GPUs is timed at its per-device batch (batch_size / G): ideal DDP scaling, gradient "
               "communication not included. GPU time = time x GPUs per task (resources.gpus); '-' for CPU cells.")
    out.append("Evaluation included: validation on evaluation.views_during_training every evaluation_interval "
               "updates (default once per epoch), then every evaluation split on every evaluation.views, at batch "
               "2 x batch_size (run_type train_val_test). Not included: process start, data loading, "
               "checkpoints, predictions files, W&B, queue time.")
    if any(r.role == "cache" for r in plan.rows):
        out.append("Teacher caches: one no-grad pass of the teacher over the three views of every train, val and "
                   "test record, on one device (rows 'cache'); a cached teacher's outputs are read from memory in "
                   "the student probes (a page-cache-resident cache).")
    out.append("Hours are per cell and add up; the grid's wall-clock time depends on how many cells run at once.")
    return out


def _load_note() -> str:
    """Other work on the machine slows the probes down; say how much there was."""
    try:
        load = os.getloadavg()[0]
    except OSError:
        return ""
    return f", with a 1-minute load average of {load:.1f} on {os.cpu_count()} cores at the end (load inflates CPU times)"


def render(plan: CostPlan, console: Any) -> None:
    """The plan as a rich table, the totals, and the assumptions."""
    from rich.table import Table

    table = Table(title=f"{plan.grid} (scale {plan.scale}): cost on {plan.device}", title_justify="left")
    for header, justify in (("cell", "left"), ("role", "left"), ("train N", "right"), ("epochs", "right"),
                            ("max upd", "right"), ("batch x f", "right"), ("updates", "right"),
                            ("s/update", "right"), ("time", "right"), ("GPUs", "right"), ("GPU time", "right")):
        table.add_column(header, justify=justify, no_wrap=header == "cell")
    for r in plan.rows:
        cache = r.role == "cache"
        table.add_row(
            r.name + (" *" if r.estimated_elsewhere else ""), r.role, f"{r.samples:,}",
            "-" if r.epochs is None else str(r.epochs), "-" if r.max_updates is None else f"{r.max_updates:,}",
            f"{r.batch_size}" if cache else f"{r.batch_size} x {r.update_frequency}",
            f"{r.updates:,}" + (" batches" if cache else ""), _seconds(r.update_s), _hours(r.hours),
            str(r.gpus), "-" if r.gpu_hours is None else _hours(r.gpu_hours),
        )
    console.print(table)
    totals = Table(title="Totals", title_justify="left")
    for header in ("role", "rows", "updates", "training", "evaluation", "time", "GPU time"):
        totals.add_column(header, justify="left" if header == "role" else "right")
    for role, t in plan.totals().items():
        totals.add_row(role, str(t.cells), f"{t.updates:,}", _hours(t.train_h), _hours(t.eval_h), _hours(t.hours),
                       _hours(t.gpu_h) if t.gpu_h else "-", style="bold" if role == "all" else None)
    console.print(totals)
    console.print("Assumptions:", style="bold")
    for line in plan.assumptions:
        console.print(f"- {line}", highlight=False, soft_wrap=True)


def _hours(h: float) -> str:
    seconds = h * 3600
    return f"{h:,.2f} h" if seconds >= 360 else f"{seconds / 60:.1f} min" if seconds >= 100 else f"{seconds:.1f} s"


def _seconds(s: float) -> str:
    return f"{s * 1000:.1f} ms" if s < 1 else f"{s:.2f} s"

