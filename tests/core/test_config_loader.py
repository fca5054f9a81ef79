"""The MMF-style command line and YAML includes."""

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from benchmark.config.loader import build_config, load_config, load_yaml, parse_args, parse_value
from benchmark.errors import ConfigError


def test_parse_value_is_literal_eval_with_string_fallback():
    assert parse_value("3") == 3
    assert parse_value("1e-3") == 0.001
    assert parse_value("[1, 2]") == [1, 2]
    assert parse_value("true") is True
    assert parse_value("null") is None
    assert parse_value("late_fusion") == "late_fusion"


def test_parse_args_splits_selectors_and_overrides():
    parsed = parse_args(["config=a.yaml", "dataset=mmimdb", "training.seed=2", "+extra.key=x"])
    assert parsed.config == "a.yaml" and parsed.dataset == "mmimdb"
    assert parsed.overrides == [("training.seed", 2, False), ("extra.key", "x", True)]


def test_argument_without_equals_sign_is_refused():
    with pytest.raises(ConfigError, match="key=value"):
        parse_args(["training.seed"])


def test_merge_order_defaults_model_dataset_file_cli(tmp_path: Path):
    exp = tmp_path / "exp.yaml"
    exp.write_text("dataset: mmimdb\ntraining:\n  seed: 5\n  batch_size: 7\n")
    config = build_config([f"config={exp}", "training.seed=9"])
    assert config.dataset == "mmimdb"  # from the config file
    assert config.training.batch_size == 7  # file beats defaults
    assert config.training.seed == 9  # command line beats file
    assert "mmimdb" in config.dataset_config  # dataset YAML merged
    assert config.model_config[config.model]  # model YAML merged


def test_command_line_dataset_beats_config_file(tmp_path: Path):
    exp = tmp_path / "exp.yaml"
    exp.write_text("dataset: mmimdb\n")
    assert build_config([f"config={exp}", "dataset=vqa2"]).dataset == "vqa2"


def test_unknown_key_names_the_key_and_close_matches():
    with pytest.raises(ConfigError) as info:
        build_config(["training.sed=3"])
    message = str(info.value)
    assert "training.sed" in message and "training.seed" in message


def test_unknown_leaf_suggests_same_leaf_elsewhere():
    with pytest.raises(ConfigError, match="optimizer.params.lr"):
        build_config(["optimizer.lr=0.1"])


def test_plus_prefix_adds_a_new_key():
    config = build_config(["+my_note=hello"])
    assert config.my_note == "hello"


def test_unknown_dataset_and_model_are_named():
    with pytest.raises(ConfigError, match="hatefull_memes.*hateful_memes"):
        load_config(["dataset=hatefull_memes"])
    with pytest.raises(ConfigError, match="Unknown model"):
        load_config(["model=resnet9000"])


def test_includes_resolve_relative_to_file_and_package_root(tmp_path: Path):
    (tmp_path / "base.yaml").write_text("training:\n  seed: 4\n  max_epochs: 2\n")
    (tmp_path / "child.yaml").write_text("includes:\n  - base.yaml\n  - datasets/visual_entailment.yaml\ntraining:\n  seed: 6\n")
    node = load_yaml(tmp_path / "child.yaml")
    assert node.training.seed == 6 and node.training.max_epochs == 2  # own keys beat includes
    assert "visual_entailment" in node.dataset_config  # found under the package config root


def test_circular_include_is_reported(tmp_path: Path):
    (tmp_path / "a.yaml").write_text("includes: [b.yaml]\n")
    (tmp_path / "b.yaml").write_text("includes: [a.yaml]\n")
    with pytest.raises(ConfigError, match="Circular"):
        load_yaml(tmp_path / "a.yaml")


def test_missing_config_file_is_named(tmp_path: Path):
    with pytest.raises(ConfigError, match="nope.yaml"):
        build_config([f"config={tmp_path / 'nope.yaml'}"])


def test_data_dir_comes_from_env_var(monkeypatch, tmp_path: Path):
    monkeypatch.setenv("MSD_DATA_DIR", str(tmp_path))
    assert build_config([]).env.data_dir == str(tmp_path)
    assert build_config(["env.data_dir=/x/y"]).dataset_config.hateful_memes.data_dir == "/x/y/datasets"


def test_data_dir_default_expands_home(monkeypatch):
    monkeypatch.delenv("MSD_DATA_DIR", raising=False)
    data_dir = build_config([]).env.data_dir
    assert "~" not in data_dir and data_dir.endswith(".cache/msd-benchmark/data")


def test_resolved_config_is_plain():
    config = build_config(["dataset=hateful_memes"])
    assert OmegaConf.is_dict(config) and "${" not in OmegaConf.to_yaml(config)


