"""Optimizers and schedulers by name, as MMF's ``optimizer.type`` / ``scheduler.type``."""

from __future__ import annotations

import torch
from omegaconf import DictConfig, OmegaConf
from torch.optim.lr_scheduler import LambdaLR

from benchmark.registry import registry


def _no_decay(name: str) -> bool:
    # Biases, norms and the learned "absent" embeddings are not regularised (BERT practice).
    return name.endswith("bias") or "norm" in name.lower() or "absent" in name


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (no_decay if _no_decay(name) else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


@registry.register_optimizer("adam_w")
def adam_w(model: torch.nn.Module, params: DictConfig) -> torch.optim.Optimizer:
    kwargs = OmegaConf.to_container(params, resolve=True)
    assert isinstance(kwargs, dict)
    weight_decay = float(kwargs.pop("weight_decay", 0.0))
    return torch.optim.AdamW(param_groups(model, weight_decay), **kwargs)


@registry.register_optimizer("sgd")
def sgd(model: torch.nn.Module, params: DictConfig) -> torch.optim.Optimizer:
    kwargs = OmegaConf.to_container(params, resolve=True)
    assert isinstance(kwargs, dict)
    weight_decay = float(kwargs.pop("weight_decay", 0.0))
    kwargs.pop("eps", None)
    return torch.optim.SGD(param_groups(model, weight_decay), **kwargs)


@registry.register_scheduler("warmup_linear")
def warmup_linear(optimizer: torch.optim.Optimizer, params: DictConfig, total_updates: int) -> LambdaLR:
    """Linear warm-up then linear decay to 0 (MMF's ``warmup_linear``)."""
    warmup = params.get("num_warmup_steps")
    if warmup is None:
        warmup = int(round(float(params.get("warmup_ratio", 0.1)) * total_updates))
    warmup = max(0, int(warmup))
    total = max(total_updates, warmup + 1)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return max(0.0, (total - step) / max(1, total - warmup))

    return LambdaLR(optimizer, factor)


@registry.register_scheduler("constant")
def constant(optimizer: torch.optim.Optimizer, params: DictConfig, total_updates: int) -> LambdaLR:
    return LambdaLR(optimizer, lambda step: 1.0)


def build_optimizer(model: torch.nn.Module, config: DictConfig) -> torch.optim.Optimizer:
    return registry.get_optimizer(config.optimizer.type)(model, config.optimizer.params)


def build_scheduler(optimizer: torch.optim.Optimizer, config: DictConfig, total_updates: int) -> LambdaLR:
    return registry.get_scheduler(config.scheduler.type)(optimizer, config.scheduler.params, total_updates)
