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

from benchmark import VIEWS
from benchmark.data.build import build_dataloader, build_dataset
from benchmark.data.info import DatasetInfo
from benchmark.distill.cache import TeacherCache, get_teacher_cache
from benchmark.distill.losses import divergence_for_task, kd_objective, msd_objective
from benchmark.distill.meta import MetaWeightLearner, cycle
from benchmark.distill.methods import Method
from benchmark.distill.saliency import compute_saliency
from benchmark.distill.teacher import LoadedTeacher, load_teacher
from benchmark.distill.weighting import Learned, WeightingScheme, build_weighting
from benchmark.errors import ConfigError
from benchmark.registry import registry
from benchmark.train.batching import to_device
from benchmark.train.distributed import main_first

HIST_BINS = np.linspace(0.0, 2.0, 21)  # weights live in [0, M] with M = 2


class DistillMethod(Method):
    needs_teacher = True

    def __init__(self, config: DictConfig, info: DatasetInfo) -> None:
        super().__init__(config, info)
        self.label_loss_fn = self.label_loss
        self.divergence = divergence_for_task(info.task)
        self.alpha = float(config.distill.alpha)
        self.tau = float(config.distill.temperature)
        self.source = str(config.distill.teacher_source)
        if self.source not in ("cache", "live"):
            raise ConfigError(f"distill.teacher_source must be 'cache' or 'live', got {self.source!r}")
        # [rule] mean over classes (docs/protocol.md §4.3); 'sum' puts D on the label loss's per-class-sum scale.
        reduction = str(config.distill.get("class_reduction", "mean"))
        if reduction not in ("mean", "sum"):
            raise ConfigError(f"distill.class_reduction must be 'mean' or 'sum', got {reduction!r}")
        self.div_scale = float(info.num_labels) if reduction == "sum" and info.task != "single_label" else 1.0
        self.teacher: LoadedTeacher | None = None
        self.cache: TeacherCache | None = None

    def prepare(self, trainer: Any) -> None:
        self.device = trainer.device
        self.teacher = load_teacher(self.config, self.info, self.device)
        if self.source == "cache":
            with main_first(trainer.dist):  # rank 0 builds the cache once; the other ranks open it
                self.cache = get_teacher_cache(
                    self.config, self.teacher, self.device, spot_check_samples=int(self.config.distill.cache_spot_check)
                )

    def teacher_logits(self, batch: dict) -> dict[str, Tensor]:
        if self.cache is not None:
            return {v: t.to(self.device) for v, t in self.cache.logits("train", batch["sample_index"]).items()}
        with torch.no_grad():
            return {v: t.float() for v, t in self.teacher.model.forward_views(batch, VIEWS).items()}

    def div(self, teacher: Tensor, student: Tensor) -> Tensor:
        return self.div_scale * self.divergence(teacher, student, temperature=self.tau, reduction="none")

    def summary(self) -> dict[str, Any]:
        out = super().summary()
        out.update({"teacher_run": self.teacher.run.run_id if self.teacher else None, "teacher_source": self.source,
                    "teacher_cache": str(self.cache.path) if self.cache else None, "alpha": self.alpha,
                    "temperature": self.tau, "divergence_scale": self.div_scale})
        return out


@registry.register_method("kd")
class KD(DistillMethod):
    """``(1-α)·ℓ + α·D_τ(T(multi), S(multi))``."""

    def training_loss(self, model: torch.nn.Module, batch: dict) -> tuple[Tensor, dict[str, Tensor]]:
        student = model(batch, "multi")
        teacher = self.teacher_logits(batch)["multi"]
        label = self.label_loss_fn(student, batch["targets"], reduction="none")
        return kd_objective(label, self.div(teacher, student), self.alpha)


