"""What a student costs: the efficiency table, the distillation-cost table and the Pareto figure.

Why a module of its own, reading the cells of a grid (``experiments/efficiency.yaml``)
rather than the Table 2 selection: efficiency compares models of several sizes and families
on purpose, which the Table 2 analysis treats as other settings and leaves out. The grid says
exactly which runs make each point (its cells' run ids); a cell without a completed run is
shown as missing, never invented.

Inputs are what every run records: ``summary.json`` (``cost`` from
:mod:`benchmark.train.cost`, ``train_time_s``, the test headline metric, the device) and, for
the distillation cost, the teacher cache's ``meta.json`` (``build.time_s``). Nothing is
re-measured here. Where a run has ``cost_remeasured.json`` (``msd cost remeasure``: its
latency and memory measured again later, interleaved with the grid's other runs, on a quiet
machine; :mod:`benchmark.train.cost_remeasure`), its latency and memory come from there
instead of from the end of training, under the load of the other runs training beside it;
the table's note says how many runs were re-measured, when and under what load.

* ``efficiency`` — per dataset, family, size and method: parameters, FLOPs per sample, CPU
  latency per sample at batch 1 and 64 (median [IQR] of N one-thread calls), peak memory at
  batch 64, the headline metric (mean ± sd over seeds) and its difference to the family's
  teacher.
* ``distillation_cost`` — teacher training T, cache build C and each distilling student's
  training S (seconds of the training loop on the run's device; evaluation not included);
  with the cache shared by the k distilling students of that teacher, the cost per student
  is ``(T + C) / k + S`` (:func:`per_student_cost`), next to ``T + C + S`` for a teacher and
  cache made for one student.
* ``efficiency_pareto`` — headline metric against CPU latency (batch 1) and against FLOPs,
  per dataset, the Pareto frontier (no other point both cheaper and better) drawn and ringed.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis import spec
from analysis.render import MISSING, MISSING_TEXT, Block, Display, Table, write_output, write_table

DEFAULT_GRID = Path("experiments/efficiency.yaml")
FIGURE = "efficiency_pareto"
METHOD_ORDER = ("teacher", "student_only", "kd", "msd")
SIZE_ORDER = ("tiny", "small", "student", "teacher", "paper_base")


# -- the runs of a grid -----------------------------------------------------------------------------
def grid_runs(grid: str | Path, scale: str, save_dir: str | Path, extra_args: Iterable[str] = ()) -> pd.DataFrame:
    """One row per cell of ``grid`` at ``scale``, with its run's figures where it completed."""
    from benchmark.config.loader import size_preset
    from benchmark.grid.cells import expand
    from benchmark.grid.spec import load_grid
    from benchmark.train.cost_remeasure import read_remeasured

    cells = expand(load_grid(grid, scale), extra_args).cells
    rows = []
    for cell in cells:
        c = cell.config
        method = str(c.method)
        weighting = str(c.distill.get("weighting", c.get("weighting"))) if method == "msd" else None
        summary = _read_json(Path(save_dir) / cell.run_id / "summary.json")
        row: dict[str, Any] = {
            "cell": cell.name, "run_id": cell.run_id, "dataset": str(c.dataset), "family": str(c.model),
            "size": size_preset(c), "method": method, "weighting": weighting, "row": spec.row_label(method, weighting),
            "seed": int(c.training.seed), "teacher_run": c.get("teacher"),
            "completed": summary.get("status") == "completed",
        }
        if row["completed"]:
            row.update(run_figures(summary, read_remeasured(Path(save_dir) / cell.run_id)))
        rows.append(row)
    return pd.DataFrame(rows)


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


REMEASURED, END_OF_RUN = "remeasured", "end of run"
END_OF_RUN_MARK = "¶"  # a latency from the end of training in a table that also has re-measured ones


