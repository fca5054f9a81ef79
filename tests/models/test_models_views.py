"""The view rule (docs/protocol.md §3) for every family, removal mode and image modality."""

from __future__ import annotations

import copy
import itertools

import pytest
import torch

FAMILIES = ("late_fusion", "visual_bert", "mmbt")
REMOVALS = ("drop", "zero", "mean")
MODALITIES = ("features", "pixels")
CASES = list(itertools.product(FAMILIES, REMOVALS, MODALITIES))
ID = "{}-{}-{}".format

EXACT = {"atol": 1e-6, "rtol": 0.0}


def _differs(a: torch.Tensor, b: torch.Tensor) -> bool:
    return (a - b).abs().max().item() > 1e-4


@pytest.fixture(scope="module", params=CASES, ids=[ID(*c) for c in CASES])
def case(request, mk):
    """One eval-mode model per case, shared by the tests (which never modify it)."""
    name, removal, modality = request.param
    model, info = mk.model(name, modality, removal)
    if removal == "mean":
        _fit_mean(model, mk.batch(info, seed=7))
    return model, info


def _fit_mean(model, batch) -> None:
    """Give the mean stand-ins a non-trivial value, as after some training."""
    model.train()
    with torch.no_grad():
        model.forward_views(batch)
        model.forward_views(batch)
    model.eval()


@torch.no_grad()
def test_removed_modality_content_does_not_matter(case, mk):
    model, info = case
    batch = mk.batch(info)
    out = model.forward_views(batch)
    text_swapped = model.forward_views(mk.other_text(batch))
    image_swapped = model.forward_views(mk.other_image(batch))
    # image view = text removed; text view = image removed
    torch.testing.assert_close(text_swapped["image"], out["image"], **EXACT)
    torch.testing.assert_close(image_swapped["text"], out["text"], **EXACT)
    # the single views also agree when run alone
    torch.testing.assert_close(model(mk.other_text(batch), "image"), out["image"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(model(mk.other_image(batch), "text"), out["text"], atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_kept_modality_content_matters(case, mk):
    model, info = case
    batch = mk.batch(info)
    out = model.forward_views(batch)
    text_swapped = model.forward_views(mk.other_text(batch))
    image_swapped = model.forward_views(mk.other_image(batch))
    assert _differs(text_swapped["text"], out["text"])
    assert _differs(text_swapped["multi"], out["multi"])
    assert _differs(image_swapped["image"], out["image"])
    assert _differs(image_swapped["multi"], out["multi"])


@torch.no_grad()
def test_forward_views_equals_per_view_forward(case, mk):
    model, info = case
    batch = mk.batch(info)
    together = model.forward_views(batch)
    assert set(together) == {"multi", "image", "text"}
    for view, logits in together.items():
        assert logits.shape == (4, info.num_labels)
        torch.testing.assert_close(model(batch, view), logits, atol=1e-5, rtol=1e-5)
    # any subset, in any order
    pair = model.forward_views(batch, ("text", "multi"))
    torch.testing.assert_close(pair["text"], together["text"], atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_padding_does_not_matter(case, mk):
    model, info = case
    batch = mk.batch(info)
    out = model.forward_views(batch)
    padded = copy.deepcopy(batch)
    g = torch.Generator().manual_seed(3)
    # other content in padded token positions, and three more padded positions
    pad = padded["input_mask"] == 0
    padded["input_ids"][pad] = torch.randint(1, 30000, (int(pad.sum()),), generator=g)
    for k in ("input_ids", "input_mask", "segment_ids"):
        padded[k] = torch.cat([padded[k], torch.zeros(4, 3, dtype=torch.long)], 1)
    padded["input_ids"][:, -3:] = 7
    if info.modality == "features":
        # other content in padded region rows, and two more padded rows
        n = batch["image_feature_0"].shape[1]
        rows = torch.arange(n)[None] >= batch["image_info_0"]["max_features"][:, None]
        padded["image_feature_0"][rows] = torch.randn(int(rows.sum()), info.feature_dim, generator=g) * 9
        padded["image_info_0"]["bbox"][rows] = torch.rand(int(rows.sum()), 4, generator=g)
        padded["image_feature_0"] = torch.cat(
            [padded["image_feature_0"], torch.randn(4, 2, info.feature_dim)], 1
        )
        padded["image_info_0"]["bbox"] = torch.cat([padded["image_info_0"]["bbox"], torch.rand(4, 2, 4)], 1)
    again = model.forward_views(padded)
    for view in out:
        torch.testing.assert_close(again[view], out[view], atol=1e-5, rtol=1e-5)


def test_samples_are_independent_of_each_other(case, mk):
    """A sample's logits do not depend on its batch-mates (views share rows only per sample)."""
    model, info = case
    batch = mk.batch(info)
    with torch.no_grad():
        full = model.forward_views(batch)
        first = model.forward_views({k: _first(v) for k, v in batch.items()})
    for view in full:
        torch.testing.assert_close(first[view], full[view][:1], atol=1e-5, rtol=1e-5)


def _first(value):
    if isinstance(value, dict):
        return {k: v[:1] for k, v in value.items()}
    return value[:1]


@pytest.mark.parametrize("name", FAMILIES)
def test_mean_standin_tracks_training_inputs_and_is_frozen_in_eval(mk, name):
    model, info = mk.model(name, "features", "mean")
    standin = model.standins.features
    assert int(standin.updates) == 0
    batch = mk.batch(info)
    model.train()
    model.forward_views(batch)
    real = batch["image_feature_0"][torch.arange(6)[None] < batch["image_info_0"]["max_features"][:, None]]
    torch.testing.assert_close(standin.value_, real.mean(0))
    model.forward_views(mk.other_image(batch))
    assert int(standin.updates) == 2
    frozen = standin.value_.clone()
    model.eval()
    model.forward_views(mk.other_image(batch, seed=9))
    torch.testing.assert_close(standin.value_, frozen, atol=0, rtol=0)
    assert "standins.features.value_" in model.state_dict()  # saved with the checkpoint


@pytest.mark.parametrize("name", FAMILIES)
def test_mean_mode_training_prediction_ignores_its_own_removed_content(mk, name):
    """The EMA is updated after the stand-in is read, so even in training the removed text
    of the current batch cannot reach the image view (same dropout draws on both runs)."""
    model, info = mk.model(name, "features", "mean")
    model.train()
    batch = mk.batch(info)
    model.forward_views(batch)  # a non-zero mean first
    outputs = []
    for variant in (batch, mk.other_text(batch)):
        clone = copy.deepcopy(model)
        torch.manual_seed(0)
        outputs.append(clone.forward_views(variant)["image"])
    torch.testing.assert_close(outputs[0], outputs[1], **EXACT)


def test_bbox_and_box_count_are_read_as_mmf_writes_them(mk):
    from benchmark.models.views import image_input

    batch = mk.batch(mk.info())
    del batch["image_info_0"]
    image = image_input(batch, "features")
    assert image.mask.all()  # MMF: no max_features -> every row is real
    assert (image.bbox == 0).all()
    batch["image_info_0"] = {
        "bbox": torch.full((4, 6, 4), 50.0),
        "image_width": torch.full((4,), 100),
        "image_height": torch.full((4,), 200),
    }
    bbox = image_input(batch, "features").bbox
    torch.testing.assert_close(bbox[0, 0], torch.tensor([0.5, 0.25, 0.5, 0.25]))
