"""Table cells: the runs behind one (row, dataset, metric) and their statistics.

A :class:`Cell` keeps the run ids and per-seed values it was computed from, so every number
in a table can be traced back to run directories (the CSVs list them).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import pandas as pd

from analysis.load import read_predictions
from analysis.resample import SampleStats, sample_stats
from analysis.stats import (
    ALPHA,
    N_RESAMPLES,
    BootstrapResult,
    Summary,
    TTestResult,
    paired_bootstrap,
    paired_t_test,
    summarize,
)


@dataclass
class Cell:
    row: str
    dataset: str
    metric: str
    split: str
    expected_n: int
    runs: pd.DataFrame
    values: dict[int, float]  # seed -> metric value
    summary: Summary
    variant_label: str = ""
    bootstrap: BootstrapResult | None = None
    ttest: TTestResult | None = None
    compared_to: str = ""
    bold: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def missing(self) -> bool:
        return self.summary.n == 0

    @property
    def fewer_seeds(self) -> bool:
        return 0 < self.summary.n < self.expected_n

    @property
    def significant(self) -> bool:
        b = self.bootstrap
        return b is not None and not math.isnan(b.p_value) and b.p_value < ALPHA and b.delta > 0

    def record(self) -> dict[str, Any]:
        """One CSV row: the numbers, the tests, and the runs they came from."""
        s, b, t = self.summary, self.bootstrap, self.ttest
        return {
            "row": self.row, "variant": self.variant_label, "dataset": self.dataset, "metric": self.metric,
            "split": self.split, "n": s.n, "expected_n": self.expected_n, "mean": s.mean, "std": s.std,
            "ci95_low": s.ci_low, "ci95_high": s.ci_high,
            "seeds": " ".join(str(k) for k in self.values), "values": " ".join(f"{v:.6g}" for v in self.values.values()),
            "run_ids": " ".join(self.runs["run_id"]) if not self.runs.empty else "",
            "compared_to": self.compared_to,
            "delta_vs_kd": b.delta if b else (t.mean_difference if t else math.nan),
            "p_bootstrap": b.p_value if b else math.nan,
            "bootstrap_delta_ci_low": b.ci_low if b else math.nan,
            "bootstrap_delta_ci_high": b.ci_high if b else math.nan,
            "bootstrap_test_samples": b.n_samples if b else math.nan,
            "p_ttest_paired_seeds": t.p_value if t else math.nan,
            "n_seed_pairs": t.n_pairs if t else math.nan,
            "bold_best_student": self.bold, "significant_vs_kd": self.significant,
            "missing": self.missing, "fewer_seeds_than_expected": self.fewer_seeds,
            "model_params": _params(self.runs), "notes": "; ".join(self.notes),
        }


def _params(runs: pd.DataFrame) -> float:
    if runs.empty or "model_params" not in runs:
        return math.nan
    values = runs["model_params"].dropna()
    return float(values.median()) if not values.empty else math.nan


def metric_key(split: str, dataset: str, metric: str, view: str = "multi") -> str:
    """The summary key, as the trainer writes it (``test/mmimdb/multilabel_macro_f1@text``)."""
    key = f"{split}/{dataset}/{metric}"
    return key if view == "multi" else f"{key}@{view}"


def per_seed(runs: pd.DataFrame, key: str) -> dict[int, float]:
    """``{seed: value}`` of a summary metric; a run without it contributes nothing.

    Two completed runs with the same seed in one cell cannot happen with a grid (same config
    -> same run id); if a store has them anyway, the later one wins and a note says so.
    """
    out: dict[int, float] = {}
    if runs.empty or key not in runs:
        return out
    for _, run in runs.sort_values("finished_at", na_position="first").iterrows():
        value = run[key]
        if value is not None and not (isinstance(value, float) and math.isnan(value)):
            out[int(run["seed"])] = float(value)
    return dict(sorted(out.items()))


def make_cell(runs: pd.DataFrame, row: str, dataset: str, metric: str, split: str, expected_n: int,
              view: str = "multi", variant_label: str = "") -> Cell:
    values = per_seed(runs, metric_key(split, dataset, metric, view))
    cell = Cell(row, dataset, metric, split, expected_n, runs, values, summarize(list(values.values())),
                variant_label=variant_label)
    if not runs.empty and runs["seed"].duplicated().any():
        cell.notes.append("several runs share a seed; the most recent one is used")
    return cell


@lru_cache(maxsize=512)
def _stats(path: str, split: str, metric: str, task: str | None) -> SampleStats | None:
    return sample_stats(read_predictions(path, split, "multi"), metric, task)


def compare_to_kd(cell: Cell, kd: Cell, *, n_resamples: int = N_RESAMPLES, seed: int = 0) -> None:
    """Fill ``cell.bootstrap`` and ``cell.ttest`` against the KD cell of the same column."""
    if cell.missing or kd.missing:
        return
    cell.compared_to = kd.row + (f" ({kd.variant_label})" if kd.variant_label else "")
    cell.ttest = paired_t_test(cell.values, kd.values)
    a = _stats_for(cell)
    b = _stats_for(kd)
    if a is None or b is None:
        cell.notes.append("bootstrap not available: per-sample predictions missing or cannot reproduce the metric")
        return
    try:
        cell.bootstrap = paired_bootstrap(a, b, n_resamples=n_resamples, seed=seed)
    except ValueError as exc:
        cell.notes.append(f"bootstrap not available: {exc}")


def _stats_for(cell: Cell) -> list[SampleStats] | None:
    """Per-sample statistics of each run whose seed is in the cell (one per seed)."""
    out = []
    used = cell.runs.sort_values("finished_at", na_position="first").drop_duplicates("seed", keep="last")
    for _, run in used.iterrows():
        if int(run["seed"]) not in cell.values or not run.get("has_predictions", False):
            return None
        stats = _stats(str(run["path"]), cell.split, cell.metric, run.get("task"))
        if stats is None:
            return None
        out.append(stats)
    return out or None


def mark_best(cells: list[Cell]) -> None:
    """Bold the best student mean of a column (ties: all of them)."""
    present = [c for c in cells if not c.missing]
    if not present:
        return
    best = max(c.summary.mean for c in present)
    for c in present:
        c.bold = math.isclose(c.summary.mean, best, rel_tol=0, abs_tol=1e-12)
