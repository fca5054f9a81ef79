"""The paper's Figure 1 and the saliency figures (docs/protocol.md §9.7), PNG and PDF.

Each builder returns a figure or a reason why it cannot be drawn (no runs of the kind it
needs); the caller writes ``results/figures/<name>.{png,pdf}`` and the report lists what is
missing and why, rather than drawing an empty or invented plot. Seeds are pooled (KDEs,
histograms) or averaged (per-sample gain); this is stated on each figure.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: no display on a server or in CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from analysis import spec  # noqa: E402
from analysis.load import read_predictions, select  # noqa: E402
from analysis.palette import color, dashes, palette  # noqa: E402
from analysis.saliency_data import teacher_saliency  # noqa: E402
from analysis.tables import Context, best_msd  # noqa: E402

VIEW_TITLES = {"multi": "Multi (image + text)", "image": "Image only", "text": "Text only"}
MANIFEST = "figures.json"  # what was drawn, and why the rest was not (read by the report)
FIGURES = ("figure1_output_density", "saliency_histograms", "learned_weights", "per_sample_gain", "table2_intervals")


def _positive_probability(frame: pd.DataFrame) -> np.ndarray:
    logits = np.stack(frame["logits"].to_numpy()).astype(np.float64)
    if logits.shape[1] == 1:
        return 1.0 / (1.0 + np.exp(-logits[:, 0]))
    shifted = logits - logits.max(axis=1, keepdims=True)
    probs = np.exp(shifted) / np.exp(shifted).sum(axis=1, keepdims=True)
    return probs[:, 1]


def _panels(n: int, width: float = 4.2, height: float = 3.4, ncols: int = 3) -> tuple[plt.Figure, list[plt.Axes]]:
    """``n`` panels on a grid of at most ``ncols`` columns; unused cells are hidden."""
    cols = min(n, ncols)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    flat = list(axes.ravel())
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


MODEL_COLORS: dict[str, str] = palette([*(r.label for r in spec.TABLE2_ROWS), spec.ONLY_IMAGE.label, spec.ONLY_TEXT.label])
"""Table 2 label -> colour, from :mod:`analysis.palette` (kept for callers that import it here)."""


def _legend_below(fig: plt.Figure, labels: list[str], styles: dict[str, dict] | None = None, title: str = "") -> None:
    """One legend for the whole figure, under the panels, so it never covers a curve."""
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=color(label), lw=2, **(styles or {}).get(label, {})) for label in labels]
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 6), frameon=False, title=title or None,
               bbox_to_anchor=(0.5, 0.0))


def figure1_output_density(ctx: Context, dataset: str = "hateful_memes", split: str = "val") -> plt.Figure | str:
    """KDE of P(positive class) per view, for the teacher, KD and the best MSD (chosen on val)."""
    best = best_msd(ctx, dataset)
    models = [("Teacher", "teacher", None), ("KD", "kd", None)]
    if best:
        models.append((f"MSD-{best}", "msd", best))
    rows = []
    for label, method, weighting in models:
        for _, run in select(ctx.runs, dataset, method, weighting).iterrows():
            if not run.get("has_predictions"):
                continue
            for view in VIEW_TITLES:
                frame = read_predictions(run["path"], split, view)
                if frame.empty or "logits" not in frame or frame["logits"].isna().any():
                    continue
                rows.append(pd.DataFrame({"p": _positive_probability(frame), "model": label, "view": view}))
    if not rows:
        return f"no {dataset} runs with per-sample predictions on {split}"
    data = pd.concat(rows, ignore_index=True)
    fig, axes = _panels(3)
    labels = [m[0] for m in models if m[0] in set(data["model"])]
    for ax, view in zip(axes, VIEW_TITLES):
        part = data[data["view"] == view]
        if not part.empty:
            sns.kdeplot(data=part, x="p", hue="model", hue_order=labels, ax=ax, clip=(0, 1), common_norm=False,
                        warn_singular=False, palette=palette(labels), legend=False)
        ax.set(title=VIEW_TITLES[view], xlabel="P(positive class)", xlim=(0, 1))
    _legend_below(fig, labels)
    fig.suptitle(f"{spec.DATASET_TITLES.get(dataset, dataset)} {split}: density of model outputs (seeds pooled)")
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    return fig


def _saliency_by_dataset(ctx: Context, splits: tuple[str, ...]) -> dict[str, list]:
    out: dict[str, list] = {}
    for dataset in ctx.datasets(spec.ALL_DATASETS):
        found = []
        for _, teacher in select(ctx.runs, dataset, "teacher").iterrows():
            sal = teacher_saliency(teacher, ctx.all_runs, splits=splits, cache_dir=ctx.cache_dir)
            if sal is not None and "divergence" in sal.scores:
                found.append(sal)
        if found:
            out[dataset] = found
    return out


def saliency_histograms(ctx: Context) -> plt.Figure | str:
    """Histogram of the teacher's ``s_image − s_text`` per dataset (default definition)."""
    by_dataset = _saliency_by_dataset(ctx, ("train", "test"))
    if not by_dataset:
        return "no teacher with a teacher cache or per-sample predictions"
    fig, axes = _panels(len(by_dataset), width=3.6)
    for ax, (dataset, sals) in zip(axes, by_dataset.items()):
        diff = np.concatenate([s.difference("divergence") for s in sals])
        sns.histplot(diff, bins=40, ax=ax, color=color("Teacher"), alpha=0.6)  # the teacher's saliency
        ax.axvline(0, color="black", lw=0.8, ls="--")
        ax.xaxis.set_major_locator(plt.MaxNLocator(5))  # long tick labels (-0.025) must not touch
        ax.set(title=f"{spec.DATASET_TITLES.get(dataset, dataset)} ({sals[0].split}, {len(sals)} teacher(s))",
               xlabel="s_image − s_text", ylabel="samples")
    fig.suptitle("Teacher modality saliency (divergence definition): > 0 means the image matters more")
    fig.tight_layout()
    return fig