def run_figures(summary: dict, remeasured: dict | None = None) -> dict[str, Any]:
    """The figures of one completed run that the tables use (NaN where absent): its summary's,
    with the CPU latency and memory of ``remeasured`` (its ``cost_remeasured.json``) preferred
    when given. Parameters and FLOPs are the summary's (the architecture's; the re-measurement
    recounts them and records whether they match)."""
    cost = summary.get("cost") or {}
    source = REMEASURED if remeasured and (remeasured.get("cpu") or {}).get("latency") else END_OF_RUN
    cpu = (remeasured["cpu"] if source == REMEASURED else cost.get("cpu")) or {}
    latency = cpu.get("latency") or {}
    memory = cpu.get("peak_memory_bytes") or {}
    extra = remeasured if source == REMEASURED else {}
    load = extra.get("load_average") or {}

    def lat(size: str, key: str) -> float:
        return float((latency.get(size) or {}).get(key, math.nan))

    def load1(when: str) -> float:
        values = load.get(when)
        return float(values[0]) if values else math.nan

    return {
        "metric": float((summary.get("headline") or {}).get("test") or math.nan),
        "headline_metric": summary.get("headline_metric"),
        "params": float(cost.get("params", summary.get("model_params", extra.get("params"))) or math.nan),
        "flops": float(cost.get("flops_per_sample", extra.get("flops_per_sample", math.nan))),
        "lat_source": source,
        "remeasured_at": extra.get("created_at"), "remeasure_session": extra.get("started_at"),
        "remeasure_load_start": load1("start"), "remeasure_load_end": load1("end"),
        "remeasure_rounds": (extra.get("interleave") or {}).get("rounds"),
        "remeasure_cpu": (extra.get("machine") or {}).get("cpu"),
        "lat1_ms": lat("1", "per_sample_ms"), "lat1_iqr_ms": lat("1", "per_sample_iqr_ms"),
        "lat64_ms": lat("64", "per_sample_ms"), "lat64_iqr_ms": lat("64", "per_sample_iqr_ms"),
        "repeats": (latency.get("1") or {}).get("repeats"),
        "mem64_mb": float(memory.get("64", math.nan)) / 2**20,
        "train_time_s": float(summary.get("train_time_s") or math.nan),
        "device": summary.get("device"),
        "teacher_cache": (summary.get("method_details") or {}).get("teacher_cache"),
    }


# -- the efficiency table ---------------------------------------------------------------------------
FIGURE_COLUMNS = ("metric", "params", "flops", "lat1_ms", "lat1_iqr_ms", "lat64_ms", "lat64_iqr_ms", "mem64_mb")


def points(runs: pd.DataFrame) -> pd.DataFrame:
    """One point per (dataset, family, size, method): the metric's mean and sd over seeds, the
    cost figures' median over seeds; ``n`` completed seeds out of ``expected`` cells."""
    keys = ["dataset", "family", "size", "method", "weighting", "row"]
    out = []
    for key, group in runs.groupby(keys, dropna=False, sort=False):
        done = group[group["completed"]]
        rec: dict[str, Any] = dict(zip(keys, key, strict=True))
        rec.update({col: math.nan for col in FIGURE_COLUMNS}, metric_sd=math.nan, headline_metric=None, repeats=None,
                   n=len(done), expected=len(group), run_ids=" ".join(done["run_id"]), lat_source=None)
        if len(done):
            metric = done["metric"].astype(float)
            rec["metric"] = metric.mean()
            rec["metric_sd"] = metric.std(ddof=1) if len(metric) > 1 else math.nan
            for col in FIGURE_COLUMNS[1:]:
                rec[col] = done[col].astype(float).median()
            rec["headline_metric"] = next(iter(done["headline_metric"].dropna()), None)
            rec["repeats"] = next(iter(done["repeats"].dropna()), None)
            sources = set(done["lat_source"]) if "lat_source" in done else {END_OF_RUN}
            rec["lat_source"] = next(iter(sources)) if len(sources) == 1 else "mixed"
        out.append(rec)
    frame = pd.DataFrame(out)
    if frame.empty:
        return frame
    teacher = frame[frame["method"] == "teacher"].set_index(["dataset", "family"])["metric"]
    frame["delta_teacher"] = [m - teacher.get((d, f), math.nan)
                              for m, d, f in zip(frame["metric"], frame["dataset"], frame["family"], strict=True)]
    rank = lambda order: (lambda v: order.index(v) if v in order else len(order))  # noqa: E731
    frame["_size"] = frame["size"].map(rank(SIZE_ORDER))
    frame["_method"] = frame["method"].map(rank(METHOD_ORDER))
    datasets = list(dict.fromkeys(frame["dataset"]))
    frame["_dataset"] = frame["dataset"].map(datasets.index)
    frame = frame.sort_values(["_dataset", "family", "_size", "_method"], kind="stable")
    return frame.drop(columns=["_size", "_method", "_dataset"]).reset_index(drop=True)


