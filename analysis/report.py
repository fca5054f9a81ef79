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
from analysis.claims import claims_frame, evaluate_claims, load_claims
from analysis.figures import FIGURES, MANIFEST
from analysis.wandb_links import find_wandb_runs, wandb_roots

TEMPLATE = Path(__file__).with_name("templates") / "report.html"
ASSUMPTIONS = Path(__file__).resolve().parents[1] / "docs" / "assumptions.md"
TABLES = (("table2", "Table 2: main results"), ("saliency", "Saliency"), ("ablations", "Ablations"),
          ("robustness", "Robustness: missing and noisy modalities"))
FIGURE_CAPTIONS = {
    "figure1_output_density": "Figure 1: density of P(positive class) on Hateful Memes validation, per view.",
    "saliency_histograms": "Teacher saliency s_image − s_text per dataset.",
    "learned_weights": "MSD auxiliary weights over training (metrics.jsonl).",
    "per_sample_gain": "Per-sample gain of the best MSD over KD against teacher saliency (test).",
    "table2_bars": "Table 2 as bars, ± sd over seeds.",
    "robustness": "Headline metric vs image-noise σ and text-dropout rate per model, ± sd over seeds (docs/robustness.md).",
}
REPORT_FIGURES = (*FIGURES, "robustness")  # robustness: drawn by analysis/robustness.py
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
    notes_html = "".join(f"<p class='note'>{html.escape(n)}</p>" for n in notes)
    return total + trials_html + notes_html + _frame_html(table.reset_index().rename(columns={"model": "model [variant]"}))


def _runs_html(all_runs: pd.DataFrame, report_dir: Path, wandb: dict) -> str:
    if all_runs.empty:
        return "<p class='missing'>no runs</p>"
    rows = []
    for _, run in all_runs.sort_values(["dataset", "method", "weighting", "seed"], na_position="first").iterrows():
        local = f"<a href='{_link(Path(run['path']), report_dir)}/'>run dir</a>"
        w = wandb.get(run["run_id"])
        if w is None:
            tracking = "—"
        elif w.url:
            tracking = f"<a href='{html.escape(w.url)}'>W&amp;B {html.escape(w.wandb_id)}</a>"
        else:
            kind = "offline" if w.offline else "local"
            tracking = f"<a href='{_link(w.path, report_dir)}/'>W&amp;B {kind} {html.escape(w.wandb_id)}</a>"
        metric = f"test/{run['dataset']}/{run.get('headline_metric')}"
        value = run.get(metric) if metric in run else None
        rows.append({"run": html.escape(run["run_id"]), "dataset": run["dataset"], "model": html.escape(run["row"]),
                     "variant": html.escape(run["variant_label"] or "default"), "seed": run["seed"],
                     "status": run["status"], "test headline": "—" if value is None or pd.isna(value) else f"{value:.4f}",
                     "W&B": tracking, "files": local})
    return _frame_html(pd.DataFrame(rows))


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
    assumptions = (_markdown(ASSUMPTIONS.read_text(), demote=1) if ASSUMPTIONS.exists()
                   else "<p class='missing'>docs/assumptions.md not found next to the package.</p>")
    wandb = find_wandb_runs(wandb_roots(wandb_dirs))
    sections = [
        ("overview", "Runs", _counts_html(all_runs, used, notes)),
        ("tables", "Tables", _tables_html(tables_dir, report_dir)),
        ("claims", "Claims: ours vs the paper",
         "<p>From <code>analysis/claims.yaml</code>; the paper's numbers could not be read, so each "
         "<i>paper</i> value is null until someone fills it in.</p>" + _frame_html(claims_frame(claims))
         + "<h3>Statements of the paper's abstract</h3>" + _frame_html(claims_frame(claims, "qualitative"))),
        ("figures", "Figures", _figures_html(figures_dir, report_dir)),
        ("assumptions", "Assumptions (docs/assumptions.md)", assumptions),
        ("runs", "Every run", _runs_html(all_runs, report_dir, wandb)),
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