def learned_weights(ctx: Context) -> plt.Figure | str:
    """Mean MSD weight per modality over training (``weight/<m>_mean`` in metrics.jsonl)."""
    rows = []
    msd = ctx.runs[ctx.runs["method"] == "msd"] if not ctx.runs.empty else ctx.runs
    for _, run in msd.iterrows():
        if run["variant"] or not Path(run["path"], "metrics.jsonl").exists():
            continue
        for line in Path(run["path"], "metrics.jsonl").read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if record.get("type") != "val":
                continue
            for m in ("image", "text"):
                if f"weight/{m}_mean" in record:
                    rows.append({"dataset": run["dataset"], "scheme": run["weighting"], "modality": m,
                                 "step": record.get("trainer/global_step", 0), "seed": run["seed"],
                                 "weight": record[f"weight/{m}_mean"]})
    if not rows:
        return "no MSD run logged weight/<modality>_mean in metrics.jsonl"
    data = pd.DataFrame(rows)
    datasets = [d for d in ctx.datasets(spec.ALL_DATASETS) if d in set(data["dataset"])]
    schemes = [s for s in (*spec.MSD_SCHEMES, "only_image", "only_text") if s in set(data["scheme"])]
    schemes += sorted(set(data["scheme"]) - set(schemes))
    labels = [spec.row_label("msd", s) for s in schemes]
    data["method"] = data["scheme"].map(lambda s: spec.row_label("msd", s))
    # Fixed schemes draw flat lines that coincide (uniform: every weight 1): each scheme has its
    # own dash pattern (analysis.palette); see the drawing order below.
    fig, grid = plt.subplots(2, len(datasets), figsize=(3.6 * len(datasets), 5.6), squeeze=False, sharex="col")
    for col, dataset in enumerate(datasets):
        for row, modality in enumerate(("image", "text")):
            ax = grid[row][col]
            part = data[(data["dataset"] == dataset) & (data["modality"] == modality)]
            for label in labels:
                line = part[part["method"] == label]
                if line.empty:
                    continue
                stats = line.groupby("step")["weight"].agg(["mean", "std"]).reset_index()
                # The learned scheme is a thick, light line underneath; the reference schemes are
                # thin dashed lines on top, so a line that coincides with another stays visible.
                learned = label == "MSD-learned"
                ax.plot(stats["step"], stats["mean"], color=color(label), lw=3.2 if learned else 1.4,
                        alpha=0.6 if learned else 1.0, dashes=dashes(label), marker="o" if len(stats) < 3 else None,
                        ms=4, zorder=2 if learned else 3)
                if stats["std"].notna().any():
                    ax.fill_between(stats["step"], stats["mean"] - stats["std"].fillna(0),
                                    stats["mean"] + stats["std"].fillna(0), color=color(label), alpha=0.15, lw=0)
            ax.set(title=f"{spec.DATASET_TITLES.get(dataset, dataset)}: {modality}",
                   xlabel="update" if row == 1 else "", ylabel=f"mean {modality} weight" if col == 0 else "")
    _legend_below(fig, labels, {label: {"dashes": dashes(label)} for label in labels},
                  title="weighting scheme (band: ± sd over seeds)")
    fig.suptitle("MSD auxiliary-term weights over training (learned = meta-learned; the others for reference)")
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    return fig


