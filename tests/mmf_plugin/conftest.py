"""A fake ``mmf`` package for the CI tests, and a reader of offline W&B runs.

The fake mirrors exactly what the plugin touches in MMF: the registry's ``register_model`` /
``register_loss`` / ``register_callback`` decorators (with MMF's base-class asserts),
``BaseModel`` (config, ``init_losses`` from ``config.losses``), ``Callback`` and
``mmf.utils.build.build_model`` (construct, ``build()``, ``init_losses()``), so the plugin's
registration, signatures and arithmetic are tested without installing MMF.
"""

from __future__ import annotations

import json
import struct
import sys
import time
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

PLUGIN_MODULES = ("benchmark.mmf_plugin.model", "benchmark.mmf_plugin.loss", "benchmark.mmf_plugin.callback")


class FakeRegistry:
    def __init__(self) -> None:
        self.mapping: dict[str, dict[str, Any]] = {"model": {}, "loss": {}, "callback": {}, "state": {}}

    def _register(self, kind: str, name: str, base: type):
        def wrap(obj: type) -> type:
            assert issubclass(obj, base), f"{kind} {name} must inherit {base.__name__}"
            self.mapping[kind][name] = obj
            return obj

        return wrap

    def register_model(self, name: str):
        return self._register("model", name, sys.modules["mmf.models.base_model"].BaseModel)

    def register_loss(self, name: str):
        return self._register("loss", name, nn.Module)

    def register_callback(self, name: str):
        return self._register("callback", name, sys.modules["mmf.trainers.callbacks.base"].Callback)

    def get_model_class(self, name: str) -> type:
        return self.mapping["model"][name]

    def get_loss_class(self, name: str) -> type:
        return self.mapping["loss"][name]

    def get_callback_class(self, name: str) -> type:
        return self.mapping["callback"][name]

    def register(self, name: str, value: Any) -> None:
        self.mapping["state"][name] = value

    def get(self, name: str, default: Any = None, no_warning: bool = False) -> Any:
        return self.mapping["state"].get(name, default)


class BaseModel(nn.Module):
    def __init__(self, config) -> None:
        super().__init__()
        self.config = config

    def init_losses(self) -> None:
        registry = sys.modules["mmf.common.registry"].registry
        losses = []
        for spec in self.config.get("losses") or []:
            name = spec if isinstance(spec, str) else spec["type"]
            params = {} if isinstance(spec, str) else dict(spec.get("params") or {})
            losses.append(registry.get_loss_class(name)(**params))
        self.losses = nn.ModuleList(losses)


class Callback:
    def __init__(self, config, trainer) -> None:
        self.config = config
        self.trainer = trainer
        self.training_config = config.training


def build_model(config):
    registry = sys.modules["mmf.common.registry"].registry
    model = registry.get_model_class(config.model)(config)
    model.build()
    model.init_losses()
    return model


def _module(name: str, **attrs: Any) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__path__ = []  # a package, so that submodules import
    module.__dict__.update(attrs)
    return module


@pytest.fixture
def fake_mmf(monkeypatch) -> Iterator[FakeRegistry]:
    """Install the fake ``mmf`` in ``sys.modules``; the plugin modules are re-imported against it."""
    registry = FakeRegistry()
    modules = {
        "mmf": _module("mmf"),
        "mmf.common": _module("mmf.common"),
        "mmf.common.registry": _module("mmf.common.registry", registry=registry),
        "mmf.models": _module("mmf.models"),
        "mmf.models.base_model": _module("mmf.models.base_model", BaseModel=BaseModel),
        "mmf.trainers": _module("mmf.trainers"),
        "mmf.trainers.callbacks": _module("mmf.trainers.callbacks"),
        "mmf.trainers.callbacks.base": _module("mmf.trainers.callbacks.base", Callback=Callback),
        "mmf.utils": _module("mmf.utils"),
        "mmf.utils.build": _module("mmf.utils.build", build_model=build_model),
    }
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    for name in PLUGIN_MODULES:
        monkeypatch.delitem(sys.modules, name, raising=False)
    yield registry
    for name in PLUGIN_MODULES:  # never leave fake-bound plugin classes behind
        sys.modules.pop(name, None)


# -- offline W&B runs -----------------------------------------------------------------------------
def _records(path: Path) -> Iterator[Any]:
    """Records of a ``run-*.wandb`` file (W&B's LevelDB-style log: 32 KiB blocks, 7-byte headers)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, block, header = path.read_bytes(), 32768, 7
    pos, parts = header, b""
    while pos + header <= len(data):
        left = block - pos % block
        if left < header:
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + header])
        pos += header
        chunk, pos = data[pos:pos + length], pos + length
        parts = chunk if kind in (1, 2) else parts + chunk
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(parts)
            yield record


def read_offline_run(run_dir: Path) -> dict[str, Any]:
    out: dict[str, Any] = {"history": [], "exit_code": None}
    (run_file,) = sorted(Path(run_dir).glob("run-*.wandb"))
    for record in _records(run_file):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            out.update(project=record.run.project, job_type=record.run.job_type, name=record.run.display_name)
        elif kind == "history":
            # newer W&B writes nested_key (a path) instead of key
            out["history"].append({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.history.item})
        elif kind == "exit":
            out["exit_code"] = record.exit.exit_code
    return out


@pytest.fixture
def offline_runs():
    def _read(root: Path, wait_s: float = 10.0) -> list[dict[str, Any]]:
        # W&B's service may write the final (exit) record just after finish() returns
        deadline = time.monotonic() + wait_s
        while True:
            runs = [read_offline_run(p) for p in sorted(Path(root).rglob("offline-run-*")) if p.is_dir()]
            if all(r["exit_code"] is not None for r in runs) or time.monotonic() > deadline:
                return runs
            time.sleep(0.2)

    return _read


@pytest.fixture
def tiny_batch() -> dict[str, Any]:
    """An MMF-shaped batch: BERT text keys, 5 padded regions with ``image_info_0``, class targets."""
    g = torch.Generator().manual_seed(0)
    ids = torch.tensor([[101, 7592, 2088, 102, 0, 0], [101, 2023, 102, 0, 0, 0], [101, 1037, 2204, 3185, 2003, 102]])
    mask = (ids != 0).long()
    return {
        "input_ids": ids, "input_mask": mask, "segment_ids": torch.zeros_like(ids),
        "lm_label_ids": torch.full_like(ids, -1), "text": ["hello world", "this", "a good movie is"],
        "image_feature_0": torch.randn(3, 5, 8, generator=g),
        "image_info_0": {"max_features": torch.tensor([5, 3, 4]), "bbox": torch.rand(3, 5, 4, generator=g)},
        "targets": torch.tensor([0, 1, 1]), "dataset_name": "hateful_memes", "dataset_type": "train",
        "id": torch.tensor([11, 12, 13]),
    }
