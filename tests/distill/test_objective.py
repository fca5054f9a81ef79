"""The shared KD/MSD objective (:mod:`benchmark.distill.objective`) and the MSD method around it:
what each scheme makes it compute, where the saliency comes from, and what the weight network reads."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from benchmark import MODALITIES, VIEWS
from benchmark.config.loader import build_config
from benchmark.data.info import DatasetInfo
from benchmark.distill import distill_methods as DM
from benchmark.distill.losses import bernoulli_kl, cross_entropy, logit_bce
from benchmark.distill.objective import build_objective
from benchmark.distill.saliency import compute_saliency
from benchmark.distill.teacher import LoadedTeacher, check_views_match
from benchmark.distill.weighting import Learned, instance_weights
from benchmark.errors import ConfigError
from benchmark.registry import registry
from benchmark.train.method_context import MethodContext

CPU = torch.device("cpu")


def _views(seed: int, batch: int = 6, classes: int = 3) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {v: torch.randn(batch, classes, generator=g) * 2 for v in VIEWS}


TEACHER, STUDENT = _views(0), _views(1)
TARGETS = torch.tensor([0, 1, 2, 0, 1, 2])


# -- what a scheme declares, and what is computed -------------------------------------------------
@pytest.mark.parametrize("name,saliency,population", [
    ("none", False, False), ("uniform", False, False), ("only_image", False, False), ("only_text", False, False),
    ("population", False, True), ("instance", True, False), ("learned", True, False),
])
def test_every_scheme_declares_what_it_reads(name, saliency, population):
    scheme = registry.get_weighting(name)
    assert (scheme.needs_saliency, scheme.needs_population) == (saliency, population)


@pytest.mark.parametrize("weighting", ["none", "uniform", "only_image", "only_text", "population", "instance"])
def test_saliency_is_looked_up_only_for_a_scheme_that_reads_it(weighting):
    objective = build_objective(alpha=0.5, temperature=2.0, weighting=weighting)
    if objective.needs_population:
        objective.setup({"image": 0.3, "text": 0.1})
    lookups: list[int] = []

    def cached():
        lookups.append(1)
        return None  # not cached: the objective computes it from the teacher's views

    objective(STUDENT, TEACHER, TARGETS, "single_label", cross_entropy, cached)
    assert len(lookups) == (1 if weighting == "instance" else 0)


def test_the_weights_come_from_the_teachers_saliency():
    objective = build_objective(alpha=0.5, temperature=2.0, weighting="instance")
    _, terms, weights = objective(STUDENT, TEACHER, TARGETS, "single_label", cross_entropy)
    expected = instance_weights(compute_saliency(TEACHER, TARGETS, "single_label"))
    from_student = instance_weights(compute_saliency(STUDENT, TARGETS, "single_label"))
    for m in MODALITIES:
        assert torch.allclose(weights[m], expected[m])
        assert not torch.allclose(from_student[m], expected[m], atol=1e-3)  # the check can tell them apart
    assert float(terms["weight/image_mean"]) == pytest.approx(float(expected["image"].mean()))


def test_cached_saliency_wins_over_computing_it():
    objective = build_objective(alpha=0.5, temperature=1.0, weighting="instance")
    cached = {"image": torch.tensor([4.0, 0, 0, 0, 0, 0]), "text": torch.zeros(6)}
    _, _, weights = objective(STUDENT, TEACHER, TARGETS, "single_label", cross_entropy, lambda: cached)
    assert torch.allclose(weights["image"], instance_weights(cached)["image"])


def test_kd_is_the_objective_without_auxiliary_views():
    kd = build_objective(alpha=0.25, temperature=2.0, weighting="none")
    total, terms, weights = kd(STUDENT, TEACHER, TARGETS, "single_label", cross_entropy)
    assert kd.student_views == ("multi",) and weights == {}
    assert set(terms) == {"loss/label", "loss/kd", "loss/total"}
    ell = cross_entropy(STUDENT["multi"], TARGETS, reduction="none")
    d = 4.0 * torch.nn.functional.kl_div(torch.log_softmax(STUDENT["multi"] / 2, 1), torch.softmax(TEACHER["multi"] / 2, 1),
                                         reduction="none").sum(1)
    assert float(total) == pytest.approx(float((0.75 * ell + 0.25 * d).mean()), rel=1e-5)


def test_class_reduction_sum_puts_the_multi_label_divergence_on_the_label_loss_scale():
    targets = (torch.rand(6, 3, generator=torch.Generator().manual_seed(2)) > 0.5).float()
    mean = build_objective(alpha=0.5, temperature=1.0, weighting="uniform")
    summed = build_objective(alpha=0.5, temperature=1.0, weighting="uniform", class_reduction="sum")
    t_mean = mean.terms(STUDENT, TEACHER, targets, "multi_label", logit_bce)
    t_sum = summed.terms(STUDENT, TEACHER, targets, "multi_label", logit_bce)
    assert torch.allclose(t_mean.kd, bernoulli_kl(TEACHER["multi"], STUDENT["multi"]))
    assert torch.allclose(t_sum.kd, 3 * t_mean.kd) and torch.allclose(t_sum.aux["text"], 3 * t_mean.aux["text"])
    single = summed.terms(STUDENT, TEACHER, TARGETS, "single_label", cross_entropy)  # softmax KL is not rescaled
    assert torch.allclose(single.kd, mean.terms(STUDENT, TEACHER, TARGETS, "single_label", cross_entropy).kd)
    with pytest.raises(ConfigError, match=r"msd_kd: params\.class_reduction"):
        build_objective(alpha=0.5, temperature=1.0, weighting="none", class_reduction="max", where="msd_kd: params.")


# -- the learned scheme's inputs ------------------------------------------------------------------
def test_the_weight_network_reads_the_auxiliary_losses_detached():
    """The weights must not open a path back into the student through the aux losses they read:
    the meta step would otherwise differentiate the virtual update through g_φ's inputs."""
    torch.manual_seed(0)
    scheme = Learned(OmegaConf.create({"parameterisation": "mlp", "hidden": 4}))
    with torch.no_grad():
        for p in scheme.net.parameters():
            p.copy_(torch.randn_like(p))  # away from the zero init, so every input moves the weights
    theta = torch.randn(3, requires_grad=True)  # stands for the student's parameters
    x = torch.randn(5, 3)
    aux = {"image": (x * theta).pow(2).sum(1), "text": (x - theta).pow(2).sum(1)}
    saliency = {"image": torch.rand(5), "text": torch.rand(5)}
    weights = scheme.weights(saliency, aux)
    through_student = torch.autograd.grad(weights["image"].sum(), theta, allow_unused=True)[0]
    assert through_student is None
    through_net = torch.autograd.grad(weights["image"].sum(), list(scheme.net.parameters()), allow_unused=True)
    assert any(g is not None and g.abs().sum() > 0 for g in through_net)


