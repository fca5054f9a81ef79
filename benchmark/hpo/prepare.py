"""Everything a search needs before its first trial: data, the teacher, its output cache.

Why before the trials and not inside the first one: the teacher and its cache are shared
by every trial (and by every method's search in a fairness comparison), so their cost must
not be charged to whichever trial happens to run first; and parallel workers must not all
train the same teacher. ``teacher: auto`` builds the dataset's *default* teacher config
(the one ``msd run dataset=… method=teacher`` and the grid train), so its run id — a hash
of the config — is the same for every trial, every search and the Table 2 grid: it is
trained once and found complete ever after.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from benchmark.config.loader import build_config, dataset_node
from benchmark.errors import UserError
from benchmark.hpo.spec import SearchSpec, to_arg

# Base keys that describe the data, views or environment and so must hold for the teacher
# too; anything else in a search's base (epochs, batch size, lr) is the student's business.
TEACHER_SHARED_PREFIXES = ("env.", "dataset_config.", "views.", "data.", "model_config.")
TEACHER_SHARED_KEYS = ("config", "dataset", "model", "training.seed", "training.device", "training.threads")


@dataclass
class Prepared:
    """The student arguments every trial starts from, and what was done to get them."""

    args: list[str]  # base + extra + data dir + teacher (+ threads): a trial adds its params
    teacher_run: str | None
    teacher_seconds: float = 0.0
    notes: list[str] = field(default_factory=list)


def prepare(spec: SearchSpec, extra_args: list[str] = (), *, threads: int | None = None, study: str = "",
            wandb: bool = True, log: Any = print) -> Prepared:
    """Make missing data, train (or find) the teacher, build its cache; idempotent."""
    args = [*spec.base_args, *extra_args]
    if threads:
        args.append(f"training.threads={int(threads)}")
    probe = _build(args, spec)
    if spec.data.size is not None:
        # The grid's convention: data of a non-default size has its own folder.
        seed = f"-seed{spec.data.seed}" if spec.data.seed else ""
        args.append(f"env.data_dir={probe.env.data_dir}/size{spec.data.size}{seed}")
        probe = _build(args, spec)
    prepared = Prepared(args=args, teacher_run=None)
    prepared.notes.append(ensure_data(probe, spec.data.size, spec.data.seed))
    log(prepared.notes[-1])
    if not _needs_teacher(spec):
        return prepared
    started = time.time()
    if spec.teacher.auto:
        teacher_config = _build(_teacher_args(args, spec), spec)
        prepared.teacher_run = _train_teacher(teacher_config, study, wandb, log)
    else:
        from benchmark.tracking.run_store import RunStore

        run = RunStore(probe.env.save_dir).find(str(spec.teacher.ref))
        if not run.is_complete():
            raise UserError(f"Teacher run {run.run_id} is not complete (status {run.status}); finish it first.")
        # A run of this store is named by id; one elsewhere by its directory.
        in_store = run.path.resolve().parent == Path(str(probe.env.save_dir)).expanduser().resolve()
        prepared.teacher_run = run.run_id if in_store else str(run.path.resolve())
    prepared.args.append(f"teacher={prepared.teacher_run}")
    student = _build(prepared.args, spec)
    if str(student.distill.get("teacher_source", "cache")) == "cache":
        prepared.notes.append(build_cache(student, prepared.teacher_run))
        log(prepared.notes[-1])
    prepared.teacher_seconds = time.time() - started
    return prepared


def ensure_data(config: DictConfig, size: int | None, seed: int) -> str:
    """Generate the embedded dataset only if its files are missing.

    Existing files are used as they are — real MMF data, or generated data of another size:
    regenerating under a teacher and runs that were trained on it would silently change
    what their run ids mean (``env`` is not part of a run id).
    """
    from benchmark.data.make import make_dataset, read_manifest
    from benchmark.distill.fingerprint import dataset_files

    node = dataset_node(config)
    files = dataset_files(node, ("train", "val", "test"))
    root = Path(str(node.data_dir)) / str(config.dataset) / "defaults"
    if files and all(p.exists() for p in files):
        manifest = read_manifest(root)
        made = "non-generated" if manifest is None else f"generated, size {manifest.get('key', {}).get('size')}"
        return f"{config.dataset}: using the existing ({made}) data under {root}"
    summary = make_dataset(str(config.dataset), str(config.env.data_dir), size=size, seed=seed)
    return f"{config.dataset}: {'data up to date' if summary.get('skipped') else 'data generated'} under {config.env.data_dir}"


def build_cache(student: DictConfig, teacher_run: str) -> str:
    """The teacher's logits and saliency, computed once under a lock (like the grid does)."""
    from benchmark.data.build import build_dataset
    from benchmark.distill.cache import full_split_config, get_teacher_cache
    from benchmark.distill.teacher import load_teacher
    from benchmark.grid.locks import FileLock, run_lock_path
    from benchmark.train.batching import resolve_device

    with FileLock(run_lock_path(student.env.save_dir, f"cache-{teacher_run}")):
        device = resolve_device(str(student.training.device))
        info = build_dataset(full_split_config(student), "val").info
        teacher = load_teacher(student, info, device)
        cache = get_teacher_cache(student, teacher, device, spot_check_samples=int(student.distill.cache_spot_check))
    return f"teacher cache: {cache.path}"


def _train_teacher(config: DictConfig, study: str, wandb: bool, log: Any) -> str:
    from benchmark.grid.locks import FileLock, run_lock_path
    from benchmark.tracking.run_id import compute_run_id
    from benchmark.train.trainer import run_experiment

    run_id = compute_run_id(config)
    with FileLock(run_lock_path(config.env.save_dir, run_id)):
        callbacks = ()
        if wandb:
            from benchmark.tracking.wandb_logger import wandb_callbacks

            callbacks = wandb_callbacks(config, name=f"{study}/teacher", group=study, job_type="teacher")
        result = run_experiment(config, progress=False, callbacks=callbacks)
    if result.summary.get("status") != "completed":
        raise UserError(f"The teacher {run_id} did not complete ({result.summary.get('status')}); see {result.run_dir.path}.")
    log(f"teacher {run_id}: {'already trained' if result.skipped else 'trained'} ({result.run_dir.path})")
    return run_id


def _teacher_args(student_args: list[str], spec: SearchSpec) -> list[str]:
    keep = [a for a in student_args
            if a.partition("=")[0].lstrip("+") in TEACHER_SHARED_KEYS
            or a.partition("=")[0].lstrip("+").startswith(TEACHER_SHARED_PREFIXES)]
    return [*keep, "method=teacher", *(to_arg(k, v) for k, v in spec.teacher.overrides.items())]


def _needs_teacher(spec: SearchSpec) -> bool:
    from benchmark.registry import registry

    methods = {spec.fixed["method"]}
    methods |= {c for p in spec.space.params if p.key == "method" for c in p.choices}
    return any(getattr(registry.get_method(str(m)), "needs_teacher", False) for m in methods)


def _build(args: list[str], spec: SearchSpec) -> DictConfig:
    """A config of the search, validated before the teacher trains; ``teacher=`` is checked
    once the arguments name one (the student's base has none before the teacher exists)."""
    from benchmark.config.validate import validate_config

    try:
        config = build_config(args)
        has_teacher = any(a.partition("=")[0].lstrip("+") == "teacher" for a in args)
        validate_config(config, skip=() if has_teacher else ("teacher",))
        return config
    except UserError as exc:
        raise UserError(f"Search file {spec.path}: {exc}") from exc
