"""``results/report/index.html``: one static page with every table, figure and run.

Static on purpose: no JavaScript, no server, no network — it opens from a file system, a CI
artifact or a repository page, and a headless browser can check that it renders. Tables
come from their Markdown files (the same text a reader sees on the repository page),
figures are linked relatively, and the assumptions are rendered from
``docs/assumptions.md``. Built with :class:`string.Template` (no template engine needed).
"""

from __future__ import annotations

import html
import json
import os
from datetime import datetime, timezone
from pathlib import Path
from string import Template
from urllib.parse import quote

import pandas as pd
from markdown_it import MarkdownIt

from analysis import spec
from analysis.claims import NOT_AVAILABLE, claims_frame, evaluate_claims, load_claims
from analysis.figures import FIGURES, MANIFEST
from analysis.wandb_links import find_wandb_runs, wandb_roots

TEMPLATE = Path(__file__).with_name("templates") / "report.html"
ASSUMPTIONS = Path(__file__).resolve().parents[1] / "docs" / "assumptions.md"
TABLES = (("table2", "Table 2: main results"), ("saliency", "Saliency"), ("ablations", "Ablations"),
          ("robustness", "Robustness: missing and noisy modalities"),
          ("efficiency", "Efficiency: what a student costs"), ("distillation_cost", "Distillation cost"))
FIGURE_CAPTIONS = {
    "figure1_output_density": "Figure 1: density of P(positive class) on Hateful Memes validation, per view.",
    "saliency_histograms": "Teacher saliency s_image − s_text per dataset.",
    "learned_weights": "MSD auxiliary weights over training (metrics.jsonl).",
    "per_sample_gain": "Per-sample gain of the best MSD over KD against teacher saliency (test).",
    "table2_intervals": "Table 2 per column: each seed (hollow dots), the mean (filled dot) and its 95 % t-interval "
                        "over seeds, on an axis fitted to the data; † MSD better than KD (paired bootstrap over "
                        "test samples, 1,000 resamples, p < 0.05), as in the table.",
    "robustness": "Headline metric vs image-noise σ and text-dropout rate per model, ± sd over seeds (docs/robustness.md).",
    "efficiency_pareto": "Test metric vs one-thread CPU latency per sample (batch 1) and vs FLOPs per sample, every "
                         "family, size and method of experiments/efficiency.yaml; Pareto frontier ringed (docs/efficiency.md).",
}
REPORT_FIGURES = (*FIGURES, "robustness", "efficiency_pareto")  # drawn by analysis/robustness.py, analysis/efficiency.py
_MD = MarkdownIt("commonmark", {"html": False}).enable("table")


def _link(target: Path, base: Path) -> str:
    """A relative URL from ``base`` (a directory) to ``target``."""
    try:
        rel = os.path.relpath(target.resolve(), base.resolve())
    except ValueError:  # another drive: fall back to an absolute file URL
        return target.resolve().as_uri()
    return quote(rel.replace(os.sep, "/"))


def _markdown(text: str, demote: int = 1) -> str:
    """Markdown -> HTML with headings pushed down ``demote`` levels (the page owns h1/h2)."""
    lines = [("#" * demote + line) if line.startswith("#") else line for line in text.splitlines()]
    return _MD.render("\n".join(lines))


def _without_title(text: str) -> str:
    """A Markdown file without its first ``# title`` line: the report's section heading is the
    title, so it would otherwise appear twice."""
    lines = text.splitlines()
    first = next((i for i, line in enumerate(lines) if line.strip()), None)
    if first is not None and lines[first].startswith("# "):
        del lines[first]
    return "\n".join(lines)


def _frame_html(frame: pd.DataFrame) -> str:
    if frame.empty:
        return "<p class='missing'>none</p>"
    return "<div class='scroll'>" + frame.to_html(index=False, escape=False, border=0) + "</div>"


def _section(anchor: str, title: str, body: str) -> str:
    return f"<section id='{anchor}'><h2>{html.escape(title)}</h2>\n{body}\n</section>"


def _tables_html(tables_dir: Path, report_dir: Path) -> str:
    parts = []
    for name, title in TABLES:
        md = tables_dir / f"{name}.md"
        if not md.exists():
            parts.append(f"<h3>{html.escape(title)}</h3><p class='missing'>not built yet: run "
                         "<code>msd analyze tables</code>.</p>")
            continue
        text = md.read_text().split("\n", 1)[1] if md.read_text().startswith("# ") else md.read_text()
        links = " · ".join(f"<a href='{_link(tables_dir / f'{name}.{ext}', report_dir)}'>{ext.upper()}</a>"
                           for ext in ("csv", "md", "tex") if (tables_dir / f"{name}.{ext}").exists())
        parts.append(f"<h3 id='{name}'>{html.escape(title)}</h3><p class='meta'>{links}</p>"
                     f"<div class='scroll'>{_markdown(text, demote=2)}</div>")
    return "\n".join(parts)


