"""Datasets and loaders from a resolved run config, including the held-out meta split.

The meta split (docs/protocol.md §2.3) is a fixed-seed fraction of the train annotation file, so
every run, method and seed holds out the same samples and the official dev split stays
untouched. With ``hold_out: all`` every method trains without those samples, which keeps
the training data identical across the compared methods.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate

from benchmark.config.loader import weighting_of
from benchmark.data.base import MMFDataset
from benchmark.data.in_memory import CollatedBatch, InMemoryPolicy
from benchmark.data.split_store import SplitStore
from benchmark.errors import ConfigError, DataError
from benchmark.registry import registry

SPLITS = ("train", "val", "test", "meta")
HOLD_OUT_MODES = ("all", "learned_only")


def meta_split_indices(num_records: int, fraction: float, seed: int) -> list[int]:
    """Sorted indices of the meta samples: the first ``fraction`` of a seeded permutation.

    Depends only on (num_records, fraction, seed), never on the run, so the partition is
    reproducible everywhere. At least one sample when ``fraction > 0``; never all of them.
    """
    if not 0.0 <= fraction < 1.0:
        raise ConfigError(f"data.meta_split.fraction is {fraction}; it must be in [0, 1).")
    if fraction == 0.0:
        return []
    count = max(1, int(round(fraction * num_records)))
    if count >= num_records:
        raise DataError(
            f"The train split has {num_records} records, too few to hold out a meta split of "
            f"fraction {fraction} and keep any for training. Use more data or a smaller "
            f"data.meta_split.fraction."
        )
    permutation = np.random.default_rng(int(seed)).permutation(num_records)
    return sorted(int(i) for i in permutation[:count])


def _train_indices(num_records: int, fraction: float, seed: int) -> list[int]:
    held_out = set(meta_split_indices(num_records, fraction, seed))
    return [i for i in range(num_records) if i not in held_out]


def train_excludes_meta(config: Any) -> bool:
    """Whether the train split drops the meta samples for this run (``hold_out`` rule)."""
    mode = str(_meta_config(config).get("hold_out", "all"))
    if mode not in HOLD_OUT_MODES:
        raise ConfigError(f"data.meta_split.hold_out is {mode!r}; use one of {HOLD_OUT_MODES}.")
    return mode == "all" or weighting_of(config) == "learned"


def _meta_config(config: Any) -> Any:
    data = config.get("data", None) or {}
    return data.get("meta_split", None) or {}


def build_dataset(config: Any, split: str) -> MMFDataset:
    """The registered dataset ``config.dataset`` for ``split`` (train/val/test/meta).

    ``meta`` and ``train`` both read the train annotation files; their ``sample_index`` stays
    the index into that full list, so teacher outputs cached for train serve both.
    """
    if split not in SPLITS:
        raise ConfigError(f"split must be one of {SPLITS}, got {split!r}")
    name = str(config.get("dataset"))
    dataset_configs = config.get("dataset_config", None) or {}
    dataset_config = dataset_configs.get(name, None)
    if dataset_config is None:
        raise ConfigError(
            f"dataset_config.{name} is missing from the config; the dataset's YAML "
            f"(benchmark/config/datasets/{name}.yaml) defines it."
        )
    dataset = _construct(config, registry.get_dataset(name), dataset_config, name, split)
    dataset.in_memory = InMemoryPolicy.from_config(config)
    dataset.split_store = SplitStore.from_config(config)
    return dataset


def _construct(config: Any, dataset_cls: type[MMFDataset], dataset_config: Any, name: str, split: str) -> MMFDataset:
    if split in ("val", "test"):
        return dataset_cls(dataset_config, split, name=name)

    meta = _meta_config(config)
    fraction = float(meta.get("fraction", 0.1))
    seed = int(meta.get("seed", 1234))
    select: Callable[[int], Sequence[int]] | None = None
    if split == "meta":
        if fraction == 0.0:
            raise ConfigError(
                "The meta split was requested but data.meta_split.fraction is 0; set it > 0 "
                "(default 0.1) to hold out part of train for the meta-learned weights."
            )
        select = functools.partial(meta_split_indices, fraction=fraction, seed=seed)
    elif train_excludes_meta(config) and fraction > 0.0:
        select = functools.partial(_train_indices, fraction=fraction, seed=seed)
    return dataset_cls(dataset_config, "train", name=name, select=select, split=split)


def collate(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """torch's ``default_collate`` (nested ``image_info_0`` dicts collated key by key, int ids
    become a LongTensor, str ids a list), then the batch's shared padding is cut off.

    MMF pads every sample to ``max_seq_length`` tokens and ``max_features`` regions; most of
    that is padding (synthetic texts use ~20 of 64 tokens, 16 of 100 regions). Every model is
    padding-invariant (tests/models check it), so trimming columns that are padding for the
    whole batch changes no output and saves most of the compute.
    """
    if isinstance(samples, CollatedBatch):  # the split is in memory: already stacked
        return trim_padding(dict(samples))
    return trim_padding(default_collate(samples))


def trim_padding(batch: dict[str, Any]) -> dict[str, Any]:
    if "input_mask" in batch:
        length = max(1, int(batch["input_mask"].sum(dim=1).max()))
        for key in ("input_ids", "input_mask", "segment_ids"):
            if key in batch:
                batch[key] = batch[key][:, :length]
    info = batch.get("image_info_0")
    if "image_feature_0" in batch and isinstance(info, dict) and "max_features" in info:
        boxes = max(1, int(info["max_features"].max()))
        batch["image_feature_0"] = batch["image_feature_0"][:, :boxes]
        if "bbox" in info:
            info["bbox"] = info["bbox"][:, :boxes]
    return batch


def build_dataloader(
    dataset: Dataset,
    batch_size: int,
    shuffle: bool = False,
    seed: int = 0,
    num_workers: int = 0,
    drop_last: bool = False,
    sampler: Sampler | None = None,
    batch_sampler: Sampler | None = None,
    pin_memory: bool = False,
) -> DataLoader:
    """A loader whose shuffling order depends only on ``seed`` (a private generator), on
    ``sampler``, or on ``batch_sampler`` (the trainer's resumable, rank-sharded
    :class:`~benchmark.train.sampler.EpochBatches`, which then decides the batch size)."""
    generator = torch.Generator()
    generator.manual_seed(int(seed))
    workers = int(num_workers)
    batching = (
        {"batch_sampler": batch_sampler}
        if batch_sampler is not None
        else {"batch_size": int(batch_size), "shuffle": shuffle if sampler is None else False,
              "sampler": sampler, "drop_last": drop_last}
    )
    return DataLoader(
        dataset,
        **batching,
        num_workers=workers,
        collate_fn=collate,
        generator=generator,
        pin_memory=pin_memory,
        persistent_workers=workers > 0,
    )
