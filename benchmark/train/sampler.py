"""A resumable, shardable batch order.

The order of epoch ``e`` is a permutation drawn from ``(seed, e)`` alone and cut into global
batches of ``training.batch_size``. Each DDP rank takes its contiguous share of every global
batch, so N ranks see together exactly the batches one process sees, and the gradient of an
update does not depend on the world size. A run resumed in the middle of an epoch skips
exactly the batches it has already seen, on any number of ranks.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import Sampler


class EpochBatches(Sampler[list[int]]):
    """Yields this rank's share of each global batch of the current epoch.

    With several ranks, a last global batch smaller than the world size would leave a rank
    with nothing to compute, which DDP cannot synchronise; it is dropped (at most
    ``world_size - 1`` samples per epoch, never with one process).
    """

    def __init__(
        self, num_samples: int, batch_size: int, seed: int, *, rank: int = 0, world_size: int = 1,
        shuffle: bool = True,
    ) -> None:
        if batch_size < world_size:
            raise ValueError(f"a global batch of {batch_size} cannot be shared by {world_size} ranks")
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.shuffle = shuffle
        self.epoch = 0
        self.start_batch = 0

    def set_position(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch = epoch
        self.start_batch = start_batch

    def order(self, epoch: int) -> list[int]:
        if not self.shuffle:
            return list(range(self.num_samples))
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.num_samples, generator=generator).tolist()

    def global_batches(self, epoch: int) -> list[list[int]]:
        order = self.order(epoch)
        batches = [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        if batches and len(batches[-1]) < self.world_size:
            batches.pop()
        return batches

    def batches_per_epoch(self) -> int:
        return len(self.global_batches(0))

    def global_batch_sizes(self, epoch: int) -> list[int]:
        return [len(b) for b in self.global_batches(epoch)]

    def share(self, batch: list[int]) -> list[int]:
        return [batch[i] for i in np.array_split(np.arange(len(batch)), self.world_size)[self.rank]]

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self.global_batches(self.epoch)[self.start_batch :]:
            yield self.share(batch)

    def __len__(self) -> int:
        return max(0, self.batches_per_epoch() - self.start_batch)


def update_schedule(batches_per_epoch: int, update_frequency: int, max_epochs: int | None,
                    max_updates: int | None) -> tuple[int, int]:
    """(updates per epoch, total updates) of a run: an update takes ``update_frequency``
    batches (the last of an epoch may take fewer); the run stops at ``max_epochs`` epochs or
    ``max_updates`` updates, whichever comes first. The trainer and ``msd grid plan`` both
    count with this."""
    per_epoch = -(-batches_per_epoch // update_frequency)
    total = per_epoch * int(max_epochs) if max_epochs is not None else int(max_updates or 0)
    return per_epoch, (min(total, int(max_updates)) if max_updates else total)
