"""Finding, loading and checking the teacher a student distils from.

A student names its teacher by run id, id prefix or run directory (``teacher=…``). The
teacher is rebuilt from *its own* stored config (model, size preset) and its checkpoint is
loaded strictly, so a checkpoint from another architecture is refused, never half-loaded.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from omegaconf import DictConfig

from benchmark.data.info import DatasetInfo
from benchmark.errors import CheckpointError, ConfigError
from benchmark.models.base import MultimodalModel
from benchmark.models.build import build_model
from benchmark.models.views import teacher_view_weight
from benchmark.tracking.run_store import RunDir, RunStore
from benchmark.train.checkpoint import BEST, load_checkpoint, load_weights_strict


@dataclass
class LoadedTeacher:
    run: RunDir
    config: DictConfig
    model: MultimodalModel
    summary: dict


def resolve_teacher_run(config: DictConfig) -> RunDir:
    ref = config.get("teacher")
    if not ref:
        raise ConfigError(
            f"method={config.method} distils from a teacher: pass teacher=<run id or run directory> "
            f"(train one with `msd run dataset={config.dataset} method=teacher`)."
        )
    run = RunStore(config.env.save_dir).find(str(ref))
    summary = run.read_summary() or {}
    if summary.get("status") != "completed":
        raise CheckpointError(f"Teacher run {run.path} is not complete (status: {summary.get('status', 'none')}).")
    if summary.get("dataset") != config.dataset:
        raise ConfigError(
            f"Teacher run {run.run_id} was trained on {summary.get('dataset')!r}, "
            f"but this run is on {config.dataset!r}."
        )
    return run


def load_teacher(config: DictConfig, info: DatasetInfo, device: torch.device) -> LoadedTeacher:
    run = resolve_teacher_run(config)
    teacher_config = run.read_config()
    model = build_model(teacher_config, info, role="teacher")
    payload = load_checkpoint(run.file(BEST))
    load_weights_strict(model, payload["model"], str(run.file(BEST)))
    model.to(device).eval()
    for param in model.parameters():
        param.requires_grad_(False)
    return LoadedTeacher(run=run, config=teacher_config, model=model, summary=run.read_summary() or {})


def views_mismatch(student_config: DictConfig, teacher_config: DictConfig) -> str | None:
    """Why a student cannot distil from this teacher's views, or None when both use the same
    ``views.removal`` and ``views.teacher_loss``. A config check can report it before anything is written.

    Why refuse rather than key the cache on the student's rule too: the teacher's image-only
    and text-only logits are made by the teacher's own rule, cached or live, and MSD's
    auxiliary terms compare them with the student's views of the same name. Under two rules
    ``D(T(image), S(image))`` would compare two different inputs, whatever the cache held.
    ``views.teacher_loss`` is read by teachers only, but a student must state its teacher's:
    it says which single-modality targets the student distilled, in the student's own run id
    and in the tables' variant labels, where a student of a view-trained teacher would
    otherwise pass for a default one.
    """
    student = str(student_config.views.removal)
    teacher = str(teacher_config.get("views", {}).get("removal", "drop"))
    if student != teacher:
        return (
            f"views.removal={student} for this student, but its teacher was trained with views.removal={teacher}: "
            "the auxiliary terms would compare the teacher's and the student's views of a sample under two "
            f"different removal rules. Set views.removal={teacher}, or train a teacher with views.removal={student}."
        )
    student_weight, teacher_weight = teacher_view_weight(student_config), teacher_view_weight(teacher_config)
    if student_weight != teacher_weight:
        return (
            f"views.teacher_loss={student_weight:g} for this student, but its teacher was trained with "
            f"views.teacher_loss={teacher_weight:g}: a student states the weight its teacher's single-modality views "
            f"were trained with, so its run id and table label say which targets it distilled. Set "
            f"views.teacher_loss={teacher_weight:g}."
        )
    return None


def check_views_match(student_config: DictConfig, teacher_config: DictConfig) -> None:
    """Raise :class:`ConfigError` with :func:`views_mismatch`'s reason, if there is one."""
    problem = views_mismatch(student_config, teacher_config)
    if problem:
        raise ConfigError(problem)