def per_sample_gain(ctx: Context, split: str = "test") -> plt.Figure | str:
    """Per-sample score gain of the best MSD over KD (seed means) against teacher saliency."""
    panels = []
    for dataset, sals in _saliency_by_dataset(ctx, (split,)).items():
        best = best_msd(ctx, dataset)
        if best is None:
            continue
        scores = {}
        for key, (method, weighting) in {"msd": ("msd", best), "kd": ("kd", None)}.items():
            frames = [read_predictions(r["path"], split).set_index("sample_index")["score"]
                      for _, r in select(ctx.runs, dataset, method, weighting).iterrows() if r.get("has_predictions")]
            if frames:
                scores[key] = pd.concat(frames, axis=1).mean(axis=1)
        if len(scores) < 2:
            continue
        saliency = pd.concat([pd.Series(s.difference("divergence"), index=s.sample_index) for s in sals], axis=1).mean(axis=1)
        joined = pd.DataFrame({"saliency": saliency, "gain": scores["msd"] - scores["kd"]}).dropna()
        if not joined.empty:
            panels.append((dataset, best, joined))
    if not panels:
        return f"needs a teacher's {split} saliency and MSD and KD predictions on the same dataset"
    fig, axes = _panels(len(panels), width=3.8)
    for ax, (dataset, best, joined) in zip(axes, panels):
        ax.scatter(joined["saliency"], joined["gain"], s=6, alpha=0.25, color="gray")
        bins = min(8, max(2, joined["saliency"].nunique()))
        if joined["saliency"].nunique() > 1:
            sns.regplot(data=joined, x="saliency", y="gain", x_bins=bins, fit_reg=False, ax=ax, color=color(f"MSD-{best}"),
                        seed=0)  # the CI bootstrap: same figure from the same runs
        ax.axhline(0, color="black", lw=0.8, ls="--")
        ax.set(title=f"{spec.DATASET_TITLES.get(dataset, dataset)}: MSD-{best} − KD", xlabel="teacher s_image − s_text",
               ylabel="per-sample score gain")
    fig.suptitle(f"Per-sample gain of MSD over KD ({split}, seed means; coloured: binned means ± 95% CI)")
    fig.tight_layout()
    return fig


