"""Re-scoring a finished run without training (``msd eval``; MMF's ``run_type=val|test|predict``).

The run is rebuilt from its own stored ``config.yaml`` (as a teacher is for ``teacher=``), its
checkpoint is loaded strictly, and every requested split and view is scored with the trainer's
own functions (:func:`~benchmark.train.evaluate.collect_outputs`, ``score_outputs``,
``predictions_frame``) on the same evaluation batches, so the numbers are those training
reported. Results go to ``<run>/eval/<name>/{metrics.json,predictions.parquet}``; the run's own
``summary.json``, ``metrics.jsonl`` and ``predictions.parquet`` are never touched, so a
re-score on other data cannot be mistaken for the run's result.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf

from benchmark import VIEWS
from benchmark.config.loader import dataset_node, flatten_keys, load_config, parse_args, resolve
from benchmark.data.build import build_dataloader, build_dataset
from benchmark.data.info import DatasetInfo
from benchmark.errors import CheckpointError, ConfigError, DataError
from benchmark.models.build import build_model
from benchmark.tracking.atomic import write_atomic, write_json_atomic
from benchmark.tracking.run_id import hashable_config
from benchmark.tracking.run_store import RunDir, RunStore
from benchmark.train.batching import resolve_device
from benchmark.train.checkpoint import BEST, load_checkpoint, load_weights_strict
from benchmark.train.evaluate import collect_outputs, predictions_frame, score_outputs
from benchmark.train.precision import build_precision
from benchmark.train.seeding import seed_everything

if TYPE_CHECKING:
    from benchmark.train.perturb import Perturbation

EVAL_DIR = "eval"
EVAL_SPLITS = ("train", "val", "test")
METRICS_FILE = "metrics.json"
PREDICTIONS_FILE = "predictions.parquet"
# Arguments of ``msd eval`` that are not config keys: they pick what is scored.
RESUME_FILE_KEY = "checkpoint.resume_file"
# Sections that change what is reported, never a metric's value: left out when deciding
# whether a re-score is comparable with the run's summary.
_REPORTING_SECTIONS = ("evaluation",)


@dataclass
class SummaryComparison:
    """How far the re-scored metrics are from those the run stored at the end of training."""

    compared: int
    max_abs_diff: float
    worst_key: str | None

    def to_dict(self) -> dict[str, Any]:
        return {"compared": self.compared, "max_abs_diff": self.max_abs_diff, "worst_key": self.worst_key}


@dataclass
class ScoredCheckpoint:
    metrics: dict[str, float]
    predictions: pd.DataFrame
    checkpoint_step: int | None


@dataclass
class RescoreResult:
    run: RunDir
    name: str
    path: Path
    splits: list[str]
    views: list[str]
    checkpoint: Path
    metrics: dict[str, float]
    comparison: SummaryComparison | None  # None: other data, other checkpoint or other model keys

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run.run_id,
            "run_dir": str(self.run.path),
            "name": self.name,
            "path": str(self.path),
            "splits": self.splits,
            "views": self.views,
            "checkpoint": str(self.checkpoint),
            "metrics": self.metrics,
            "summary_comparison": None if self.comparison is None else self.comparison.to_dict(),
        }


def rescore(
    run_ref: str,
    *,
    save_dir: str | Path,
    splits: Sequence[str] | None = None,
    data_dir: str | Path | None = None,
    views: Sequence[str] | None = None,
    overrides: Sequence[str] = (),
    checkpoint: str | Path | None = None,
    perturbation: Perturbation | None = None,
    perturb_seed: int | None = None,
) -> RescoreResult:
    """Score a stored run's checkpoint again and write the result under ``<run>/eval/<name>``.

    ``run_ref`` is a run id, a unique prefix of one, or a run directory (as ``teacher=``).
    ``data_dir`` is an MMF data root (the folder holding ``datasets/``, as ``env.data_dir``);
    ``overrides`` are ``key=value`` strings applied to the run's config (strictly: a key the
    config does not have is refused); ``checkpoint`` (or ``checkpoint.resume_file=`` among the
    overrides) scores another checkpoint file with the run's config. Splits and views default
    to the run's ``evaluation.splits`` and ``evaluation.views``. Nothing is written unless every
    split was scored. ``perturbation`` (benchmark/train/perturb.py) corrupts every evaluation
    batch, seeded by ``perturb_seed`` (default: the robustness spec's seed); its name and level
    go into the eval directory's name and record.
    """
    overrides = list(overrides)
    if checkpoint is None:
        checkpoint = _override_value(overrides, RESUME_FILE_KEY)
    if data_dir is not None:
        overrides.append(f"env.data_dir={Path(data_dir).expanduser().resolve()}")
    run = find_scorable_run(run_ref, save_dir, own_checkpoint=checkpoint is None)
    stored, config = run_config(run, overrides)
    chosen_splits = _choose("split", splits, config.evaluation.splits, EVAL_SPLITS)
    chosen_views = _choose("view", views, config.evaluation.views, VIEWS)
    checkpoint_path = Path(checkpoint).expanduser().resolve() if checkpoint is not None else run.file(BEST)

    transform = None
    if perturbation is not None:
        from benchmark.train.perturb import load_spec, loader_transform

        perturb_seed = load_spec().seed if perturb_seed is None else int(perturb_seed)
        transform = loader_transform(perturbation, perturb_seed, config)
    scored = score_checkpoint(config, checkpoint_path, chosen_splits, chosen_views, transform=transform)

    comparable = (checkpoint is None and (perturbation is None or perturbation.is_identity)
                  and _same_scoring_config(stored, config) and _same_data(run, stored, config))
    comparison = compare_with_summary(scored.metrics, run.read_summary() or {}) if comparable else None
    name = eval_name(chosen_splits, chosen_views, overrides, None if checkpoint is None else checkpoint_path)
    if perturbation is not None:
        name += f"_{perturbation.tag}_seed{perturb_seed}"
    target = run.file(EVAL_DIR) / name
    record = {
        "run_id": run.run_id,
        "name": name,
        "splits": chosen_splits,
        "views": chosen_views,
        "data_dir": str(config.env.data_dir),
        "overrides": overrides,
        "checkpoint": str(checkpoint_path),
        "checkpoint_step": scored.checkpoint_step,
        "metrics": scored.metrics,
        "summary_comparison": None if comparison is None else comparison.to_dict(),
        "perturbation": None if perturbation is None else {**perturbation.describe(), "seed": perturb_seed},
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    publish_eval(target, record, scored.predictions)
    return RescoreResult(run, name, target, chosen_splits, chosen_views, checkpoint_path, scored.metrics, comparison)


# -- the command line ------------------------------------------------------------------------
@dataclass
class EvalArgs:
    """``msd eval``'s trailing arguments: what to score, and config overrides."""

    splits: list[str]
    views: list[str]
    data_dir: str | None
    overrides: list[str]
    perturb: str | None = None  # ``image_noise:0.5`` (benchmark/train/perturb.py)
    perturb_seed: int | None = None


_LIST_ARGS = {"split": "splits", "splits": "splits", "view": "views", "views": "views"}


def parse_eval_args(args: Sequence[str]) -> EvalArgs:
    """``split=val split=test views=[multi,image] data_dir=... key=value``: ``split=`` and
    ``views=`` may be repeated or comma separated; everything else is a config override."""
    parsed = EvalArgs(splits=[], views=[], data_dir=None, overrides=[])
    for arg in args:
        key, sep, value = arg.partition("=")
        if not sep:
            raise ConfigError(f"Argument {arg!r} is not of the form key=value (e.g. split=test, views=multi,image).")
        key = key.strip()
        if key in _LIST_ARGS:
            items = [v.strip().strip("'\"") for v in value.strip().strip("[]").split(",")]
            getattr(parsed, _LIST_ARGS[key]).extend(v for v in items if v)
        elif key == "data_dir":
            parsed.data_dir = value.strip()
        elif key == "perturb":
            parsed.perturb = value.strip()
        elif key == "perturb_seed":
            try:
                parsed.perturb_seed = int(value)
            except ValueError:
                raise ConfigError(f"perturb_seed={value!r} is not an integer.") from None
        else:
            parsed.overrides.append(arg)
    return parsed


# -- the run and its config ------------------------------------------------------------------
def find_scorable_run(run_ref: str, save_dir: str | Path, *, own_checkpoint: bool) -> RunDir:
    """The run, refused unless it is complete with a checkpoint (when its own is scored)."""
    run = RunStore(save_dir).find(str(run_ref))
    if not run.file("config.yaml").exists():
        raise ConfigError(f"Run {run.path} has no config.yaml, so it cannot be rebuilt.")
    if own_checkpoint:
        status = run.status
        if status != "completed":
            raise CheckpointError(
                f"Run {run.run_id} is not complete (status: {status}), so it has no final checkpoint to score. "
                f"Finish it with `msd run` (it resumes), or score a checkpoint file with {RESUME_FILE_KEY}=<path>."
            )
        if not run.file(BEST).exists():
            raise CheckpointError(f"Run {run.run_id} is marked completed but has no {BEST} in {run.path}.")
    return run


def run_config(run: RunDir, overrides: Sequence[str]) -> tuple[DictConfig, DictConfig]:
    """(the run's config, the config to score with): both resolved.

    The stored config is laid over today's defaults for its model and dataset, so a key added
    since the run was trained holds its default (and can be overridden) instead of being
    missing. A new ``env.data_dir`` moves every dataset path that lay under the old one, which
    is what the dataset YAML's ``${env.data_dir}`` interpolation did before the config was
    stored resolved.
    """
    saved = run.read_config()
    for key in ("model", "dataset"):
        if not saved.get(key):
            raise ConfigError(f"{run.file('config.yaml')} names no {key}; it is not a run config.")
    merged = OmegaConf.merge(load_config([f"model={saved.model}", f"dataset={saved.dataset}"]), saved)
    _keep_saved_presets(merged, saved)
    stored = resolve(merged)
    config = resolve(_apply_overrides(merged, overrides))
    _move_data_dir(config, old=str(stored.env.data_dir), new=str(config.env.data_dir))
    return stored, config


def _keep_saved_presets(merged: DictConfig, saved: DictConfig) -> None:
    """Put back the run's own size presets, replacing today's instead of merging into them.

    A preset is laid over the model's shared keys when the model is built, so a key that
    today's preset gained (a new ``fusion.type``, say) would silently rebuild the stored run
    as another architecture and its checkpoint would no longer load. Shared keys still merge:
    a key added there since holds its default, which keeps the old behaviour.
    """
    for name, model_config in (saved.get("model_config") or {}).items():
        if isinstance(model_config, DictConfig) and "presets" in model_config:
            merged.model_config[name].presets = OmegaConf.create(OmegaConf.to_container(model_config.presets))


def _apply_overrides(config: DictConfig, overrides: Sequence[str]) -> DictConfig:
    parsed = parse_args(overrides)
    fixed = [k for k in ("config", "model", "dataset") if getattr(parsed, k)]
    if fixed:
        raise ConfigError(
            f"{', '.join(f'{k}=' for k in fixed)} cannot change when re-scoring: the run's checkpoint fixes "
            "its model and dataset. Point data_dir= at other data of the same dataset instead."
        )
    config = OmegaConf.merge(config)  # a copy
    known = set(flatten_keys(config))
    for key, value, is_new in parsed.overrides:
        if not is_new and key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=3, cutoff=0.5)
            hint = f" Closest valid keys: {', '.join(close)}." if close else ""
            raise ConfigError(
                f"Unknown config key {key!r} for this run.{hint} msd eval takes split=, views=, data_dir= "
                f"and keys of the run's config.yaml; +{key}=... adds a new key on purpose."
            )
        OmegaConf.update(config, key, value, merge=True, force_add=True)
    return config