def _num(value: float, fmt: str) -> str:
    return MISSING_TEXT if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, fmt)


def _with_iqr(median: float, iqr: float) -> str:
    return MISSING_TEXT if math.isnan(median) else f"{median:.3f} [{iqr:.3f}]"


def latency_note(runs: pd.DataFrame | None) -> str:
    """Where the table's latencies come from: how many completed runs were re-measured with
    ``msd cost remeasure``, when, on what CPU and under what load; the others were measured at
    the end of training, beside the grid's other runs."""
    done = runs[runs["completed"]] if runs is not None and "completed" in runs else pd.DataFrame()
    base = ("Latency depends on the machine and its load: re-measure the finished runs on a quiet machine, "
            "interleaved, with `msd cost remeasure <grid.yaml>` (docs/efficiency.md).")
    if done.empty or "lat_source" not in done or not (done["lat_source"] == REMEASURED).any():
        return "Latency and memory measured at the end of each run, while other runs trained beside it. " + base
    again = done[done["lat_source"] == REMEASURED]
    dates = sorted({str(d)[:10] for d in again["remeasured_at"].dropna()})
    when = dates[0] if len(dates) == 1 else f"{dates[0]} to {dates[-1]}" if dates else "date unknown"

    def load_range(column: str) -> str:
        values = again[column].dropna().astype(float)
        if values.empty:
            return "n/a"
        low, high = values.min(), values.max()
        return f"{low:.2f}" if low == high else f"{low:.2f}-{high:.2f}"

    rounds = sorted({int(r) for r in again["remeasure_rounds"].dropna()})
    cpus = sorted({str(c) for c in again["remeasure_cpu"].dropna()})
    sessions = again["remeasure_session"].dropna().nunique() if "remeasure_session" in again else 0
    apart = f" in {sessions} separate commands, which share no load" if sessions > 1 else ""
    text = (f"Latency and memory of {len(again)} of {len(done)} completed runs re-measured after training "
            f"(`msd cost remeasure`: the runs interleaved{apart}, {'/'.join(map(str, rounds)) or '?'} rounds, one thread; "
            f"{when}{', ' + ', '.join(cpus) if cpus else ''}; 1-min load average {load_range('remeasure_load_start')} "
            f"at start, {load_range('remeasure_load_end')} at end)")
    if len(again) < len(done):
        text += (f"; the other {len(done) - len(again)} measured at the end of training, beside the grid's other "
                 f"runs ({END_OF_RUN_MARK}: a point with at least one such run). " + base)
    else:
        text += "."
    return text


