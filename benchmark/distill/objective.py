"""The KD / MSD objective, once, for the suite's ``method=kd|msd`` and the MMF ``msd_kd`` loss.

Why one class: the two front ends read their logits from different places (the suite from the
student model and the teacher cache, MMF from ``model_output`` keys), but everything after that
must be the same number (docs/protocol.md §4, §6): the class reduction of the divergence, the
label loss, the saliency lookup and the weight call. Both build this object through
:func:`build_objective` and hand it view logits; they differ only in where the logits and the
cached saliency come from.

Nothing is computed that the weighting scheme does not declare (``WeightingScheme.needs_saliency``
for per-sample saliency, ``needs_population`` for the dataset-level one): ``kd`` and the
constant schemes never look at saliency, and only ``population`` needs the full pass over the
training split that dataset-level saliency costs with a live teacher.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from benchmark.distill.losses import divergence_for_task, kd_objective, msd_objective
from benchmark.distill.saliency import compute_saliency
from benchmark.distill.weighting import WeightingScheme, Weights, build_weighting
from benchmark.errors import ConfigError

CLASS_REDUCTIONS = ("mean", "sum")

SaliencyLookup = Callable[[], Mapping[str, Tensor] | None]
"""Returns the teacher's cached per-sample saliency of this batch, or None to compute it."""


@dataclass
class DistillTerms:
    """Per-sample pieces of one batch, before weighting: ``ℓ``, ``D(multi)`` and ``D(m)``."""

    label: Tensor
    kd: Tensor
    aux: dict[str, Tensor]


class DistillObjective:
    """``(1-α)ℓ + α D_τ(T(multi), S(multi)) [+ Σ_m w_m(x) D_τ(T(m), S(m))]``, batch-meaned.

    ``scheme`` decides the auxiliary views and their weights; ``none`` (no views) is plain KD.
    ``class_reduction`` is ``mean`` (divergence averaged over classes, docs/protocol.md §4.3) or
    ``sum`` (multi-label / soft-score divergence times C, the label loss's per-class-sum scale).
    """

    def __init__(self, *, alpha: float, temperature: float, scheme: WeightingScheme,
                 saliency: str = "divergence", class_reduction: str = "mean") -> None:
        self.alpha = float(alpha)
        self.temperature = float(temperature)
        self.scheme = scheme
        self.saliency_definition = str(saliency)
        self.class_reduction = str(class_reduction)

    # -- what the scheme declares -------------------------------------------------------------
    @property
    def aux_views(self) -> tuple[str, ...]:
        """The views with an auxiliary term: the student needs to run on nothing else."""
        return tuple(self.scheme.views)

    @property
    def student_views(self) -> tuple[str, ...]:
        return ("multi", *self.aux_views)

    @property
    def needs_saliency(self) -> bool:
        return bool(self.scheme.needs_saliency)

    @property
    def needs_population(self) -> bool:
        return bool(self.scheme.needs_population)

    def setup(self, population_saliency: Mapping[str, float] | None) -> None:
        """Give the scheme the teacher's dataset-level saliency (only ``needs_population`` schemes read it)."""
        self.scheme.setup(population_saliency)

    # -- the maths ----------------------------------------------------------------------------
    def divergence_scale(self, task: str, num_classes: int) -> float:
        return float(num_classes) if self.class_reduction == "sum" and task != "single_label" else 1.0

    def divergence(self, task: str, num_classes: int) -> Callable[[Tensor, Tensor], Tensor]:
        """Per-sample ``D_τ(teacher, student)`` of the task, on this objective's class scale."""
        divergence = divergence_for_task(task)
        scale = self.divergence_scale(task, num_classes)
        tau = self.temperature

        def div(teacher: Tensor, student: Tensor) -> Tensor:
            return scale * divergence(teacher, student, temperature=tau, reduction="none")

        return div

    def terms(self, student: Mapping[str, Tensor], teacher: Mapping[str, Tensor], targets: Tensor, task: str,
              label_loss: Callable[..., Tensor]) -> DistillTerms:
        """``ℓ(y, S(multi))``, ``D(T(multi), S(multi))`` and ``D(T(m), S(m))`` per sample."""
        div = self.divergence(task, student["multi"].shape[-1])
        label = label_loss(student["multi"], targets, reduction="none")
        kd = div(teacher["multi"], student["multi"])
        aux = {m: div(teacher[m], student[m]) for m in self.aux_views}
        return DistillTerms(label, kd, aux)

    def saliency_of(self, teacher: Mapping[str, Tensor], targets: Tensor, task: str,
                    cached: SaliencyLookup | None = None) -> Mapping[str, Tensor]:
        """The teacher's per-sample saliency under ``distill.saliency``: the cached values when
        ``cached`` gives them, otherwise computed from the teacher's three view logits."""
        found = cached() if cached is not None else None
        if found is not None:
            return found
        return compute_saliency(teacher, targets, task, method=self.saliency_definition)

    def teacher_saliency(self, teacher: Mapping[str, Tensor], targets: Tensor, task: str,
                         cached: SaliencyLookup | None = None) -> Mapping[str, Tensor] | None:
        """:meth:`saliency_of` when the scheme reads per-sample saliency, else None (nothing is looked up)."""
        return self.saliency_of(teacher, targets, task, cached) if self.needs_saliency else None

    def weights(self, saliency: Mapping[str, Tensor] | None, aux: Mapping[str, Tensor]) -> Weights:
        return self.scheme.weights(saliency, aux)

    def combine(self, terms: DistillTerms, weights: Weights | None) -> tuple[Tensor, dict[str, Tensor]]:
        """The scalar to minimise and its detached terms (docs/protocol.md §4.5 names)."""
        if not self.aux_views:
            return kd_objective(terms.label, terms.kd, self.alpha)
        return msd_objective(terms.label, terms.kd, terms.aux, weights or {}, self.alpha)

    def __call__(self, student: Mapping[str, Tensor], teacher: Mapping[str, Tensor], targets: Tensor, task: str,
                 label_loss: Callable[..., Tensor], cached_saliency: SaliencyLookup | None = None,
                 ) -> tuple[Tensor, dict[str, Tensor], Weights]:
        """One batch: ``(total, terms, weights)``; the weights are returned for logging."""
        terms = self.terms(student, teacher, targets, task, label_loss)
        weights: Weights = {}
        if self.aux_views:
            weights = self.weights(self.teacher_saliency(teacher, targets, task, cached_saliency), terms.aux)
        total, logged = self.combine(terms, weights)
        return total, logged, weights

    def describe(self) -> dict[str, Any]:
        return {"alpha": self.alpha, "temperature": self.temperature, "weighting_scheme": self.scheme.describe(),
                "saliency_definition": self.saliency_definition, "class_reduction": self.class_reduction}


def build_objective(*, alpha: float, temperature: float, weighting: str,
                    weighting_params: Mapping[str, Any] | DictConfig | None = None, saliency: str = "divergence",
                    class_reduction: str = "mean", where: str = "distill.") -> DistillObjective:
    """The objective both front ends use. ``where`` prefixes the key names in errors
    (``distill.`` in the suite, ``msd_kd: params.`` in MMF) so a message names the key to fix."""
    if str(class_reduction) not in CLASS_REDUCTIONS:
        raise ConfigError(f"{where}class_reduction must be 'mean' or 'sum', got {class_reduction!r}")
    params = weighting_params
    params = params if isinstance(params, DictConfig) else OmegaConf.create(dict(params or {}))
    return DistillObjective(alpha=alpha, temperature=temperature, scheme=build_weighting(str(weighting), params),
                            saliency=saliency, class_reduction=class_reduction)
