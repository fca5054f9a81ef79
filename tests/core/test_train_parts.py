import math

import torch
from omegaconf import OmegaConf

from benchmark.train.early_stop import EarlyStopping
from benchmark.train.optim import build_optimizer, build_scheduler
from benchmark.train.sampler import EpochBatches


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


def test_sampler_resume_skips_exactly_the_seen_batches():
    sampler = EpochBatches(10, batch_size=2, seed=3)
    full = sampler.order(2)
    sampler.set_position(2, 2)
    assert [i for batch in sampler for i in batch] == full[4:]
    assert sorted(full) == list(range(10))
    assert sampler.order(2) != sampler.order(3)  # reshuffled each epoch
    assert EpochBatches(10, batch_size=2, seed=3).order(2) == full  # reproducible


def test_sampler_ranks_share_each_global_batch_exactly():
    """Two ranks together see every global batch of one process, each sample once; a tail
    smaller than the world is dropped (and only then)."""
    single = EpochBatches(11, batch_size=4, seed=5)
    ranks = [EpochBatches(11, batch_size=4, seed=5, rank=r, world_size=2) for r in (0, 1)]
    assert single.global_batch_sizes(0) == [4, 4, 3]
    for batch, part0, part1 in zip(single, *ranks):
        assert part0 + part1 == batch and len(part0) >= len(part1)
    assert [len(b) for b in ranks[1]] == [2, 2, 1]
    odd = [EpochBatches(9, batch_size=4, seed=5, rank=r, world_size=2) for r in (0, 1)]
    assert odd[0].global_batch_sizes(0) == [4, 4]  # the 1-sample tail cannot feed 2 ranks
    assert EpochBatches(9, batch_size=4, seed=5).global_batch_sizes(0) == [4, 4, 1]


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