def test_recipe_lr_follows_the_model_size_of_the_run():
    assert build_config(["method=teacher"]).optimizer.params.lr == 1.0e-3
    assert build_config(["method=kd"]).optimizer.params.lr == 3.0e-3
    # model_size decides, not the method: a teacher-sized label-only baseline trains like a teacher
    assert build_config(["method=student_only", "model_size=teacher"]).optimizer.params.lr == 1.0e-3
    assert build_config(["method=teacher", "recipes.lr.teacher=0.02"]).optimizer.params.lr == 0.02


def test_explicit_lr_beats_the_recipe(tmp_path: Path):
    assert build_config(["method=kd", "optimizer.params.lr=0.5"]).optimizer.params.lr == 0.5
    user = tmp_path / "run.yaml"
    user.write_text("optimizer:\n  params:\n    lr: 0.25\n")
    assert build_config([f"config={user}", "method=teacher"]).optimizer.params.lr == 0.25


def test_recipe_without_an_entry_for_the_size_is_named():
    with pytest.raises(ConfigError, match=r"recipes.max_epochs has no entry for model size 'tiny'.*\+recipes.max_epochs.tiny"):
        build_config(["method=kd", "model_size=tiny"])
    with pytest.raises(ConfigError, match=r"recipes.lr has no entry for model size 'tiny'.*\+recipes.lr.tiny"):
        build_config(["method=kd", "model_size=tiny", "+recipes.max_epochs.tiny=3"])
    config = build_config(["method=kd", "model_size=tiny", "+recipes.lr.tiny=0.1", "+recipes.max_epochs.tiny=3"])
    assert config.optimizer.params.lr == 0.1 and config.training.max_epochs == 3


def test_hateful_memes_students_train_every_epoch_and_teachers_stop_early():
    # docs/calibration.md, round 10: the student's recipe on Hateful Memes, by role, any size
    assert build_config(["dataset=hateful_memes", "method=teacher"]).training.early_stop.patience == 4
    for method in ("student_only", "kd", "msd"):
        student = build_config(["dataset=hateful_memes", f"method={method}"])
        assert student.training.early_stop.patience == 20 == student.training.max_epochs
    tiny = build_config(["dataset=hateful_memes", "method=kd", "model_size=tiny", "+recipes.lr.tiny=0.1",
                         "+recipes.max_epochs.tiny=3"])
    assert tiny.training.early_stop.patience == 20
    # a teacher-sized label-only baseline is still a student: the role, not the size, decides
    assert build_config(["dataset=hateful_memes", "method=student_only", "model_size=teacher"]).training.early_stop.patience == 20
    # the other datasets keep the default, and an explicit value wins
    assert build_config(["dataset=mmimdb", "method=student_only"]).training.early_stop.patience == 4
    assert build_config(["dataset=hateful_memes", "method=kd", "training.early_stop.patience=7"]).training.early_stop.patience == 7
    assert build_config(["dataset=hateful_memes", "method=kd",
                         "dataset_config.hateful_memes.recipe.patience.student=9"]).training.early_stop.patience == 9


def test_mmimdb_recipe_by_role_teachers_60_epochs_students_lr_1e2():
    # docs/calibration.md, rounds 15 to 17: by role, any student size
    teacher = build_config(["dataset=mmimdb", "method=teacher"])
    assert (teacher.training.max_epochs, teacher.training.early_stop.patience, teacher.optimizer.params.lr) == (60, 10, 1.0e-3)
    for method in ("student_only", "kd", "msd"):
        student = build_config(["dataset=mmimdb", f"method={method}"])
        assert (student.training.max_epochs, student.training.early_stop.patience, student.optimizer.params.lr) == (60, 4, 1.0e-2)
    tiny = build_config(["dataset=mmimdb", "method=kd", "model_size=tiny", "+recipes.lr.tiny=0.1", "+recipes.max_epochs.tiny=3"])
    assert (tiny.training.max_epochs, tiny.optimizer.params.lr) == (60, 1.0e-2)
    # other families keep their size's lr: MM-IMDB's student lr was calibrated on late_fusion
    assert build_config(["dataset=mmimdb", "method=kd", "model=visual_bert"]).optimizer.params.lr == 3.0e-3
    assert build_config(["dataset=mmimdb", "method=msd", "model=mmbt", "recipes.lr.student=0.004"]).optimizer.params.lr == 0.004
    # the teacher's lr stays its size's (a visual_bert teacher, the suite's recipe override)
    assert build_config(["dataset=mmimdb", "method=teacher", "model=visual_bert"]).optimizer.params.lr == 1.0e-3
    assert build_config(["dataset=mmimdb", "method=teacher", "recipes.lr.teacher=0.02"]).optimizer.params.lr == 0.02
    # the dataset's table and explicit values win
    assert build_config(["dataset=mmimdb", "method=kd", "dataset_config.mmimdb.recipe.lr.student=0.5"]).optimizer.params.lr == 0.5
    assert build_config(["dataset=mmimdb", "method=kd", "optimizer.params.lr=0.25"]).optimizer.params.lr == 0.25
    assert build_config(["dataset=mmimdb", "method=teacher", "training.max_epochs=2"]).training.max_epochs == 2
    assert build_config(["dataset=visual_entailment", "method=teacher"]).training.max_epochs == 30
    assert build_config(["dataset=visual_entailment", "method=kd"]).optimizer.params.lr == 3.0e-3