def table2_intervals(ctx: Context, table2: pd.DataFrame | None = None) -> plt.Figure | str:
    """Table 2 as dots and intervals: per column, each method's seeds (small dots), their mean
    (large dot) and its 95 % t-interval over seeds, on an axis fitted to the data (a bar from 0
    would hide the 1-3 point differences that matter); † where Table 2 marks MSD significantly
    better than KD (paired bootstrap over test samples, p < 0.05)."""
    if table2 is None:
        from analysis.tables import build_table2

        table2 = build_table2(ctx).records
    cells = table2[(table2["metric"] != "model_params") & (table2["n"].fillna(0) > 0)]
    if cells.empty:
        return "Table 2 has no cell with runs"
    columns = list(dict.fromkeys(zip(cells["dataset"], cells["metric"])))
    order = [r.label for r in spec.TABLE2_ROWS]
    fig, axes = _panels(len(columns), width=4.2, height=3.2)
    for ax, (dataset, metric) in zip(axes, columns):
        part = cells[(cells["dataset"] == dataset) & (cells["metric"] == metric)]
        present = [m for m in order if m in set(part["row"])]
        for y, label in enumerate(present):
            cell = part[part["row"] == label].iloc[0]
            values = [float(v) * 100 for v in str(cell["values"]).split()]
            # Seeds as hollow dots just under the interval, so the line does not hide them.
            ax.scatter(values, [y + 0.24] * len(values), s=16, facecolors="none", edgecolors=color(label), lw=0.9,
                       zorder=2)
            mean = float(cell["mean"]) * 100
            low, high = cell.get("ci95_low"), cell.get("ci95_high")
            if pd.notna(low) and pd.notna(high):
                ax.plot([float(low) * 100, float(high) * 100], [y, y], color=color(label), lw=2, zorder=3)
            ax.scatter([mean], [y], s=46, color=color(label), edgecolor="white", lw=0.8, zorder=4)
            if bool(cell.get("significant_vs_kd", False)):
                right = float(high) * 100 if pd.notna(high) else max(values)
                ax.annotate("†", (right, y), xytext=(4, 0), textcoords="offset points", va="center", fontsize=11)
        ax.set_yticks(range(len(present)), present)
        ax.invert_yaxis()  # Table 2's row order, top to bottom
        ax.margins(x=0.12, y=0.08)
        ax.set(title=spec.metric_column(dataset, metric), xlabel="test ×100")
    fig.suptitle("Table 2: seeds (hollow dots), mean (filled dot) and 95 % t-interval over seeds. "
                 "†: MSD > KD, paired bootstrap over test samples, p < 0.05", fontsize=9)
    fig.tight_layout()
    return fig


def _saver(fig: plt.Figure, ext: str) -> Callable[[Path], None]:
    """Save ``fig`` as ``ext``; PDFs without a creation date, so reruns give identical files."""
    metadata = {"CreationDate": None} if ext == "pdf" else None
    return lambda tmp: fig.savefig(tmp, format=ext, dpi=130, bbox_inches="tight", metadata=metadata)


def build_figures(ctx: Context, out_dir: str | Path, table2: pd.DataFrame | None = None) -> dict[str, list[Path] | str]:
    """Draw every figure into ``out_dir``; value: written paths, or why it was not drawn."""
    from analysis.render import write_output

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sns.set_theme(style="whitegrid", context="paper")
    builders: dict[str, Callable[[], plt.Figure | str]] = {
        "figure1_output_density": lambda: figure1_output_density(ctx),
        "saliency_histograms": lambda: saliency_histograms(ctx),
        "learned_weights": lambda: learned_weights(ctx),
        "per_sample_gain": lambda: per_sample_gain(ctx),
        "table2_intervals": lambda: table2_intervals(ctx, table2),
    }
    result: dict[str, list[Path] | str] = {}
    for name, build in builders.items():
        fig = build()
        if isinstance(fig, str):
            result[name] = fig
            continue
        paths = []
        for ext in ("png", "pdf"):
            paths.append(write_output(out / f"{name}.{ext}", _saver(fig, ext)))
        plt.close(fig)
        result[name] = paths
    manifest = {name: {"files": [p.name for p in v], "reason": None} if isinstance(v, list)
                else {"files": [], "reason": v} for name, v in result.items()}
    write_output(out / MANIFEST, lambda tmp: tmp.write_text(json.dumps(manifest, indent=2) + "\n"))
    return result
