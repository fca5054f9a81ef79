"""Fusion modules: one text vector + one image vector -> one joint vector.

Registered by name (registry kind ``fusion``; config ``fusion.type``) so that a new scheme
is one decorated class. All of them are per-sample functions of the two vectors only: the
late-fusion model relies on that to run fusion + head for several views in one batch.
"""

from __future__ import annotations

import torch
from omegaconf import DictConfig
from torch import nn

from benchmark.models.options import lookup, positive_int
from benchmark.registry import registry


class Fusion(nn.Module):
    """Base: ``forward(text [B, Dt], image [B, Di]) -> [B, hidden]``; ``out_dim`` = hidden."""

    def __init__(self, text_dim: int, image_dim: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.out_dim = hidden


@registry.register("fusion", "concat_mlp")
class ConcatMLP(Fusion):
    """Concatenation followed by a one-hidden-layer MLP (MultiBench's Concat + MLP)."""

    def __init__(self, text_dim: int, image_dim: int, hidden: int, dropout: float) -> None:
        super().__init__(text_dim, image_dim, hidden, dropout)
        self.net = nn.Sequential(nn.Linear(text_dim + image_dim, hidden), nn.GELU(), nn.Dropout(dropout))

    def forward(self, text: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([text, image], dim=-1))


@registry.register("fusion", "sum")
class Sum(Fusion):
    """Both vectors projected to ``hidden`` and added (the cheapest fusion)."""

    def __init__(self, text_dim: int, image_dim: int, hidden: int, dropout: float) -> None:
        super().__init__(text_dim, image_dim, hidden, dropout)
        self.text = nn.Linear(text_dim, hidden)
        self.image = nn.Linear(image_dim, hidden, bias=False)
        self.dropout = nn.Dropout(dropout)

    def forward(self, text: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        return self.dropout(torch.nn.functional.gelu(self.text(text) + self.image(image)))


@registry.register("fusion", "gated")
class Gated(Fusion):
    """A sigmoid gate, computed from both vectors, mixes the two projections per unit."""

    def __init__(self, text_dim: int, image_dim: int, hidden: int, dropout: float) -> None:
        super().__init__(text_dim, image_dim, hidden, dropout)
        self.text = nn.Linear(text_dim, hidden)
        self.image = nn.Linear(image_dim, hidden)
        self.gate = nn.Linear(text_dim + image_dim, hidden)
        self.dropout = nn.Dropout(dropout)

    def forward(self, text: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        gate = torch.sigmoid(self.gate(torch.cat([text, image], dim=-1)))
        mixed = gate * torch.tanh(self.text(text)) + (1 - gate) * torch.tanh(self.image(image))
        return self.dropout(mixed)


@registry.register("fusion", "bilinear")
class LowRankBilinear(Fusion):
    """Low-rank bilinear pooling (MLB: Hadamard product of projections), then a projection.

    A full ``nn.Bilinear`` costs hidden^3 parameters; rank ``hidden`` keeps it linear in size.
    """

    def __init__(self, text_dim: int, image_dim: int, hidden: int, dropout: float) -> None:
        super().__init__(text_dim, image_dim, hidden, dropout)
        self.text = nn.Linear(text_dim, hidden)
        self.image = nn.Linear(image_dim, hidden)
        self.out = nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden, hidden), nn.GELU())

    def forward(self, text: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        return self.out(torch.tanh(self.text(text)) * torch.tanh(self.image(image)))


def build_fusion(config: DictConfig, text_dim: int, image_dim: int, key: str) -> Fusion:
    """The fusion named by ``<key>.type`` (default ``concat_mlp``); width ``hidden_size``."""
    cls = lookup("fusion", config.get("type", "concat_mlp"), f"{key}.type")
    hidden = positive_int(config, "hidden_size", key, text_dim)
    return cls(text_dim, image_dim, hidden, float(config.get("dropout", 0.1)))
