import math

import torch
from omegaconf import OmegaConf

from benchmark.train.early_stop import EarlyStopping
from benchmark.train.optim import build_optimizer, build_scheduler
from benchmark.train.sampler import EpochSampler


def test_early_stopping_tracks_best_and_patience():
    es = EarlyStopping("val/x/acc", minimize=False, patience=2)
    assert es.update(0.5, 1) and es.best_step == 1
    assert not es.update(0.4, 2) and not es.should_stop
    assert not es.update(float("nan"), 3) and es.should_stop
    assert es.best_value == 0.5


def test_early_stopping_minimize():
    es = EarlyStopping("val/x/loss", minimize=True, patience=1)
    es.update(2.0, 1)
    assert es.update(1.0, 2) and es.best_value == 1.0


def test_sampler_resume_skips_exactly_the_seen_samples():
    sampler = EpochSampler(10, seed=3)
    full = sampler.order(2)
    sampler.set_position(2, 4)
    assert list(sampler) == full[4:]
    assert sorted(full) == list(range(10))
    assert sampler.order(2) != sampler.order(3)  # reshuffled each epoch
    assert EpochSampler(10, seed=3).order(2) == full  # reproducible


def test_warmup_linear_schedule_shape():
    model = torch.nn.Linear(2, 2)
    cfg = OmegaConf.create({"optimizer": {"type": "adam_w", "params": {"lr": 1.0, "weight_decay": 0.1}},
                            "scheduler": {"type": "warmup_linear", "params": {"warmup_ratio": 0.2}}})
    opt = build_optimizer(model, cfg)
    sched = build_scheduler(opt, cfg, total_updates=10)
    lrs = []
    for _ in range(10):
        lrs.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
    # warmup of 2 steps: 1/3, 2/3, then linear decay from 1 at step 2 to 0 at step 10
    assert math.isclose(lrs[0], 1 / 3) and math.isclose(lrs[1], 2 / 3)
    assert math.isclose(lrs[2], 1.0) and math.isclose(lrs[6], 0.5)
    assert lrs == sorted(lrs[:3]) + sorted(lrs[2:], reverse=True)[1:]


def test_weight_decay_skips_biases():
    model = torch.nn.Linear(2, 2)
    cfg = OmegaConf.create({"optimizer": {"type": "adam_w", "params": {"lr": 0.1, "weight_decay": 0.3}}})
    groups = build_optimizer(model, cfg).param_groups
    assert groups[0]["weight_decay"] == 0.3 and groups[0]["params"][0] is model.weight
    assert groups[1]["weight_decay"] == 0.0 and groups[1]["params"][0] is model.bias