def test_for_model_refuses_a_model_that_does_not_exist():
    late_fusoin = "dataset_config.mmimdb.recipe.lr.student='${msd.for_model:late_fusoin,0.5,0.25}'"
    with pytest.raises(ConfigError, match="unknown model 'late_fusoin'; known: .*late_fusion"):
        build_config(["dataset=mmimdb", "method=kd", late_fusoin])
    fine = "dataset_config.mmimdb.recipe.lr.student='${msd.for_model:mmbt,0.5,0.25}'"
    assert build_config(["dataset=mmimdb", "method=kd", fine]).optimizer.params.lr == 0.25
    assert build_config(["dataset=mmimdb", "method=kd", "model=mmbt", fine]).optimizer.params.lr == 0.5


def test_vqa2_teachers_stop_late_and_students_train_30_epochs():
    # docs/calibration.md, round 12: by role, any student size
    teacher = build_config(["dataset=vqa2", "method=teacher"])
    assert (teacher.training.max_epochs, teacher.training.early_stop.patience) == (45, 10)
    for method in ("student_only", "kd", "msd"):
        student = build_config(["dataset=vqa2", f"method={method}"])
        assert (student.training.max_epochs, student.training.early_stop.patience) == (30, 4)
    tiny = build_config(["dataset=vqa2", "method=kd", "model_size=tiny", "+recipes.lr.tiny=0.1"])
    assert tiny.training.max_epochs == 30
    # a teacher-sized label-only baseline is still a student
    assert build_config(["dataset=vqa2", "method=student_only", "model_size=teacher"]).training.max_epochs == 30
    # the suite's per-size recipe no longer decides VQA2's epochs; the dataset's table and an explicit value do
    assert build_config(["dataset=vqa2", "method=kd", "recipes.max_epochs.student=11"]).training.max_epochs == 30
    assert build_config(["dataset=vqa2", "method=kd", "dataset_config.vqa2.recipe.max_epochs.student=11"]).training.max_epochs == 11
    assert build_config(["dataset=vqa2", "method=teacher", "training.early_stop.patience=2"]).training.early_stop.patience == 2
    # the other datasets keep the suite's default patience
    assert build_config(["dataset=visual_entailment", "method=teacher"]).training.early_stop.patience == 4


@pytest.mark.parametrize(("override", "key", "found"), [
    ("dataset_config.hateful_memes.recipe.patience=3", "dataset_config.hateful_memes.recipe.patience", "got 3"),
    ("+dataset_config.hateful_memes.recipe.patience.tiny=6", "dataset_config.hateful_memes.recipe.patience", "'tiny': 6"),
    ("training.early_stop.patience=${msd.per_role:recipes.lr}", "recipes.lr", "'paper_base'"),
    ("training.early_stop.patience=${msd.per_role:no.such.table}", "no.such.table", "got None"),
])
def test_per_role_table_must_name_exactly_the_two_roles(override, key, found):
    with pytest.raises(ConfigError, match=rf"msd.per_role:{key}\}}: {key} must be a mapping with exactly the keys "
                                          rf"teacher and student, .*{found}"):
        build_config(["dataset=hateful_memes", "method=kd", override])


def test_flatten_dotted_keeps_or_drops_empty_mappings():
    from benchmark.config.loader import flatten_dotted

    tree = {"a": {"b": 1, "c": {}}, "d.e": [1, 2], "f": {"g": {"h": None}}}
    assert flatten_dotted(tree) == {"a.b": 1, "a.c": {}, "d.e": [1, 2], "f.g.h": None}
    assert flatten_dotted(tree, drop_empty=True) == {"a.b": 1, "d.e": [1, 2], "f.g.h": None}
    assert flatten_dotted(OmegaConf.to_container(OmegaConf.create({"x": {"y": 2}}))) == {"x.y": 2}
    assert flatten_dotted(3) == {}