def _move_data_dir(config: DictConfig, *, old: str, new: str) -> None:
    if old == new:
        return
    node = dataset_node(config)
    for dotted in flatten_keys(node):
        value = OmegaConf.select(node, dotted)
        if isinstance(value, str) and (value == old or value.startswith(old.rstrip("/") + "/")):
            OmegaConf.update(node, dotted, new + value[len(old):])


def _override_value(overrides: Sequence[str], key: str) -> str | None:
    for arg in overrides:
        name, _, value = arg.partition("=")
        if name.lstrip("+").strip() == key and value.strip() not in ("", "null", "None"):
            return value.strip()
    return None


def _choose(kind: str, requested: Sequence[str] | None, default: Sequence[str], allowed: Sequence[str]) -> list[str]:
    chosen = [str(x) for x in (requested if requested else default)]
    if not chosen:
        raise ConfigError(f"No {kind} to score: name one or more of {', '.join(allowed)}.")
    unknown = [x for x in chosen if x not in allowed]
    if unknown:
        raise ConfigError(f"Unknown {kind} {', '.join(map(repr, unknown))}: choose from {', '.join(allowed)}.")
    return list(dict.fromkeys(chosen))


def _same_scoring_config(stored: DictConfig, config: DictConfig) -> bool:
    """Whether the re-score computes what training computed: same run-id-relevant config
    (model, data files, preprocessing, view rule, eval batch size) apart from reporting keys."""

    def relevant(c: DictConfig) -> dict[str, Any]:
        tree = hashable_config(c)
        for section in _REPORTING_SECTIONS:
            tree.pop(section, None)
        return tree

    return relevant(stored) == relevant(config)