def _figures_html(figures_dir: Path, report_dir: Path) -> str:
    manifest_path = figures_dir / MANIFEST
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    parts = []
    for name in REPORT_FIGURES:
        png, pdf = figures_dir / f"{name}.png", figures_dir / f"{name}.pdf"
        caption = html.escape(FIGURE_CAPTIONS.get(name, name))
        if png.exists():
            pdf_link = f" (<a href='{_link(pdf, report_dir)}'>PDF</a>)" if pdf.exists() else ""
            parts.append(f"<figure id='{name}'><img src='{_link(png, report_dir)}' alt='{html.escape(name)}'>"
                         f"<figcaption><b>{html.escape(name)}</b>: {caption}{pdf_link}</figcaption></figure>")
        else:
            reason = (manifest.get(name) or {}).get("reason") or "not drawn yet: run `msd analyze figures`"
            parts.append(f"<p id='{name}' class='missing'><b>{html.escape(name)}</b> not drawn: "
                         f"{html.escape(reason)}.</p>")
    return "\n".join(parts)


def _counts_html(all_runs: pd.DataFrame, used: pd.DataFrame, notes: list[str]) -> str:
    """Runs per model row and dataset: ``used / completed``, plus failed and unfinished ones."""
    if all_runs.empty:
        return "<p class='missing'>The run store is empty.</p>"
    used_ids = set(used["run_id"]) if not used.empty else set()
    # HPO trials are runs of the same store, each with its own sampled values: one row per
    # trial would bury the table's cells, so they are counted per study instead.
    is_trial = all_runs["hpo_study"].notna() if "hpo_study" in all_runs else pd.Series(False, index=all_runs.index)
    studies = all_runs.loc[is_trial, "hpo_study"].value_counts().sort_index()
    trials_html = ("<p>Not in the table below: " + ", ".join(
        f"{n} trial run(s) of HPO study <code>{html.escape(str(study))}</code>" for study, n in studies.items())
        + " (<code>msd hpo show STUDY</code>; <code>docs/hpo.md</code>).</p>") if len(studies) else ""
    total = (f"<p>{len(all_runs)} runs in the store: {int(all_runs['completed'].sum())} completed, "
             f"{len(used)} used by the tables. Cells: runs used by the tables / completed runs "
             "(failed and unfinished runs in parentheses).</p>")
    all_runs = all_runs[~is_trial]
    if all_runs.empty:
        return total + trials_html
    frame = all_runs.assign(
        model=all_runs["row"] + all_runs["variant_label"].map(lambda v: f" [{v}]" if v else ""),
        used=all_runs["run_id"].isin(used_ids),
        failed=all_runs["status"].isin(["failed", "interrupted"]),
        open=~all_runs["status"].isin(["completed", "failed", "interrupted"]),
    )

    def cell(group: pd.DataFrame) -> str:
        text = f"{int(group['used'].sum())} / {int(group['completed'].sum())}"
        extra = [f"{int(group[k].sum())} {k}" for k in ("failed", "open") if group[k].any()]
        return text + (f" ({', '.join(extra)})" if extra else "")

    table = frame.groupby(["model", "dataset"]).apply(cell, include_groups=False).unstack("dataset").fillna("—")
    order = [r.label for r in spec.TABLE2_ROWS]
    table = table.loc[sorted(table.index, key=lambda m: (order.index(m) if m in order else len(order), m))]
    known = [d for d in spec.DATASET_TITLES if d in table.columns]
    table = table[known + sorted(c for c in table.columns if c not in known)]
    table.columns = [spec.DATASET_TITLES.get(c, c) for c in table.columns]  # drops the "dataset" axis name too
    table.index.name = "model [variant]"
    notes_html = "".join(f"<p class='note'>{html.escape(n)}</p>" for n in notes)
    return total + trials_html + notes_html + _frame_html(table.reset_index())


def _headline(run: pd.Series) -> str:
    """The run's test headline ×100, as in the tables (one convention everywhere)."""
    metric = f"test/{run['dataset']}/{run.get('headline_metric')}"
    value = run.get(metric) if metric in run else None
    return "—" if value is None or pd.isna(value) else f"{value * 100:.2f}"


def _tracking(run_id: str, wandb: dict) -> str:
    """An online W&B run links to its page; a local (offline) one is named, not linked: the
    run store and W&B folders are not committed, so such a link would be dead in a clone."""
    w = wandb.get(run_id)
    if w is None:
        return "—"
    if w.url:
        return f"<a href='{html.escape(w.url)}'>W&amp;B {html.escape(w.wandb_id)}</a>"
    kind = "offline" if w.offline else "local"
    # W&B ids are derived from run ids: repeat the id only where it differs.
    return f"W&amp;B {kind}" + ("" if w.wandb_id == run_id else f" {html.escape(w.wandb_id)}")


