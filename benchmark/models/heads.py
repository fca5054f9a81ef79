"""Classifier heads: joint vector -> ``info.num_labels`` logits.

Registered by name (registry kind ``head``; config ``head.type``). The head never applies
softmax/sigmoid: losses and distillation divergences work on logits (docs/protocol.md §4).
"""

from __future__ import annotations

import torch
from omegaconf import DictConfig
from torch import nn

from benchmark.models.options import lookup
from benchmark.registry import registry


@registry.register("head", "linear")
class LinearHead(nn.Module):
    """Dropout and one linear layer."""

    def __init__(self, in_dim: int, num_labels: int, config: DictConfig) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Dropout(float(config.get("dropout", 0.1))), nn.Linear(in_dim, num_labels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@registry.register("head", "mlp")
class MLPHead(nn.Module):
    """MMF's classifier shape: Linear -> GELU -> LayerNorm -> Dropout -> Linear.

    ``hidden_size: null`` uses the input width.
    """

    def __init__(self, in_dim: int, num_labels: int, config: DictConfig) -> None:
        super().__init__()
        hidden = int(config.get("hidden_size") or in_dim)
        self.net = nn.Sequential(
            nn.Linear(in_dim, hidden),
            nn.GELU(),
            nn.LayerNorm(hidden),
            nn.Dropout(float(config.get("dropout", 0.1))),
            nn.Linear(hidden, num_labels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def build_head(config: DictConfig, in_dim: int, num_labels: int, key: str) -> nn.Module:
    """The head named by ``<key>.type`` (default ``mlp``)."""
    cls = lookup("head", config.get("type", "mlp"), f"{key}.type")
    return cls(in_dim, num_labels, config)
