"""A split kept in memory gives the batches the per-sample path gives, bit for bit."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from benchmark.data.base import MMFDataset
from benchmark.data.build import build_dataloader, build_dataset
from benchmark.data.in_memory import CollatedBatch, InMemoryPolicy, nbytes, parse_mode
from benchmark.data.split_store import SplitStore
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


# -- splits stored between runs ------------------------------------------------------------


def _stored(config, split: str, store_root: Path):
    dataset = build_dataset(config, split)
    dataset.in_memory = InMemoryPolicy("true", 1)
    dataset.split_store = SplitStore(store_root, config)
    return dataset


def _count_reads(monkeypatch) -> list[int]:
    reads: list[int] = []
    original = MMFDataset.__getitem__

    def counting(self, idx):
        reads.append(idx)
        return original(self, idx)

    monkeypatch.setattr(MMFDataset, "__getitem__", counting)
    return reads


def test_a_second_run_loads_the_stored_split(mmf_root: Path, config_for, tmp_path: Path, monkeypatch) -> None:
    config = config_for(mmf_root, "mmimdb")
    reads = _count_reads(monkeypatch)
    first = _stored(config, "train", tmp_path)
    built = list(build_dataloader(first, batch_size=3, shuffle=True, seed=1))
    assert sorted(reads) == list(range(len(first)))  # each sample once (the policy's first is reused)
    assert len(list(tmp_path.glob("mmimdb-train-*.pt"))) == 1
    reads.clear()
    second = _stored(config, "train", tmp_path)
    loaded = list(build_dataloader(second, batch_size=3, shuffle=True, seed=1))
    assert reads == [0]  # only the policy's sample: the rest came from the file
    for a, b in zip(built, loaded, strict=True):
        assert_same(a, b)


def test_the_key_names_what_the_tensors_depend_on(mmf_root: Path, config_for, tmp_path: Path) -> None:
    config = config_for(mmf_root, "hateful_memes")
    store = SplitStore(tmp_path, config)
    train, val, meta = (build_dataset(config, s) for s in ("train", "val", "meta"))
    assert len({store.path(d) for d in (train, val, meta)}) == 3
    fewer = config_for(mmf_root, "hateful_memes", {"dataset_config": {"hateful_memes": {"max_features": 7}}})
    assert SplitStore(tmp_path, fewer).path(build_dataset(fewer, "val")) != store.path(val)
    elsewhere = config_for(mmf_root, "hateful_memes", {"env": {"save_dir": "/elsewhere"}})
    assert SplitStore(tmp_path, elsewhere).path(build_dataset(elsewhere, "val")) == store.path(val)


def test_changed_data_is_another_split(fresh_root: Path, config_for, tmp_path: Path) -> None:
    config = config_for(fresh_root, "hateful_memes")
    before = SplitStore(tmp_path, config).path(build_dataset(config, "val"))
    path = fresh_root / "datasets/hateful_memes/defaults/annotations/dev_unseen.jsonl"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:-1]) + "\n")  # one record fewer
    assert SplitStore(tmp_path, config).path(build_dataset(config, "val")) != before


def test_an_unreadable_or_foreign_file_is_rebuilt(mmf_root: Path, config_for, tmp_path: Path, monkeypatch) -> None:
    config = config_for(mmf_root, "vqa2")
    expected = list(build_dataloader(_stored(config, "val", tmp_path), batch_size=2))
    (path,) = tmp_path.glob("vqa2-val-*.pt")
    for damage in (b"not a torch file", None):
        if damage is None:  # a readable file that lists other samples
            torch.save({"sample_index": torch.tensor([5, 4])}, path)
        else:
            path.write_bytes(damage)
        reads = _count_reads(monkeypatch)
        dataset = _stored(config, "val", tmp_path)
        for a, b in zip(build_dataloader(dataset, batch_size=2), expected, strict=True):
            assert_same(a, b)
        assert sorted(reads) == list(range(len(dataset)))  # rebuilt from the files
        monkeypatch.undo()
    assert torch.load(path, weights_only=True)["sample_index"].tolist() == dataset.sample_indices  # rewritten


def test_store_off_without_cache_dir_or_when_disabled(mmf_root: Path, config_for) -> None:
    assert SplitStore.from_config(config_for(mmf_root, "vqa2", {"training": {"in_memory_store": False}})) is None
    assert SplitStore.from_config(config_for(mmf_root, "vqa2", {"env": {"cache_dir": None}})) is None
    assert SplitStore.from_config(config_for(mmf_root, "vqa2")) is not None
