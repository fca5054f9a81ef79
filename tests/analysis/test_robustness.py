"""The robustness summary (analysis/robustness.py): AUDC by hand, and the table from a
hand-made run store whose every number is known."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from analysis.render import to_markdown
from analysis.robustness import audc, build_outputs, build_robustness, curves_frame
from analysis.tables import Context
from benchmark.train.perturb import load_spec

LEVELS = [0.0, 0.25, 0.5, 1.0, 2.0]


def test_audc_by_hand():
    values = [0.8, 0.8, 0.7, 0.6, 0.4]
    # Trapezoids: 0.25*(0.8+0.8)/2 = 0.2; 0.25*(0.8+0.7)/2 = 0.1875; 0.5*(0.7+0.6)/2 = 0.325;
    # 1*(0.6+0.4)/2 = 0.5. Sum 1.2125 over the span 2 -> 0.60625; relative: / 0.8 -> 0.7578125.
    assert audc(LEVELS, values) == pytest.approx(0.60625, abs=1e-12)
    assert audc(LEVELS, values, "relative") == pytest.approx(0.7578125, abs=1e-12)
    # Two levels: the mean of the end points; a flat curve: its value, relative 1.
    assert audc([0.0, 0.5], [0.9, 0.5]) == pytest.approx(0.7)
    assert audc(LEVELS, [0.42] * 5) == pytest.approx(0.42) and audc(LEVELS, [0.42] * 5, "relative") == pytest.approx(1.0)
    # Levels not starting at 0: normalised by their own span. (0.1->0.3: 0.2*0.75=0.15) / 0.2
    assert audc([0.1, 0.3], [1.0, 0.5]) == pytest.approx(0.75)


def test_audc_bad_input():
    assert math.isnan(audc(LEVELS, [0.8, math.nan, 0.7, 0.6, 0.4]))
    assert math.isnan(audc([0.0, 1.0], [0.0, 0.5], "relative"))  # no clean value to divide by
    for levels, values, match in [([0.0, 1.0], [0.5], "as many values"), ([0.0], [0.5], "at least two"),
                                  ([0.0, 1.0, 1.0], [1, 1, 1], "strictly increasing"),
                                  ([1.0, 0.0], [1, 1], "strictly increasing")]:
        with pytest.raises(ValueError, match=match):
            audc(levels, values)
    with pytest.raises(ValueError, match="unknown AUDC normalisation 'area'"):
        audc([0.0, 1.0], [1, 1], "area")


# -- a hand-made store ----------------------------------------------------------------------------
SPEC = load_spec(overrides=["perturbations.image_noise.levels=[0, 1, 2]", "perturbations.text_dropout.levels=[0, 0.5]"])
# (method, seed) -> clean, image-only, text-only, image-noise curve, text-dropout curve
RUNS = {
    ("teacher", 0): (0.80, 0.70, 0.60, [0.80, 0.60, 0.40], [0.80, 0.50]),
    ("teacher", 1): (0.90, 0.75, 0.65, [0.90, 0.70, 0.50], [0.90, 0.70]),
    ("kd", 0): (0.70, 0.60, 0.50, [0.70, 0.70, 0.70], [0.70, 0.30]),
}


def _write_store(root: Path) -> pd.DataFrame:
    rows = []
    for (method, seed), (clean, image, text, noise, dropout) in RUNS.items():
        run_id = f"hateful_memes-{method}-{seed}"
        path = root / run_id
        key = "test/hateful_memes/roc_auc"
        curves = {"image_noise": {"levels": [0.0, 1.0, 2.0], "metrics": [{key: v} for v in noise]},
                  "text_dropout": {"levels": [0.0, 0.5], "metrics": [{key: v} for v in dropout]}}
        target = path / "eval" / SPEC.eval_name
        target.mkdir(parents=True)
        (target / "metrics.json").write_text(json.dumps({"split": "test", "curves": curves}))
        rows.append({"run_id": run_id, "path": str(path), "dataset": "hateful_memes", "method": method,
                     "weighting": None, "variant": (), "seed": seed, "finished_at": f"2026-01-0{seed + 1}",
                     "model_params": 1000, key: clean, f"{key}@image": image, f"{key}@text": text})
    return pd.DataFrame(rows)


def test_table_from_a_hand_made_store(tmp_path):
    runs = _write_store(tmp_path)
    ctx = Context(runs, runs, expected_seeds=2)
    assert len(curves_frame(ctx, SPEC)) == 3 * (3 + 2)
    table = build_robustness(ctx, SPEC)
    records = table.records
    audc_rows = records[records["part"] == "audc"].set_index(["row", "perturbation"])
    # Teacher image noise: seed 0 (0.8+0.6)/2*1 + (0.6+0.4)/2*1 = 1.2 / 2 = 0.6; seed 1: (0.8 + 0.6)/2 = 0.7
    teacher = audc_rows.loc[("Teacher", "image_noise")]
    assert teacher["mean"] == pytest.approx(0.65) and teacher["std"] == pytest.approx(math.sqrt(0.005))
    assert teacher["n"] == 2 and teacher["values"] == "0.6 0.7"
    # Teacher text dropout: (0.8+0.5)/2 = 0.65 and (0.9+0.7)/2 = 0.8
    assert audc_rows.loc[("Teacher", "text_dropout")]["mean"] == pytest.approx(0.725)
    kd = audc_rows.loc[("KD", "image_noise")]
    assert kd["mean"] == pytest.approx(0.7) and kd["n"] == 1 and bool(kd["fewer_seeds_than_expected"])
    assert audc_rows.loc[("KD", "text_dropout")]["mean"] == pytest.approx(0.5)
    assert bool(audc_rows.loc[("MSD-instance", "image_noise")]["missing"])  # no run: missing, never 0
    views = records[records["part"] == "view"].set_index(["row", "view"])
    assert views.loc[("Teacher", "image")]["mean"] == pytest.approx(0.725)
    assert views.loc[("KD", "text")]["mean"] == pytest.approx(0.5)
    curve = records[(records["part"] == "curve") & (records["row"] == "Teacher")
                    & (records["perturbation"] == "image_noise") & (records["level"] == 2.0)]
    assert curve["mean"].item() == pytest.approx(0.45)
    # Markdown: one block for Hateful Memes, the teacher's AUDC ×100 with its std, missing cells marked.
    text = to_markdown(table)
    assert "## Hateful Memes (AUROC)" in text and "65.00 ± 7.07 (2)" in text and "—‡" in text
    assert "MM-IMDB" not in text.split("AUDC:")[0]  # a dataset without runs gets no block


def test_relative_normalisation_and_outputs(tmp_path):
    runs = _write_store(tmp_path / "runs")
    ctx = Context(runs, runs, expected_seeds=2)
    relative = load_spec(overrides=["perturbations.image_noise.levels=[0, 1, 2]",
                                    "perturbations.text_dropout.levels=[0, 0.5]", "audc.normalisation=relative"])
    assert relative.eval_name == SPEC.eval_name  # the same stored curves
    table, figure = build_outputs(ctx, tmp_path / "out", relative)
    audc_rows = table.records[table.records["part"] == "audc"].set_index(["row", "perturbation"])
    # Teacher image noise relative: 0.6 / 0.8 = 0.75 and 0.7 / 0.9 = 0.7778
    assert audc_rows.loc[("Teacher", "image_noise")]["mean"] == pytest.approx((0.75 + 0.7 / 0.9) / 2)
    assert audc_rows.loc[("KD", "image_noise")]["mean"] == pytest.approx(1.0)
    for ext in ("csv", "md", "tex"):
        assert (tmp_path / "out" / "tables" / f"robustness.{ext}").stat().st_size > 0
    assert [p.name for p in figure] == ["robustness.png", "robustness.pdf"]
    manifest = json.loads((tmp_path / "out" / "figures" / "figures.json").read_text())
    assert manifest["robustness"] == {"files": ["robustness.png", "robustness.pdf"], "reason": None}


def test_no_curves_gives_a_reason_not_a_figure(tmp_path):
    runs = _write_store(tmp_path / "runs")
    ctx = Context(runs, runs, expected_seeds=2)
    other = load_spec(overrides=["seed=5"])  # curves never computed for this spec
    table, figure = build_outputs(ctx, tmp_path / "out", other)
    assert isinstance(figure, str) and other.eval_name in figure
    assert any("No run has robustness curves" in n for n in table.footnotes)
    assert table.records[table.records["part"] == "audc"]["missing"].all()


def test_the_report_shows_the_robustness_table_and_figure(tmp_path):
    from analysis.report import build_report

    runs = _write_store(tmp_path / "runs")
    build_outputs(Context(runs, runs, expected_seeds=2), tmp_path / "out", SPEC)
    page = build_report(tmp_path / "out", runs.assign(completed=True, status="completed", row="x", variant_label="",
                                                      hpo_study=None),
                        runs, [], tmp_path / "runs").read_text()
    assert "<h3 id='robustness'>Robustness: missing and noisy modalities" in page
    assert "<figure id='robustness'><img src='../figures/robustness.png'" in page
    assert "65.00 ± 7.07 (2)" in page  # the teacher's image-noise AUDC, from the table's Markdown
