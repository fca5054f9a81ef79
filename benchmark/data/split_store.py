"""Collated splits shared between runs, on disk: the first run of a grid pays for reading a
split, every later run of the same data loads it in milliseconds.

Why: with splits kept in memory (``benchmark/data/in_memory.py``) the one pass that remains
costs 1.3 to 2.4 CPU-s per run of the embedded datasets (train, val, test), and the default
reproduction trains 105 runs on five datasets: minutes of a 10-minute budget spent building
the same tensors again. A run's split is stored under ``<env.cache_dir>/splits/`` and later
runs of the same split load it.

What names a stored split (:func:`split_key`) is everything its tensors depend on: the data's
content fingerprint (never its path), the dataset's config node (processors, ``max_features``,
label space, ...), the split and the exact samples it selects (the meta partition), the torch
version, and the source of the data pipeline itself (``benchmark/data``, generators aside), so
an edit of the loading code never serves tensors the new code would not build. A loaded split
must list the same samples in the same order as the dataset, or it is rebuilt; a file that
cannot be read is rebuilt and rewritten. Files are written atomically, so two workers that
build the same split at once both end with a complete file.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from benchmark.tracking.atomic import atomic_path

log = logging.getLogger(__name__)
DATA_PACKAGE = Path(__file__).resolve().parent
NOT_PIPELINE = ("synthetic",)  # generators: their output enters through the data's content fingerprint


@functools.lru_cache(maxsize=1)
def pipeline_digest() -> str:
    """sha256 over the source of every module that turns files into samples."""
    digest = hashlib.sha256()
    for path in sorted(DATA_PACKAGE.rglob("*.py")):
        if path.relative_to(DATA_PACKAGE).parts[0] in NOT_PIPELINE:
            continue
        digest.update(str(path.relative_to(DATA_PACKAGE)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def split_key(config: Any, dataset: Any) -> str:
    """The name of ``dataset``'s collated tensors (see the module docstring)."""
    from benchmark.data.fingerprint import data_fingerprint

    node = OmegaConf.to_container(config.dataset_config[dataset.name], resolve=True)
    assert isinstance(node, dict)
    node.pop("data_dir", None)
    indices = hashlib.sha256(json.dumps(dataset.sample_indices).encode()).hexdigest()
    payload = {"pipeline": pipeline_digest(), "torch": torch.__version__, "dataset": dataset.name,
               "type": dataset.dataset_type, "split": dataset.split, "node": node, "samples": indices,
               "data": data_fingerprint(config).digest}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:32]


class SplitStore:
    """``<root>/<dataset>-<split>-<key>.pt`` files of collated splits."""

    def __init__(self, root: str | Path, config: Any) -> None:
        self.root = Path(root).expanduser()
        self.config = config

    @classmethod
    def from_config(cls, config: Any) -> SplitStore | None:
        training = config.get("training", None) or {}
        env = config.get("env", None) or {}
        if not training.get("in_memory_store", True) or not env.get("cache_dir"):
            return None
        return cls(Path(str(env.cache_dir)) / "splits", config)

    def path(self, dataset: Any) -> Path:
        return self.root / f"{dataset.name}-{dataset.split}-{split_key(self.config, dataset)}.pt"

    def load(self, path: Path, sample_indices: list[int]) -> dict[str, Any] | None:
        """The stored batch, or None when absent, unreadable or not these samples."""
        if not path.is_file():
            return None
        try:
            batch = torch.load(path, map_location="cpu", weights_only=True)
            ok = isinstance(batch, dict) and batch["sample_index"].tolist() == sample_indices
        except Exception as exc:  # a truncated or foreign file: rebuilt below
            log.warning("stored split %s cannot be read (%s); rebuilding it", path, exc)
            return None
        if not ok:
            log.warning("stored split %s lists other samples than its dataset; rebuilding it", path)
            return None
        return batch

    def save(self, path: Path, batch: dict[str, Any]) -> None:
        try:
            with atomic_path(path) as tmp:
                torch.save(batch, tmp)
        except OSError as exc:  # a full or read-only cache only costs the next run its pass
            log.warning("could not store the collated split %s (%s)", path, exc)
