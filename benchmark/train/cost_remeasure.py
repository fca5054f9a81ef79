"""Re-measuring the cost of finished runs later, interleaved (``msd cost remeasure <grid.yaml>``).

Why: every run measures its one-thread CPU latency at the end of training
(:mod:`benchmark.train.cost`), while other runs of its grid train beside it. Runs that share
one architecture then differ in latency by up to 5x: the load of the moment, not the model.
This module measures the finished runs of a grid again, on a quiet machine, with the runs
*interleaved*: ``rounds`` rounds, and in each round every run gets one short timed block
(``repeats`` timed calls per batch size after ``warmup`` untimed ones), in a seeded order that
changes from round to round. Load that drifts during the measurement then hits every run
alike, and each run's latency is the median (with quartiles) of all its timed passes pooled.

Every figure is taken with :mod:`benchmark.train.cost`'s own functions (``time_calls``,
``timing_of``, ``latency_record``, ``peak_memory_bytes``, ``count_flops``) on the same input
as at the end of training (the first samples of the run's test split, else val), and the
model is rebuilt from the run's stored config and ``checkpoint.pt`` (the evaluated weights)
with the re-scoring code (:func:`benchmark.train.rescore.load_run_model`). FLOPs and
parameters are recounted on the rebuilt model, and the record says whether they match the
run's summary (they must: same architecture). The result goes to ``<run>/cost_remeasured.json``;
``summary.json`` is never rewritten. ``analysis/efficiency.py`` prefers these figures.
"""

from __future__ import annotations

import os
import platform
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from torch import nn

from benchmark.errors import CheckpointError, ConfigError, UserError
from benchmark.tracking.atomic import write_json_atomic
from benchmark.tracking.run_store import RunDir
from benchmark.train.checkpoint import BEST
from benchmark.train.cost import (
    VIEW,
    _Threads,
    count_flops,
    latency_record,
    peak_memory_bytes,
    sample_batch,
    time_calls,
    timing_of,
)

REMEASURED_FILE = "cost_remeasured.json"
RECORD_VERSION = 1
# One timed block of a run: seconds of each timed call, per batch size.
Block = Mapping[int, Sequence[float]]


class RemeasureError(UserError):
    """Nothing to re-measure, or a finished run that cannot be rebuilt."""


# -- settings ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RemeasureSettings:
    """How to interleave: ``rounds`` rounds of one block per run, each block ``repeats`` timed
    calls per batch size after ``warmup`` untimed ones; ``seed`` fixes the orders."""

    rounds: int = 7
    repeats: int = 5
    warmup: int = 2
    batch_sizes: tuple[int, ...] = (1, 64)
    seed: int = 0


def remeasure_settings(rounds: Any = 7, repeats: Any = 5, warmup: Any = 2, batch_sizes: Any = "1,64",
                       seed: Any = 0) -> RemeasureSettings:
    """Check the command's options; a bad value is a :class:`ConfigError` naming the option."""
    rounds = _integer(rounds, "--rounds", 1, "interleaved rounds; every run gets one timed block per round")
    repeats = _integer(repeats, "--repeats", 1, "timed calls per batch size in each block")
    warmup = _integer(warmup, "--warmup", 0, "untimed calls before each block")
    seed = _integer(seed, "--seed", 0, "the seed of the round orders")
    if isinstance(batch_sizes, str):
        parts = [p.strip() for p in batch_sizes.split(",")]
        if not batch_sizes.strip() or any(not p.lstrip("-").isdigit() for p in parts):
            raise ConfigError(f"--batch-sizes must be comma-separated integers >= 1 (e.g. 1,64), got {batch_sizes!r}.")
        batch_sizes = [int(p) for p in parts]
    sizes = tuple(_integer(s, "--batch-sizes", 1, "a batch size") for s in batch_sizes)
    if not sizes:
        raise ConfigError("--batch-sizes must name at least one batch size (e.g. 1,64).")
    return RemeasureSettings(rounds, repeats, warmup, tuple(dict.fromkeys(sizes)), seed)


