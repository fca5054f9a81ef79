"""A split collated once and kept in memory, so an epoch costs index selections, not samples.

Every sample of the MMF datasets is a pure function of its files: region features read from
LMDB and padded, token ids, targets, or an image resized and cropped without randomness. The
per-sample pipeline (read, pad, build ~10 small tensors, ``default_collate``) used to run again
for every sample in every epoch and every evaluation: a fifth of a teacher's training time and
most of a small student's (bench/reproduce_profile.py). Here the whole split goes through that
pipeline once; a batch is then each tensor indexed by the batch's sample positions.

The batches are bit-identical to the per-sample path: stacking all samples and then selecting
rows gives the same values as stacking the selected samples, and the shared padding is cut by
the same :func:`~benchmark.data.build.trim_padding` afterwards (tests/data/test_in_memory.py).
Nothing here changes what a run computes, so ``training.in_memory`` is not part of the run id.

The DataLoader, its samplers and its generators stay as they are: the dataset answers
``__getitems__`` (which torch's fetcher calls with a batch's indices) with a
:class:`CollatedBatch`, which ``collate`` recognises and only trims.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch.utils.data import default_collate

from benchmark.errors import ConfigError
from benchmark.train.cost import tensor_bytes

MODES = ("auto", "true", "false")


class CollatedBatch(dict):
    """A batch already collated by the dataset (``collate`` must not collate it again)."""


nbytes = tensor_bytes  # bytes held by the tensors of a (nested) sample or batch


def select(value: Any, rows: torch.Tensor, positions: Sequence[int]) -> Any:
    """Rows ``positions`` of every tensor (a copy, so a consumer may write into its batch),
    of every list (ids, names), recursively through dicts."""
    if isinstance(value, torch.Tensor):
        return value.index_select(0, rows)
    if isinstance(value, dict):
        return {k: select(v, rows, positions) for k, v in value.items()}
    if isinstance(value, list):
        return [value[i] for i in positions]
    return value


class SplitTensors:
    """All samples of a split, collated into one batch, with its shared padding cut."""

    def __init__(self, batch: dict[str, Any]) -> None:
        self.batch = batch
        self.size = int(batch["sample_index"].shape[0])

    @classmethod
    def from_samples(cls, samples: list[dict[str, Any]],
                     trim: Callable[[dict[str, Any]], dict[str, Any]]) -> SplitTensors:
        return cls(trim(default_collate(samples)))

    @property
    def nbytes(self) -> int:
        return nbytes(self.batch)

    def batch_of(self, positions: Sequence[int]) -> CollatedBatch:
        positions = [int(p) for p in positions]
        rows = torch.tensor(positions, dtype=torch.long)
        return CollatedBatch(select(self.batch, rows, positions))


def parse_mode(value: Any, where: str = "training.in_memory") -> str:
    """``auto`` | ``true`` | ``false`` (YAML booleans accepted)."""
    text = str(value).lower() if isinstance(value, bool) or value is not None else "none"
    if text not in MODES:
        raise ConfigError(
            f"{where} is {value!r}; use auto (keep a split in memory when it fits under "
            f"training.in_memory_max_mb), true (always) or false (read every sample every epoch)."
        )
    return text


class InMemoryPolicy:
    """Whether a dataset keeps its split in memory: decided on the first batch, from the
    size of the first sample times the split's length, against ``max_mb``."""

    def __init__(self, mode: str, max_mb: float) -> None:
        self.mode = parse_mode(mode)
        if not max_mb > 0:
            raise ConfigError(f"training.in_memory_max_mb must be > 0, got {max_mb!r}.")
        self.max_mb = float(max_mb)

    @classmethod
    def from_config(cls, config: Any) -> InMemoryPolicy:
        training = config.get("training", None) or {}
        return cls(training.get("in_memory", "auto"), float(training.get("in_memory_max_mb", 2048)))

    def keeps(self, first_sample: dict[str, Any], length: int) -> bool:
        if self.mode != "auto":
            return self.mode == "true"
        return nbytes(first_sample) * length <= self.max_mb * 2**20