# -- the MSD method -------------------------------------------------------------------------------
class ViewModel(nn.Module):
    """Three views from three linear maps of one input: enough for distinct view logits."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.heads = nn.ModuleDict({v: nn.Linear(4, 2) for v in VIEWS})

    def forward_views(self, batch: dict, views=VIEWS) -> dict[str, torch.Tensor]:
        return {v: self.heads[v](batch["x"]) for v in views}

    def forward(self, batch: dict, view: str = "multi") -> torch.Tensor:
        return self.forward_views(batch, (view,))[view]


INFO = DatasetInfo(name="hateful_memes", task="single_label", num_labels=2)


def _live_method(weighting: str, *extra: str) -> DM.MSD:
    config = build_config(["method=msd", f"weighting={weighting}", "distill.teacher_source=live", *extra])
    method = DM.MSD(config, INFO)
    method.device = CPU
    method.teacher = LoadedTeacher(run=None, config=config, model=ViewModel(1).eval(), summary={})
    return method


def _batch(n: int = 8, seed: int = 3) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {"x": torch.randn(n, 4, generator=g), "targets": torch.randint(0, 2, (n,), generator=g),
            "sample_index": torch.arange(n)}


def test_msd_training_loss_weights_by_the_teachers_saliency_not_the_students():
    method, student, batch = _live_method("instance"), ViewModel(2), _batch()
    total, terms = method.training_loss(student, batch)
    with torch.no_grad():
        teacher = method.teacher.model.forward_views(batch, VIEWS)
        own = student.forward_views(batch, VIEWS)
    expected = instance_weights(compute_saliency(teacher, batch["targets"], "single_label"))
    wrong = instance_weights(compute_saliency(own, batch["targets"], "single_label"))
    seen = method._weights_seen["image"][-1]
    assert not torch.allclose(wrong["image"], expected["image"], atol=1e-3)
    assert torch.allclose(seen, expected["image"])
    assert total.requires_grad and float(terms["loss/total"]) == pytest.approx(float(total.detach()))


@pytest.mark.parametrize("weighting,passes", [("instance", 0), ("learned", 0), ("uniform", 0), ("population", 1)])
def test_only_population_pays_for_the_dataset_level_saliency(monkeypatch, weighting, passes):
    method = _live_method(weighting)
    monkeypatch.setattr(DM, "load_teacher", lambda config, info, device: method.teacher)
    monkeypatch.setattr(DM, "build_dataset", lambda config, split: [_batch(4, seed=9)])  # the learned meta split
    calls: list[int] = []

    def population(train_set):
        calls.append(1)
        return {"image": 0.3, "text": 0.1}

    monkeypatch.setattr(method, "_population_saliency", population)
    method.prepare(MethodContext(device=CPU, train_set=None))
    assert len(calls) == passes
    if passes:
        assert method.scheme.describe()["weights"] == pytest.approx({"image": 1.5, "text": 0.5})


# -- views.removal of teacher and student ---------------------------------------------------------
def test_a_student_with_another_view_rule_than_its_teacher_is_refused():
    student = OmegaConf.create({"views": {"removal": "zero"}})
    with pytest.raises(ConfigError, match=r"views\.removal=zero.*views\.removal=drop"):
        check_views_match(student, OmegaConf.create({"views": {"removal": "drop"}}))
    with pytest.raises(ConfigError):
        check_views_match(student, OmegaConf.create({}))  # a teacher config without the key used drop
    check_views_match(student, OmegaConf.create({"views": {"removal": "zero"}}))


def test_msd_prepare_refuses_a_view_rule_mismatch_before_touching_the_teacher_cache(monkeypatch):
    method = _live_method("uniform", "views.removal=zero")
    teacher_config = build_config(["method=teacher"])
    method.teacher = LoadedTeacher(run=None, config=teacher_config, model=ViewModel(1), summary={})
    monkeypatch.setattr(DM, "load_teacher", lambda config, info, device: method.teacher)
    monkeypatch.setattr(DM, "get_teacher_cache", lambda *a, **k: pytest.fail("cache opened before the check"))
    method.source = "cache"
    with pytest.raises(ConfigError, match="removal"):
        method.prepare(MethodContext(device=CPU, train_set=None))
