"""The meta step (docs/protocol.md §6.2) on a toy problem where the right weights are known."""

import torch
from omegaconf import OmegaConf
from torch import nn

from benchmark.distill.losses import cross_entropy, msd_objective
from benchmark.distill.meta import MetaWeightLearner
from benchmark.distill.weighting import Learned


class ToyStudent(nn.Module):
    """Two 'views' from two linear maps; multi = their sum."""

    def __init__(self):
        super().__init__()
        self.img = nn.Linear(3, 2)
        self.txt = nn.Linear(3, 2)

    def forward(self, batch, view="multi"):
        parts = {"image": self.img(batch["x_img"]), "text": self.txt(batch["x_txt"])}
        return parts["image"] + parts["text"] if view == "multi" else parts[view]


def _batch(n, gen):
    x_img = torch.randn(n, 3, generator=gen)
    x_txt = torch.randn(n, 3, generator=gen)
    y = (x_img[:, 0] > 0).long()  # only the image decides the label
    return {"x_img": x_img, "x_txt": x_txt, "targets": y}


def _teacher_logits(batch):
    good = torch.stack([-batch["x_img"][:, 0], batch["x_img"][:, 0]], 1) * 4
    noise = torch.stack([batch["x_txt"][:, 1], -batch["x_txt"][:, 1]], 1) * 4  # a misleading text teacher
    return {"multi": good, "image": good, "text": noise}


def test_meta_step_moves_weight_towards_the_useful_modality():
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    student = ToyStudent()
    scheme = Learned(OmegaConf.create({"parameterisation": "global"}))
    meta_batches = iter([_batch(64, gen) for _ in range(200)])
    learner = MetaWeightLearner(scheme, meta_batches, cross_entropy, meta_lr=0.05, inner_lr=0.5)
    opt = torch.optim.SGD(student.parameters(), lr=0.1)
    from benchmark.distill.losses import kl_softmax

    for _ in range(150):
        batch = _batch(64, gen)
        t = _teacher_logits(batch)
        s = {v: student(batch, v) for v in ("multi", "image", "text")}
        label = cross_entropy(s["multi"], batch["targets"], reduction="none")
        kd = kl_softmax(t["multi"], s["multi"])
        aux = {m: kl_softmax(t[m], s[m]) for m in ("image", "text")}
        sal = {"image": torch.ones(64), "text": torch.ones(64)}
        terms = learner.maybe_step(
            student, lambda w: msd_objective(label, kd, aux, w, 0.5)[0], lambda: scheme.weights(sal, aux), lambda b: b
        )
        assert "meta/loss" in terms
        with torch.no_grad():
            w = scheme.weights(sal, aux)
        total, _ = msd_objective(label, kd, aux, w, 0.5)
        opt.zero_grad()
        total.backward()
        opt.step()
    with torch.no_grad():
        w = scheme.weights(sal, aux)
    # the text teacher is misleading for the held-out label loss: its weight must drop
    assert float(w["image"].mean()) > 1.2 > 0.8 > float(w["text"].mean())


def test_meta_step_every_k_and_state_roundtrip():
    student = ToyStudent()
    scheme = Learned(OmegaConf.create({"parameterisation": "mlp"}))
    gen = torch.Generator().manual_seed(1)
    learner = MetaWeightLearner(scheme, iter([_batch(8, gen) for _ in range(10)]), cross_entropy, every=2)
    batch = _batch(8, gen)
    calls = []
    for _ in range(4):
        s = {v: student(batch, v) for v in ("multi", "image", "text")}
        t = _teacher_logits(batch)
        from benchmark.distill.losses import kl_softmax

        aux = {m: kl_softmax(t[m], s[m]) for m in ("image", "text")}
        label = cross_entropy(s["multi"], batch["targets"], reduction="none")
        sal = {"image": torch.ones(8), "text": torch.zeros(8)}
        calls.append(bool(learner.maybe_step(student, lambda w: msd_objective(label, label * 0, aux, w, 0.5)[0],
                                             lambda: scheme.weights(sal, aux), lambda b: b)))
    assert calls == [True, False, True, False]
    state = learner.state_dict()
    other = MetaWeightLearner(Learned(OmegaConf.create({"parameterisation": "mlp"})), iter(()), cross_entropy)
    other.load_state_dict(state)
    assert other.steps == 4
    for a, b in zip(other.scheme.net.parameters(), scheme.net.parameters()):
        assert torch.equal(a, b)
