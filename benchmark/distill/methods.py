"""Training methods by name (``method=``): what loss a training step minimises.

A method is the only thing that differs between a teacher run, a label-only student and the
distilled students, so the trainer stays the same for all of them (mdistiller's contract:
``training_loss(model, batch) -> (total, {name: term})``).

This module holds the contract (:class:`Method`; what it may read is
:class:`~benchmark.train.method_context.MethodContext`) and the methods
that train from labels alone; ``distill_methods.py`` holds the ones that read a teacher (KD,
MSD) and so depend on the teacher cache, the objective and the weighting schemes. The split
keeps the contract free of those dependencies (docs/architecture.md §4.1).
"""

from __future__ import annotations

import abc
from typing import Any

import torch
from omegaconf import DictConfig

from benchmark import VIEWS
from benchmark.config.loader import weighting_of
from benchmark.data.info import DatasetInfo
from benchmark.distill.losses import label_loss_for_task
from benchmark.models.views import teacher_view_weight
from benchmark.registry import registry
from benchmark.train.method_context import MethodContext


class Method(abc.ABC):
    """One training objective. ``needs_teacher`` methods get a teacher from the trainer."""

    needs_teacher: bool = False
    role: str = "student"

    def __init__(self, config: DictConfig, info: DatasetInfo) -> None:
        self.config = config
        self.info = info
        dataset_cfg = config.dataset_config[config.dataset]
        self.label_loss = label_loss_for_task(info.task, dataset_cfg.get("loss"))

    @classmethod
    def distributed_refusal(cls, config: DictConfig) -> str | None:
        """Why this method cannot train under DDP with ``config``, or None when it can."""
        return None

    def prepare(self, context: MethodContext) -> None:  # noqa: B027 - optional hook
        """Hook to load what the method needs (a teacher, its cache) before training."""

    @abc.abstractmethod
    def training_loss(self, model: torch.nn.Module, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The scalar to minimise and every term by name, for logging."""

    def evaluation_log(self) -> dict[str, Any]:
        """Extra values logged with each evaluation (e.g. weight distributions)."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        """Method state that must survive a resume (e.g. the meta-learned weight network)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:  # noqa: B027 - optional hook
        """Restore :meth:`state_dict`."""

    def summary(self) -> dict[str, Any]:
        """What the run summary records about the method."""
        return {"method": self.config.method, "weighting": weighting_of(self.config)}


class LabelOnly(Method):
    """Supervised training from labels alone: ``ℓ(y, z(multi))``."""

    def training_loss(self, model: torch.nn.Module, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        logits = model(batch, "multi")
        loss = self.label_loss(logits, batch["targets"])
        return loss, {"loss/label": loss.detach(), "loss/total": loss.detach()}


@registry.register_method("teacher")
class TeacherMethod(LabelOnly):
    """A teacher is trained from labels with the teacher size preset.

    With ``views.teacher_loss`` λ > 0 it also learns from its single-modality views:
    ``ℓ(y, T(multi)) + λ·½[ℓ(y, T(image)) + ℓ(y, T(text))]``. Why: MSD's auxiliary targets and
    the saliency that weights them are the teacher's predictions with a modality removed. A
    teacher trained on the full input alone never sees a removed modality (its "absent"
    embedding keeps its initial value), so those predictions are its guess on an input it was
    never trained for; with the view losses they estimate what one modality alone says
    (docs/protocol.md §3.7). The views share the encoders, so the cost is one extra fusion and
    head pass per view.
    """

    role = "teacher"

    def __init__(self, config: DictConfig, info: DatasetInfo) -> None:
        super().__init__(config, info)
        self.view_weight = teacher_view_weight(config)

    def training_loss(self, model: torch.nn.Module, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if self.view_weight == 0.0:
            return super().training_loss(model, batch)
        logits = model.forward_views(batch, VIEWS)
        targets = batch["targets"]
        label = self.label_loss(logits["multi"], targets)
        single = {view: self.label_loss(logits[view], targets) for view in VIEWS if view != "multi"}
        total = label + self.view_weight * 0.5 * sum(single.values())
        terms = {"loss/label": label.detach(), **{f"loss/label@{v}": t.detach() for v, t in single.items()}}
        return total, {**terms, "loss/total": total.detach()}


@registry.register_method("student_only")
class StudentOnly(LabelOnly):
    """The 'Student (no KD)' row of Table 2."""