@registry.register_method("msd")
class MSD(DistillMethod):
    """KD plus saliency-weighted image-only and text-only mimicry terms."""

    def __init__(self, config: DictConfig, info: DatasetInfo) -> None:
        super().__init__(config, info)
        self.scheme: WeightingScheme = build_weighting(str(config.weighting), config.distill.weighting_params)
        self.saliency_definition = str(config.distill.saliency)
        self.student_views = ("multi", *self.scheme.views)
        self.meta: MetaWeightLearner | None = None
        self._weights_seen: dict[str, list[Tensor]] = {m: [] for m in self.scheme.views}

    @classmethod
    def distributed_refusal(cls, config: DictConfig) -> str | None:
        if registry.get_weighting(str(config.weighting)).learned:
            return (
                "weighting=learned cannot train under DDP: its meta step differentiates through a virtual "
                "update of the student's parameters outside DDP's forward pass, so the second-order "
                "gradients are not synchronised and each rank's weight network would drift apart. Train "
                "this student on one process (training.distributed=off, no torchrun), or use another weighting."
            )
        return None

    def prepare(self, trainer: Any) -> None:
        super().prepare(trainer)
        if self.scheme.needs_saliency:
            self.scheme.setup(self._population_saliency(trainer))
        if isinstance(self.scheme, Learned):
            self.scheme.net.to(self.device)
            meta_set = build_dataset(self.config, "meta")
            loader = build_dataloader(meta_set, batch_size=int(self.config.training.batch_size), shuffle=True,
                                      seed=int(self.config.training.seed))
            p = self.config.distill.weighting_params
            self.meta = MetaWeightLearner(self.scheme, cycle(loader), self.label_loss_fn, meta_lr=float(p.meta_lr),
                                          inner_lr=float(p.inner_lr), every=int(p.every), device=self.device)

    def _population_saliency(self, trainer: Any) -> dict[str, float]:
        indices = np.asarray(trainer.train_set.sample_indices)
        if self.cache is not None:
            return self.cache.population_saliency("train", indices, self.saliency_definition)
        totals = {"image": 0.0, "text": 0.0}
        loader = build_dataloader(trainer.train_set, batch_size=int(self.config.training.batch_size) * 2, shuffle=False)
        for batch in loader:
            batch = to_device(batch, self.device)
            sal = self.teacher_saliency(batch, self.teacher_logits(batch))
            for m in totals:
                totals[m] += float(sal[m].sum())
        return {m: v / len(trainer.train_set) for m, v in totals.items()}

    def teacher_saliency(self, batch: dict, teacher: dict[str, Tensor]) -> dict[str, Tensor]:
        if self.cache is not None:
            sal = self.cache.saliency("train", batch["sample_index"], self.saliency_definition)
            return {m: t.to(self.device) for m, t in sal.items()}
        return compute_saliency(teacher, batch["targets"], self.info.task, method=self.saliency_definition)

    def training_loss(self, model: torch.nn.Module, batch: dict) -> tuple[Tensor, dict[str, Tensor]]:
        student = model.forward_views(batch, self.student_views)
        teacher = self.teacher_logits(batch)
        label = self.label_loss_fn(student["multi"], batch["targets"], reduction="none")
        kd = self.div(teacher["multi"], student["multi"])
        aux = {m: self.div(teacher[m], student[m]) for m in self.scheme.views}
        saliency = self.teacher_saliency(batch, teacher) if self.scheme.needs_saliency else None
        extra: dict[str, Tensor] = {}
        if self.meta is not None:
            meta_terms = self.meta.maybe_step(
                model,
                lambda w: msd_objective(label, kd, aux, w, self.alpha)[0],
                lambda: self.scheme.weights(saliency, aux),
                lambda b: to_device(b, self.device),
            )
            extra = {k: torch.tensor(v) for k, v in meta_terms.items()}
            with torch.no_grad():
                weights = self.scheme.weights(saliency, aux)
        else:
            weights = self.scheme.weights(saliency, aux)
        self._remember(weights, label.shape[0])
        total, terms = msd_objective(label, kd, aux, weights, self.alpha)
        return total, {**terms, **extra}

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
                "saliency_definition": self.saliency_definition}
