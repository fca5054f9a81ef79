"""The ``msd_kd`` objective on MMF model outputs, with the maths of :mod:`benchmark.distill`.

Why a separate module: "one implementation, two front ends". Nothing here re-implements a
divergence, a label loss, a weighting scheme or the MSD objective; it only maps MMF's
``model_output``/``sample_list`` keys onto :func:`benchmark.distill.losses.msd_objective`
(or ``kd_objective``) and the registered weighting schemes, so the MMF loss and the suite's
``method=msd`` give the same number on the same logits. It imports no MMF code, so the CI
tests run it without MMF.

Keys read from ``model_output`` (written by ``msd_student``): ``scores`` (student, multi
view), ``scores_<view>`` (student, image/text), ``teacher_scores`` and
``teacher_scores_<view>``, optionally ``teacher_saliency_<modality>`` (from the suite's
teacher cache; otherwise saliency is computed from the teacher's three view logits).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from benchmark.data.info import TASKS
from benchmark.distill.losses import divergence_for_task, kd_objective, label_loss_for_task, msd_objective
from benchmark.distill.saliency import compute_saliency
from benchmark.distill.weighting import MODALITIES, WeightingScheme, build_weighting
from benchmark.errors import ConfigError
from benchmark.registry import registry

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


def weighting_views(name: str) -> tuple[str, ...]:
    """The auxiliary views a scheme weights non-zero: the student views ``msd_student`` must run."""
    return tuple(registry.get_weighting(name).views)


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
    scheme: WeightingScheme = field(init=False)
    last_terms: dict[str, float] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        if self.class_reduction not in ("mean", "sum"):
            raise ConfigError(f"msd_kd: params.class_reduction must be 'mean' or 'sum', got {self.class_reduction!r}")
        params = self.weighting_params
        params = params if isinstance(params, DictConfig) else OmegaConf.create(dict(params or {}))
        self.scheme = build_weighting(str(self.weighting), params)
        if self.scheme.learned:
            raise ConfigError(
                "msd_kd: weighting=learned needs the suite's meta-learning step (a virtual SGD step "
                "of the student on a held-out meta batch), which MMF's trainer cannot run. Use "
                "`msd run method=msd weighting=learned`, or a fixed scheme (uniform, population, "
                "instance, only_image, only_text, none) here."
            )
        self._ready = str(self.weighting) != "population"  # the one scheme with a setup step
        if self.population_saliency is not None:
            self.setup(self.population_saliency)

    @property
    def aux_views(self) -> tuple[str, ...]:
        return tuple(self.scheme.views)

    def setup(self, population_saliency: Mapping[str, float] | None) -> None:
        """Give the scheme the teacher's dataset-level saliency (``population`` needs it)."""
        if population_saliency is not None:
            self.population_saliency = {m: float(population_saliency[m]) for m in MODALITIES}
        self.scheme.setup(self.population_saliency)
        self._ready = True

    def _divergence(self, task: str, num_classes: int):
        divergence = divergence_for_task(task)
        scale = float(num_classes) if self.class_reduction == "sum" and task != "single_label" else 1.0

        def div(teacher: Tensor, student: Tensor) -> Tensor:
            return scale * divergence(teacher.float(), student.float(), temperature=self.temperature, reduction="none")

        return div

    def teacher_saliency(self, model_output: Mapping[str, Any], targets: Tensor, task: str) -> dict[str, Tensor]:
        """Per-sample saliency: the cached values when the model passed them, else from the teacher's views."""
        if all(saliency_key(m) in model_output for m in MODALITIES):
            return {m: model_output[saliency_key(m)].float() for m in MODALITIES}
        logits = {v: model_output[output_key(v, teacher=True)].float() for v in ("multi", *MODALITIES)}
        return compute_saliency(logits, targets, task, method=self.saliency)

    def __call__(self, model_output: Mapping[str, Any], targets: Tensor) -> Tensor:
        """The scalar loss; detached terms (suite names: ``loss/kd``, ``weight/image_mean`` …) in ``last_terms``."""
        if not self._ready:
            raise ConfigError(
                "msd_kd: weighting=population needs the teacher's dataset-level saliency: a suite "
                "teacher with a teacher cache, or params.population_saliency: {image: .., text: ..}."
            )
        missing = [k for k in (output_key("multi"), output_key("multi", True)) if k not in model_output]
        missing += [output_key(v, t) for v in self.aux_views for t in (False, True) if output_key(v, t) not in model_output]
        if missing:
            raise KeyError(
                f"msd_kd: model_output has no {missing}. Use it with model=msd_student, which returns the "
                "student's and the teacher's view logits."
            )
        student = model_output[output_key("multi")]
        task = infer_task(targets, self.task)
        div = self._divergence(task, student.shape[-1])
        label = label_loss_for_task(task)(student.float(), targets, reduction="none")
        kd = div(model_output[output_key("multi", True)], student)
        if not self.aux_views:
            total, terms = kd_objective(label, kd, self.alpha)
        else:
            aux = {m: div(model_output[output_key(m, True)], model_output[output_key(m)]) for m in self.aux_views}
            saliency = self.teacher_saliency(model_output, targets, task) if self.scheme.needs_saliency else None
            weights = self.scheme.weights(saliency, aux)
            total, terms = msd_objective(label, kd, aux, weights, self.alpha)
        self.last_terms = {k: float(v) for k, v in terms.items()}
        return total
