"""Only the runs a grid makes enter the tables; the note under each table states their recipe."""

from __future__ import annotations

import yaml

from analysis.load import load_runs, select_setting
from analysis.recipe import recipe_notes, span
from analysis.scope import GridScope, grid_scope


def _mixed_store(store_tools, root):
    """Default runs (8 epochs, seeds 0-2), a larger smoke grid (1 epoch, 4 seeds) and an HPO trial."""
    store = store_tools.FakeStore(root)
    for seed in (0, 1, 2):
        for method in ("teacher", "student_only", "kd"):
            store.add_run("hateful_memes", method, seed=seed)
    for seed in (0, 1, 2, 3):  # more completed students than the default grid: "largest" would pick these
        for method in ("teacher", "student_only", "kd"):
            store.add_run("hateful_memes", method, seed=seed, epochs=1)
    trial = store.add_run("hateful_memes", "kd", seed=0, skill=1.3, variant={"distill.temperature": 3.0})
    config = yaml.safe_load((trial / "config.yaml").read_text())
    config["hpo"] = {"study": "kd_hm", "trial": 0}
    (trial / "config.yaml").write_text(yaml.safe_dump(config))
    return store


def test_a_grid_scope_keeps_smoke_runs_and_hpo_trials_out(tmp_path, store_tools):
    store = _mixed_store(store_tools, tmp_path / "store")
    runs = load_runs(store.runs)
    default_settings = frozenset(runs.loc[runs["max_epochs"] == 8, "setting"])
    scope = GridScope(("table2",), "default", {"hateful_memes": default_settings})

    used, notes = select_setting(runs, scope)
    assert len(used) == 9 and set(used["max_epochs"]) == {8} and used["hpo_study"].isna().all()
    assert sorted(used["seed"].unique()) == [0, 1, 2]
    assert any("1 completed HPO trial run(s)" in n and "kd_hm" in n for n in notes)
    assert any("12 completed run(s) not made by grid table2 (scale default)" in n for n in notes)

    # Without the grid, the larger smoke grid wins: the scope is what keeps it out.
    largest, _ = select_setting(runs)
    assert set(largest.loc[largest["method"] != "teacher", "max_epochs"]) == {1}
    assert largest["hpo_study"].isna().all()  # trials are left out either way


def test_a_dataset_no_grid_makes_falls_back_to_its_largest_setting_with_a_note(tmp_path, store_tools):
    store = _mixed_store(store_tools, tmp_path / "store")
    runs = load_runs(store.runs)
    used, notes = select_setting(runs, GridScope(("table2",), "default", {"mmimdb": frozenset({"x"})}))
    assert set(used.loc[used["method"] != "teacher", "max_epochs"]) == {1}
    assert any("no grid of table2 (scale default) makes this dataset" in n for n in notes)


def test_recipe_note_is_read_from_the_runs(tmp_path, store_tools):
    store = _mixed_store(store_tools, tmp_path / "store")
    runs = load_runs(store.runs)
    used, _ = select_setting(runs, GridScope(("table2",), "default",
                                             {"hateful_memes": frozenset(runs.loc[runs["max_epochs"] == 8, "setting"])}))
    (note,) = recipe_notes(used, ["hateful_memes", "mmimdb"], "grid table2 (scale default)")
    assert note.startswith("Recipe of Hateful Memes (read from the runs' configs and data): grid table2 (scale default);")
    assert "seeds 0, 1, 2;" in note and "max epochs 8, batch 64" in note
    # The fake store writes no generator manifest and its split files do not exist: unknown, not invented.
    assert "train ? / val ? / test ?" in note
    smoke = runs[runs["max_epochs"] == 1]
    assert "seeds 0, 1, 2, 3;" in recipe_notes(smoke, ["hateful_memes"])[0]


def test_split_sizes_come_from_the_generator_manifest(tmp_path):
    import json

    from analysis.load import split_sizes

    root = tmp_path / "datasets" / "vqa2" / "defaults"
    (root / "annotations").mkdir(parents=True)
    (root / "msd_synthetic.json").write_text(json.dumps({"summary": {"splits": {"train2014": 640, "val2014": 80}}}))
    real = tmp_path / "datasets" / "hm" / "annotations"
    real.mkdir(parents=True)
    (real / "test.jsonl").write_text('{"id": 1}\n{"id": 2}\n\n{"id": 3}\n')
    sizes = split_sizes({"train": ["vqa2/defaults/annotations/imdb_train2014.npy"],
                         "val": ["vqa2/defaults/annotations/imdb_val2014.npy"],
                         "test": ["hm/annotations/test.jsonl"], "other": ["missing.jsonl"]}, str(tmp_path / "datasets"))
    assert sizes == {"train": 640, "val": 80, "test": 3, "other": None}


