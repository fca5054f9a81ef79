"""Weighting schemes for MSD's auxiliary terms (docs/protocol.md §6), registered by name.

A scheme turns per-sample teacher saliency (and, for ``learned``, the auxiliary losses) into
``w_image(x)`` and ``w_text(x)``. Fixed schemes are pure functions; ``learned`` owns a small
weight network updated by meta-learning (see :mod:`benchmark.distill.meta`).

With M = 2 modalities every scheme's weights sum to M on average (``uniform`` gives 1 + 1), so
the schemes differ in *where* the auxiliary budget goes, not in its total size.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping

import torch
from omegaconf import DictConfig
from torch import Tensor, nn

from benchmark import MODALITIES
from benchmark.errors import ConfigError
from benchmark.registry import registry

M = len(MODALITIES)

Weights = dict[str, Tensor | float]


# -- pure functions ------------------------------------------------------------------------------
def population_weights(mean_saliency: Mapping[str, float]) -> dict[str, float]:
    """``w_m = M · s̄_m / Σ_k s̄_k`` from dataset-level saliency; uniform when all are zero."""
    values = [max(float(mean_saliency[m]), 0.0) for m in MODALITIES]
    total = sum(values)
    if total <= 0:
        return dict.fromkeys(MODALITIES, 1.0)
    return {m: M * v / total for m, v in zip(MODALITIES, values)}


def instance_weights(saliency: Mapping[str, Tensor], temperature: float = 1.0) -> dict[str, Tensor]:
    """``w_m(x) = M · softmax_k(s_k(x) / T_w)_m`` per sample."""
    if temperature <= 0:
        raise ValueError(f"instance weighting temperature must be > 0, got {temperature}")
    stacked = torch.stack([saliency[m] for m in MODALITIES], dim=1) / temperature
    weights = M * torch.softmax(stacked, dim=1)
    return {m: weights[:, i] for i, m in enumerate(MODALITIES)}


# -- schemes -------------------------------------------------------------------------------------
class WeightingScheme(abc.ABC):
    """Per-sample auxiliary weights. A scheme declares what it reads, and the objective
    (:mod:`benchmark.distill.objective`) computes nothing else:

    * ``views``: the aux views with a non-zero weight, so the student is not run on a view
      whose term is always 0;
    * ``needs_saliency``: :meth:`weights` reads the teacher's per-sample saliency (else it gets None);
    * ``needs_population``: :meth:`setup` reads the teacher's dataset-level saliency, which costs a
      pass over the training split with a live teacher (else ``setup`` is never called);
    * ``learned``: the weights come from a network trained by the meta step.
    """

    views: tuple[str, ...] = MODALITIES
    needs_saliency: bool = False
    needs_population: bool = False
    learned: bool = False

    def __init__(self, params: DictConfig | None = None) -> None:
        self.params = params or DictConfig({})

    def setup(self, population_saliency: Mapping[str, float] | None) -> None:  # noqa: B027 - optional hook
        """Called once, for ``needs_population`` schemes only, with the teacher's dataset-level
        saliency on the training split."""

    @abc.abstractmethod
    def weights(self, saliency: Mapping[str, Tensor] | None, aux: Mapping[str, Tensor] | None = None) -> Weights:
        """Weights for one batch from the teacher's per-sample saliency (and the per-sample
        auxiliary divergences, which only ``learned`` reads)."""

    def describe(self) -> dict:
        return {"views": list(self.views)}


class _Constant(WeightingScheme):
    constant: dict[str, float] = {}

    def weights(self, saliency: Mapping[str, Tensor] | None, aux: Mapping[str, Tensor] | None = None) -> Weights:
        return {m: self.constant[m] for m in self.views}

    def describe(self) -> dict:
        return {"views": list(self.views), "weights": {m: self.constant.get(m, 0.0) for m in MODALITIES}}


@registry.register_weighting("none")
class NoWeighting(_Constant):
    """KD: no auxiliary term at all."""

    views = ()
    constant = {"image": 0.0, "text": 0.0}


@registry.register_weighting("uniform")
class Uniform(_Constant):
    constant = {"image": 1.0, "text": 1.0}


@registry.register_weighting("only_image")
class OnlyImage(_Constant):
    """Ablation: only the image-only prediction is mimicked."""

    views = ("image",)
    constant = {"image": 1.0, "text": 0.0}


@registry.register_weighting("only_text")
class OnlyText(_Constant):
    views = ("text",)
    constant = {"image": 0.0, "text": 1.0}


@registry.register_weighting("population")
class Population(_Constant):
    """Dataset-level saliency, fixed for the whole run: per-sample saliency is never read."""

    needs_population = True

    def setup(self, population_saliency: Mapping[str, float] | None) -> None:
        if population_saliency is None:
            raise ConfigError("weighting=population needs the teacher's saliency on the training split.")
        self.population = dict(population_saliency)
        self.constant = population_weights(population_saliency)

    def describe(self) -> dict:
        return {**super().describe(), "population_saliency": self.population}


@registry.register_weighting("instance")
class Instance(WeightingScheme):
    """Per-sample saliency through a tempered softmax (``distill.weighting_params.temperature``)."""

    needs_saliency = True

    def weights(self, saliency: Mapping[str, Tensor] | None, aux: Mapping[str, Tensor] | None = None) -> Weights:
        if saliency is None:
            raise ConfigError("weighting=instance needs per-sample teacher saliency.")
        return instance_weights(saliency, float(self.params.get("temperature", 1.0)))

    def describe(self) -> dict:
        return {**super().describe(), "temperature": float(self.params.get("temperature", 1.0))}


# -- learned -------------------------------------------------------------------------------------
class WeightNet(nn.Module):
    """``g_φ``: features ``[s_image, s_text, aux_image, aux_text]`` -> ``M · softmax`` weights.

    ``mlp`` is per-instance (Meta-Weight-Net style); ``global`` learns two free scalars shared
    by every sample (Learning-to-Reweight at the modality level). Both start at uniform weights
    (zero-initialised last layer), so any departure from 1/1 is learned, not initialised.
    """

    def __init__(self, kind: str = "mlp", hidden: int = 16) -> None:
        super().__init__()
        self.kind = kind
        if kind == "mlp":
            self.net = nn.Sequential(nn.Linear(2 * M, hidden), nn.Tanh(), nn.Linear(hidden, M))
            nn.init.zeros_(self.net[2].weight)
            nn.init.zeros_(self.net[2].bias)
        elif kind == "global":
            self.logits = nn.Parameter(torch.zeros(M))
        else:
            raise ConfigError(f"distill.weighting_params.parameterisation must be 'mlp' or 'global', got {kind!r}")

    def forward(self, features: Tensor) -> Tensor:
        if self.kind == "global":
            scores = self.logits.expand(features.shape[0], M)
        else:
            # log1p keeps large saliency/loss values from saturating the tanh layer.
            scores = self.net(torch.log1p(features.clamp_min(0)))
        return M * torch.softmax(scores, dim=1)


@registry.register_weighting("learned")
class Learned(WeightingScheme):
    """Weights from ``g_φ``, updated by the meta step of :mod:`benchmark.distill.meta`."""

    needs_saliency = True
    learned = True

    def __init__(self, params: DictConfig | None = None) -> None:
        super().__init__(params)
        self.net = WeightNet(str(self.params.get("parameterisation", "mlp")), int(self.params.get("hidden", 16)))

    def weights(self, saliency: Mapping[str, Tensor] | None, aux: Mapping[str, Tensor] | None = None) -> Weights:
        if saliency is None or aux is None:
            raise ConfigError("weighting=learned needs per-sample teacher saliency and auxiliary divergences.")
        features = torch.stack([saliency["image"], saliency["text"], aux["image"].detach(), aux["text"].detach()], 1)
        w = self.net(features.float())
        return {m: w[:, i] for i, m in enumerate(MODALITIES)}

    def describe(self) -> dict:
        return {**super().describe(), "parameterisation": self.net.kind}


def build_weighting(name: str, params: DictConfig | None = None) -> WeightingScheme:
    return registry.get_weighting(name)(params)
