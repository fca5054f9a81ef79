"""``views.teacher_loss``: a teacher can also learn from its single-modality views.

The loss is checked against the formula computed by hand from each view's own forward pass,
for every model family, and the "absent" embeddings that a removed modality is replaced by
are shown to be trained only when the weight is above 0 (docs/protocol.md §3.7).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from benchmark.distill.methods import StudentOnly, TeacherMethod


def _method(mk, name: str, weight: float | None, cls=TeacherMethod):
    config = mk.run_config(name)
    config.dataset = "tiny"
    config.dataset_config = OmegaConf.create({"tiny": {"loss": "cross_entropy"}})
    if weight is None:
        del config.views["teacher_loss"]
    else:
        config.views.teacher_loss = weight
    return cls(config, mk.info())


def _model_and_batch(mk, name: str):
    model, info = mk.model(name)
    batch = mk.batch(info, size=5)
    batch["targets"] = torch.tensor([0, 2, 1, 1, 0])
    return model.train(False), batch


@pytest.mark.parametrize("name", ["late_fusion", "visual_bert", "mmbt"])
def test_the_loss_is_the_full_view_plus_half_lambda_times_both_single_views(mk, name):
    model, batch = _model_and_batch(mk, name)
    y = batch["targets"]
    total, terms = _method(mk, name, 0.6).training_loss(model, batch)

    with torch.no_grad():
        full, image, text = (F.cross_entropy(model(batch, view), y) for view in ("multi", "image", "text"))
    expected = full + 0.6 * 0.5 * (image + text)
    torch.testing.assert_close(total, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(terms["loss/label"], full, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(terms["loss/label@image"], image, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(terms["loss/label@text"], text, rtol=1e-5, atol=1e-6)
    assert not torch.isclose(total, full), "the single views must add something here"


@pytest.mark.parametrize("weight", [0.0, None])
def test_weight_zero_or_absent_is_plain_label_training(mk, weight):
    model, batch = _model_and_batch(mk, "late_fusion")
    total, terms = _method(mk, "late_fusion", weight).training_loss(model, batch)
    with torch.no_grad():
        full = F.cross_entropy(model(batch, "multi"), batch["targets"])
    assert torch.equal(total, full)
    assert set(terms) == {"loss/label", "loss/total"}


def test_the_absent_embeddings_learn_only_with_a_positive_weight(mk):
    for weight, learns in ((0.0, False), (1.0, True)):
        model, batch = _model_and_batch(mk, "late_fusion")
        model.zero_grad(set_to_none=True)
        total, _ = _method(mk, "late_fusion", weight).training_loss(model, batch)
        total.backward()
        grads = [model.absent[m].grad for m in ("text", "image")]
        got = all(g is not None and bool(g.abs().sum() > 0) for g in grads)
        assert got is learns, f"weight {weight}: absent-embedding gradients {grads}"


def test_the_label_only_student_never_reads_the_weight(mk):
    """The weight prepares a teacher; the student baseline of Table 2 stays label-only on the full input."""
    model, batch = _model_and_batch(mk, "late_fusion")
    total, terms = _method(mk, "late_fusion", 1.0, cls=StudentOnly).training_loss(model, batch)
    with torch.no_grad():
        full = F.cross_entropy(model(batch, "multi"), batch["targets"])
    assert torch.equal(total, full) and set(terms) == {"loss/label", "loss/total"}
