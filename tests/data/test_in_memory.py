"""A split kept in memory gives the batches the per-sample path gives, bit for bit."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from benchmark.data.build import build_dataloader, build_dataset
from benchmark.data.in_memory import CollatedBatch, InMemoryPolicy, nbytes, parse_mode
from benchmark.errors import ConfigError
from benchmark.train.sampler import EpochBatches

DATASETS = ["hateful_memes", "mmimdb", "visual_entailment", "vqa2", "easy_vqa"]


def assert_same(a, b, where: str = "batch") -> None:
    assert type(a) is type(b) or (isinstance(a, dict) and isinstance(b, dict)), where
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert sorted(a) == sorted(b), where
        for key in a:
            assert_same(a[key], b[key], f"{where}.{key}")
    else:
        assert a == b, where


def loaders(config, split: str, **kwargs):
    kept = build_dataset(config, split)
    read = build_dataset(config, split)
    read.in_memory = None  # the per-sample path
    kept.in_memory = InMemoryPolicy("true", 1)
    return build_dataloader(kept, **kwargs), build_dataloader(read, **kwargs), kept


@pytest.mark.parametrize("name", DATASETS)
def test_batches_equal_the_per_sample_path(mmf_root: Path, config_for, name: str) -> None:
    config = config_for(mmf_root, name)
    memory, samples, kept = loaders(config, "train", batch_size=3, shuffle=True, seed=5)
    for _ in range(2):  # two epochs: the second comes from memory only
        pairs = list(zip(memory, samples, strict=True))
        assert pairs
        for a, b in pairs:
            assert_same(a, b)
    assert kept._tensors is not None and kept._tensors.size == len(kept)


def test_trainer_batch_sampler_and_eval_order(mmf_root: Path, config_for) -> None:
    config = config_for(mmf_root, "vqa2")
    kept = build_dataset(config, "train")
    kept.in_memory = InMemoryPolicy("true", 1)
    read = build_dataset(config, "train")
    read.in_memory = None
    for epoch in (0, 1):
        order = EpochBatches(len(kept), 2, seed=7)
        order.set_position(epoch, 1)  # a resumed epoch: skips its first batch
        again = EpochBatches(len(read), 2, seed=7)
        again.set_position(epoch, 1)
        for a, b in zip(build_dataloader(kept, 2, batch_sampler=order), build_dataloader(read, 2, batch_sampler=again),
                        strict=True):
            assert_same(a, b)


def test_consumers_may_write_into_their_batch(mmf_root: Path, config_for) -> None:
    config = config_for(mmf_root, "hateful_memes")
    memory, samples, _ = loaders(config, "val", batch_size=2)
    first = next(iter(memory))
    first["image_feature_0"].add_(100.0)  # a perturbation written in place
    first["input_ids"].zero_()
    for a, b in zip(memory, samples, strict=True):
        assert_same(a, b)


def test_policy_auto_keeps_what_fits(mmf_root: Path, config_for) -> None:
    dataset = build_dataset(config_for(mmf_root, "mmimdb"), "train")
    sample = dataset[0]
    size_mb = nbytes(sample) * len(dataset) / 2**20
    assert InMemoryPolicy("auto", size_mb * 1.01).keeps(sample, len(dataset))
    assert not InMemoryPolicy("auto", size_mb * 0.99).keeps(sample, len(dataset))
    assert InMemoryPolicy("true", 1e-9).keeps(sample, len(dataset))
    assert not InMemoryPolicy("false", 1e9).keeps(sample, len(dataset))
    dataset.in_memory = InMemoryPolicy("auto", size_mb * 0.5)  # too big: sample by sample
    batch = dataset.__getitems__([0, 1])
    assert isinstance(batch, list) and dataset._tensors is None


def test_default_config_keeps_splits(mmf_root: Path, config_for) -> None:
    dataset = build_dataset(config_for(mmf_root, "hateful_memes"), "val")
    assert isinstance(dataset.__getitems__([1, 0]), CollatedBatch)


def test_nbytes_by_hand() -> None:
    sample = {"a": torch.zeros(3, 4), "b": {"c": torch.zeros(5, dtype=torch.long)}, "id": "x", "l": [torch.zeros(2)]}
    assert nbytes(sample) == 3 * 4 * 4 + 5 * 8 + 2 * 4


def test_batched_tokenization_equals_one_by_one(mmf_root: Path, config_for) -> None:
    dataset = build_dataset(config_for(mmf_root, "vqa2"), "train")
    texts = [e.text for e in dataset.entries] + ["", "A much longer question " * 20]
    processor = dataset.text_processor
    many = processor.encode_many(texts)
    for i, text in enumerate(texts):
        one = processor(text)
        for key in ("input_ids", "input_mask", "segment_ids"):
            assert one[key].tolist() == many[key][i].tolist(), (key, text)


@pytest.mark.parametrize("value", ["sometimes", 3, None])
def test_bad_mode_says_what_to_use(value) -> None:
    with pytest.raises(ConfigError, match="training.in_memory"):
        parse_mode(value)


def test_bad_cap() -> None:
    with pytest.raises(ConfigError, match="in_memory_max_mb"):
        InMemoryPolicy("auto", 0)
    assert parse_mode(True) == "true" and parse_mode(False) == "false"