def build_efficiency(pts: pd.DataFrame, runs: pd.DataFrame | None = None) -> Table:
    """The efficiency table; ``runs`` (the grid's run frame) lets its note say where the
    latencies came from (:func:`latency_note`)."""
    header = ["Family", "Size", "Model", "Params", "MFLOPs/sample", "CPU ms/sample @1 [IQR]",
              "CPU ms/sample @64 [IQR]", "Peak MB @64", "Test ×100", "Δ teacher"]
    sources = set(pts["lat_source"].dropna()) if "lat_source" in pts else set()
    mark_end_of_run = REMEASURED in sources and len(sources) > 1
    blocks = []
    for dataset, group in pts.groupby("dataset", sort=False):
        rows = []
        metric_name = spec.METRIC_TITLES.get(str(next(iter(group["headline_metric"].dropna()), "")), "")
        for r in group.to_dict("records"):
            if r["n"] == 0:
                rows.append([Display(r["family"]), Display(r["size"]), Display(r["row"]), *[Display(MISSING_TEXT)] * 6,
                             Display(MISSING_TEXT, marks=MISSING)])
                continue
            sd = "n/a" if math.isnan(r["metric_sd"]) else f"{100 * r['metric_sd']:.2f}"
            mark = END_OF_RUN_MARK if mark_end_of_run and r.get("lat_source") != REMEASURED else ""
            rows.append([
                Display(r["family"]), Display(r["size"]), Display(r["row"]),
                Display(f"{r['params'] / 1e6:.2f}M"), Display(_num(r["flops"] / 1e6, ".3f")),
                Display(_with_iqr(r["lat1_ms"], r["lat1_iqr_ms"]), marks=mark),
                Display(_with_iqr(r["lat64_ms"], r["lat64_iqr_ms"]), marks=mark),
                Display(_num(r["mem64_mb"], ".1f")), Display(f"{100 * r['metric']:.2f} ± {sd} ({r['n']})"),
                Display(MISSING_TEXT if r["method"] == "teacher" else _num(100 * r["delta_teacher"], "+.2f")),
            ])
        blocks.append(Block(f"{spec.DATASET_TITLES.get(dataset, dataset)} {metric_name}".strip(), header, rows))
    notes = [
        "Cost of the multi view on each run's evaluated weights (benchmark/train/cost.py): "
        "FLOPs of matrix products, convolutions and attention per sample (2 per multiply-add); latency per sample "
        "on the CPU with one thread, median [IQR] of N timed calls after warm-up (N in the CSV); peak memory = "
        "weights + input batch + the forward pass's peak live tensors. Test metric ×100, mean ± sd over seeds (n); "
        "Δ teacher: minus the same family's teacher.",
        latency_note(runs),
    ]
    if (pts["n"] == 0).any():
        notes.append(f"{MISSING} missing: no completed run for this cell of the grid.")
    return Table("efficiency", "What a student costs: accuracy, size, FLOPs, latency and memory", blocks, pts, notes)


# -- distillation cost ------------------------------------------------------------------------------
def per_student_cost(teacher_s: float, cache_s: float, student_s: float, k: int) -> float:
    """Seconds one distilled student costs when k students share one teacher and its cache."""
    if k < 1:
        raise ValueError(f"k (students sharing the teacher cache) must be >= 1, got {k}")
    return (teacher_s + cache_s) / k + student_s


@dataclass(frozen=True)
class CacheTime:
    seconds: float
    device: str | None


def cache_build_time(path: str | None) -> CacheTime:
    """``build.time_s`` of a teacher cache's meta.json (NaN for a cache built before it was recorded)."""
    meta = _read_json(Path(path) / "meta.json") if path else {}
    build = meta.get("build") or {}
    return CacheTime(float(build.get("time_s", math.nan)), build.get("device"))


