"""KD and MSD students (docs/protocol.md §4.4, §6): methods that read a teacher.

The teacher's logits for all three views and its per-sample saliency come from the shared
teacher cache (``distill.teacher_source=cache``, the default) or from the live teacher
(``live``, needed when augmentation changes inputs between epochs).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig
from torch import Tensor

from benchmark import MODALITIES, VIEWS
from benchmark.config.loader import weighting_of
from benchmark.data.base import MMFDataset
from benchmark.data.build import build_dataloader, build_dataset
from benchmark.data.info import DatasetInfo
from benchmark.distill.cache import TeacherCache, get_teacher_cache
from benchmark.distill.meta import MetaWeightLearner, cycle
from benchmark.distill.methods import Method
from benchmark.distill.objective import DistillTerms, build_objective
from benchmark.distill.teacher import LoadedTeacher, check_views_match, load_teacher
from benchmark.distill.weighting import Learned, WeightingScheme
from benchmark.errors import ConfigError
from benchmark.registry import registry
from benchmark.train.batching import to_device
from benchmark.train.distributed import main_first
from benchmark.train.method_context import MethodContext

HIST_BINS = np.linspace(0.0, 2.0, 21)  # weights live in [0, M] with M = 2


class DistillMethod(Method):
    """A student that reads a teacher; its loss is :class:`DistillObjective` with the method's scheme."""

    needs_teacher = True

    def __init__(self, config: DictConfig, info: DatasetInfo) -> None:
        super().__init__(config, info)
        self.source = str(config.distill.teacher_source)
        if self.source not in ("cache", "live"):
            raise ConfigError(f"distill.teacher_source must be 'cache' or 'live', got {self.source!r}")
        self.objective = build_objective(
            alpha=float(config.distill.alpha), temperature=float(config.distill.temperature),
            weighting=self.weighting_name(config), weighting_params=config.distill.weighting_params,
            saliency=str(config.distill.saliency),
            # [rule] mean over classes (docs/protocol.md §4.3); 'sum' puts D on the label loss's per-class-sum scale.
            class_reduction=str(config.distill.get("class_reduction", "mean")),
        )
        self.scheme: WeightingScheme = self.objective.scheme
        self.teacher: LoadedTeacher | None = None
        self.cache: TeacherCache | None = None

    @classmethod
    def weighting_name(cls, config: DictConfig) -> str:
        """The weighting scheme this method trains with (``kd``: none, whatever ``distill.weighting`` says)."""
        return weighting_of(config)

    def prepare(self, context: MethodContext) -> None:
        self.device = context.device
        self.teacher = load_teacher(self.config, self.info, self.device)
        check_views_match(self.config, self.teacher.config)
        if self.source == "cache":
            with main_first(context.dist):  # rank 0 builds the cache once; the other ranks open it
                self.cache = get_teacher_cache(
                    self.config, self.teacher, self.device, spot_check_samples=int(self.config.distill.cache_spot_check)
                )
        if self.objective.needs_population:
            self.objective.setup(self._population_saliency(context.train_set))

    def teacher_logits(self, batch: dict) -> dict[str, Tensor]:
        if self.cache is not None:
            return {v: t.to(self.device) for v, t in self.cache.logits("train", batch["sample_index"]).items()}
        with torch.no_grad():
            return {v: t.float() for v, t in self.teacher.model.forward_views(batch, VIEWS).items()}

    def cached_saliency(self, batch: dict) -> dict[str, Tensor] | None:
        """The teacher cache's saliency of this batch, or None with a live teacher (then it is computed)."""
        if self.cache is None:
            return None
        sal = self.cache.saliency("train", batch["sample_index"], self.objective.saliency_definition)
        return {m: t.to(self.device) for m, t in sal.items()}

    def _population_saliency(self, train_set: MMFDataset) -> dict[str, float]:
        definition = self.objective.saliency_definition
        indices = np.asarray(train_set.sample_indices)
        if self.cache is not None:
            return self.cache.population_saliency("train", indices, definition)
        totals = dict.fromkeys(MODALITIES, 0.0)
        loader = build_dataloader(train_set, batch_size=int(self.config.training.batch_size) * 2, shuffle=False)
        for batch in loader:
            batch = to_device(batch, self.device)
            sal = self.objective.saliency_of(self.teacher_logits(batch), batch["targets"], self.info.task)
            for m in totals:
                totals[m] += float(sal[m].sum())
        return {m: v / len(train_set) for m, v in totals.items()}

    def training_loss(self, model: torch.nn.Module, batch: dict) -> tuple[Tensor, dict[str, Tensor]]:
        objective, targets, task = self.objective, batch["targets"], self.info.task
        student = model.forward_views(batch, objective.student_views)
        teacher = self.teacher_logits(batch)
        terms = objective.terms(student, teacher, targets, task, self.label_loss)
        if not objective.aux_views:
            return objective.combine(terms, None)
        saliency = objective.teacher_saliency(teacher, targets, task, lambda: self.cached_saliency(batch))
        weights, extra = self._weights(model, saliency, terms)
        self._remember(weights, terms.label.shape[0])
        total, logged = objective.combine(terms, weights)
        return total, {**logged, **extra}

    def _weights(self, model: torch.nn.Module, saliency: Any, terms: DistillTerms) -> tuple[dict, dict[str, Tensor]]:
        """The auxiliary weights of this batch (and the meta step's log when the scheme is learned)."""
        return self.objective.weights(saliency, terms.aux), {}

    def _remember(self, weights: dict, batch_size: int) -> None:  # noqa: B027 - MSD keeps them for its log
        """Hook: MSD records the weights for its evaluation log."""

    def summary(self) -> dict[str, Any]:
        out = super().summary()
        out.update({"teacher_run": self.teacher.run.run_id if self.teacher else None, "teacher_source": self.source,
                    "teacher_cache": str(self.cache.path) if self.cache else None, "alpha": self.objective.alpha,
                    "temperature": self.objective.temperature,
                    "divergence_scale": self.objective.divergence_scale(self.info.task, self.info.num_labels)})
        return out


