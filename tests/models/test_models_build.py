"""build_model / describe_model, size presets, and config errors that name their key."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from benchmark.errors import ConfigError
from benchmark.models.base import MultimodalModel
from benchmark.models.build import build_model, describe_model, model_config, resolve_size

FAMILIES = ("late_fusion", "visual_bert", "mmbt")


@pytest.mark.parametrize("name", FAMILIES)
def test_yaml_has_the_size_presets_and_paper_base_is_bert_base(mk, name):
    config = mk.run_config(name, tiny=False)
    assert set(config.model_config[name].presets) == {"teacher", "student", "paper_base", "tiny", "small"}
    config.model_size = "paper_base"
    merged = model_config(config)
    widths = [v for k, v in _flatten(merged) if k.endswith("hidden_size") and v is not None]
    assert 768 in widths
    layers = [v for k, v in _flatten(merged) if k.endswith(("num_hidden_layers", "num_layers"))]
    assert 12 in layers
    assert "presets" not in merged


def _flatten(node, prefix=""):
    for key, value in node.items():
        if isinstance(value, dict) or OmegaConf.is_dict(value):
            yield from _flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


@pytest.mark.parametrize("name", FAMILIES)
def test_teacher_is_several_times_the_student(mk, name):
    """The capacity gap the testbed relies on. Since the version-2 presets (docs/calibration.md:
    the late-fusion teacher lost a text layer and got a factorised vocabulary table) late
    fusion's teacher is 2.6x its student; the single-stream families stay at about 4x."""
    info = mk.info()
    sizes = {}
    for size in ("teacher", "student"):
        model = build_model(mk.run_config(name, size=size, tiny=False), info)
        assert isinstance(model, MultimodalModel)
        description = describe_model(model)
        assert description["size"] == size and description["name"] == name
        assert description["parameters"] == model.num_parameters() > 0
        assert 0 < description["parameters_embedding"] < description["parameters"]
        assert description["class"].endswith(type(model).__name__)
        sizes[size] = description["parameters"]
    assert 2.5 <= sizes["teacher"] / sizes["student"] <= 6.0, sizes


def test_auto_size_follows_method_then_role(mk):
    config = mk.run_config("late_fusion", size="auto")
    config.method = "teacher"
    assert resolve_size(config) == "teacher"
    config.method = "msd"
    assert resolve_size(config) == "student"
    assert resolve_size(config, role="teacher") == "teacher"
    config.model_size = "paper_base"
    assert resolve_size(config, role="teacher") == "paper_base"  # an explicit size wins


def test_model_config_merges_preset_and_copies_removal(mk):
    config = mk.run_config("visual_bert", removal="zero", size="teacher", tiny=False)
    merged = model_config(config)
    assert merged.hidden_size == 128 and merged.num_hidden_layers == 2
    assert merged.removal == "zero" and merged.size == "teacher" and merged.name == "visual_bert"
    assert merged.head.type == "mlp"  # shared keys survive
    assert "presets" in config.model_config.visual_bert  # the run config is not modified


def test_head_outputs_num_labels_for_every_task(mk):
    from benchmark.data.info import DatasetInfo

    for task, labels in (("multi_label", 23), ("soft_score", 7)):
        info = DatasetInfo(
            name="x", task=task, num_labels=labels, feature_dim=12, max_features=6, max_seq_length=10
        )
        for name in FAMILIES:
            model = build_model(mk.run_config(name), info).eval()
            assert model(mk.batch(info)).shape == (4, labels)


@pytest.mark.parametrize(
    ("name", "overrides", "needles"),
    [
        (
            "late_fusion",
            {"fusion": {"type": "concatt"}},
            ["model_config.late_fusion.fusion.type", "concat_mlp", "gated"],
        ),
        ("late_fusion", {"head": {"type": "deep"}}, ["model_config.late_fusion.head.type", "linear", "mlp"]),
        ("late_fusion", {"text_encoder": {"type": "gpt"}}, ["text_encoder.type", "transformer", "minilm"]),
        ("late_fusion", {"image_encoder": {"type": "cnn"}}, ["image_encoder.type", "region", "features"]),
        (
            "late_fusion",
            {"presets": {"student": {"text_encoder": {"hidden_size": 0}}}},
            ["text_encoder.hidden_size"],
        ),
        ("mmbt", {"head": {"type": "deep"}}, ["model_config.mmbt.head.type", "mlp"]),
        ("visual_bert", {"presets": {"student": {"num_attention_heads": 3}}}, ["num_attention_heads"]),
    ],
)
def test_bad_component_config_names_the_key_and_the_options(mk, name, overrides, needles):
    with pytest.raises(ConfigError) as error:
        build_model(mk.run_config(name, **overrides), mk.info())
    for needle in needles:
        assert needle in str(error.value)


def test_unknown_preset_names_model_size_and_the_presets(mk):
    config = mk.run_config("late_fusion", size="huge")
    with pytest.raises(ConfigError) as error:
        build_model(config, mk.info())
    message = str(error.value)
    for needle in ("model_size", "teacher", "student", "paper_base", "auto"):
        assert needle in message


def test_unknown_removal_and_model_are_config_errors(mk):
    with pytest.raises(ConfigError, match=r"removal.*'blur'.*drop, mean, zero"):
        build_model(mk.run_config("visual_bert", removal="blur"), mk.info())
    config = mk.run_config("late_fusion")
    config.model = "late_fusoin"
    with pytest.raises(ConfigError, match=r"model: 'late_fusoin'.*late_fusion"):
        build_model(config, mk.info())
    config = mk.run_config("late_fusion")
    del config.model_config["late_fusion"]
    with pytest.raises(ConfigError, match=r"model_config.late_fusion.*models/late_fusion.yaml"):
        build_model(config, mk.info())


@pytest.mark.parametrize("fusion", ["concat_mlp", "sum", "gated", "bilinear"])
def test_every_fusion_builds_and_keeps_the_view_rule(mk, fusion):
    torch.manual_seed(0)
    info = mk.info()
    model = build_model(mk.run_config("late_fusion", fusion={"type": fusion}), info).eval()
    batch = mk.batch(info)
    with torch.no_grad():
        out, swapped = model.forward_views(batch), model.forward_views(mk.other_text(batch))
    torch.testing.assert_close(out["image"], swapped["image"], atol=1e-6, rtol=0)
    assert (out["multi"] - swapped["multi"]).abs().max() > 1e-4


def test_factorized_embedding_shrinks_the_vocabulary_table(mk):
    info = mk.info()
    full = build_model(mk.run_config("visual_bert", size="teacher", tiny=False), info)
    small = build_model(mk.run_config("visual_bert", size="teacher", tiny=False, embedding_size=16), info)
    assert small.num_parameters() < full.num_parameters() / 3
    lf = build_model(
        mk.run_config("late_fusion", size="teacher", tiny=False, text_encoder={"embedding_size": 16}), info
    )
    batch = mk.batch(info)
    batch["input_ids"][0, 1] = 30521  # the largest real WordPiece id is accepted
    for model in (small, lf):
        assert torch.isfinite(model.eval()(batch)).all()
