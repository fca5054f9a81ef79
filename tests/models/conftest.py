"""Tiny models and random batches for the model tests (no dataset package needed).

Models are built through ``build_model`` from the shipped YAML files, with the student
preset shrunk to a few thousand non-embedding parameters, so the tests exercise the real
config path and stay fast. BERT-style models get a large ``initializer_range`` so that a
change of content moves the logits far above float noise.
"""

from __future__ import annotations

import copy
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from omegaconf import OmegaConf

import benchmark
from benchmark.data.info import DatasetInfo
from benchmark.models.build import build_model

CONFIG_ROOT = Path(benchmark.__file__).parent / "config"
FAMILIES = ("late_fusion", "visual_bert", "mmbt")
REMOVALS = ("drop", "zero", "mean")
MODALITIES = ("features", "pixels")

_BERT = {
    "hidden_size": 16,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "intermediate_size": 32,
    "initializer_range": 0.2,
    "patch_size": 8,
}
TINY = {
    "late_fusion": {
        "text_encoder": {"hidden_size": 16, "num_layers": 1, "num_heads": 2},
        "image_encoder": {"hidden_size": 16, "num_layers": 1, "num_heads": 2, "channels": [8, 16]},
        "fusion": {"hidden_size": 16},
    },
    "visual_bert": _BERT,
    "mmbt": {**_BERT, "num_image_tokens": 2},
}


def make_info(modality: str = "features", num_labels: int = 3, task: str = "single_label") -> DatasetInfo:
    return DatasetInfo(
        name="tiny",
        task=task,
        num_labels=num_labels,
        modality=modality,
        feature_dim=12 if modality == "features" else 0,
        max_features=6 if modality == "features" else 0,
        image_size=16 if modality == "pixels" else 0,
        max_seq_length=10,
    )


def make_batch(info: DatasetInfo, size: int = 4, seed: int = 0) -> dict:
    """A collated batch with ragged text lengths and ragged numbers of real boxes."""
    g = torch.Generator().manual_seed(seed)
    length = info.max_seq_length
    lengths = torch.randint(3, length + 1, (size,), generator=g)
    mask = (torch.arange(length)[None] < lengths[:, None]).long()
    ids = torch.randint(1000, 29000, (size, length), generator=g) * mask
    ids[:, 0] = 101
    batch = {"input_ids": ids, "input_mask": mask, "segment_ids": torch.zeros_like(ids)}
    if info.modality == "pixels":
        batch["image"] = torch.rand(size, 3, info.image_size, info.image_size, generator=g)
    else:
        n = info.max_features
        counts = torch.randint(1, n + 1, (size,), generator=g)
        real = (torch.arange(n)[None] < counts[:, None]).float().unsqueeze(-1)
        batch["image_feature_0"] = torch.randn(size, n, info.feature_dim, generator=g) * real
        batch["image_info_0"] = {"max_features": counts, "bbox": torch.rand(size, n, 4, generator=g) * real}
    return batch


def other_text(batch: dict, seed: int = 1) -> dict:
    """The same batch with entirely different text: ids, lengths, segments, even [CLS]."""
    g = torch.Generator().manual_seed(seed)
    out = copy.deepcopy(batch)
    size, length = batch["input_ids"].shape
    lengths = torch.randint(1, length + 1, (size,), generator=g)
    out["input_mask"] = (torch.arange(length)[None] < lengths[:, None]).long()
    out["input_ids"] = torch.randint(1, 30000, (size, length), generator=g)
    out["segment_ids"] = torch.randint(0, 2, (size, length), generator=g)
    return out


def other_image(batch: dict, seed: int = 2) -> dict:
    """The same batch with a different image: new features, boxes and number of real boxes."""
    g = torch.Generator().manual_seed(seed)
    out = copy.deepcopy(batch)
    if "image" in batch:
        out["image"] = torch.rand(batch["image"].shape, generator=g) * 5
        return out
    size, n, dim = batch["image_feature_0"].shape
    out["image_feature_0"] = torch.randn(size, n, dim, generator=g) * 3
    out["image_info_0"] = {
        "max_features": (batch["image_info_0"]["max_features"] % n) + 1,
        "bbox": torch.rand(size, n, 4, generator=g),
    }
    return out


def run_config(name: str, removal: str = "drop", size: str = "student", tiny: bool = True, **model_overrides):
    """A run config as the loader would give it: defaults + models/<name>.yaml + overrides."""
    config = OmegaConf.merge(
        OmegaConf.load(CONFIG_ROOT / "defaults.yaml"), OmegaConf.load(CONFIG_ROOT / "models" / f"{name}.yaml")
    )
    config.model = name
    config.method = "kd"
    config.model_size = size
    config.views.removal = removal
    if tiny:
        config.model_config[name].presets.student = OmegaConf.merge(
            config.model_config[name].presets.student, TINY[name]
        )
    if model_overrides:
        config.model_config[name] = OmegaConf.merge(config.model_config[name], model_overrides)
    return config


def tiny_model(name: str, modality: str = "features", removal: str = "drop", seed: int = 0, **overrides):
    torch.manual_seed(seed)
    info = make_info(modality)
    return build_model(run_config(name, removal, **overrides), info).eval(), info


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models run faster on one thread (no OpenMP hand-offs); restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def mk() -> SimpleNamespace:
    """The helpers above, as one fixture (conftest modules cannot be imported by name)."""
    return SimpleNamespace(
        info=make_info,
        batch=make_batch,
        other_text=other_text,
        other_image=other_image,
        run_config=run_config,
        model=tiny_model,
        FAMILIES=FAMILIES,
        REMOVALS=REMOVALS,
        MODALITIES=MODALITIES,
    )
