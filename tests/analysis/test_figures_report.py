"""Figures are written, and the report links every table, figure and run to files that exist."""

from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import unquote

from analysis.figures import FIGURES
from analysis.report import build_report
from analysis.wandb_links import find_wandb_runs


def test_every_figure_is_written_as_nonempty_png_and_pdf(analyzed_store):
    _store, out = analyzed_store
    manifest = json.loads((out / "figures" / "figures.json").read_text())
    for name in FIGURES:
        assert manifest[name]["reason"] is None, manifest[name]
        for ext in ("png", "pdf"):
            path = out / "figures" / f"{name}.{ext}"
            assert path.stat().st_size > 1000, path
        assert (out / "figures" / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert (out / "figures" / f"{name}.pdf").read_bytes()[:5] == b"%PDF-"


def test_report_contains_every_table_and_image_and_its_links_exist(analyzed_store):
    _store, out = analyzed_store
    page = (out / "report" / "index.html").read_text()
    for table in ("table2", "saliency", "ablations"):
        assert f"id='{table}'" in page
    assert "MSD-instance" in page and "Spearman" in page and "Saliency definition" in page
    images = re.findall(r"<img src='([^']+)'", page)
    assert sorted(Path(unquote(src)).stem for src in images) == sorted(FIGURES)
    links = re.findall(r"(?:href|src)='([^'#:]+)'", page)  # relative links only
    assert links
    for link in links:
        assert (out / "report" / unquote(link)).exists(), link
    assert "paper value not available" in page
    assert "Assumptions" in page and "distill.temperature" in page  # docs/assumptions.md rendered
    assert "65 runs in the store" in page


def test_report_names_each_runs_offline_wandb_run(analyzed_store, tmp_path):
    store, out = analyzed_store
    run_id = sorted(p.name for p in store.runs.iterdir())[0]
    offline = tmp_path / "wandb" / "wandb" / "offline-run-20260101_000000-abc123"
    offline.mkdir(parents=True)
    # What the W&B logger writes: run_id in the config record of the run-*.wandb log.
    (offline / "run-abc123.wandb").write_bytes(b":W&B\x00\x01\n\x06run_id\x82\x01$\"" + run_id.encode() + b"\"2\x0c")
    online = tmp_path / "wandb" / "wandb" / "run-20260101_000001-xyz789"
    (online / "logs").mkdir(parents=True)
    (online / "run-xyz789.wandb").write_bytes(b"run_id\x82\x01$\"some-other-run\"")
    (online / "logs" / "debug.log").write_text("View run at https://wandb.ai/me/msd-benchmark/runs/xyz789\n")
    found = find_wandb_runs([tmp_path / "wandb"])
    assert found[run_id].offline and found[run_id].wandb_id == "abc123"
    assert found["some-other-run"].url == "https://wandb.ai/me/msd-benchmark/runs/xyz789"

    from analysis.load import load_runs, select_setting

    runs = load_runs(store.runs)
    used, notes = select_setting(runs)
    report = build_report(tmp_path / "results", runs, used, notes, store.runs, wandb_dirs=[tmp_path / "wandb"])
    page = report.read_text()
    # Named, not linked: W&B's local folders are not committed, so a link would be dead in a clone.
    assert "W&amp;B offline abc123" in page and not re.search(r"href='[^']+'>W&amp;B offline", page)
    assert f"<code>{run_id}</code>" in page
    # Tables and figures were not built under this output root: the report says so.
    assert "not built yet" in page and "not drawn" in page


def test_hpo_trial_runs_are_counted_per_study_not_listed_as_rows(tmp_path, store_tools):
    import yaml

    from analysis.load import load_runs
    from analysis.report import _counts_html

    store = store_tools.FakeStore(tmp_path / "store")
    store.add_run("hateful_memes", "kd", seed=0)
    for trial, tau in enumerate((1.5, 3.0)):
        run = store.add_run("hateful_memes", "kd", seed=0, variant={"distill.temperature": tau})
        config = yaml.safe_load((run / "config.yaml").read_text())
        config["hpo"] = {"study": "kd_hm", "trial": trial}
        (run / "config.yaml").write_text(yaml.safe_dump(config))
    runs = load_runs(store.runs)
    assert sorted(runs["hpo_study"].dropna()) == ["kd_hm", "kd_hm"]
    page = _counts_html(runs, runs.iloc[:0], [])
    assert "3 runs in the store" in page and "2 trial run(s) of HPO study <code>kd_hm</code>" in page
    assert "τ=1.5" not in page and "τ=3" not in page  # no row per trial
    assert ">KD<" in page  # the ordinary run keeps its row


def test_report_reads_well(analyzed_store):
    """The issues found in a browser: an empty index column, a doubled heading, two number
    conventions, one identical claim row per claim."""
    store, out = analyzed_store
    page = (out / "report" / "index.html").read_text()
    overview = page.split("<section id='overview'>")[1].split("</section>")[0]
    assert "<th></th>" not in overview and ">dataset<" not in overview
    assert all(f"<th>{t}</th>" in overview for t in ("Hateful Memes", "MM-IMDB", "VQA2"))
    assert len(re.findall(r"<h[1-6][^>]*>Assumptions", page)) == 1 and "Assumptions: every [rule]" in page
    # The runs table shows headlines ×100, as the tables do.
    run = next(p for p in sorted(store.runs.iterdir()) if p.name.startswith("hateful_memes-kd"))
    summary = json.loads((run / "summary.json").read_text())
    value = summary["metrics"]["test/hateful_memes/roc_auc"]
    row = page.split(f"<code>{run.name}</code>")[1].split("</tr>")[0]
    assert f"<td>{value * 100:.2f}</td>" in row and f"{value:.4f}" not in page
    assert page.count("paper value not available") == 1  # one note, not a row per claim
    from analysis.claims import load_claims

    claims = load_claims()["claims"]
    waiting = sum(1 for c in claims if c["paper_value"] is None)
    assert f"{waiting} of {len(claims)} numeric claims have no paper value" in page
    assert page.count("<details") == len({p.name.split("-")[0] for p in store.runs.iterdir()})


def test_table2_intervals_are_the_table_cells(analyzed_store):
    import pandas as pd

    from analysis.figures import table2_intervals
    from analysis.tables import Context

    _store, out = analyzed_store
    records = pd.read_csv(out / "tables" / "table2.csv")
    fig = table2_intervals(Context(pd.DataFrame(), pd.DataFrame()), records)
    ax = next(a for a in fig.axes if a.get_title() == "Hateful Memes AUROC")
    cells = records[(records["dataset"] == "hateful_memes") & (records["metric"] == "roc_auc")].set_index("row")
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels[0] == "Teacher" and "MSD-learned" in labels
    intervals = sorted(tuple(round(v, 6) for v in line.get_xdata()) for line in ax.get_lines())
    expected = sorted((round(cells.loc[r, "ci95_low"] * 100, 6), round(cells.loc[r, "ci95_high"] * 100, 6))
                      for r in labels)
    assert intervals == expected
    low, high = ax.get_xlim()
    assert low > 0 and low > cells["ci95_low"].min() * 100 - 0.5 * (cells["ci95_high"].max() - cells["ci95_low"].min()) * 100
    marked = {t.get_text() for t in ax.texts}
    assert ("†" in marked) == bool(cells["significant_vs_kd"].fillna(False).astype(bool).any())


def test_a_wandb_directory_with_a_dedup_suffix_keeps_the_runs_wandb_id(tmp_path):
    """W&B appends "-1" to the directory of a resumed run started within the same second as its
    first attempt; the record file still carries the W&B id, and the later directory wins."""
    first = tmp_path / "offline-run-20260101_000000-teacher-abc"
    second = tmp_path / "offline-run-20260101_000000-teacher-abc-1"
    for directory, step in ((first, b"1"), (second, b"2")):
        directory.mkdir()
        (directory / "run-teacher-abc.wandb").write_bytes(b"run_id\x82\x01$\"teacher-abc\"" + step)
    found = find_wandb_runs([tmp_path])
    assert found["teacher-abc"].wandb_id == "teacher-abc"
    assert found["teacher-abc"].path == second