def _same_data(run: RunDir, stored: DictConfig, config: DictConfig) -> bool:
    """Whether the data scored now has the content the run trained on (moved or not): the
    fingerprint its summary recorded, else that of the stored config's files."""
    from benchmark.data.fingerprint import data_fingerprint

    recorded = ((run.read_summary() or {}).get("data_fingerprint") or {}).get("digest")
    return data_fingerprint(config).digest == (recorded or data_fingerprint(stored).digest)


# -- scoring ---------------------------------------------------------------------------------
def score_checkpoint(
    config: DictConfig, checkpoint_path: Path, splits: Sequence[str], views: Sequence[str],
    transform: Callable[[Iterable[dict]], Iterable[dict]] | None = None,
) -> ScoredCheckpoint:
    """Metrics and predictions of one checkpoint under ``config``, computed as the trainer does.

    ``transform`` wraps each split's evaluation loader (a test-time perturbation); ``None``
    scores the batches as they are."""
    return score_checkpoint_variants(config, checkpoint_path, splits, views, {"": transform})[""]


def score_checkpoint_variants(
    config: DictConfig, checkpoint_path: Path, splits: Sequence[str], views: Sequence[str],
    transforms: Mapping[str, Callable[[Iterable[dict]], Iterable[dict]] | None],
) -> dict[str, ScoredCheckpoint]:
    """:func:`score_checkpoint` once per named loader transform, with the data and the model
    built once (a robustness curve scores one checkpoint at many perturbation levels)."""
    c = config
    if c.training.get("threads"):
        torch.set_num_threads(int(c.training.threads))
    seed_everything(int(c.training.seed), bool(c.training.deterministic))
    device = resolve_device(str(c.training.device))
    precision = build_precision(bool(c.training.get("fp16", False)), str(c.training.get("amp_dtype", "float16")), device)
    datasets = {split: build_dataset(c, split) for split in splits}
    model, info, payload = load_run_model(c, checkpoint_path, datasets)
    model.to(device)

    metric_names = [str(m) for m in (c.evaluation.metrics or dataset_node(c).metrics)]
    max_labels = int(c.evaluation.get("predictions_max_labels", 64))
    step = payload.get("step") if isinstance(payload, Mapping) else None
    loaders = {split: replayable(build_dataloader(dataset, batch_size=int(c.training.batch_size) * 2, shuffle=False),
                                 uses=len(transforms))
               for split, dataset in datasets.items()}
    scored: dict[str, ScoredCheckpoint] = {}
    for name, transform in transforms.items():
        metrics: dict[str, float] = {}
        frames = []
        for split, loader in loaders.items():
            # The trainer's single-process evaluation (Trainer._setup and _score): the same batches
            # under the same autocast, so the same numbers.
            with precision.autocast():
                outputs = collect_outputs(model, loader if transform is None else transform(loader), tuple(views),
                                          device, split)
            metrics.update(score_outputs(outputs, metric_names, info))
            frames.append(predictions_frame(outputs, info, max_labels))
        scored[name] = ScoredCheckpoint(metrics, pd.concat(frames, ignore_index=True),
                                        None if step is None else int(step))
    return scored


