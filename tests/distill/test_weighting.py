"""Weighting schemes against hand-computed values (docs/protocol.md §6.1)."""

import math

import pytest
import torch
from omegaconf import OmegaConf

from benchmark.distill.weighting import (
    Learned,
    WeightNet,
    build_weighting,
    instance_weights,
    population_weights,
)
from benchmark.errors import ConfigError


def test_population_weights_hand_computed():
    # s̄ = (0.3, 0.1): w_image = 2 * 0.3 / 0.4 = 1.5, w_text = 2 * 0.1 / 0.4 = 0.5
    w = population_weights({"image": 0.3, "text": 0.1})
    assert w == pytest.approx({"image": 1.5, "text": 0.5})


def test_population_weights_fall_back_to_uniform_when_saliency_is_zero():
    assert population_weights({"image": 0.0, "text": 0.0}) == {"image": 1.0, "text": 1.0}


def test_instance_weights_hand_computed():
    # s = (ln 3, 0) at T_w = 1: softmax = (3/4, 1/4), times M = 2 -> (1.5, 0.5)
    sal = {"image": torch.tensor([math.log(3.0), 0.0]), "text": torch.tensor([0.0, 0.0])}
    w = instance_weights(sal, temperature=1.0)
    assert torch.allclose(w["image"], torch.tensor([1.5, 1.0]))
    assert torch.allclose(w["text"], torch.tensor([0.5, 1.0]))
    # T_w = 2 halves the logits: softmax(ln3/2, 0) = (√3/(√3+1), 1/(√3+1))
    w2 = instance_weights(sal, temperature=2.0)
    r3 = math.sqrt(3.0)
    assert w2["image"][0].item() == pytest.approx(2 * r3 / (r3 + 1))
    assert (w2["image"] + w2["text"]).allclose(torch.full((2,), 2.0))


def test_instance_weights_reject_bad_temperature():
    with pytest.raises(ValueError):
        instance_weights({"image": torch.zeros(1), "text": torch.zeros(1)}, temperature=0.0)


@pytest.mark.parametrize(
    "name,views,expected",
    [("none", (), {}), ("uniform", ("image", "text"), {"image": 1.0, "text": 1.0}),
     ("only_image", ("image",), {"image": 1.0}), ("only_text", ("text",), {"text": 1.0})],
)
def test_constant_schemes(name, views, expected):
    scheme = build_weighting(name)
    assert scheme.views == views
    assert scheme.weights(None) == expected


def test_population_scheme_needs_saliency_then_is_constant():
    scheme = build_weighting("population")
    with pytest.raises(ConfigError):
        scheme.setup(None)
    scheme.setup({"image": 1.0, "text": 3.0})
    assert scheme.weights(None) == pytest.approx({"image": 0.5, "text": 1.5})


def test_unknown_scheme_is_a_config_error():
    with pytest.raises(ConfigError, match="instance"):
        build_weighting("instanse")


@pytest.mark.parametrize("kind", ["mlp", "global"])
def test_weight_net_starts_uniform_and_sums_to_m(kind):
    net = WeightNet(kind)
    w = net(torch.rand(5, 4))
    assert torch.allclose(w, torch.ones(5, 2))
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p))
    w = net(torch.rand(5, 4))
    assert torch.allclose(w.sum(1), torch.full((5,), 2.0))
    assert not torch.allclose(w, torch.ones(5, 2))


def test_learned_scheme_rejects_unknown_parameterisation():
    with pytest.raises(ConfigError, match="parameterisation"):
        Learned(OmegaConf.create({"parameterisation": "transformer"}))
