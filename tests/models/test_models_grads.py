"""Every trainable parameter receives a gradient from the views that use it."""

from __future__ import annotations

import itertools

import pytest
import torch

FAMILIES = ("late_fusion", "visual_bert", "mmbt")
CASES = list(itertools.product(FAMILIES, ("drop", "zero", "mean"), ("features", "pixels")))


def _loss(logits: torch.Tensor) -> torch.Tensor:
    weights = torch.linspace(-1.0, 1.0, logits.numel()).reshape(logits.shape)
    return (logits * weights).sum() + logits.pow(2).sum()


@pytest.mark.parametrize(("name", "removal", "modality"), CASES)
def test_gradients_reach_every_parameter(mk, name, removal, modality):
    model, info = mk.model(name, modality, removal)
    model.train()
    batch = mk.batch(info)
    absent = {n for n, _ in model.named_parameters() if n.startswith("absent.")}
    assert bool(absent) == (name == "late_fusion" and removal == "drop")

    _loss(model(batch, "multi")).backward()
    for pname, param in model.named_parameters():
        if pname in absent:
            assert param.grad is None, pname
            continue
        assert param.grad is not None and param.grad.abs().sum() > 0, (
            f"no gradient reaches {pname} in the multi view"
        )

    model.zero_grad(set_to_none=True)
    views = model.forward_views(batch, ("image", "text"))
    _loss(views["image"] + views["text"]).backward()
    for pname in absent:
        grad = dict(model.named_parameters())[pname].grad
        assert grad is not None and grad.abs().sum() > 0, pname
    # stand-ins are buffers: never trained by gradient
    assert all(not n.startswith("standins.") for n, _ in model.named_parameters())