@registry.register_method("kd")
class KD(DistillMethod):
    """``(1-α)·ℓ + α·D_τ(T(multi), S(multi))``: the shared objective without auxiliary terms."""

    @classmethod
    def weighting_name(cls, config: DictConfig) -> str:
        return "none"


@registry.register_method("msd")
class MSD(DistillMethod):
    """KD plus saliency-weighted image-only and text-only mimicry terms."""

    def __init__(self, config: DictConfig, info: DatasetInfo) -> None:
        super().__init__(config, info)
        self.meta: MetaWeightLearner | None = None
        self._weights_seen: dict[str, list[Tensor]] = {m: [] for m in self.scheme.views}

    @classmethod
    def distributed_refusal(cls, config: DictConfig) -> str | None:
        if registry.get_weighting(weighting_of(config)).learned:
            return (
                "weighting=learned cannot train under DDP: its meta step differentiates through a virtual "
                "update of the student's parameters outside DDP's forward pass, so the second-order "
                "gradients are not synchronised and each rank's weight network would drift apart. Train "
                "this student on one process (training.distributed=off, no torchrun), or use another weighting."
            )
        return None

    def prepare(self, context: MethodContext) -> None:
        super().prepare(context)
        if isinstance(self.scheme, Learned):
            self.scheme.net.to(self.device)
            meta_set = build_dataset(self.config, "meta")
            loader = build_dataloader(meta_set, batch_size=int(self.config.training.batch_size), shuffle=True,
                                      seed=int(self.config.training.seed))
            p = self.config.distill.weighting_params
            self.meta = MetaWeightLearner(self.scheme, cycle(loader), self.label_loss, meta_lr=float(p.meta_lr),
                                          inner_lr=float(p.inner_lr), every=int(p.every), device=self.device)

    def _weights(self, model: torch.nn.Module, saliency: Any, terms: DistillTerms) -> tuple[dict, dict[str, Tensor]]:
        if self.meta is None:
            return self.objective.weights(saliency, terms.aux), {}
        meta_terms = self.meta.maybe_step(
            model,
            lambda w: self.objective.combine(terms, w)[0],
            lambda: self.objective.weights(saliency, terms.aux),
            lambda b: to_device(b, self.device),
        )
        with torch.no_grad():
            weights = self.objective.weights(saliency, terms.aux)
        return weights, {k: torch.tensor(v) for k, v in meta_terms.items()}

    def _remember(self, weights: dict, batch_size: int) -> None:
        for m in self.scheme.views:
            w = weights[m]
            w = w.detach().float().cpu() if isinstance(w, Tensor) else torch.full((batch_size,), float(w))
            self._weights_seen[m].append(w)

    def evaluation_log(self) -> dict[str, Any]:
        """Weight distribution since the last evaluation: mean, std and a histogram per modality."""
        out: dict[str, Any] = {}
        for m, chunks in self._weights_seen.items():
            if not chunks:
                continue
            w = torch.cat(chunks)
            counts, _ = np.histogram(w.numpy(), bins=HIST_BINS)
            out[f"weight/{m}_mean"] = float(w.mean())
            out[f"weight/{m}_std"] = float(w.std()) if w.numel() > 1 else 0.0
            out[f"weight/{m}_hist"] = counts.tolist()
            chunks.clear()
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"meta": self.meta.state_dict()} if self.meta is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.meta is not None and "meta" in state:
            self.meta.load_state_dict(state["meta"])

    def summary(self) -> dict[str, Any]:
        return {**super().summary(), "weighting_scheme": self.scheme.describe(),
                "saliency_definition": self.objective.saliency_definition}
