"""``msd_student``: any registered MMF model as the student, plus its teacher's view logits.

Why a wrapper rather than a new architecture: MSD changes the *objective*, not the model, so
the student stays exactly the MMF model a user already trains (``student_model: visual_bert``
with MMF's own ``model_config.visual_bert``). The wrapper runs it on the views that the
``msd_kd`` loss weights (:mod:`.views` removes a modality from the ``SampleList``) and adds the
frozen teacher's logits for the three views (:mod:`.teachers`).

Checkpoints hold only the student (``student.`` prefix); the teacher is not a submodule.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from mmf.common.registry import registry
from mmf.models.base_model import BaseModel
from omegaconf import DictConfig, OmegaConf

from benchmark import MODALITIES
from benchmark.mmf_plugin.loss import MSDKDLoss
from benchmark.mmf_plugin.objective import output_key
from benchmark.mmf_plugin.teachers import Teacher, load_teacher, raw_forward
from benchmark.mmf_plugin.views import view_sample_list

logger = logging.getLogger(__name__)
DEFAULTS = Path(__file__).resolve().parent / "configs" / "models" / "msd_student" / "defaults.yaml"


@registry.register_model("msd_student")
class MSDStudent(BaseModel):
    """Config (``model_config.msd_student``): ``student_model``, ``student_config``, ``teacher``, ``losses``."""

    def __init__(self, config: DictConfig) -> None:
        super().__init__(config)
        self.teacher: Teacher | None = None
        self._teacher_device: torch.device | None = None

    @classmethod
    def config_path(cls) -> str:
        return str(DEFAULTS)

    def _student_config(self) -> DictConfig:
        name = self.config.get("student_model")
        if not name:
            raise KeyError("model_config.msd_student.student_model: name the MMF model to distil into (e.g. visual_bert).")
        own = self.config.get("student_config")
        if own is None:
            global_config = registry.get("config") or {}
            own = (global_config.get("model_config") or {}).get(name)
        if own is None:
            raise KeyError(
                f"model_config.msd_student.student_config is empty and model_config.{name} is not in the "
                f"config: include {name}'s project config (see benchmark/mmf_plugin/configs)."
            )
        # A plain copy: MMF's config is in struct mode, which refuses the added ``model`` key.
        plain = OmegaConf.create(OmegaConf.to_container(own, resolve=True))
        plain.model = str(name)
        return plain

    def build(self) -> None:
        from mmf.utils.build import build_model

        self.student = build_model(self._student_config())
        self.teacher = load_teacher(self.config.teacher)
        logger.info(f"msd_student: student {self.config.student_model}, teacher {self.teacher.describe()}")

    def _criteria(self) -> list[MSDKDLoss]:
        losses = getattr(self, "losses", None)
        return [m for m in losses.modules() if isinstance(m, MSDKDLoss)] if losses is not None else []

    def _saliency_definition(self) -> str:
        for loss in self.config.get("losses") or []:
            if isinstance(loss, (dict, DictConfig)) and loss.get("type") == "msd_kd":
                return str((loss.get("params") or {}).get("saliency", "divergence"))
        return "divergence"

    def init_losses(self) -> None:
        """MMF's losses, then the teacher's dataset-level saliency for the schemes that declare
        ``needs_population`` (it is read from the teacher only when one of them asks)."""
        super().init_losses()
        for criterion in self._criteria():
            objective = criterion.objective
            if objective.needs_population and objective.population_saliency is None and self.teacher is not None:
                population = self.teacher.population_saliency(self._saliency_definition())
                if population:
                    objective.setup(population)

    @property
    def aux_views(self) -> tuple[str, ...]:
        """The student views some ``msd_kd`` loss weights (none for plain KD)."""
        views = {v for criterion in self._criteria() for v in criterion.objective.aux_views}
        return tuple(v for v in MODALITIES if v in views)

    def get_optimizer_parameters(self, config: DictConfig) -> Any:
        if hasattr(self.student, "get_optimizer_parameters"):
            return self.student.get_optimizer_parameters(config)
        return self.parameters()

    def forward(self, sample_list: Any) -> dict[str, torch.Tensor]:
        device = next(self.student.parameters()).device
        if self.teacher is not None and self._teacher_device != device:
            self.teacher.to(device)
            self._teacher_device = device
        out = {
            output_key(view): raw_forward(self.student, view_sample_list(sample_list, view))["scores"]
            for view in ("multi", *self.aux_views)
        }
        if self.teacher is not None:
            out.update(self.teacher.outputs(sample_list, self._saliency_definition()))
        return out
