"""Table 2, the saliency table and the ablation table (docs/protocol.md §9.3-9.5), from the run store.

Every cell is recomputed from the runs' ``summary.json`` (per-seed values) and, for the
significance tests, their ``predictions.parquet``. A cell without runs is shown as missing
with a footnote; nothing is filled in. Metrics are shown ×100; the CSVs keep raw values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from analysis import spec
from analysis.aggregate import Cell, compare_to_kd, make_cell, mark_best, metric_key, per_seed
from analysis.load import default_value, same_value, same_variant, select, variant_label
from analysis.recipe import recipe_notes
from analysis.render import MISSING, MISSING_TEXT, Block, Display, Table, display_cell, standard_footnotes
from analysis.saliency_data import ground_truth, spearman_vs_truth, teacher_saliency
from analysis.stats import N_RESAMPLES, minimum_detectable, summarize


@dataclass
class Context:
    """What every table builder needs: the selected runs and the analysis options."""

    runs: pd.DataFrame  # completed runs of the selected setting (analysis.load.select_setting)
    all_runs: pd.DataFrame  # every run, for cache lookup and counts
    expected_seeds: int = spec.DEFAULT_EXPECTED_SEEDS
    n_resamples: int = N_RESAMPLES
    seed: int = 0
    cache_dir: str | None = None
    notes: list[str] = field(default_factory=list)
    origin: str = ""  # where the runs come from, for the recipe notes ("grid table2 (scale default)")

    def datasets(self, base: tuple[str, ...]) -> tuple[str, ...]:
        """``base`` plus any other dataset that has runs (a user's own dataset gets a column)."""
        extra = [] if self.runs.empty else [d for d in self.runs["dataset"].unique() if d not in base]
        return (*base, *sorted(extra))


def _runs_of(cells: list[Cell], runs: pd.DataFrame) -> pd.DataFrame:
    """The runs behind ``cells``, and the teachers they distil from: a table's recipe note
    describes what it shows, not every run of its setting (the ablation grid's variants share
    Table 2's setting and would widen, say, Table 2's "epochs run")."""
    if runs.empty:
        return runs
    used = {run_id for cell in cells if not cell.runs.empty for run_id in cell.runs["run_id"]}
    return runs[runs["run_id"].isin(used) | (runs["method"] == "teacher")]


def _fmt_params(value: float) -> str:
    if value is None or math.isnan(value):
        return MISSING_TEXT
    return f"{value / 1e6:.2f}M" if value >= 1e5 else f"{int(value):,}"


def _column_cells(ctx: Context, rows: list[spec.RowSpec], dataset: str, metric: str,
                  kd_for: dict[spec.RowSpec, spec.RowSpec] | None = None) -> list[Cell]:
    """The cells of one column; MSD rows are tested against their KD reference row."""
    cells = {}
    for row in rows:
        runs = select(ctx.runs, dataset, row.method, row.weighting, row.variant)
        cells[row] = make_cell(runs, row.label, dataset, metric, spec.TABLE_SPLIT, ctx.expected_seeds,
                               variant_label=variant_label(row.variant))
    for row in rows:
        if not row.is_msd:
            continue
        ref = (kd_for or {}).get(row, spec.KD)
        kd = cells.get(ref) or make_cell(select(ctx.runs, dataset, "kd", None, ref.variant), ref.label, dataset,
                                         metric, spec.TABLE_SPLIT, ctx.expected_seeds, variant_label=variant_label(ref.variant))
        if kd.missing and ref.variant:  # no KD at this variant: fall back to the default KD
            kd = make_cell(select(ctx.runs, dataset, "kd"), "KD", dataset, metric, spec.TABLE_SPLIT, ctx.expected_seeds)
        compare_to_kd(cells[row], kd, n_resamples=ctx.n_resamples, seed=ctx.seed)
    mark_best([c for r, c in cells.items() if r.is_student])
    return [cells[r] for r in rows]


# -- Table 2 -------------------------------------------------------------------------------------
def _power_note(grid: dict, columns: list, rows: list[spec.RowSpec]) -> list[str]:
    """What a seed-level test can see in each column, from the label-only student's own spread.

    The † marks resample test samples and ignore how much a method moves from seed to seed;
    this note says how large a difference between two students must be before the seeds
    themselves could show it.
    """
    student = next((i for i, r in enumerate(rows) if r.method == "student_only" and not r.variant), None)
    if student is None:
        return []
    parts = []
    for dataset, metric in columns:
        summary = grid[(dataset, metric)][student].summary
        if summary.n >= 2 and not math.isnan(summary.std):
            parts.append(f"{spec.metric_column(dataset, metric)} {100 * minimum_detectable(summary.std, summary.n):.1f}")
    if not parts:
        return []
    n = grid[columns[0]][student].summary.n
    return ["Smallest difference between two students' seed means detectable at p < 0.05 with power 0.8 "
            f"(two-sided two-sample t-test over {n} seeds, the label-only student's seed std), points: "
            + "; ".join(parts) + "."]


def build_table2(ctx: Context) -> Table:
    columns = spec.table2_columns(ctx.datasets(spec.ALL_DATASETS))
    rows = list(spec.TABLE2_ROWS)
    grid = {col: _column_cells(ctx, rows, *col) for col in columns}
    header = ["Model"] + [spec.metric_column(d, m) for d, m in columns]
    body = [[Display(row.label)] + [display_cell(grid[col][i]) for col in columns] for i, row in enumerate(rows)]
    records = [c.record() for col in columns for c in grid[col]]
    for label, is_teacher in (("# params (teacher)", True), ("# params (student)", False)):
        line = [Display(label)]
        for dataset, _metric in columns:
            pool = ctx.runs[(ctx.runs["dataset"] == dataset) & ((ctx.runs["method"] == "teacher") == is_teacher)] \
                if not ctx.runs.empty else ctx.runs
            values = pool["model_params"].dropna() if not pool.empty else pd.Series(dtype=float)
            line.append(Display(_fmt_params(float(values.median())) if not values.empty else MISSING_TEXT,
                                marks="" if not values.empty else MISSING))
            records.append({"row": label, "dataset": dataset, "metric": "model_params", "split": "",
                            "mean": float(values.median()) if not values.empty else math.nan,
                            "n": int(values.size), "missing": values.empty})
        body.append(line)
    all_cells = [c for col in columns for c in grid[col]]
    footnotes = ["Test split, ×100, mean ± std (number of seeds) over seeds. Bold: best student of the column. "
                 "Teacher and student parameter counts in the last rows (median over runs)."]
    footnotes += standard_footnotes(all_cells, ctx.expected_seeds) + ctx.notes
    footnotes += _power_note(grid, columns, rows)
    footnotes += recipe_notes(_runs_of(all_cells, ctx.runs), list(dict.fromkeys(d for d, _m in columns)), ctx.origin)
    title = "Table 2: main results (teacher, student without KD, KD, MSD weighting schemes)"
    return Table("table2", title, [Block("", header, body)], pd.DataFrame(records), footnotes)


# -- Ablations -----------------------------------------------------------------------------------
def best_msd(ctx: Context, dataset: str) -> str | None:
    """The MSD scheme with the best mean *validation* headline (test is never used to choose)."""
    metric = spec.headline_metric(dataset)
    best, best_value = None, -math.inf
    for scheme in spec.MSD_SCHEMES:
        values = per_seed(select(ctx.runs, dataset, "msd", scheme), metric_key(spec.SELECTION_SPLIT, dataset, metric))
        if values and np.mean(list(values.values())) > best_value:
            best, best_value = scheme, float(np.mean(list(values.values())))
    return best


def _variant_rows(ctx: Context, method: str, weighting: str | None, key: str, values: tuple) -> list[spec.RowSpec]:
    """One row per value of ``key`` (the protocol's values, then any other found in the store).

    The row of the default value aggregates the default-variant runs (the Table 2 runs), so
    e.g. "τ=1 (default)" and Table 2's KD row are the same runs.
    """
    default = default_value(key)
    found = [] if ctx.runs.empty else [v[0][1] for v in ctx.runs["variant"] if len(v) == 1 and v[0][0] == key]
    rows: list[spec.RowSpec] = []
    for value in (*values, *found):
        if any(same_value(value, dict(r.variant).get(key, default)) for r in rows):
            continue
        is_default = default is not None and same_value(value, default)
        label = f"{spec.row_label(method, weighting)}, {variant_label(((key, value),))}"
        rows.append(spec.RowSpec(label + (" (default)" if is_default else ""), method, weighting,
                                 () if is_default else ((key, value),)))
    return rows


def build_ablations(ctx: Context) -> Table:
    datasets = ctx.datasets(spec.PAPER_DATASETS)
    header = ["Model"] + [spec.metric_column(d, spec.headline_metric(d)) for d in datasets]
    blocks, all_cells, records = [], [], []

    def add_block(title: str, rows_for: dict[str, list[spec.RowSpec]], labels: list[str],
                  kd_for: dict[str, dict] | None = None, only: tuple[str, ...] | None = None) -> None:
        cols = [d for d in datasets if only is None or d in only]
        columns = {d: _column_cells(ctx, rows_for[d], d, spec.headline_metric(d), (kd_for or {}).get(d))
                   for d in cols}
        body = []
        for i, label in enumerate(labels):
            body.append([Display(label)] + [display_cell(columns[d][i]) for d in cols])
        for d in cols:
            for c in columns[d]:
                records.append({"block": title, **c.record()})
                all_cells.append(c)
        block_header = header if only is None else ["Model"] + [spec.metric_column(d, spec.headline_metric(d)) for d in cols]
        blocks.append(Block(title, block_header, body))

    aux_rows = [spec.KD, spec.ONLY_IMAGE, spec.ONLY_TEXT, spec.MSD_UNIFORM]
    best = {d: best_msd(ctx, d) for d in datasets}
    rows_for = {d: aux_rows + ([spec.RowSpec(f"Best MSD ({best[d]})", "msd", best[d])] if best[d]
                               else [spec.RowSpec("Best MSD", "msd", "__none__")]) for d in datasets}
    add_block("Auxiliary terms", rows_for, [r.label for r in aux_rows] + ["Best MSD (chosen on val)"])

    sal_rows = _variant_rows(ctx, "msd", "instance", "distill.saliency", spec.SALIENCY_DEFINITIONS)
    add_block("Saliency definition (MSD-instance)", {d: sal_rows for d in datasets}, [r.label for r in sal_rows])

    kd_rows = _variant_rows(ctx, "kd", None, "distill.temperature", spec.TEMPERATURES)
    msd_rows = _variant_rows(ctx, "msd", "instance", "distill.temperature", spec.TEMPERATURES)
    kd_ref = {m: next((k for k in kd_rows if same_variant(k.variant, m.variant)), spec.KD) for m in msd_rows}
    add_block("Distillation temperature τ", {d: kd_rows + msd_rows for d in datasets},
              [r.label for r in kd_rows + msd_rows], {d: kd_ref for d in datasets})

    # The [rule] of docs/protocol.md §4.3 averages the per-class Bernoulli KL over classes while the
    # label loss sums over them; `sum` puts D on the label loss's scale (docs/assumptions.md 5b).
    multi_label = tuple(d for d in datasets if d in spec.MULTI_LABEL_DATASETS)
    if multi_label:
        key = "distill.class_reduction"
        kd_rows = _variant_rows(ctx, "kd", None, key, spec.CLASS_REDUCTIONS)
        msd_rows = _variant_rows(ctx, "msd", "instance", key, spec.CLASS_REDUCTIONS)
        kd_ref = {m: next((k for k in kd_rows if same_variant(k.variant, m.variant)), spec.KD) for m in msd_rows}
        add_block("Multi-label divergence: mean or sum over classes", {d: kd_rows + msd_rows for d in multi_label},
                  [r.label for r in kd_rows + msd_rows], {d: kd_ref for d in multi_label}, only=multi_label)

    footnotes = ["Test split, ×100, mean ± std (seeds). Best MSD: the weighting scheme with the best mean "
                 "validation headline metric. † compares with KD at the same τ (or class reduction) where that "
                 "run exists, otherwise with the default KD."]
    footnotes += standard_footnotes(all_cells, ctx.expected_seeds) + ctx.notes
    footnotes += recipe_notes(_runs_of(all_cells, ctx.runs), datasets, ctx.origin)
    footnotes.append("Best MSD per dataset: " + "; ".join(
        f"{spec.DATASET_TITLES.get(d, d)}: {best[d] or 'none (no MSD run of a Table 2 scheme)'}" for d in datasets) + ".")
    return Table("ablations", "Ablations: auxiliary terms, saliency definitions and temperature", blocks,
                 pd.DataFrame(records), footnotes)


# -- Saliency ------------------------------------------------------------------------------------
def _fmt(value: float, digits: int = 4) -> str:
    return MISSING_TEXT if value is None or math.isnan(value) else f"{value:.{digits}g}"


def build_saliency(ctx: Context) -> Table:
    datasets = ctx.datasets(spec.ALL_DATASETS)
    sal_header = ["Dataset", "Definition", "Split (source)", "Teachers", "mean s_image", "mean s_text",
                  "image-dominant share", "Spearman ρ vs truth"]
    sal_rows, records, footnotes = [], [], []
    for dataset in datasets:
        teachers = select(ctx.runs, dataset, "teacher")
        per_teacher = []
        for _, teacher in teachers.iterrows():
            sal = teacher_saliency(teacher, ctx.all_runs, cache_dir=ctx.cache_dir)
            if sal is not None:
                per_teacher.append((teacher, sal, ground_truth(teacher, sal.split)))
        if not per_teacher:
            sal_rows.append([Display(spec.DATASET_TITLES.get(dataset, dataset))] +
                            [Display(MISSING_TEXT, marks=MISSING)] * (len(sal_header) - 1))
            records.append({"part": "saliency", "dataset": dataset, "missing": True})
            continue
        definitions = [d for d in per_teacher[0][1].scores if all(d in s.scores for _, s, _ in per_teacher)]
        for definition in definitions:
            stats = {"s_image": [], "s_text": [], "share": [], "rho": []}
            for _teacher, sal, truth in per_teacher:
                s_image, s_text = sal.scores[definition]
                stats["s_image"].append(float(np.mean(s_image)))
                stats["s_text"].append(float(np.mean(s_text)))
                stats["share"].append(float(np.mean(s_image > s_text)))
                stats["rho"].append(spearman_vs_truth(sal, truth, definition) if truth is not None else math.nan)
            summary = {k: summarize(v) for k, v in stats.items()}
            split = f"{per_teacher[0][1].split} ({per_teacher[0][1].source})"
            sal_rows.append([Display(spec.DATASET_TITLES.get(dataset, dataset)), Display(definition), Display(split),
                             Display(str(len(per_teacher)))] +
                            [Display(_fmt(summary[k].mean)) for k in ("s_image", "s_text", "share", "rho")])
            records.append({"part": "saliency", "dataset": dataset, "definition": definition, "split": split,
                            "teachers": len(per_teacher), "teacher_runs": " ".join(str(t["run_id"]) for t, _, _ in per_teacher),
                            **{f"mean_{k}": summary[k].mean for k in ("s_image", "s_text")},
                            "image_dominant_share": summary["share"].mean, "spearman_vs_truth": summary["rho"].mean,
                            "spearman_std": summary["rho"].std, "missing": False})
    view_header = ["Dataset", "Model", "multi", "image", "text"]
    view_rows, view_cells = [], []
    for dataset in datasets:
        metric = spec.headline_metric(dataset)
        for row in spec.TABLE2_ROWS:
            runs = select(ctx.runs, dataset, row.method, row.weighting)
            cells = [make_cell(runs, row.label, dataset, metric, spec.TABLE_SPLIT, ctx.expected_seeds, view=v)
                     for v in ("multi", "image", "text")]
            view_cells += cells
            view_rows.append([Display(spec.DATASET_TITLES.get(dataset, dataset)), Display(row.label)] +
                             [display_cell(c) for c in cells])
            for view, c in zip(("multi", "image", "text"), cells):
                records.append({"part": "views", "view": view, **c.record()})
    footnotes.append("Saliency: s_m = how much the teacher's prediction changes when modality m is removed "
                     "(docs/protocol.md §5.1), averaged per teacher then over teachers (seeds); train split from the "
                     "teacher cache when it exists, else recomputed from the teacher's test predictions. "
                     "Spearman ρ: estimated (s_image − s_text) vs the generator's ground truth "
                     "(image_reliance − text_reliance); — on real data, which has none.")
    footnotes.append("Views: headline metric on the test split with the text removed (image) or the image "
                     "removed (text), ×100, mean ± std (seeds).")
    footnotes += standard_footnotes(view_cells, ctx.expected_seeds) + ctx.notes
    footnotes += recipe_notes(_runs_of(view_cells, ctx.runs), datasets, ctx.origin)
    blocks = [Block("Teacher saliency per dataset and definition", sal_header, sal_rows),
              Block("Headline metric per view (test)", view_header, view_rows)]
    return Table("saliency", "Modality saliency and single-modality performance", blocks,
                 pd.DataFrame(records), footnotes)


BUILDERS = {"table2": build_table2, "saliency": build_saliency, "ablations": build_ablations}


def build_tables(ctx: Context, names: tuple[str, ...] = tuple(BUILDERS), out_dir: str | Path | None = None) -> dict[str, Table]:
    """Build (and, with ``out_dir``, write) the named tables."""
    from analysis.render import write_table

    tables = {name: BUILDERS[name](ctx) for name in names}
    if out_dir is not None:
        for table in tables.values():
            write_table(table, out_dir)
    return tables
