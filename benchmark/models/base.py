"""The interface every model of the suite implements (see docs/dev/contracts.md)."""

from __future__ import annotations

import abc
from collections.abc import Sequence

import torch
from omegaconf import DictConfig
from torch import nn

from benchmark import VIEWS
from benchmark.data.info import DatasetInfo


class MultimodalModel(nn.Module, abc.ABC):
    """A classifier over (image, text) that can also be run on one modality alone.

    Subclasses implement :meth:`forward_views`; :meth:`forward` is the one-view case.
    """

    def __init__(self, config: DictConfig, info: DatasetInfo) -> None:
        super().__init__()
        self.config = config
        self.info = info

    def forward(self, batch: dict, view: str = "multi") -> torch.Tensor:
        return self.forward_views(batch, (view,))[view]

    @abc.abstractmethod
    def forward_views(self, batch: dict, views: Sequence[str] = VIEWS) -> dict[str, torch.Tensor]:
        """Logits per view, sharing as much computation across views as possible."""

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    @staticmethod
    def check_views(views: Sequence[str]) -> None:
        unknown = [v for v in views if v not in VIEWS]
        if unknown:
            raise ValueError(f"unknown view(s) {unknown}; views are {VIEWS}")
