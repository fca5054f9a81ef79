"""Timing variants on a shared, noisy machine: interleave them and compare per-round ratios.

Timing variant A for a minute and then variant B for a minute measures the machine as much as
the code: when another job starts half-way, B looks slow (``bench/distill_bench.py`` once gave
MSD/KD = 0.52 on a loaded 2-core machine against 1.03 on a quiet one). Running A B A B ...
exposes both variants to the same load, and the ratio *within* a round cancels most of it; the
median of the per-round ratios, with its interquartile range and extremes, then says how much
to trust the figure. Every benchmark also prints how loaded the machine was at start and end.

Benchmarks run as scripts (``python bench/x.py``), so ``bench/`` is on ``sys.path``::

    from interleave import interleave, load_snapshot, ratio_summary, timed

    before = load_snapshot()
    times = interleave({"kd": timed(step_kd), "msd": timed(step_msd)}, rounds=20)
    print(ratio_summary(times["msd"], times["kd"]))   # 1.03 (IQR 0.99-1.06, range 0.91-1.20, n=20)
    print(before, load_snapshot(), sep="\\n")

A variant returns the seconds it measured itself, so it can exclude its own set-up (or time a
block of several steps and return their sum).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np


def timed(fn: Callable[[], object]) -> Callable[[], float]:
    """A variant that times one call of ``fn`` with ``time.perf_counter``."""

    def variant() -> float:
        tick = time.perf_counter()
        fn()
        return time.perf_counter() - tick

    return variant


def round_order(names: Sequence[str], round_index: int, rotate: bool = True) -> list[str]:
    """Who runs when in a round: rotated by one each round, so no variant always goes first
    (the first call after another variant's can pay for its cache misses)."""
    if not rotate or not names:
        return list(names)
    shift = round_index % len(names)
    return list(names[shift:]) + list(names[:shift])


def interleave(variants: dict[str, Callable[[], float]], rounds: int, warmup: int = 1,
               rotate: bool = True) -> dict[str, list[float]]:
    """Run the variants in alternation, ``rounds`` times each, after ``warmup`` discarded rounds.

    Returns each variant's measured seconds in round order, so ``result[a][i]`` and
    ``result[b][i]`` were measured back to back and can be divided.
    """
    if not variants:
        raise ValueError("interleave needs at least one variant")
    if rounds < 1 or warmup < 0:
        raise ValueError(f"interleave needs rounds >= 1 and warmup >= 0, got rounds={rounds}, warmup={warmup}")
    names = list(variants)
    for w in range(warmup):
        for name in round_order(names, w, rotate):
            variants[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in round_order(names, warmup + r, rotate):
            seconds = float(variants[name]())
            if not seconds > 0:
                raise ValueError(f"variant {name!r} returned {seconds!r} seconds; it must return its measured time")
            times[name].append(seconds)
    return times


@dataclass(frozen=True)
class Spread:
    """A median with the interquartile range and extremes of the values it summarises."""

    median: float
    q1: float
    q3: float
    min: float
    max: float
    n: int

    def format(self, fmt: str = "{:.2f}", scale: float = 1.0) -> str:
        f = lambda x: fmt.format(x * scale)  # noqa: E731
        return (f"{f(self.median)} (IQR {f(self.q1)}-{f(self.q3)}, range {f(self.min)}-{f(self.max)}, "
                f"n={self.n})")

    def __str__(self) -> str:
        return self.format()

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def spread(values: Sequence[float]) -> Spread:
    """Median, quartiles (linear interpolation, numpy's default) and extremes."""
    if len(values) == 0:
        raise ValueError("spread of no values")
    a = np.asarray(values, dtype=float)
    q1, median, q3 = np.percentile(a, [25, 50, 75])
    return Spread(float(median), float(q1), float(q3), float(a.min()), float(a.max()), int(a.size))


def ratio_summary(numerators: Sequence[float], denominators: Sequence[float]) -> Spread:
    """The spread of per-round ratios ``numerators[i] / denominators[i]``.

    The ratio is taken within each round (both measured under the same load) before the median,
    which is what makes it robust; a ratio of the two medians would not be.
    """
    if len(numerators) != len(denominators):
        raise ValueError(f"ratio of {len(numerators)} numerators to {len(denominators)} denominators: "
                         "they must come from the same rounds")
    den = np.asarray(denominators, dtype=float)
    if (den <= 0).any():
        raise ValueError("ratio_summary: every denominator must be positive")
    return spread(np.asarray(numerators, dtype=float) / den)


@dataclass(frozen=True)
class LoadSnapshot:
    """How busy the machine was: the kernel's load averages and, where cheaply measurable, how
    many cores other processes kept busy over a short sample."""

    load1: float
    load5: float
    load15: float
    cpus: int
    others_busy_cores: float | None  # cores used by other processes during the sample, if known
    sample_s: float

    def __str__(self) -> str:
        text = (f"load {self.load1:.2f} / {self.load5:.2f} / {self.load15:.2f} (1/5/15 min) "
                f"on {self.cpus} CPUs")
        if self.others_busy_cores is not None:
            text += f"; other processes busy {self.others_busy_cores:.1f} of {self.cpus} cores"
        return text

    def to_dict(self) -> dict[str, float | int | None]:
        return asdict(self)


def _busy_seconds_proc() -> float | None:
    """Machine-wide busy CPU seconds so far from /proc/stat (Linux), or None elsewhere."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu":
        return None
    ticks = [int(x) for x in fields[1:]]
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle + iowait
    busy = sum(ticks[:8]) - idle  # user nice system idle iowait irq softirq steal; guest is inside user
    return busy / os.sysconf("SC_CLK_TCK")


def _own_cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


def _others_busy_cores(sample_s: float) -> float | None:
    try:
        import psutil
    except ImportError:
        psutil = None
    own_before = _own_cpu_seconds()
    if psutil is not None:
        psutil.cpu_percent(None)
        time.sleep(sample_s)
        total_cores = psutil.cpu_percent(None) / 100 * (psutil.cpu_count() or 1)
    else:
        before = _busy_seconds_proc()
        if before is None:
            return None
        started = time.perf_counter()
        time.sleep(sample_s)
        after = _busy_seconds_proc()
        total_cores = (after - before) / (time.perf_counter() - started)
    own_cores = (_own_cpu_seconds() - own_before) / sample_s
    return max(0.0, total_cores - own_cores)


def load_snapshot(sample_s: float = 0.25) -> LoadSnapshot:
    """The load now; costs ``sample_s`` seconds of sleep to measure other processes' CPU use."""
    try:
        load1, load5, load15 = os.getloadavg()
    except OSError:  # not available on this platform
        load1 = load5 = load15 = float("nan")
    others = _others_busy_cores(sample_s) if sample_s > 0 else None
    return LoadSnapshot(load1, load5, load15, os.cpu_count() or 1, others, sample_s)


def print_load(label: str, snapshot: LoadSnapshot | None = None) -> LoadSnapshot:
    """Print and return the load, e.g. ``print_load("start")`` before and ``print_load("end")`` after."""
    snapshot = snapshot or load_snapshot()
    print(f"machine at {label}: {snapshot}", flush=True)
    return snapshot


def finish(result: dict, json_path: Path | None) -> dict:
    """A benchmark's last step: the load at its end into ``result``, which is also written as
    JSON to ``json_path`` when one is given."""
    result["load_end"] = str(print_load("end"))
    if json_path:
        json_path.write_text(json.dumps(result, indent=1))
    return result
