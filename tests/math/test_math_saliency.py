"""Saliency definitions and summaries (docs/protocol.md §5): hand values and properties."""

from __future__ import annotations

import math

import pytest
import torch

from benchmark.distill import saliency as S
from benchmark.registry import registry

LN3, LN9 = math.log(3.0), math.log(9.0)
KL_HAND = 0.25 * math.log(0.25 / 0.5) + 0.75 * math.log(0.75 / 0.5)  # KL([1/4,3/4] || [1/2,1/2])


def _views(multi, image, text):
    return {"multi": torch.tensor(multi), "image": torch.tensor(image), "text": torch.tensor(text)}


# -- divergence ----------------------------------------------------------------------------------
def test_divergence_saliency_hand_single_label():
    logits = _views([[0.0, LN3]], [[0.0, LN3]], [[0.0, 0.0]])
    out = S.divergence_saliency(logits, None, "single_label")
    # s_image = D(multi, text view) = KL([1/4,3/4] || [1/2,1/2]); s_text = D(multi, image view) = 0
    assert out["image"].tolist() == pytest.approx([KL_HAND])
    assert torch.equal(out["text"], torch.zeros(1))


def test_divergence_saliency_multi_label_uses_bernoulli_kl():
    logits = _views([[LN3, 0.0]], [[0.0, 0.0]], [[LN3, 0.0]])
    out = S.divergence_saliency(logits, None, "multi_label")
    # text view equals multi -> s_image = 0; image view: class 0 KL_HAND, class 1 0 -> mean KL_HAND / 2
    assert torch.equal(out["image"], torch.zeros(1))
    assert out["text"].tolist() == pytest.approx([KL_HAND / 2])


# -- loss ----------------------------------------------------------------------------------------
def test_loss_saliency_hand_and_clipping():
    # target 1; multi p1 = 3/4 -> CE ln(4/3); text view p1 = 1/2 -> ln 2; image view p1 = 9/10 -> ln(10/9)
    logits = _views([[0.0, LN3]], [[0.0, LN9]], [[0.0, 0.0]])
    out = S.loss_saliency(logits, torch.tensor([1]), "single_label")
    # s_image = ln 2 - ln(4/3) = ln(3/2); s_text = ln(10/9) - ln(4/3) < 0 -> clipped to 0
    assert out["image"].tolist() == pytest.approx([math.log(1.5)])
    assert out["text"].tolist() == [0.0]


def test_loss_saliency_multi_label_uses_summed_bce():
    logits = _views([[0.0, 0.0]], [[0.0, 0.0]], [[0.0, -LN3]])
    targets = torch.tensor([[1.0, 1.0]])
    out = S.loss_saliency(logits, targets, "multi_label")
    # multi: 2 ln 2; text view: ln 2 + (-ln sigmoid(-ln3) = ln 4) = 3 ln 2 -> s_image = ln 2
    assert out["image"].tolist() == pytest.approx([math.log(2)])
    assert out["text"].tolist() == [0.0]


# -- shapley -------------------------------------------------------------------------------------
def test_shapley_hand_single_label():
    # target 1: v(IT) = 3/4, v(I) = 1/2 (image view [0,0]), v(T) = 9/10 (text view [0, ln 9]), v(0) = 1/C = 1/2
    logits = _views([[0.0, LN3]], [[0.0, 0.0]], [[0.0, LN9]])
    out = S.shapley_saliency(logits, torch.tensor([1]), "single_label")
    # phi_I = 1/2 [(1/2 - 1/2) + (3/4 - 9/10)] = -0.075; phi_T = 1/2 [(9/10 - 1/2) + (3/4 - 1/2)] = 0.325
    assert out["image"].tolist() == pytest.approx([-0.075])
    assert out["text"].tolist() == pytest.approx([0.325])
    assert float(out["image"] + out["text"]) == pytest.approx(0.75 - 0.5)  # efficiency


def test_shapley_empty_value_number_and_errors():
    logits = _views([[0.0, LN3]], [[0.0, 0.0]], [[0.0, LN9]])
    out = S.shapley_saliency(logits, torch.tensor([1]), "single_label", empty_value=0.0)
    # phi_I = 1/2 [(1/2 - 0) + (3/4 - 9/10)] = 0.175; phi_T = 1/2 [(9/10) + (3/4 - 1/2)] = 0.575
    assert out["image"].tolist() == pytest.approx([0.175])
    assert out["text"].tolist() == pytest.approx([0.575])
    with pytest.raises(ValueError, match="empty_value"):
        S.shapley_saliency(logits, torch.tensor([1]), "single_label", empty_value="prior")


