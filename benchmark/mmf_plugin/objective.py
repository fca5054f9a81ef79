"""The ``msd_kd`` objective on MMF model outputs: the suite's own objective, fed from MMF's keys.

Why a separate module: "one implementation, two front ends". The maths (class reduction,
divergence scale, saliency lookup, weighting, the objective) is
:class:`benchmark.distill.objective.DistillObjective`, built by the same
:func:`~benchmark.distill.objective.build_objective` as the suite's ``method=kd|msd``; this module
only maps MMF's ``model_output``/``sample_list`` keys onto it, so the MMF loss and the suite give
the same number on the same logits. It imports no MMF code, so the CI tests run it without MMF.

Keys read from ``model_output`` (written by ``msd_student``): ``scores`` (student, multi
view), ``scores_<view>`` (student, image/text), ``teacher_scores`` and
``teacher_scores_<view>``, optionally ``teacher_saliency_<modality>`` (from the suite's
teacher cache; otherwise saliency is computed from the teacher's three view logits).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

from benchmark import MODALITIES, VIEWS
from benchmark.data.info import TASKS
from benchmark.distill.losses import label_loss_for_task
from benchmark.distill.objective import DistillObjective, DistillTerms, build_objective
from benchmark.distill.weighting import Weights
from benchmark.errors import ConfigError

TEACHER = "teacher_scores"


def output_key(view: str, teacher: bool = False) -> str:
    """``scores`` / ``scores_image`` / ``teacher_scores_text`` ...: the model_output key of a view."""
    base = TEACHER if teacher else "scores"
    return base if view == "multi" else f"{base}_{view}"


def saliency_key(modality: str) -> str:
    return f"teacher_saliency_{modality}"


def infer_task(targets: Tensor, task: str = "auto") -> str:
    """``single_label`` for class indices ``[B]``; ``multi_label`` for ``[B, C]`` targets.

    ``multi_label`` and ``soft_score`` share the label loss (``logit_bce``) and the divergence
    (``bernoulli_kl``), so the inference is exact for the objective; only the ``shapley``
    saliency reads the difference, and it treats both the same way too.
    """
    if task != "auto":
        if task not in TASKS:
            raise ConfigError(f"msd_kd: params.task must be 'auto' or one of {TASKS}, got {task!r}")
        return task
    return "single_label" if targets.dim() == 1 or (targets.dim() == 2 and targets.size(1) == 1) else "multi_label"


@dataclass
class MSDKDObjective:
    """``(1-α)ℓ + α D(multi) [+ Σ_m w_m D(m)]`` on MMF outputs; see the module docstring.

    ``class_reduction`` is the suite's ``distill.class_reduction`` (``mean`` over classes, or
    ``sum``, which puts the multi-label divergence on ``logit_bce``'s per-class-sum scale).
    """

    alpha: float = 0.5
    temperature: float = 1.0
    weighting: str = "uniform"
    weighting_params: Mapping[str, Any] | None = None
    saliency: str = "divergence"
    task: str = "auto"
    class_reduction: str = "mean"
    population_saliency: Mapping[str, float] | None = None
    objective: DistillObjective = field(init=False)
    last_terms: dict[str, float] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        self.objective = build_objective(
            alpha=self.alpha, temperature=self.temperature, weighting=str(self.weighting),
            weighting_params=self.weighting_params, saliency=self.saliency, class_reduction=self.class_reduction,
            where="msd_kd: params.",
        )
        if self.objective.scheme.learned:
            raise ConfigError(
                "msd_kd: weighting=learned needs the suite's meta-learning step (a virtual SGD step "
                "of the student on a held-out meta batch), which MMF's trainer cannot run. Use "
                "`msd run method=msd weighting=learned`, or a fixed scheme (uniform, population, "
                "instance, only_image, only_text, none) here."
            )
        self._ready = not self.objective.needs_population  # only such a scheme has a setup step
        if self.population_saliency is not None:
            self.setup(self.population_saliency)

    @property
    def scheme(self):
        return self.objective.scheme

    @property
    def aux_views(self) -> tuple[str, ...]:
        return self.objective.aux_views

    @property
    def needs_population(self) -> bool:
        return self.objective.needs_population

    def setup(self, population_saliency: Mapping[str, float] | None) -> None:
        """Give the scheme the teacher's dataset-level saliency (a ``needs_population`` scheme reads it)."""
        if population_saliency is not None:
            self.population_saliency = {m: float(population_saliency[m]) for m in MODALITIES}
        if self.objective.needs_population:
            self.objective.setup(self.population_saliency)
        self._ready = True

    def _cached_saliency(self, model_output: Mapping[str, Any]) -> dict[str, Tensor] | None:
        if all(saliency_key(m) in model_output for m in MODALITIES):
            return {m: model_output[saliency_key(m)].float() for m in MODALITIES}
        return None

    def __call__(self, model_output: Mapping[str, Any], targets: Tensor) -> Tensor:
        """The scalar loss; detached terms (suite names: ``loss/kd``, ``weight/image_mean`` …) in ``last_terms``."""
        return self.evaluate(model_output, targets)[0]

    def parts(self, model_output: Mapping[str, Any], targets: Tensor) -> dict[str, Tensor]:
        """The loss as MMF's loss dict wants it: one entry per term, each with its gradient, whose
        sum is the total (:func:`loss_parts`); MMF adds them up for backward and logs each one."""
        return self.evaluate(model_output, targets)[1]

    def evaluate(self, model_output: Mapping[str, Any], targets: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """``(total, parts)`` of one batch; the detached terms go to ``last_terms``."""
        if not self._ready:
            raise ConfigError(
                f"msd_kd: weighting={self.weighting} needs the teacher's dataset-level saliency: a suite "
                "teacher with a teacher cache, or params.population_saliency: {image: .., text: ..}."
            )
        views = self.objective.student_views
        missing = [output_key(v, t) for v in views for t in (False, True) if output_key(v, t) not in model_output]
        if missing:
            raise KeyError(
                f"msd_kd: model_output has no {missing}. Use it with model=msd_student, which returns the "
                "student's and the teacher's view logits."
            )
        student = {v: model_output[output_key(v)].float() for v in views}
        teacher_views = VIEWS if self.objective.needs_saliency else views
        teacher = {v: model_output[output_key(v, True)].float() for v in teacher_views}
        task = infer_task(targets, self.task)
        objective = self.objective
        terms = objective.terms(student, teacher, targets, task, label_loss_for_task(task))
        weights: Weights = {}
        if objective.aux_views:
            saliency = objective.teacher_saliency(teacher, targets, task, lambda: self._cached_saliency(model_output))
            weights = objective.weights(saliency, terms.aux)
        total, logged = objective.combine(terms, weights)
        self.last_terms = {k: float(v) for k, v in logged.items()}
        return total, loss_parts(objective.alpha, terms, weights)


def loss_parts(alpha: float, terms: DistillTerms, weights: Weights) -> dict[str, Tensor]:
    """``label = (1-α)·mean ℓ``, ``kd = α·mean D(multi)``, ``aux_<m> = mean w_m·D(m)``: the
    contributions whose sum is the objective (``msd_objective`` / ``kd_objective``'s total,
    up to float rounding; tested), so MMF's log shows what each term adds to ``total_loss``."""
    parts = {"label": (1 - alpha) * terms.label.mean(), "kd": alpha * terms.kd.mean()}
    for modality, divergence in terms.aux.items():
        parts[f"aux_{modality}"] = (weights[modality] * divergence).mean()
    return parts
