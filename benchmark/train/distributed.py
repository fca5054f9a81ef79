"""One run across processes: ``torch.distributed`` set up from the launcher's environment.

``torchrun --nproc_per_node=N -m benchmark.cli run ...`` (or the grid's Slurm launcher, which
exports the same variables for one task per GPU) starts N copies of the same command. Each
reads its rank from the environment; with ``training.distributed=auto`` the world size alone
decides whether the run is distributed, so the command line is the same on 1 and N GPUs.

The suite uses ``torch.distributed`` directly rather than Accelerate or Lightning Fabric
(docs/architecture.md says why): what it needs from them is a process group, DDP's
``no_sync``, a barrier and a gather of Python objects, each one torch call.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from benchmark.errors import ConfigError

DISTRIBUTED_MODES = ("auto", "off")


@dataclass(frozen=True)
class DistContext:
    """Where this process stands in the run. The single-process default needs no group."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order, on every rank."""
        if not self.enabled:
            return [obj]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def all_agree(self, flag: bool) -> bool:
        """True only when ``flag`` is true on every rank (so no rank decides alone)."""
        if not self.enabled:
            return flag
        return all(self.gather(bool(flag)))

    def shard(self, num_samples: int) -> np.ndarray:
        """This rank's contiguous share of ``range(num_samples)``. Shares differ by at most one
        sample and, concatenated in rank order, give the original order back exactly."""
        return np.array_split(np.arange(num_samples), self.world_size)[self.rank]

    def shutdown(self) -> None:
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()


SINGLE = DistContext()


def launcher_world() -> tuple[int, int, int]:
    """(rank, world size, local rank) as torchrun (or submitit's export) sets them."""
    env = os.environ
    return int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1)), int(env.get("LOCAL_RANK", 0))


def launch_mode(mode: str) -> int:
    """The world size this process was launched into, once ``training.distributed`` is known
    to fit it. Side-effect free, so config validation calls it before anything starts."""
    if mode not in DISTRIBUTED_MODES:
        raise ConfigError(f"training.distributed must be one of {DISTRIBUTED_MODES}, got {mode!r}.")
    rank, world, _ = launcher_world()
    if world > 1 and mode == "off":
        raise ConfigError(
            f"This process was launched as rank {rank} of {world} (WORLD_SIZE={world}), but "
            "training.distributed=off: every rank would train the same run on its own and write the "
            "same run directory. Set training.distributed=auto, or launch one process."
        )
    return world


def init_distributed(mode: str, device: torch.device, timeout_min: float = 120.0) -> DistContext:
    """Join the process group the launcher describes, or stay single when there is none."""
    if launch_mode(mode) <= 1:
        return SINGLE
    _, _, local_rank = launcher_world()
    if dist.is_initialized():
        return DistContext(dist.get_rank(), dist.get_world_size(), local_rank, owns_group=False)
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend=backend, timeout=timedelta(minutes=float(timeout_min)))
    return DistContext(dist.get_rank(), dist.get_world_size(), local_rank, owns_group=True)


def rank_device(device: torch.device, ctx: DistContext) -> torch.device:
    """One GPU per rank: ``cuda`` becomes ``cuda:<local rank>``."""
    if device.type != "cuda" or not ctx.enabled:
        return device
    if ctx.local_rank >= torch.cuda.device_count():
        raise ConfigError(
            f"Rank {ctx.rank} has local rank {ctx.local_rank} but this node has "
            f"{torch.cuda.device_count()} GPU(s): launch at most one process per GPU."
        )
    torch.cuda.set_device(ctx.local_rank)
    return torch.device("cuda", ctx.local_rank)


@contextmanager
def main_first(ctx: DistContext) -> Iterator[None]:
    """Rank 0 runs the block first (e.g. builds a teacher cache); the others then run it and
    find the work done. Nothing is built once per rank."""
    if not ctx.is_main:
        ctx.barrier()
    yield
    if ctx.is_main:
        ctx.barrier()


class _ViewsModule(torch.nn.Module):
    """Routes ``forward_views`` through ``forward``: DDP synchronises gradients only for
    computations that enter through its own ``__call__``."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: dict, views: tuple[str, ...]) -> dict[str, torch.Tensor]:
        return self.model.forward_views(batch, views)


class DDPModel:
    """What a method trains: the model's own interface (``model(batch, view)``,
    ``forward_views``, attributes), with every forward pass going through DDP."""

    def __init__(self, model: torch.nn.Module, ddp: torch.nn.parallel.DistributedDataParallel) -> None:
        self.model = model
        self.ddp = ddp

    def forward_views(self, batch: dict, views: tuple[str, ...]) -> dict[str, torch.Tensor]:
        return self.ddp(batch, tuple(views))

    def __call__(self, batch: dict, view: str = "multi") -> torch.Tensor:
        return self.forward_views(batch, (view,))[view]

    def __getattr__(self, name: str) -> Any:
        return getattr(self.model, name)


def wrap_model(model: torch.nn.Module, ctx: DistContext, find_unused_parameters: bool) -> Any:
    """The model itself on one process; under DDP, a :class:`DDPModel` around it."""
    if not ctx.enabled:
        return model
    device_ids = [ctx.local_rank] if next(model.parameters()).is_cuda else None
    ddp = torch.nn.parallel.DistributedDataParallel(
        _ViewsModule(model), device_ids=device_ids, find_unused_parameters=find_unused_parameters
    )
    return DDPModel(model, ddp)