def distillation_costs(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per distilling student run: T, C, S, k and the per-student costs."""
    done = runs[runs["completed"]]
    teachers = done[done["method"] == "teacher"].set_index("run_id")
    students = done[done["teacher_run"].notna() & (done["method"] != "teacher")]
    k_of = students.groupby("teacher_run")["run_id"].count()
    rows = []
    for r in students.to_dict("records"):
        teacher = teachers["train_time_s"].get(r["teacher_run"], math.nan)
        cache = cache_build_time(r.get("teacher_cache"))
        k = int(k_of[r["teacher_run"]])
        rows.append({
            "dataset": r["dataset"], "family": r["family"], "size": r["size"], "method": r["method"],
            "row": r["row"], "seed": r["seed"], "run_id": r["run_id"], "teacher_run": r["teacher_run"],
            "device": r["device"], "teacher_s": teacher, "cache_s": cache.seconds, "student_s": r["train_time_s"], "k": k,
            "per_student_shared_s": per_student_cost(teacher, cache.seconds, r["train_time_s"], k),
            "per_student_alone_s": per_student_cost(teacher, cache.seconds, r["train_time_s"], 1),
        })
    return pd.DataFrame(rows)


def build_distillation_cost(costs: pd.DataFrame) -> Table:
    header = ["Family", "Size", "Model", "Teacher s (T)", "Cache s (C)", "k", "Student s (S)",
              "(T+C)/k + S", "T + C + S", "Student share"]
    blocks = []
    if not costs.empty:
        keys = ["dataset", "family", "size", "method", "row"]
        agg = costs.groupby(keys, sort=False)[["teacher_s", "cache_s", "k", "student_s", "per_student_shared_s",
                                              "per_student_alone_s"]].mean().reset_index()
        for dataset, group in agg.groupby("dataset", sort=False):
            rows = [[Display(r["family"]), Display(r["size"]), Display(r["row"]), Display(_num(r["teacher_s"], ".2f")),
                     Display(_num(r["cache_s"], ".2f")), Display(f"{r['k']:.0f}"), Display(_num(r["student_s"], ".2f")),
                     Display(_num(r["per_student_shared_s"], ".2f")), Display(_num(r["per_student_alone_s"], ".2f")),
                     Display(_num(100 * r["student_s"] / r["per_student_shared_s"], ".0f") + " %")]
                    for r in group.to_dict("records")]
            blocks.append(Block(spec.DATASET_TITLES.get(dataset, dataset), header, rows))
    devices = sorted({str(d) for d in costs.get("device", pd.Series(dtype=object)).dropna()})
    notes = [
        "Seconds of the training loop (forward, backward, update; evaluation not included) on the run's device "
        f"({', '.join(devices) or 'n/a'}), mean over seeds. T: the family's teacher; C: building its cache "
        "(teacher outputs and saliency of every split, meta.json build.time_s); S: the student. k students "
        "distil from one teacher and cache, so each costs (T + C)/k + S; T + C + S is the cost of a teacher and "
        "cache made for one student. Label-only students need neither (their S is in the efficiency CSV).",
    ]
    if costs.empty:
        notes.append(f"{MISSING} no completed distilling student in the grid yet.")
    return Table("distillation_cost", "What distillation costs: teacher, cache and student time", blocks, costs, notes)


# -- Pareto figure ----------------------------------------------------------------------------------
def pareto_front(cost: Iterable[float], value: Iterable[float]) -> np.ndarray:
    """Mask of the points no other point dominates (cost <= and value >=, one strictly)."""
    c, v = np.asarray(list(cost), dtype=float), np.asarray(list(value), dtype=float)
    ok = ~(np.isnan(c) | np.isnan(v))
    front = np.zeros(len(c), dtype=bool)
    for i in np.flatnonzero(ok):
        others = ok & (c <= c[i]) & (v >= v[i]) & ((c < c[i]) | (v > v[i]))
        front[i] = not others.any()
    return front


AXES = (("lat1_ms", "CPU latency per sample, batch 1 (ms, log)"), ("flops", "FLOPs per sample (log)"))


def latency_axis_label(pts: pd.DataFrame) -> str:
    """The latency axis says where its figures came from when any point was re-measured."""
    label = AXES[0][1]
    sources = list(pts["lat_source"].dropna()) if "lat_source" in pts else []
    again = sum(s == REMEASURED for s in sources)
    if not again:
        return label
    return label + ("\nre-measured, interleaved" if again == len(sources)
                    else f"\n{again} of {len(sources)} points re-measured")


def pareto_figure(pts: pd.DataFrame):
    """Metric vs latency and vs FLOPs, one row per dataset; or why it cannot be drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns
    from matplotlib.ticker import NullFormatter

    drawn = pts[pts["n"] > 0].dropna(subset=["metric"]) if not pts.empty else pts
    if drawn.empty:
        return "no completed run of the efficiency grid"
    datasets = list(dict.fromkeys(drawn["dataset"]))
    fig, axes = plt.subplots(len(datasets), len(AXES), figsize=(5.2 * len(AXES), 3.8 * len(datasets)), squeeze=False)
    markers = dict(zip(sorted(drawn["family"].unique()), "osD^v<>", strict=False))
    colors = sns.color_palette("colorblind", 5)
    palette = dict(zip(METHOD_ORDER, (colors[0], colors[1], colors[2], colors[4]), strict=True))
    for i, dataset in enumerate(datasets):
        data = drawn[drawn["dataset"] == dataset]
        metric = spec.METRIC_TITLES.get(str(next(iter(data["headline_metric"].dropna()), "")), "headline metric")
        for j, (column, label) in enumerate(AXES):
            ax = axes[i][j]
            sub = data.dropna(subset=[column])
            for r in sub.to_dict("records"):
                size = {"tiny": 25, "small": 45, "student": 70, "teacher": 110}.get(r["size"], 60)
                ax.scatter(r[column], 100 * r["metric"], s=size, marker=markers[r["family"]],
                           color=palette.get(r["method"], "grey"), edgecolor="none", alpha=0.85)
            front = sub[pareto_front(sub[column], sub["metric"])].sort_values(column)
            ax.plot(front[column], 100 * front["metric"], color="black", lw=1, ls="--", zorder=0)
            ax.scatter(front[column], 100 * front["metric"], s=160, facecolor="none", edgecolor="black", lw=1)
            ax.set(xscale="log", xlabel=latency_axis_label(drawn) if column == "lat1_ms" else label,
                   ylabel=f"test {metric} ×100",
                   title=f"{spec.DATASET_TITLES.get(dataset, dataset)}")
            # a narrow log range labels every minor tick ("3×10^-1 4×10^-1 ...") and they overlap
            ax.xaxis.set_minor_formatter(NullFormatter())
    handles = [plt.Line2D([], [], ls="", marker="o", color=palette[m], label=spec.row_label(m, "instance"))
               for m in METHOD_ORDER if m in set(drawn["method"])]
    handles += [plt.Line2D([], [], ls="", marker=mk, color="grey", label=f) for f, mk in markers.items()]
    handles.append(plt.Line2D([], [], ls="--", color="black", marker="o", mfc="none", label="Pareto frontier"))
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 8), frameon=False, bbox_to_anchor=(0.5, -0.02))
    fig.suptitle("Accuracy against cost (marker size: model size; seeds averaged)")
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return fig


