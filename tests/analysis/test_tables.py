"""Table 2, ablations and saliency tables, recomputed by hand from a fake run store."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy.stats import ttest_rel
from typer.testing import CliRunner

from analysis.cli import analyze_app

TABLE2_CELLS = [("hateful_memes", "roc_auc"), ("mmimdb", "multilabel_micro_f1"), ("mmimdb", "multilabel_macro_f1"),
                ("vqa2", "vqa_accuracy")]
ROWS = [("Teacher", "teacher", None), ("Student (no KD)", "student_only", None), ("KD", "kd", None),
        ("MSD-uniform", "msd", "uniform"), ("MSD-population", "msd", "population"),
        ("MSD-instance", "msd", "instance"), ("MSD-learned", "msd", "learned")]


def _by_hand(store, dataset: str, method: str, weighting: str | None, metric: str, tau: float = 1.0,
             epochs: int = 8, reduction: str = "mean") -> list[float]:
    """Test values of the completed runs of a cell, by seed, straight from their summary.json files."""
    runs = [s for s, c in store.summaries()
            if (s["dataset"], s["method"], s.get("weighting")) == (dataset, method, weighting)
            and c["distill"]["temperature"] == tau and c["training"]["max_epochs"] == epochs
            and c["distill"].get("class_reduction", "mean") == reduction
            and s["status"] == "completed"]
    return [s["metrics"][f"test/{dataset}/{metric}"] for s in sorted(runs, key=lambda s: s["seed"])]


def _tables(store, *extra: str):
    out = store.root / "results"
    result = CliRunner().invoke(analyze_app, ["tables", "--save-dir", str(store.runs), "--out", str(out),
                                              "--bootstrap", "50", "--expected-seeds", "3", "--scope", "largest", *extra])
    assert result.exit_code == 0, result.output
    return pd.read_csv(out / "tables" / "table2.csv"), (out / "tables" / "table2.md").read_text()


def _row(md: str, label: str) -> str:
    return next(line for line in md.splitlines() if line.startswith(f"| {label} |"))


def test_table2_numbers_are_the_store_recomputed_by_hand(analyzed_store):
    store, out = analyzed_store
    csv = pd.read_csv(out / "tables" / "table2.csv")
    md = (out / "tables" / "table2.md").read_text()
    for dataset, metric in TABLE2_CELLS:
        for label, method, weighting in ROWS:
            values = _by_hand(store, dataset, method, weighting, metric)
            assert len(values) == 3
            cell = csv[(csv["row"] == label) & (csv["dataset"] == dataset) & (csv["metric"] == metric)].iloc[0]
            mean, std = float(np.mean(values)), float(np.std(values, ddof=1))
            assert cell["n"] == 3 and math.isclose(cell["mean"], mean, abs_tol=1e-12)
            assert math.isclose(cell["std"], std, abs_tol=1e-12)
            half = 4.302652729911275 * std / math.sqrt(3)  # t_{0.975, 2}
            assert math.isclose(cell["ci95_low"], mean - half, abs_tol=1e-9)
            assert f"{mean * 100:.2f} ± {std * 100:.2f} (3)" in _row(md, label)
    # Datasets without runs are missing cells with a footnote, never zeros.
    assert "SNLI-VE Acc." in md and "—‡" in _row(md, "KD")
    assert "‡ missing" in md
    assert {"p_bootstrap", "p_ttest_paired_seeds", "model_params"} <= set(csv.columns)
    params = csv[csv["row"] == "# params (teacher)"]
    assert set(params.loc[params["dataset"] == "hateful_memes", "mean"]) == {4_000_000}
    assert "4.00M" in _row(md, "# params (teacher)") and "1.00M" in _row(md, "# params (student)")


def test_ablation_variants_do_not_leak_into_table2(analyzed_store):
    store, out = analyzed_store
    csv = pd.read_csv(out / "tables" / "table2.csv")
    kd = csv[(csv["row"] == "KD") & (csv["dataset"] == "hateful_memes") & (csv["metric"] == "roc_auc")].iloc[0]
    assert kd["n"] == 3 and math.isclose(kd["mean"], np.mean(_by_hand(store, "hateful_memes", "kd", None, "roc_auc")))
    ablations = pd.read_csv(out / "tables" / "ablations.csv")
    tau2 = ablations[(ablations["row"] == "KD, τ=2") & (ablations["dataset"] == "hateful_memes")].iloc[0]
    assert tau2["n"] == 1
    assert math.isclose(tau2["mean"], _by_hand(store, "hateful_memes", "kd", None, "roc_auc", tau=2.0)[0])
    default = ablations[(ablations["row"] == "KD, τ=1 (default)") & (ablations["dataset"] == "hateful_memes")].iloc[0]
    assert math.isclose(default["mean"], kd["mean"])
    md = (out / "tables" / "ablations.md").read_text()
    assert "Best MSD per dataset: Hateful Memes: instance" in md  # chosen on val; instance has the best skill


def test_class_reduction_block_has_only_the_multi_label_columns(analyzed_store):
    store, out = analyzed_store
    ablations = pd.read_csv(out / "tables" / "ablations.csv")
    block = ablations[ablations["block"].str.startswith("Multi-label divergence")]
    assert set(block["dataset"]) == {"mmimdb", "vqa2"}
    summed = block[(block["row"] == "KD, D over classes=sum") & (block["dataset"] == "mmimdb")].iloc[0]
    assert summed["n"] == 1
    assert math.isclose(summed["mean"], _by_hand(store, "mmimdb", "kd", None, "multilabel_micro_f1", reduction="sum")[0])
    default = block[(block["row"] == "KD, D over classes=mean (default)") & (block["dataset"] == "mmimdb")].iloc[0]
    table2 = pd.read_csv(out / "tables" / "table2.csv")
    kd = table2[(table2["row"] == "KD") & (table2["dataset"] == "mmimdb") & (table2["metric"] == "multilabel_micro_f1")]
    assert math.isclose(default["mean"], kd.iloc[0]["mean"])  # the sum run does not leak into Table 2
    assert block[(block["row"] == "MSD-instance, D over classes=sum")]["missing"].all()
    md = (out / "tables" / "ablations.md").read_text()
    section = md.split("Multi-label divergence")[1]
    assert "Hateful Memes" not in section.split("\n\n")[1]


def test_bold_marks_best_student_and_dagger_a_significant_gain_over_kd(analyzed_store):
    store, out = analyzed_store
    csv = pd.read_csv(out / "tables" / "table2.csv")
    md = (out / "tables" / "table2.md").read_text()
    hm = csv[(csv["dataset"] == "hateful_memes") & (csv["metric"] == "roc_auc")].set_index("row")
    students = hm.drop(index=["Teacher"])
    assert bool(hm.loc["MSD-instance", "bold_best_student"])
    assert students["bold_best_student"].sum() == 1 and not bool(hm.loc["Teacher", "bold_best_student"])
    assert hm.loc["MSD-instance", "mean"] == students["mean"].max()
    # instance (skill 1.6) vs KD (0.8): a clear gain; learned (0.7) is worse than KD.
    assert hm.loc["MSD-instance", "p_bootstrap"] < 0.05 and bool(hm.loc["MSD-instance", "significant_vs_kd"])
    assert hm.loc["MSD-learned", "p_bootstrap"] > 0.05 and not bool(hm.loc["MSD-learned", "significant_vs_kd"])
    # The paired-seed t-test, recomputed by hand from the summaries.
    msd_values = _by_hand(store, "hateful_memes", "msd", "instance", "roc_auc")
    kd_values = _by_hand(store, "hateful_memes", "kd", None, "roc_auc")
    expected = ttest_rel(msd_values, kd_values, alternative="greater").pvalue
    assert math.isclose(hm.loc["MSD-instance", "p_ttest_paired_seeds"], expected, rel_tol=1e-9)
    instance = _row(md, "MSD-instance").split(" | ")[1]
    assert instance.startswith("**") and instance.endswith("**†")
    assert "†" not in _row(md, "MSD-learned").split(" | ")[1] and "†" not in _row(md, "KD")
    assert "**" not in _row(md, "Teacher")
    assert "† MSD better than KD" in md


def test_deleting_runs_flags_then_empties_the_cell(fake_store):
    fake_store.add_grid(datasets=("hateful_memes",))
    fake_store.remove("hateful_memes", "msd", "uniform", seed=2)
    csv, md = _tables(fake_store)
    cell = csv[(csv["row"] == "MSD-uniform") & (csv["dataset"] == "hateful_memes")].iloc[0]
    assert cell["n"] == 2 and bool(cell["fewer_seeds_than_expected"]) and not bool(cell["missing"])
    assert "(2)§" in _row(md, "MSD-uniform") and "§ fewer seeds than the grid asks for (3)" in md

    fake_store.remove("hateful_memes", "msd", "uniform")
    csv, md = _tables(fake_store)
    cell = csv[(csv["row"] == "MSD-uniform") & (csv["dataset"] == "hateful_memes")].iloc[0]
    assert bool(cell["missing"]) and cell["n"] == 0 and pd.isna(cell["mean"])
    assert _row(md, "MSD-uniform").split(" | ")[1] == "—‡"
    assert "0.00" not in _row(md, "MSD-uniform")


def test_failed_runs_and_other_settings_are_left_out(fake_store):
    fake_store.add_grid(datasets=("hateful_memes",), seeds=(0, 1))
    fake_store.add_run("hateful_memes", "kd", seed=2, skill=5.0, status="failed")
    fake_store.add_run("hateful_memes", "kd", seed=0, skill=5.0, epochs=1)  # e.g. a smoke-scale run
    fake_store.add_run("hateful_memes", "teacher", seed=0, skill=5.0, epochs=1)
    csv, md = _tables(fake_store)
    kd = csv[(csv["row"] == "KD") & (csv["dataset"] == "hateful_memes")].iloc[0]
    assert kd["n"] == 2 and math.isclose(kd["mean"], np.mean(_by_hand(fake_store, "hateful_memes", "kd", None, "roc_auc")))
    assert "2 completed run(s) of another configuration" in md


def test_saliency_table_reports_teacher_saliency_and_views(analyzed_store):
    store, out = analyzed_store
    csv = pd.read_csv(out / "tables" / "saliency.csv")
    sal = csv[(csv["part"] == "saliency") & (csv["dataset"] == "hateful_memes")]
    assert set(sal["definition"]) == {"divergence", "loss", "shapley"}
    assert sal["split"].str.contains("predictions").all()  # no cache here: recomputed from logits
    assert sal["spearman_vs_truth"].notna().all() and (sal["teachers"] == 3).all()
    views = csv[(csv["part"] == "views") & (csv["dataset"] == "hateful_memes") & (csv["row"] == "Teacher")]
    by_view = views.set_index("view")["mean"]
    expected = np.mean(_by_hand(store, "hateful_memes", "teacher", None, "roc_auc@image"))
    assert math.isclose(by_view["image"], expected)
    md = (out / "tables" / "saliency.md").read_text()
    assert "Spearman ρ vs truth" in md and "Headline metric per view" in md


def test_empty_store_gives_missing_cells_not_zeros(tmp_path):
    (tmp_path / "runs").mkdir()
    out = tmp_path / "results"
    result = CliRunner().invoke(analyze_app, ["tables", "--save-dir", str(tmp_path / "runs"), "--out", str(out)])
    assert result.exit_code == 0, result.output
    md = (out / "tables" / "table2.md").read_text()
    for line in md.splitlines():
        if line.startswith("| ") and not line.startswith("| Model"):
            assert set(line.split(" | ")[1:]) <= {"—‡", "—‡ |"}, line
    assert "0.00" not in md


def test_variant_keys_are_the_result_changing_ones():
    from analysis.load import variant_label, variant_of
    from benchmark.config.loader import flatten_dotted as flatten

    base = {"distill": {"temperature": 1.0, "saliency": "divergence", "cache_spot_check": 2, "teacher_source": "live"},
            "training": {"max_epochs": 1}}
    assert variant_of(flatten(base), "hateful_memes", "late_fusion") == ()
    changed = flatten({**base, "distill": {**base["distill"], "temperature": 2, "saliency": "shapley"}})
    variant = variant_of(changed, "hateful_memes", "late_fusion")
    assert variant == (("distill.saliency", "shapley"), ("distill.temperature", 2))
    assert variant_label(variant) == "saliency=shapley,τ=2"
    split = flatten({"dataset_config": {"hateful_memes": {"annotations": {"test": ["hateful_memes/defaults/annotations/test_seen.jsonl"]}}}})
    assert variant_of(split, "hateful_memes", "late_fusion")[0][0] == "dataset_config.hateful_memes.annotations.test"


def test_load_runs_is_tidy_and_predictions_join_their_run_keys(analyzed_store, store_tools):
    from analysis.load import load_runs, predictions

    store, _out = analyzed_store
    runs = load_runs(store.runs)
    assert len(runs) == 65 and runs["run_id"].is_unique and runs["completed"].all()
    assert {"dataset", "method", "weighting", "seed", "row", "variant_label", "setting", "model_params"} <= set(runs)
    assert set(runs["variant_label"]) == {"", "τ=2", "D over classes=sum"}
    hm = runs[runs["dataset"] == "hateful_memes"]
    joined = predictions(hm, "test", "multi")
    assert len(joined) == len(hm) * store_tools.N_SAMPLES and set(joined["row"]) == set(hm["row"])
    assert {"sample_index", "score", "logits", "seed", "variant_label"} <= set(joined.columns)


def test_table2_states_the_smallest_difference_its_seeds_can_detect(analyzed_store):
    """Under Table 2: per column, the t-test's detectable effect at 3 seeds x the label-only
    student's seed std, by hand (3.07 standard deviations; textbook value of the noncentral t)."""
    from analysis.stats import detectable_effect

    store, out = analyzed_store
    md = (out / "tables" / "table2.md").read_text()
    note = next(line for line in md.splitlines() if line.startswith("Smallest difference"))
    assert "over 3 seeds" in note
    assert detectable_effect(3) == pytest.approx(3.07, abs=0.01)
    for dataset, metric, column in (("hateful_memes", "roc_auc", "Hateful Memes AUROC"),
                                    ("vqa2", "vqa_accuracy", "VQA2 VQA acc.")):
        std = float(np.std(_by_hand(store, dataset, "student_only", None, metric), ddof=1))
        assert f"{column} {100 * detectable_effect(3) * std:.1f}" in note
    assert "SNLI-VE" not in note  # no runs: nothing to state


def test_detectable_effect_refuses_one_seed():
    from analysis.stats import detectable_effect

    with pytest.raises(ValueError, match="at least 2 seeds"):
        detectable_effect(1)