def _integer(value: Any, option: str, low: int, meaning: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"{option} must be an integer >= {low} ({meaning}), got {value!r}.")
    return value


# -- interleaving -----------------------------------------------------------------------------------
def round_orders(names: Sequence[str], rounds: int, seed: int) -> list[list[str]]:
    """The order of the runs in each round: a seeded shuffle per round, never the same order
    twice in a row (with two runs or more), so no run always follows the same other run or
    always goes first. The same ``seed`` gives the same orders."""
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    rng = random.Random(seed)
    orders: list[list[str]] = []
    for _ in range(rounds):
        order = list(names)
        rng.shuffle(order)
        while len(set(names)) > 1 and orders and order == orders[-1]:
            rng.shuffle(order)
        orders.append(order)
    return orders


@dataclass
class Interleaved:
    """What :func:`interleave` measured: per run and batch size, every timed call in round
    order; the orders; and each run's position in every round."""

    times: dict[str, dict[int, list[float]]]
    orders: list[list[str]]

    def positions(self, name: str) -> list[int]:
        return [order.index(name) for order in self.orders]


def interleave(names: Sequence[str], rounds: int, seed: int, block: Callable[[str], Block],
               on_round: Callable[[int, list[str], float], None] | None = None) -> Interleaved:
    """Run ``block(name)`` once per run in each of ``rounds`` rounds (orders: :func:`round_orders`)
    and collect its timed calls; ``on_round(index, order, seconds)`` after each round."""
    if not names:
        raise ValueError("interleave needs at least one run")
    orders = round_orders(names, rounds, seed)
    times: dict[str, dict[int, list[float]]] = {name: {} for name in names}
    for index, order in enumerate(orders):
        started = time.perf_counter()
        for name in order:
            for size, seconds in block(name).items():
                times[name].setdefault(int(size), []).extend(float(s) for s in seconds)
        if on_round is not None:
            on_round(index, order, time.perf_counter() - started)
    return Interleaved(times, orders)


def pooled_latency(times: Sequence[float], batch_size: int, settings: RemeasureSettings) -> dict[str, Any]:
    """One run's latency record at one batch size from all its timed passes pooled over the
    rounds: :func:`~benchmark.train.cost.latency_record` (median, quartiles, IQR per batch and
    per sample; ``repeats`` = the number of passes pooled) with the interleaving's shape."""
    record = latency_record(timing_of(times, settings.warmup), batch_size)
    return {**record, "passes": len(times), "rounds": settings.rounds, "repeats_per_round": settings.repeats}


# -- the runs ---------------------------------------------------------------------------------------
@dataclass
class Target:
    """One finished run, rebuilt for measuring: its model (eval mode, CPU) and input batches."""

    name: str
    run: RunDir
    model: nn.Module
    split: str
    batches: dict[int, dict]
    one: dict  # a batch of one sample, for the FLOPs
    summary_cost: dict[str, Any] = field(default_factory=dict)


def finished_runs(cells: Sequence[Any]) -> tuple[list[tuple[str, RunDir]], list[str]]:
    """(completed runs, other cells' reasons) among grid ``cells``; the grid's own status
    (:func:`benchmark.grid.status.run_status`, as ``msd robustness`` uses) decides. A run whose
    summary says completed but whose ``checkpoint.pt`` is missing is an error: its cost cannot
    be re-measured, and skipping it silently would leave the table mixing sources."""
    from benchmark.grid.status import DONE, run_status

    done, other, broken = [], [], []
    seen: set[str] = set()
    for cell in cells:
        if cell.run_id in seen:
            continue
        seen.add(cell.run_id)
        status, summary = run_status(cell)
        run = RunDir(Path(str(cell.config.env.save_dir)) / cell.run_id)
        if status == DONE:
            done.append((cell.name, run))
        elif summary.get("status") == "completed" and not run.file(BEST).exists():
            broken.append(f"{cell.name} ({run.path})")
        else:
            other.append(f"{cell.name}: run is {status}")
    if broken:
        raise CheckpointError(
            f"{len(broken)} completed run(s) have no {BEST}, so their evaluated weights cannot be re-measured: "
            f"{'; '.join(broken)}. Retrain them (delete the run directory and `msd grid run` again) or leave them "
            "out with --only.")
    return done, other


