"""Moving batches between devices without caring about their nesting."""

from __future__ import annotations

from typing import Any

import torch

from benchmark.errors import ConfigError


def to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)) and batch and isinstance(batch[0], torch.Tensor):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


def resolve_device(name: str) -> torch.device:
    """``auto`` = CUDA when there is a GPU; asking for a device that is absent is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ConfigError(f"training.device={name!r} is not a device (auto | cpu | cuda | cuda:N).") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            f"training.device={name} but torch sees no CUDA GPU (torch {torch.__version__}, "
            f"built with CUDA {torch.version.cuda or 'none'}). Use training.device=auto or cpu, or install a CUDA build."
        )
    return device


def batch_size_of(batch: dict) -> int:
    return int(batch["targets"].shape[0])