def load_run_model(config: DictConfig, checkpoint_path: Path,
                   datasets: Mapping[str, Any]) -> tuple[torch.nn.Module, DatasetInfo, Any]:
    """(model, dataset info, checkpoint payload): the run's model built from ``config`` with the
    checkpoint's weights loaded strictly, on the CPU, after checking that ``datasets`` (split ->
    dataset) match the data it was trained on. Shared by re-scoring and ``msd cost remeasure``,
    so both evaluate exactly the weights training evaluated."""
    payload = load_checkpoint(checkpoint_path)
    state = _model_state(payload, checkpoint_path)
    info = _trained_info(payload, datasets, checkpoint_path)
    model = build_model(config, info)
    load_weights_strict(model, state, str(checkpoint_path))
    return model, info, payload


REPLAY_BUDGET_BYTES = 512 * 2**20


def replayable(loader: Any, uses: int, budget: int = REPLAY_BUDGET_BYTES) -> Any:
    """The loader's batches kept in memory when they are read more than once and fit in
    ``budget`` (estimated from the first batch); otherwise the loader itself.

    A robustness curve scores one split at many levels: reading and collating the split once
    instead of at every level halved a default-size curve's time in a profile (data loading
    was 7 of 14 s). A split too large to keep (real VQA2) is read again at each level."""
    if uses < 2:
        return loader
    batches = iter(loader)
    first = next(batches, None)
    if first is None:
        return []
    size = sum(v.element_size() * v.nelement() for v in _tensors(first))
    if size * len(loader) > budget:
        return loader
    return [first, *batches]