def load_target(name: str, run: RunDir, batch_sizes: Sequence[int]) -> Target:
    """Rebuild a finished run's model from its config and ``checkpoint.pt`` (the weights it
    evaluated), with batches from its test split (else val) as at the end of training."""
    from benchmark.data.build import build_dataset
    from benchmark.train.rescore import load_run_model, run_config

    checkpoint = run.file(BEST)
    if not checkpoint.exists():
        raise CheckpointError(f"Run {run.run_id} ({run.path}) has no {BEST}; its cost cannot be re-measured.")
    _, config = run_config(run, [])
    split = "test" if "test" in list(config.evaluation.splits) else "val"
    dataset = build_dataset(config, split)
    model, _, _ = load_run_model(config, checkpoint, {split: dataset})
    model.eval()
    batches = {size: sample_batch(dataset, size) for size in batch_sizes}
    one = batches.get(1) or sample_batch(dataset, 1)
    summary_cost = (run.read_summary() or {}).get("cost") or {}
    return Target(name, run, model, split, batches, one, summary_cost)


def timed_block(target: Target, settings: RemeasureSettings) -> Block:
    """One block of ``target``: at each batch size, ``warmup`` untimed then ``repeats`` timed calls."""
    out = {}
    for size, batch in target.batches.items():
        timing = time_calls(lambda b=batch: target.model.forward_views(b, (VIEW,)), settings.repeats, settings.warmup)
        out[size] = list(timing.times_s)
    return out


# -- the record -------------------------------------------------------------------------------------
def machine_info() -> dict[str, Any]:
    """What the figures were measured on: CPU model, core count, platform, library versions."""
    cpu = platform.processor() or None
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    return {"cpu": cpu, "cpus": os.cpu_count(), "machine": platform.machine(), "platform": platform.platform(),
            "hostname": platform.node(), "python": platform.python_version(), "torch": torch.__version__}


