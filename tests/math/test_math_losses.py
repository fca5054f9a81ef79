"""Label losses, divergences and objectives (docs/protocol.md §4): hand values and properties."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from benchmark.distill import losses as L
from benchmark.registry import registry

LN3 = math.log(3.0)
SEEDS = range(20)


# -- label losses --------------------------------------------------------------------------------
def test_cross_entropy_hand():
    logits = torch.tensor([[0.0, LN3], [0.0, LN3]])
    targets = torch.tensor([1, 0])
    # softmax([0, ln 3]) = [1/4, 3/4] -> CE = [-ln 3/4, -ln 1/4] = [ln 4/3, ln 4]
    per = L.cross_entropy(logits, targets, reduction="none")
    assert per.tolist() == pytest.approx([math.log(4 / 3), math.log(4)])
    assert float(L.cross_entropy(logits, targets)) == pytest.approx((math.log(4 / 3) + math.log(4)) / 2)
    assert float(L.cross_entropy(logits, targets.view(-1, 1))) == pytest.approx(float(per.mean()))


def test_logit_bce_hand_and_mmf_scaling():
    logits = torch.tensor([[0.0, LN3]])
    targets = torch.tensor([[1.0, 0.0]])
    # class 0: -ln sigmoid(0) = ln 2; class 1: -ln(1 - 3/4) = ln 4; summed: ln 8
    assert L.logit_bce(logits, targets, reduction="none").tolist() == pytest.approx([math.log(8)])
    for seed in SEEDS:
        g = torch.Generator().manual_seed(seed)
        z = torch.randn(7, 11, generator=g) * 3
        y = torch.rand(7, 11, generator=g)
        mmf = F.binary_cross_entropy_with_logits(z, y, reduction="mean") * y.size(1)
        assert float(L.logit_bce(z, y)) == pytest.approx(float(mmf), rel=1e-6)
        assert L.logit_bce(z, y, reduction="none").shape == (7,)


# -- divergences: hand values --------------------------------------------------------------------
KL_HAND = 0.25 * math.log(0.25 / 0.5) + 0.75 * math.log(0.75 / 0.5)  # KL([1/4,3/4] || [1/2,1/2]) ≈ 0.1308


def test_kl_softmax_hand():
    teacher = torch.tensor([[0.0, LN3]])  # p_T = [1/4, 3/4]
    student = torch.tensor([[0.0, 0.0]])  # p_S = [1/2, 1/2]
    assert float(L.kl_softmax(teacher, student)) == pytest.approx(KL_HAND)
    # order matters: KL([1/2,1/2] || [1/4,3/4]) = 1/2 ln 2 + 1/2 ln(2/3) ≈ 0.1438
    reverse = 0.5 * math.log(2) + 0.5 * math.log(2 / 3)
    assert float(L.kl_softmax(student, teacher)) == pytest.approx(reverse)
    # the function, not the constants, must tell the two orders apart (a symmetrised D would not)
    assert float(L.kl_softmax(student, teacher)) != pytest.approx(float(L.kl_softmax(teacher, student)), rel=1e-3)
    # tau = 2: p_T = softmax([0, ln3 / 2]) = [1, sqrt 3] / (1 + sqrt 3); D = 4 * sum p ln(2 p)
    s3 = math.sqrt(3)
    p = [1 / (1 + s3), s3 / (1 + s3)]
    expected = 4 * sum(q * math.log(2 * q) for q in p)
    assert float(L.kl_softmax(teacher, student, temperature=2.0)) == pytest.approx(expected)


def test_bernoulli_kl_hand():
    # one class: p = sigmoid(ln 3) = 3/4, q = 1/2 -> the same numbers as KL_HAND
    assert float(L.bernoulli_kl(torch.tensor([[LN3]]), torch.tensor([[0.0]]))) == pytest.approx(KL_HAND)
    # two classes, second identical: mean over classes = KL_HAND / 2
    out = L.bernoulli_kl(torch.tensor([[LN3, 0.0]]), torch.tensor([[0.0, 0.0]]))
    assert out.shape == (1,)
    assert float(out) == pytest.approx(KL_HAND / 2)


# -- divergences: properties ---------------------------------------------------------------------
@pytest.mark.parametrize("name", ["kl_softmax", "bernoulli_kl"])
@pytest.mark.parametrize("tau", [0.5, 1.0, 4.0])
def test_divergence_zero_when_equal_and_nonnegative(name, tau):
    div = registry.get_divergence(name)
    for seed in SEEDS:
        g = torch.Generator().manual_seed(seed)
        z = torch.randn(9, 6, generator=g) * 20
        assert torch.equal(div(z, z.clone(), temperature=tau), torch.zeros(9))
        other = torch.randn(9, 6, generator=g) * 5
        assert bool((div(z, other, temperature=tau) >= 0).all())


@pytest.mark.parametrize("name", ["kl_softmax", "bernoulli_kl"])
def test_tau_squared_scaling(name):
    div = registry.get_divergence(name)
    g = torch.Generator().manual_seed(0)
    t, s = (
        torch.randn(5, 4, generator=g, dtype=torch.float64),
        torch.randn(5, 4, generator=g, dtype=torch.float64),
    )
    # D_tau(t, s) = tau^2 * D_1(t / tau, s / tau)
    assert torch.allclose(div(t, s, temperature=3.0), 9.0 * div(t / 3.0, s / 3.0))


def test_symmetries():
    g = torch.Generator().manual_seed(1)
    t, s = torch.randn(6, 5, generator=g), torch.randn(6, 5, generator=g)
    # Bernoulli KL(p || q) = KL(1-p || 1-q): flipping every logit's sign changes nothing
    assert torch.allclose(L.bernoulli_kl(t, s), L.bernoulli_kl(-t, -s), atol=1e-6)
    # softmax KL is invariant to a per-row shift of either side and to permuting classes
    perm = torch.randperm(5, generator=g)
    assert torch.allclose(L.kl_softmax(t, s), L.kl_softmax(t + 7.0, s - 2.0), atol=1e-5)
    assert torch.allclose(L.kl_softmax(t, s), L.kl_softmax(t[:, perm], s[:, perm]), atol=1e-6)


@pytest.mark.parametrize("tau", [1.0, 2.5])
def test_bernoulli_kl_gradient_equals_soft_target_bce(tau):
    g = torch.Generator().manual_seed(2)
    t = torch.randn(4, 7, generator=g, dtype=torch.float64) * 3
    s1 = (torch.randn(4, 7, generator=g, dtype=torch.float64) * 3).requires_grad_()
    s2 = s1.detach().clone().requires_grad_()
    L.bernoulli_kl(t, s1, temperature=tau).sum().backward()
    bce = F.binary_cross_entropy_with_logits(s2 / tau, torch.sigmoid(t / tau), reduction="none")
    (tau**2 * bce.mean(dim=1)).sum().backward()
    assert torch.allclose(s1.grad, s2.grad, atol=1e-12)
    # and the values differ by exactly the teacher's Bernoulli entropy (constant in the student)
    p = torch.sigmoid(t / tau)
    entropy = -(p * p.log() + (1 - p) * (1 - p).log())
    value = L.bernoulli_kl(t, s1.detach(), temperature=tau)
    assert torch.allclose(value, tau**2 * (bce - entropy).mean(dim=1).detach(), atol=1e-10)


def test_kl_softmax_gradient_is_tau_times_prob_difference():
    g = torch.Generator().manual_seed(3)
    tau = 2.0
    t = torch.randn(3, 4, generator=g, dtype=torch.float64)
    s = torch.randn(3, 4, generator=g, dtype=torch.float64).requires_grad_()
    L.kl_softmax(t, s, temperature=tau).sum().backward()
    expected = tau * (torch.softmax(s.detach() / tau, 1) - torch.softmax(t / tau, 1))
    assert torch.allclose(s.grad, expected, atol=1e-12)


def test_bernoulli_kl_stable_for_large_logits():
    t = torch.tensor([[80.0, -80.0, 500.0, -500.0]])
    s = torch.tensor([[-80.0, 80.0, 499.0, -500.0]])
    out = L.bernoulli_kl(t, s)
    assert torch.isfinite(out).all()
    # classes 0 and 1: p ≈ 1 (resp. 0), log q ≈ -80 -> KL ≈ 80 each (~160 within 1e-30);
    # class 2: p ≈ 1, KL ≈ -log sigmoid(499) ≈ 0; class 3 equal -> 0. Mean over 4 classes: 40
    assert float(out) == pytest.approx(40.0, rel=1e-5)
    assert torch.isfinite(L.kl_softmax(t, s)).all()


def test_reductions_and_errors():
    t, s = torch.tensor([[0.0, LN3], [0.0, 0.0]]), torch.zeros(2, 2)
    per = L.kl_softmax(t, s)
    assert per.tolist() == pytest.approx([KL_HAND, 0.0])
    assert float(L.kl_softmax(t, s, reduction="mean")) == pytest.approx(KL_HAND / 2)  # batchmean
    assert float(L.kl_softmax(t, s, reduction="sum")) == pytest.approx(KL_HAND)
    with pytest.raises(ValueError, match="reduction"):
        L.kl_softmax(t, s, reduction="batchmean")
    with pytest.raises(ValueError, match="temperature"):
        L.bernoulli_kl(t, s, temperature=0.0)
    with pytest.raises(ValueError, match="equal shape"):
        L.bernoulli_kl(t, torch.zeros(2, 3))


def test_task_lookup():
    assert L.divergence_for_task("single_label") is L.kl_softmax
    assert L.divergence_for_task("soft_score") is L.bernoulli_kl
    assert L.label_loss_for_task("multi_label") is L.logit_bce
    assert L.label_loss_for_task("single_label") is L.cross_entropy
    # a dataset's configured ``loss`` wins over the task's default
    assert L.label_loss_for_task("single_label", "logit_bce") is L.logit_bce
    with pytest.raises(ValueError):
        L.divergence_for_task("regression")
    assert {"cross_entropy", "logit_bce"} <= set(registry.names("loss"))
    assert {"kl_softmax", "bernoulli_kl"} <= set(registry.names("divergence"))


# -- objectives ----------------------------------------------------------------------------------
ELL = torch.tensor([1.0, 3.0])
KD = torch.tensor([0.5, 1.5])


def test_kd_objective_hand():
    total, terms = L.kd_objective(ELL, KD, alpha=0.25)
    # per sample: 0.75*1 + 0.25*0.5 = 0.875; 0.75*3 + 0.25*1.5 = 2.625; mean = 1.75
    assert float(total) == pytest.approx(1.75)
    assert float(terms["loss/label"]) == pytest.approx(2.0)
    assert float(terms["loss/kd"]) == pytest.approx(1.0)
    assert float(terms["loss/total"]) == pytest.approx(1.75)
    assert float(L.kd_objective(ELL, KD, alpha=0.0)[0]) == pytest.approx(2.0)
    assert float(L.kd_objective(ELL, KD, alpha=1.0)[0]) == pytest.approx(1.0)


def test_msd_objective_hand_per_sample_weighting():
    aux = {"image": torch.tensor([2.0, 4.0]), "text": torch.tensor([1.0, 1.0])}
    weights = {"image": torch.tensor([1.0, 0.0]), "text": 0.5}
    total, terms = L.msd_objective(ELL, KD, aux, weights, alpha=0.25)
    # KD part per sample [0.875, 2.625]; aux per sample: [1*2 + 0.5*1, 0*4 + 0.5*1] = [2.5, 0.5]
    # totals [3.375, 3.125] -> mean 3.25
    assert float(total) == pytest.approx(3.25)
    expected = {
        "loss/label": 2.0,
        "loss/kd": 1.0,
        "loss/aux_image": 3.0,
        "loss/aux_image_weighted": 1.0,  # mean of [2, 0]; NOT mean(w) * mean(D) = 0.5 * 3 = 1.5
        "weight/image_mean": 0.5,
        "loss/aux_text": 1.0,
        "loss/aux_text_weighted": 0.5,
        "weight/text_mean": 0.5,
        "loss/total": 3.25,
    }
    assert {k: float(v) for k, v in terms.items()} == pytest.approx(expected)
    assert all(not v.requires_grad for v in terms.values())


def test_msd_with_zero_weights_is_kd_and_only_one_view_allowed():
    aux = {"image": torch.tensor([2.0, 4.0]), "text": torch.tensor([1.0, 1.0])}
    zero, _ = L.msd_objective(ELL, KD, aux, {"image": 0.0, "text": 0.0}, alpha=0.25)
    assert float(zero) == pytest.approx(float(L.kd_objective(ELL, KD, 0.25)[0]))
    only, terms = L.msd_objective(ELL, KD, {"image": aux["image"]}, {"image": 1.0}, alpha=0.25)
    assert float(only) == pytest.approx(1.75 + 3.0)
    assert "loss/aux_text" not in terms


def test_msd_gradients_reach_student_and_learned_weights():
    d_img = torch.tensor([2.0, 4.0], requires_grad=True)
    w_img = torch.tensor([0.3, 0.7], requires_grad=True)
    total, _ = L.msd_objective(ELL, KD, {"image": d_img}, {"image": w_img}, alpha=0.5)
    total.backward()
    # d total / d w_b = D_b / B and d total / d D_b = w_b / B
    assert w_img.grad.tolist() == pytest.approx([1.0, 2.0])
    assert d_img.grad.tolist() == pytest.approx([0.15, 0.35])


def test_objective_errors():
    aux = {"image": torch.tensor([2.0, 4.0])}
    with pytest.raises(ValueError, match="alpha"):
        L.kd_objective(ELL, KD, alpha=1.5)
    with pytest.raises(ValueError, match="views"):
        L.msd_objective(ELL, KD, {"audio": KD}, {"audio": 1.0}, alpha=0.5)
    with pytest.raises(ValueError, match="missing"):
        L.msd_objective(ELL, KD, aux, {"text": 1.0}, alpha=0.5)
    with pytest.raises(ValueError, match="samples"):
        L.msd_objective(ELL, KD, aux, {"image": torch.ones(3)}, alpha=0.5)
    with pytest.raises(ValueError, match="samples"):
        L.kd_objective(ELL, torch.ones(3), alpha=0.5)