def test_a_run_whose_data_folder_is_gone_is_read_from_the_current_one_only_if_the_same(tmp_path, monkeypatch):
    """A run trained in a scratch data folder since deleted: its split sizes (and ground truth)
    are read from the current data folder (MSD_DATA_DIR) when every file it read has there
    the content hash it recorded; otherwise from nowhere."""
    from analysis.load import data_found_at, split_sizes
    from benchmark.data.content_hash import content_hash

    here = tmp_path / "now"
    annotations = here / "datasets" / "hm" / "annotations"
    annotations.mkdir(parents=True)
    (annotations / "train.jsonl").write_text('{"id": 1}\n{"id": 2}\n')
    (annotations / "test.jsonl").write_text('{"id": 9}\n')
    monkeypatch.setenv("MSD_DATA_DIR", str(here))
    recorded = {f"hm/annotations/{name}": content_hash(annotations / name) for name in ("train.jsonl", "test.jsonl")}
    gone = str(tmp_path / "scratch" / "datasets")
    found = data_found_at(gone, recorded)
    assert found == str(here / "datasets")
    splits = {"train": ["hm/annotations/train.jsonl"], "test": ["hm/annotations/test.jsonl"]}
    assert split_sizes(splits, found) == {"train": 2, "test": 1}
    other = {**recorded, "hm/annotations/test.jsonl": "0" * 32}  # the run read other bytes under this name
    assert data_found_at(gone, other) is None
    assert data_found_at(gone, None) is None  # nothing to check against
    kept = tmp_path / "kept"
    kept.mkdir()
    assert data_found_at(str(kept), other) == str(kept)  # the recorded folder, while it exists


def test_recipe_note_names_the_image_size_of_pixel_data_only():
    import pandas as pd

    from analysis.recipe import recipe_text

    base = {"seed": [0, 1], "max_epochs": [20, 20], "batch_size": [64, 64], "method": ["teacher", "kd"],
            "split_sizes": [{"train": 3000, "val": 750, "test": 750}] * 2}
    pixels = recipe_text(pd.DataFrame({**base, "image_size": [32, 32]}))
    assert pixels.endswith("train 3,000 / val 750 / test 750 samples, images 32x32")
    mixed = recipe_text(pd.DataFrame({**base, "image_size": [32, 64]}))
    assert mixed.endswith("samples, images 32x32/64x64")  # runs of two resolutions: both named
    features = recipe_text(pd.DataFrame({**base, "image_size": [None, None]}))
    assert features.endswith("test 750 samples")


def test_a_run_keeps_its_setting_when_its_data_folder_moves():
    """Runs trained on data under another folder (MSD_DATA_DIR) are the same setting, as they
    are the same run id: only the folder differs, and the content enters the run id."""
    from analysis.load import setting_of

    flat = {"dataset": "hateful_memes", "model": "late_fusion", "training.max_epochs": 20,
            "dataset_config.hateful_memes.data_dir": "/data/cache/msd-benchmark/data/datasets",
            "dataset_config.hateful_memes.max_features": 100}
    moved = {**flat, "dataset_config.hateful_memes.data_dir": "/scratch/data/datasets"}
    other = {**flat, "dataset_config.hateful_memes.max_features": 50}
    assert setting_of(flat, "hateful_memes") == setting_of(moved, "hateful_memes")
    assert setting_of(flat, "hateful_memes") != setting_of(other, "hateful_memes")


def test_span_formats_one_value_a_range_or_unknown():
    assert span([20, 20.0]) == "20" and span([4, 20, 7]) == "4–20" and span([None, float("nan")]) == "?"
    assert span([8000]) == "8,000" and span(["a", "b"]) == "a/b"


def test_grid_scope_separates_the_scales_of_table2():
    smoke = grid_scope(["experiments/table2.yaml"], "smoke")
    default = grid_scope(["experiments/table2.yaml"], "default")
    assert smoke.grids == default.grids == ("table2",)
    assert set(smoke.settings) == set(default.settings) == {"hateful_memes", "mmimdb", "visual_entailment", "vqa2"}
    for dataset, settings in default.settings.items():
        assert len(settings) == 2  # the teacher's and the students' (model size)
        assert not settings & smoke.settings[dataset]
    assert grid_scope(["experiments/calibration.yaml"], "smoke").settings == {}  # no smoke scale there


def test_the_saliency_and_ablation_grids_make_no_setting_the_default_grids_lack():
    """Why ``--grid`` defaults to table2 + easy_vqa only: the other grids that fill the tables
    vary identity and variant keys only, so their runs are admitted too."""
    default = grid_scope(["experiments/table2.yaml", "experiments/easy_vqa.yaml"], "default")
    for grid in ("experiments/saliency.yaml", "experiments/ablations.yaml"):
        other = grid_scope([grid], "default")
        for dataset, settings in other.settings.items():
            assert settings <= default.settings[dataset], (grid, dataset)


def test_a_tables_recipe_note_describes_its_own_runs_not_its_settings_ablations(tmp_path, store_tools):
    import json

    from analysis.tables import Context, build_table2

    store = store_tools.FakeStore(tmp_path / "store")
    for seed in (0, 1, 2):
        for method in ("teacher", "student_only", "kd"):
            store.add_run("hateful_memes", method, seed=seed)
    # An ablation cell of the same setting (a variant), stopped early after 3 epochs.
    ablation = store.add_run("hateful_memes", "kd", seed=0, variant={"distill.temperature": 2.0})
    for path in store.runs.iterdir():
        summary = json.loads((path / "summary.json").read_text())
        summary["epochs_started"] = 3 if path == ablation else {"teacher": 8}.get(summary["method"], 6)
        (path / "summary.json").write_text(json.dumps(summary))
    runs = load_runs(store.runs)
    used, _ = select_setting(runs)
    assert ablation.name in set(used["run_id"])  # same setting: the table's selection holds it

    table = build_table2(Context(used, runs, expected_seeds=3, n_resamples=20))
    (note,) = [n for n in table.footnotes if n.startswith("Recipe of Hateful Memes")]
    assert "epochs run: teachers 8, students 6" in note  # not "students 3–6"
