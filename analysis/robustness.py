"""Robustness table and figure: missing and noisy modalities at test time (docs/robustness.md).

Reads what ``msd robustness`` stored in each run (``<run>/eval/robustness_<split>_<hash>/
metrics.json``: the headline metric at every level of every perturbation of the spec) and
the runs' own summaries (the image-only and text-only views, i.e. a missing modality). Each
curve (metric vs level) is summarised per run by its **area under the degradation curve**
(:func:`audc`), then mean ± std over seeds per method, as every other table cell. A run
whose curves were not computed for this spec is a missing cell, never a zero.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis import spec as table_spec
from analysis.aggregate import Cell, make_cell, mark_best
from analysis.load import select
from analysis.render import Block, Display, Table, display_cell, standard_footnotes
from analysis.stats import summarize

NAME = "robustness"  # results/tables/robustness.*, results/figures/robustness.*
PERTURBATION_TITLES = {"image_noise": "image noise σ", "text_dropout": "text dropout rate"}
VIEW_COLUMNS = (("multi", "clean"), ("image", "text missing (image only)"), ("text", "image missing (text only)"))


def audc(levels: Sequence[float], values: Sequence[float], normalisation: str = "span") -> float:
    """Area under the degradation curve, by the trapezoid rule over the given levels.

    ``span``: the area divided by ``levels[-1] - levels[0]``, i.e. the curve's mean value over
    the level range, in the metric's own units (a flat curve at m gives m, so a model that
    does not degrade has AUDC = its clean metric). ``relative``: that divided by the value at
    the first level (the clean one), i.e. the share of the clean metric kept on average
    (1 = no degradation). NaN when any value is NaN (a missing level is not interpolated).
    """
    x = np.asarray(levels, dtype=np.float64)
    y = np.asarray(values, dtype=np.float64)
    if x.ndim != 1 or x.shape != y.shape or x.size < 2:
        raise ValueError(f"AUDC needs as many values as levels, at least two; got {x.size} levels, {y.size} values")
    if np.any(np.diff(x) <= 0):
        raise ValueError(f"AUDC levels must be strictly increasing, got {list(x)}")
    if normalisation not in ("span", "relative"):
        raise ValueError(f"unknown AUDC normalisation {normalisation!r}: span or relative")
    if np.isnan(y).any():
        return math.nan
    mean = float(np.sum(np.diff(x) * (y[1:] + y[:-1]) / 2.0) / (x[-1] - x[0]))
    if normalisation == "relative":
        return mean / float(y[0]) if y[0] != 0 else math.nan
    return mean


def _read_record(path: str) -> dict[str, Any] | None:
    try:
        return json.loads(Path(path).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def run_curves(run: pd.Series, eval_name: str, metric: str, view: str = "multi") -> dict[str, tuple[list[float], list[float]]]:
    """``{perturbation: (levels, headline values)}`` of one run (empty when not computed)."""
    record = _read_record(str(Path(run["path"]) / "eval" / eval_name / "metrics.json"))
    if not record:
        return {}
    split = record.get("split", table_spec.TABLE_SPLIT)
    key = f"{split}/{run['dataset']}/{metric}" + ("" if view == "multi" else f"@{view}")
    out = {}
    for name, curve in (record.get("curves") or {}).items():
        values = [float(m.get(key, math.nan)) for m in curve["metrics"]]
        out[name] = ([float(v) for v in curve["levels"]], values)
    return out


def curves_frame(ctx: Any, spec: Any) -> pd.DataFrame:
    """Tidy per-run curves: dataset, row, seed, run_id, perturbation, level, value."""
    rows = []
    for dataset in ctx.datasets(table_spec.ALL_DATASETS):
        metric = table_spec.headline_metric(dataset)
        for row in table_spec.TABLE2_ROWS:
            for _, run in select(ctx.runs, dataset, row.method, row.weighting).iterrows():
                for name, (levels, values) in run_curves(run, spec.eval_name, metric).items():
                    rows += [{"dataset": dataset, "row": row.label, "seed": int(run["seed"]), "run_id": run["run_id"],
                              "perturbation": name, "level": lv, "value": v} for lv, v in zip(levels, values)]
    return pd.DataFrame(rows, columns=["dataset", "row", "seed", "run_id", "perturbation", "level", "value"])


def _audc_cell(runs: pd.DataFrame, curves: pd.DataFrame, row: str, dataset: str, name: str, split: str,
               expected: int, normalisation: str) -> Cell:
    values: dict[int, float] = {}
    used = []
    for run_id, part in curves.groupby("run_id", sort=False):
        part = part.sort_values("level")
        values[int(part["seed"].iloc[0])] = audc(part["level"].tolist(), part["value"].tolist(), normalisation)
        used.append(run_id)
    values = dict(sorted(values.items()))
    kept = runs[runs["run_id"].isin(used)] if not runs.empty else runs
    return Cell(row, dataset, f"audc_{name}", split, expected, kept, values, summarize(list(values.values())))


def build_robustness(ctx: Any, spec: Any) -> Table:
    """One block per dataset: rows = Table 2's models; columns = clean, each missing modality,
    and the AUDC of each perturbation of ``spec``."""
    curves = curves_frame(ctx, spec)
    names = list(spec.perturbations)
    header = ["Model", *(t for _, t in VIEW_COLUMNS),
              *(f"AUDC {n.replace('_', ' ')} {_range(spec.levels(n))}" for n in names)]  # plain text: LaTeX-safe
    blocks, records, all_cells = [], [], []
    for dataset in ctx.datasets(table_spec.ALL_DATASETS):
        metric = table_spec.headline_metric(dataset)
        columns: list[list[Cell]] = []
        for view, _ in VIEW_COLUMNS:
            columns.append([make_cell(select(ctx.runs, dataset, r.method, r.weighting), r.label, dataset, metric,
                                      spec.split, ctx.expected_seeds, view=view) for r in table_spec.TABLE2_ROWS])
        for name in names:
            cells = []
            for r in table_spec.TABLE2_ROWS:
                part = curves[(curves["dataset"] == dataset) & (curves["row"] == r.label) & (curves["perturbation"] == name)]
                cells.append(_audc_cell(select(ctx.runs, dataset, r.method, r.weighting), part, r.label, dataset, name,
                                        spec.split, ctx.expected_seeds, spec.audc_normalisation))
            columns.append(cells)
        if all(c.missing for col in columns for c in col):
            continue  # a dataset without any run in the store gets no block
        for col in columns:
            mark_best([c for c, r in zip(col, table_spec.TABLE2_ROWS) if r.is_student])
        scale = 1.0 if spec.audc_normalisation == "relative" else 100.0
        body = []
        for i, r in enumerate(table_spec.TABLE2_ROWS):
            line = [Display(r.label)]
            for j, col in enumerate(columns):
                line.append(display_cell(col[i], scale=100.0 if j < len(VIEW_COLUMNS) else scale,
                                         digits=2 if j < len(VIEW_COLUMNS) or scale == 100.0 else 3))
            body.append(line)
        title = f"{table_spec.DATASET_TITLES.get(dataset, dataset)} ({table_spec.METRIC_TITLES.get(metric, metric)})"
        blocks.append(Block(title, header, body))
        for (view, _), col in zip(VIEW_COLUMNS, columns):
            records += [{"part": "view", "view": view, **c.record()} for c in col]
            all_cells += col
        for name, col in zip(names, columns[len(VIEW_COLUMNS):]):
            records += [{"part": "audc", "perturbation": name, "normalisation": spec.audc_normalisation,
                         **c.record()} for c in col]
            all_cells += col
    for (dataset, row, name, level), part in curves.groupby(["dataset", "row", "perturbation", "level"], sort=False):
        s = summarize(part["value"].tolist())
        records.append({"part": "curve", "dataset": dataset, "row": row, "perturbation": name, "level": level,
                        "split": spec.split, "n": s.n, "mean": s.mean, "std": s.std,
                        "seeds": " ".join(map(str, part["seed"])), "values": " ".join(f"{v:.6g}" for v in part["value"]),
                        "run_ids": " ".join(part["run_id"])})
    unit = ("share of the clean metric kept (1 = no loss)" if spec.audc_normalisation == "relative"
            else "×100, the curve's mean over the level range (= the clean value when nothing degrades)")
    footnotes = [
        f"{spec.split.capitalize()} split, headline metric, mean ± std (number of seeds) over seeds. Clean and missing "
        "modality columns ×100 from the runs' summaries (a missing modality is removed by the view rule, "
        "docs/protocol.md §3). Bold: best student of a column.",
        f"AUDC: area under the metric-vs-level curve by the trapezoid rule, normalised by the level range "
        f"(audc.normalisation={spec.audc_normalisation}: {unit}); per run, then over seeds. Levels: "
        + "; ".join(f"{n} {spec.levels(n)} ({_options(spec.options(n))})" for n in names)
        + f"; perturbation seed {spec.seed} (the same corrupted inputs for every model). docs/robustness.md.",
    ]
    footnotes += standard_footnotes(all_cells, ctx.expected_seeds) + list(ctx.notes)
    if curves.empty:
        footnotes.append(f"No run has robustness curves for spec {spec.eval_name}: run `msd robustness <grid>` first.")
    return Table(NAME, "Robustness: missing and noisy modalities at test time", blocks,
                 pd.DataFrame(records), footnotes)


def _range(levels: Sequence[float]) -> str:
    return f"[{levels[0]:g}, {levels[-1]:g}]"


def _options(options: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in options.items()) or "no options"


def robustness_figure(ctx: Any, spec: Any, curves: pd.DataFrame | None = None):
    """Headline metric vs level per model (mean ± sd over seeds), one panel per dataset and
    perturbation; or why it cannot be drawn."""
    import seaborn as sns

    from analysis.figures import MODEL_COLORS, _panels

    curves = curves_frame(ctx, spec) if curves is None else curves
    if curves.empty:
        return f"no run has robustness curves for spec {spec.eval_name} (run `msd robustness <grid>`)"
    datasets = [d for d in ctx.datasets(table_spec.ALL_DATASETS) if d in set(curves["dataset"])]
    names = [n for n in spec.perturbations if n in set(curves["perturbation"])]
    fig, axes = _panels(len(datasets) * len(names), width=3.8, height=3.2, ncols=len(names))
    order = [r.label for r in table_spec.TABLE2_ROWS]
    for i, (ax, (dataset, name)) in enumerate(zip(axes, [(d, n) for d in datasets for n in names])):
        part = curves[(curves["dataset"] == dataset) & (curves["perturbation"] == name)].assign(
            value=lambda f: f["value"] * 100)
        present = [m for m in order if m in set(part["row"])]
        sns.lineplot(data=part, x="level", y="value", hue="row", hue_order=present, palette=MODEL_COLORS,
                     errorbar="sd", marker="o", ax=ax, legend=i == 0)
        metric = table_spec.METRIC_TITLES.get(table_spec.headline_metric(dataset), "metric")
        ax.set(title=f"{table_spec.DATASET_TITLES.get(dataset, dataset)}: {PERTURBATION_TITLES.get(name, name)}",
               xlabel=PERTURBATION_TITLES.get(name, name), ylabel=f"{spec.split} {metric} ×100")
    if axes and axes[0].get_legend() is not None:
        handles, labels = axes[0].get_legend_handles_labels()
        axes[0].get_legend().remove()
        fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 7), frameon=False)
    fig.suptitle(f"Robustness on {spec.split}: headline metric vs perturbation level (mean ± sd over seeds)")
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return fig


def build_outputs(ctx: Any, out_root: str | Path, spec: Any = None) -> tuple[Table, list[Path] | str]:
    """Write ``tables/robustness.{csv,md,tex}`` and ``figures/robustness.{png,pdf}`` under
    ``out_root`` and record the figure (or why it was not drawn) in ``figures.json``."""
    import matplotlib.pyplot as plt

    from analysis.figures import MANIFEST, _saver
    from analysis.render import write_output, write_table
    from benchmark.train.perturb import load_spec

    spec = spec or load_spec()
    out_root = Path(out_root)
    table = build_robustness(ctx, spec)
    write_table(table, out_root / "tables")
    figures = out_root / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    fig = robustness_figure(ctx, spec)
    if isinstance(fig, str):
        result: list[Path] | str = fig
    else:
        result = [write_output(figures / f"{NAME}.{ext}", _saver(fig, ext)) for ext in ("png", "pdf")]
        plt.close(fig)
    manifest_path = figures / MANIFEST
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    manifest[NAME] = ({"files": [p.name for p in result], "reason": None} if isinstance(result, list)
                      else {"files": [], "reason": result})
    write_output(manifest_path, lambda tmp: tmp.write_text(json.dumps(manifest, indent=2) + "\n"))
    return table, result
