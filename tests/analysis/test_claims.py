"""The claims registry: null paper values are reported, filled ones are checked."""

from __future__ import annotations

import pandas as pd
import yaml
from typer.testing import CliRunner

from analysis.claims import NOT_AVAILABLE, evaluate_claims, load_claims
from analysis.cli import analyze_app
from analysis.spec import PAPER_DATASETS, TABLE2_ROWS, table2_columns


def test_shipped_registry_covers_every_paper_cell_with_null_values():
    claims = load_claims()
    cells = {(c["row"], c["dataset"], c["metric"]) for c in claims["claims"]}
    expected = {(r.label, d, m) for d, m in table2_columns(PAPER_DATASETS) for r in TABLE2_ROWS}
    assert cells == expected
    assert all(c["paper_value"] is None and c["tolerance"] > 0 and c["split"] == "test" for c in claims["claims"])


def _check(out, claims_file=None):
    args = ["check-claims", "--out", str(out)] + (["--claims", str(claims_file)] if claims_file else [])
    return CliRunner().invoke(analyze_app, args)


def test_null_claims_say_paper_value_not_available_and_pass(analyzed_store):
    _store, out = analyzed_store
    results = evaluate_claims(load_claims(), out / "tables")
    values = [r for r in results if r.kind == "value"]
    assert all(r.status == NOT_AVAILABLE and not r.failed for r in values)
    ours = next(r for r in values if r.id == "table2/hateful_memes/roc_auc/kd")
    table = pd.read_csv(out / "tables" / "table2.csv")
    kd = table[(table["row"] == "KD") & (table["dataset"] == "hateful_memes") & (table["metric"] == "roc_auc")]
    assert ours.ours == kd["mean"].iloc[0] * 100 and ours.n == 3
    result = _check(out)
    assert result.exit_code == 0, result.output
    assert "without a paper value" in result.output


def test_filled_claims_pass_within_and_fail_outside_tolerance(analyzed_store, tmp_path):
    _store, out = analyzed_store
    table = pd.read_csv(out / "tables" / "table2.csv")
    kd = table[(table["row"] == "KD") & (table["dataset"] == "hateful_memes") & (table["metric"] == "roc_auc")]
    ours = float(kd["mean"].iloc[0]) * 100
    claims = load_claims()
    target = next(c for c in claims["claims"] if c["id"] == "table2/hateful_memes/roc_auc/kd")

    target["paper_value"] = round(ours + 0.4, 2)  # within the 1.0-point tolerance
    (tmp_path / "ok.yaml").write_text(yaml.safe_dump(claims))
    assert _check(out, tmp_path / "ok.yaml").exit_code == 0

    target["paper_value"] = round(ours + 3.0, 2)  # outside it
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(claims))
    result = _check(out, tmp_path / "bad.yaml")
    assert result.exit_code == 1 and "outside tolerance" in result.output

    target["paper_value"] = 50.0  # a paper value for a cell we have no run of cannot pass
    target["dataset"] = "visual_entailment"
    target["metric"] = "accuracy"
    (tmp_path / "missing.yaml").write_text(yaml.safe_dump(claims))
    assert _check(out, tmp_path / "missing.yaml").exit_code == 1


def test_qualitative_claims_are_reported_and_enforced_only_on_request(analyzed_store, tmp_path):
    _store, out = analyzed_store
    claims = load_claims()
    results = {r.id: r for r in evaluate_claims(claims, out / "tables")}
    hm = results["abstract/msd_beats_kd/hateful_memes"]
    assert hm.kind == "qualitative" and hm.status.startswith("holds") and not hm.failed
    assert "cannot tell" in results["abstract/msd_beats_kd/visual_entailment"].status  # no runs
    for claim in claims["qualitative"]:
        claim["enforce"] = True
    (tmp_path / "strict.yaml").write_text(yaml.safe_dump(claims))
    assert _check(out, tmp_path / "strict.yaml").exit_code == 1  # SNLI-VE has no runs to support it


def test_malformed_claims_file_is_a_clear_error(analyzed_store, tmp_path):
    _store, out = analyzed_store
    (tmp_path / "broken.yaml").write_text("claims:\n  - id: x\n")
    result = _check(out, tmp_path / "broken.yaml")
    assert result.exit_code == 2 and "missing" in result.output