# -- all of it --------------------------------------------------------------------------------------
def build_efficiency_outputs(runs: pd.DataFrame, out: str | Path) -> dict[str, Any]:
    """Write the two tables and the Pareto figure under ``out``/{tables,figures}; the figures
    manifest (``figures.json``, read by the report) gets the figure's entry or its reason."""
    import matplotlib.pyplot as plt

    from analysis.figures import MANIFEST, _saver

    out = Path(out)
    pts = points(runs)
    tables = {"efficiency": build_efficiency(pts, runs),
              "distillation_cost": build_distillation_cost(distillation_costs(runs))}
    for table in tables.values():
        write_table(table, out / "tables")
    figures = out / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    fig = pareto_figure(pts)
    entry: dict[str, Any]
    if isinstance(fig, str):
        entry = {"files": [], "reason": fig}
        for ext in ("png", "pdf"):  # a figure of earlier runs must not stand in for this one
            (figures / f"{FIGURE}.{ext}").unlink(missing_ok=True)
    else:
        for ext in ("png", "pdf"):
            write_output(figures / f"{FIGURE}.{ext}", _saver(fig, ext))
        plt.close(fig)
        entry = {"files": [f"{FIGURE}.png", f"{FIGURE}.pdf"], "reason": None}
    manifest_path = figures / MANIFEST
    manifest = _read_json(manifest_path)
    manifest[FIGURE] = entry
    write_output(manifest_path, lambda tmp: tmp.write_text(json.dumps(manifest, indent=2) + "\n"))
    return {"tables": tables, "figure": entry, "points": pts}