def load_average() -> list[float] | None:
    """The kernel's 1, 5 and 15 minute load averages (None where the platform has none)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def architecture(target: Target) -> dict[str, Any]:
    """Parameters and FLOPs recounted on the rebuilt model, next to the summary's, and whether
    they agree (a rebuilt model of another shape would be measuring something else)."""
    params = sum(p.numel() for p in target.model.parameters() if p.requires_grad)
    flops = count_flops(lambda: target.model.forward_views(target.one, (VIEW,)))
    stored = {k: target.summary_cost.get(k) for k in ("params", "flops_per_sample")}
    same = None if None in stored.values() else (stored["params"] == params and stored["flops_per_sample"] == flops)
    return {"params": params, "flops_per_sample": flops,
            "architecture": {"source": "recounted on the rebuilt model", "summary": stored, "matches_summary": same}}


def build_record(target: Target, measured: Interleaved, settings: RemeasureSettings, *, run_ids: Sequence[str],
                 load_start: list[float] | None, load_end: list[float] | None, started_at: str,
                 seconds: float, machine: Mapping[str, Any]) -> dict[str, Any]:
    """The content of one run's ``cost_remeasured.json`` (the ``cpu`` part in ``summary.json``'s shape)."""
    with torch.no_grad(), _Threads(1):
        arch = architecture(target)
        memory = {str(size): peak_memory_bytes(target.model, batch, torch.device("cpu"))
                  for size, batch in target.batches.items()}
    latency = {str(size): pooled_latency(measured.times[target.run.run_id][size], size, settings)
               for size in target.batches}
    return {
        "version": RECORD_VERSION,
        "run_id": target.run.run_id,
        "cell": target.name,
        "view": VIEW,
        "split": target.split,
        "checkpoint": BEST,
        **arch,
        "cpu": {"threads": 1, "device": "cpu", "latency": latency, "peak_memory_bytes": memory},
        "interleave": {"rounds": settings.rounds, "repeats": settings.repeats, "warmup": settings.warmup,
                       "batch_sizes": list(settings.batch_sizes), "seed": settings.seed,
                       "runs": len(run_ids), "run_ids": list(run_ids), "positions": measured.positions(target.run.run_id)},
        "load_average": {"start": load_start, "end": load_end, "cpus": os.cpu_count()},
        "machine": dict(machine),
        "started_at": started_at,
        "created_at": _now(),
        "measure_time_s": round(seconds, 3),
    }


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# -- a grid -----------------------------------------------------------------------------------------
@dataclass
class RemeasureOutcome:
    measured: list[str]  # run ids written
    skipped: list[str]  # run ids that already had a record (--only-missing)
    not_finished: list[str]  # cells without a completed run, with their status
    load_start: list[float] | None = None
    load_end: list[float] | None = None
    seconds: float = 0.0
    paths: list[Path] = field(default_factory=list)


def remeasure_grid(cells: Sequence[Any], settings: RemeasureSettings, *, force: bool = False,
                   announce: Callable[[str], None] = print,
                   on_round: Callable[[int, list[str], float], None] | None = None,
                   block: Callable[[Target, RemeasureSettings], Block] = timed_block) -> RemeasureOutcome:
    """Re-measure every completed run among grid ``cells``, interleaved, and write each one's
    ``cost_remeasured.json``. Runs that have one are skipped unless ``force``. A grid with no
    completed run is an error (there is nothing to measure)."""
    done, other = finished_runs(cells)
    if not done:
        detail = f" ({'; '.join(other[:5])}{' …' if len(other) > 5 else ''})" if other else ""
        raise RemeasureError(f"No finished run among the {len(cells)} cell(s) of this grid{detail}: train them with "
                             "`msd grid run <grid.yaml>` (same --scale and key=value arguments) first.")
    todo, outcome = [], RemeasureOutcome([], [], other)
    for name, run in done:
        if force or not run.file(REMEASURED_FILE).exists():
            todo.append((name, run))
        else:
            outcome.skipped.append(run.run_id)
            announce(f"{name} ({run.run_id}): already re-measured, skipped (--force measures it again)")
    if not todo:
        return outcome
    targets: dict[str, Target] = {}
    for name, run in todo:
        with _Threads(1):
            targets[run.run_id] = load_target(name, run, settings.batch_sizes)
    names = list(targets)
    announce(f"re-measuring {len(names)} run(s): {settings.rounds} interleaved rounds x {settings.repeats} timed "
             f"calls per batch size {list(settings.batch_sizes)} (warm-up {settings.warmup}), one thread")
    started_at, machine = _now(), machine_info()
    outcome.load_start = load_average()
    tick = time.perf_counter()
    with torch.no_grad(), _Threads(1):
        measured = interleave(names, settings.rounds, settings.seed, lambda rid: block(targets[rid], settings), on_round)
    outcome.seconds = time.perf_counter() - tick
    outcome.load_end = load_average()
    for rid in names:
        record = build_record(targets[rid], measured, settings, run_ids=names, load_start=outcome.load_start,
                              load_end=outcome.load_end, started_at=started_at, seconds=outcome.seconds,
                              machine=machine)
        if record["architecture"]["matches_summary"] is False:
            announce(f"warning: {targets[rid].name} ({rid}): the rebuilt model's parameters or FLOPs "
                     f"({record['params']}, {record['flops_per_sample']}) differ from its summary's "
                     f"{record['architecture']['summary']}; was the run's config or code changed since it trained?")
        path = targets[rid].run.file(REMEASURED_FILE)
        write_json_atomic(path, record)
        outcome.measured.append(rid)
        outcome.paths.append(path)
    return outcome


def read_remeasured(run_dir: str | Path) -> dict[str, Any] | None:
    """A run's ``cost_remeasured.json``, or None when it has none (or an unreadable one)."""
    import json

    try:
        record = json.loads((Path(run_dir) / REMEASURED_FILE).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return record if isinstance(record, dict) and isinstance(record.get("cpu"), dict) else None