def _tensors(node: Any) -> list[torch.Tensor]:
    if isinstance(node, torch.Tensor):
        return [node]
    if isinstance(node, Mapping):
        return [t for v in node.values() for t in _tensors(v)]
    if isinstance(node, (list, tuple)):
        return [t for v in node for t in _tensors(v)]
    return []


def _model_state(payload: Any, path: Path) -> dict[str, torch.Tensor]:
    """The weights of a checkpoint: this suite's (and MMF's) ``{"model": state_dict, ...}``,
    or a bare state dict."""
    if isinstance(payload, Mapping):
        state = payload.get("model", payload)
        if isinstance(state, Mapping) and state and all(isinstance(v, torch.Tensor) for v in state.values()):
            return dict(state)
    raise CheckpointError(f"Checkpoint {path} holds no model weights (expected a 'model' state dict).")


# Everything that fixes the model's shapes and the meaning of its outputs.
_INFO_FIELDS = ("name", "task", "num_labels", "label_names", "modality", "feature_dim", "max_features",
                "image_size", "vocab_size", "max_seq_length")


def _trained_info(payload: Any, datasets: Mapping[str, Any], path: Path) -> DatasetInfo:
    """The dataset info the model was trained with, after checking that the data to score has
    the same label space and input shapes (else a model would score labels it never knew)."""
    trained = payload.get("dataset_info") if isinstance(payload, Mapping) else None
    if not trained:
        return next(iter(datasets.values())).info
    info = DatasetInfo(**{**trained, "label_names": tuple(trained.get("label_names") or ())})
    for split, dataset in datasets.items():
        other = dataset.info
        diffs = [f"{f}: {_short(getattr(other, f))} (trained: {_short(getattr(info, f))})"
                 for f in _INFO_FIELDS if _plain(getattr(other, f)) != _plain(getattr(info, f))]
        if diffs:
            raise DataError(
                f"The {split} data ({dataset.key}.data_dir = {dataset.data_dir}) does not match the data checkpoint "
                f"{path} was trained on: {'; '.join(diffs)}. Score it with a model trained on this data."
            )
    return info


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, (list, tuple)) else value


def _short(value: Any) -> str:
    if isinstance(value, (list, tuple)) and len(value) > 4:
        return f"[{', '.join(map(str, value[:3]))}, ... ({len(value)} labels)]"
    return str(_plain(value))


def compare_with_summary(metrics: Mapping[str, float], summary: Mapping[str, Any]) -> SummaryComparison:
    """Largest absolute difference over the metric keys both hold (NaN equals NaN)."""
    stored = summary.get("metrics") or {}
    worst_key, worst = None, 0.0
    shared = [k for k in metrics if k in stored]
    for key in shared:
        a, b = float(metrics[key]), float(stored[key])
        if a != a and b != b:
            continue
        diff = abs(a - b) if (a == a and b == b) else float("inf")
        if diff > worst or worst_key is None:
            worst_key, worst = key, diff
    return SummaryComparison(compared=len(shared), max_abs_diff=worst, worst_key=worst_key)


# -- writing ---------------------------------------------------------------------------------
def eval_name(splits: Sequence[str], views: Sequence[str], overrides: Sequence[str], checkpoint: Path | None) -> str:
    """``val-test_multi-image-text``; with a short hash of the overrides, data dir and
    checkpoint file when any is given, so each variant keeps its own directory."""
    name = f"{'-'.join(splits)}_{'-'.join(views)}"
    varied = {"overrides": sorted(overrides), "checkpoint": None if checkpoint is None else str(checkpoint)}
    if overrides or checkpoint is not None:
        name += "_" + hashlib.sha256(json.dumps(varied, sort_keys=True).encode()).hexdigest()[:8]
    return name


def publish_eval(target: Path, record: dict[str, Any], predictions: pd.DataFrame) -> None:
    """Write both files into a hidden sibling folder and rename it onto ``target``, so a reader
    (or a crash) never sees a metrics file without its predictions or a mix of two re-scores."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        write_atomic(staging / PREDICTIONS_FILE, lambda tmp: predictions.to_parquet(tmp, index=False))
        write_json_atomic(staging / METRICS_FILE, record)
        if target.exists():
            retired = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.old")
            os.replace(target, retired)
            os.replace(staging, target)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