def _runs_html(all_runs: pd.DataFrame, save_dir: str | Path, wandb: dict) -> str:
    """One collapsible table per dataset; columns narrow enough for a 1400 px page."""
    if all_runs.empty:
        return "<p class='missing'>no runs</p>"
    intro = (f"<p>Each run's files (config, summary, metrics, predictions, checkpoint) are in "
             f"<code>{html.escape(str(save_dir))}/&lt;run id&gt;/</code> of the machine that ran them; the run "
             "store and W&amp;B's local folders are not committed, so they are named here, not linked "
             "(<code>msd runs show RUN_ID</code> prints one). Test headline ×100, as in the tables.</p>")
    parts = [intro]
    order = list(spec.DATASET_TITLES)
    datasets = sorted(all_runs["dataset"].unique(), key=lambda d: (order.index(d) if d in order else len(order), d))
    for dataset in datasets:
        runs = all_runs[all_runs["dataset"] == dataset].sort_values(["method", "weighting", "seed"], na_position="first")
        rows = [{"run id": f"<code>{html.escape(run['run_id'])}</code>",
                 "model [variant]": html.escape(run["row"] + (f" [{run['variant_label']}]" if run["variant_label"] else "")),
                 "seed": run["seed"], "status": html.escape(str(run["status"])),
                 "test headline": _headline(run), "W&B": _tracking(run["run_id"], wandb)}
                for _, run in runs.iterrows()]
        done = int(runs["completed"].sum()) if "completed" in runs else 0
        title = html.escape(spec.DATASET_TITLES.get(dataset, dataset))
        parts.append(f"<details id='runs-{html.escape(dataset)}'><summary><b>{title}</b>: {len(runs)} runs, "
                     f"{done} completed</summary>\n<div class='runs'>"
                     + pd.DataFrame(rows).to_html(index=False, escape=False, border=0) + "</div></details>")
    return "\n".join(parts)


def _claims_html(claims: list) -> str:
    """Claims with a paper value as rows; those without one (the paper's numbers could not be
    read) as one note, not one identical row each."""
    values = [c for c in claims if c.kind == "value"]
    compared = [c for c in values if c.paper is not None]
    waiting = len(values) - len(compared)
    parts = ["<p>From <code>analysis/claims.yaml</code>.</p>"]
    if waiting:
        parts.append(f"<p class='note'>{waiting} of {len(values)} numeric claims have no paper value: the paper's "
                     f"numbers could not be read, so <code>paper_value</code> is null ({NOT_AVAILABLE}). Our values "
                     "for them are the cells of the tables above; fill <code>paper_value</code> in "
                     "<code>analysis/claims.yaml</code> to compare.</p>")
    if compared:
        parts.append(_frame_html(claims_frame(compared)))
    return "".join(parts)


def build_report(out_root: str | Path, all_runs: pd.DataFrame, used: pd.DataFrame, notes: list[str],
                 save_dir: str | Path, claims_path: str | Path | None = None,
                 wandb_dirs: list[str | Path] | None = None) -> Path:
    """Write ``<out_root>/report/index.html`` from ``<out_root>/{tables,figures}``."""
    from analysis.render import write_output
    from benchmark.train.provenance import git_commit

    out_root = Path(out_root)
    report_dir, tables_dir, figures_dir = out_root / "report", out_root / "tables", out_root / "figures"
    report_dir.mkdir(parents=True, exist_ok=True)
    claims = evaluate_claims(load_claims(claims_path) if claims_path else load_claims(), tables_dir)
    assumptions = (_markdown(_without_title(ASSUMPTIONS.read_text()), demote=1) if ASSUMPTIONS.exists()
                   else "<p class='missing'>docs/assumptions.md not found next to the package.</p>")
    wandb = find_wandb_runs(wandb_roots(wandb_dirs))
    sections = [
        ("overview", "Runs", _counts_html(all_runs, used, notes)),
        ("tables", "Tables", _tables_html(tables_dir, report_dir)),
        ("claims", "Claims: ours vs the paper", _claims_html(claims)
         + "<h3>Statements of the paper's abstract</h3>" + _frame_html(claims_frame(claims, "qualitative"))),
        ("figures", "Figures", _figures_html(figures_dir, report_dir)),
        ("assumptions", "Assumptions: every [rule] this suite had to reconstruct", assumptions),
        ("runs", "Every run", _runs_html(all_runs, save_dir, wandb)),
    ]
    meta = (f"Generated {datetime.now(timezone.utc).isoformat(timespec='seconds')} by <code>msd analyze report</code> "
            f"from the run store <code>{html.escape(str(save_dir))}</code> (code {html.escape(git_commit() or 'unknown')}). "
            f"Datasets: {html.escape(', '.join(spec.DATASET_TITLES.values()))}.")
    page = Template(TEMPLATE.read_text()).substitute(
        title="MSD benchmark: reproduction report",
        meta=meta,
        nav=" ".join(f"<a href='#{a}'>{html.escape(t.split(':')[0])}</a>" for a, t, _ in sections),
        body="\n".join(_section(a, t, b) for a, t, b in sections),
    )
    target = report_dir / "index.html"
    write_output(target, lambda tmp: tmp.write_text(page))
    return target