@pytest.mark.parametrize("task", ["single_label", "multi_label", "soft_score"])
def test_shapley_efficiency_random(task):
    for seed in range(10):
        g = torch.Generator().manual_seed(seed)
        logits = {v: torch.randn(16, 5, generator=g) * 2 for v in ("multi", "image", "text")}
        if task == "single_label":
            targets = torch.randint(0, 5, (16,), generator=g)
            v0 = 1 / 5
        else:
            targets = (torch.rand(16, 5, generator=g) < 0.5).float() * torch.rand(16, 5, generator=g)
            targets[:, 0] = 1.0  # at least one positive per row
            v0 = 0.5
        out = S.shapley_saliency(logits, targets, task)
        v_it, _ = S.correct_class_probability(logits["multi"], targets, task)
        assert torch.allclose(out["image"] + out["text"], v_it - v0, atol=1e-6)


def test_correct_class_probability_multi_label_and_soft_scores():
    logits = torch.tensor([[5.0, LN3, 0.0, -2.0]])  # sigmoid of classes 1, 2: 3/4, 1/2
    multi_hot = torch.tensor([[0.0, 1.0, 1.0, 0.0]])
    v, defined = S.correct_class_probability(logits, multi_hot, "multi_label")
    assert v.tolist() == pytest.approx([(0.75 + 0.5) / 2]) and defined.tolist() == [True]
    soft = torch.tensor([[0.0, 0.3, 0.9, 0.0]])
    v, _ = S.correct_class_probability(logits, soft, "soft_score")
    # (0.3 * 3/4 + 0.9 * 1/2) / (0.3 + 0.9) = 0.675 / 1.2
    assert v.tolist() == pytest.approx([0.5625])


def test_shapley_row_without_positive_class_is_zero():
    logits = _views([[3.0, -1.0]], [[-2.0, 2.0]], [[1.0, 1.0]])
    out = S.shapley_saliency(logits, torch.zeros(1, 2), "multi_label")
    assert out["image"].tolist() == [0.0] and out["text"].tolist() == [0.0]


# -- registry, checks, summaries -------------------------------------------------------------------
def test_registered_and_compute_saliency():
    assert {"divergence", "loss", "shapley"} <= set(registry.names("saliency"))
    logits = _views([[0.0, LN3]], [[0.0, 0.0]], [[0.0, LN9]])
    direct = S.shapley_saliency(logits, torch.tensor([1]), "single_label")
    via = S.compute_saliency(logits, torch.tensor([1]), "single_label", method="shapley")
    assert torch.equal(direct["image"], via["image"])
    with pytest.raises(ValueError, match="missing"):
        S.divergence_saliency({"multi": torch.zeros(1, 2)}, None, "single_label")
    with pytest.raises(ValueError, match="same"):
        S.divergence_saliency(_views([[0.0, 0.0]], [[0.0]], [[0.0, 0.0]]), None, "single_label")


def test_dataset_saliency_and_dominant_share():
    per = {"image": torch.tensor([0.4, 0.0, 1.0, 0.2]), "text": torch.tensor([0.1, 0.0, 2.0, 0.2])}
    assert S.dataset_saliency(per) == pytest.approx({"image": 1.6 / 4, "text": 2.3 / 4})
    # image strictly larger only in sample 0; samples 1 and 3 are ties -> 1/4
    assert S.image_dominant_share(per) == pytest.approx(0.25)
    with pytest.raises(ValueError):
        S.dataset_saliency({"image": torch.zeros(0), "text": torch.zeros(0)})


def test_spearman_with_ground_truth():
    # d = rank differences [0, 1, -1, 0]: rho = 1 - 6 * 2 / (4 * (16 - 1)) = 0.8
    assert S.spearman_with_ground_truth(
        torch.tensor([1.0, 2.0, 3.0, 4.0]), [1.0, 3.0, 2.0, 4.0]
    ) == pytest.approx(0.8)
    assert S.spearman_with_ground_truth([0.1, 0.5, 0.9], [-1, 0, 1]) == pytest.approx(1.0)
    assert S.spearman_with_ground_truth([0.1, 0.5, 0.9], [1, 0, -1]) == pytest.approx(-1.0)
    assert math.isnan(S.spearman_with_ground_truth([0.1, 0.5, 0.9], [0, 0, 0]))
    with pytest.raises(ValueError, match="length"):
        S.spearman_with_ground_truth([1.0, 2.0], [1.0, 2.0, 3.0])
