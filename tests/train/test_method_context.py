"""The trainer prepares a method with a MethodContext, never with itself."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from benchmark.config.loader import build_config
from benchmark.data.make import make_dataset
from benchmark.distill.methods import TeacherMethod
from benchmark.train.distributed import DistContext
from benchmark.train.method_context import MethodContext
from benchmark.train.trainer import run_experiment


def test_a_method_is_prepared_with_the_context_only(tmp_path, monkeypatch):
    make_dataset("hateful_memes", tmp_path / "data", size=64, seed=0)
    seen: list[object] = []
    monkeypatch.setattr(TeacherMethod, "prepare", lambda self, context: seen.append(context))
    run_experiment(build_config([
        "dataset=hateful_memes", "method=teacher", f"env.data_dir={tmp_path / 'data'}",
        f"env.save_dir={tmp_path / 'runs'}", f"env.cache_dir={tmp_path / 'cache'}", "tracking.wandb.mode=disabled",
        "training.max_updates=1", "training.batch_size=16", "run_type=train",
    ]), progress=False)

    (context,) = seen
    assert type(context) is MethodContext
    assert [f.name for f in dataclasses.fields(context)] == ["device", "train_set", "dist"]
    assert context.device == torch.device("cpu")
    assert isinstance(context.dist, DistContext) and not context.dist.enabled
    assert len(context.train_set) > 0 and hasattr(context.train_set, "sample_indices")
    with pytest.raises(dataclasses.FrozenInstanceError):
        context.device = torch.device("meta")
