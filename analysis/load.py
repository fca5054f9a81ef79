"""The run store as tidy pandas frames: one row per run, predictions joined on demand.

Why more than :meth:`RunStore.index`: a table cell must aggregate *comparable* runs only.
Two things can make runs of the same (dataset, method, weighting, seed) incomparable:

* a **variant** — a [rule] key changed on purpose (``distill.temperature=2`` or
  ``distill.saliency=shapley`` in the ablation grid). Each run's variant is the set of
  result-changing keys under ``distill.* / views.* / data.meta_split.* / checkpoint.rule``
  (and the dataset's split files) whose value differs from the shipped defaults; Table 2
  uses only runs whose variant is empty, so ablations never leak into it.
* a **setting** — everything else that is not identity or variant (epochs, batch size, model
  sizes, data location and size, ...). A store holding both a ``--scale smoke`` grid and
  the default grid has two settings per dataset; the analysis uses, per dataset, the setting
  with the most completed student runs (ties: the most recent) and says how many runs of
  other settings it ignored. Teachers follow their students (the teacher runs the selected
  students distilled from), or the same setting when no student distils.

Which settings are allowed is the grid's call when one is given (:mod:`analysis.scope`:
``--grid experiments/table2.yaml --scale default`` admits only the settings that grid makes at
that scale), so a smoke grid or a calibration sweep never enters the default tables however
many runs it has. HPO trials never enter them either (each trial is its own sampled setting;
``config.hpo`` marks them).

Only runs with ``status == "completed"`` count; the checkpoint is not required, so a store
whose checkpoints were deleted to save space still analyses.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from omegaconf import OmegaConf

from analysis.spec import DATASET_TITLES, row_label
from benchmark.config.loader import DEFAULTS_FILE, flatten_dotted
from benchmark.data.content_hash import content_hash
from benchmark.tracking.run_id import VOLATILE_KEYS

VARIANT_PREFIXES: tuple[str, ...] = ("distill.", "views.", "data.meta_split.", "checkpoint.rule")
NON_RESULT_KEYS: frozenset[str] = frozenset({"distill.cache_spot_check", "distill.teacher_source"})
"""Keys under a variant prefix that do not change what a run computes (a smoke grid lowers
the cache spot check; a live teacher gives the same outputs as the cache)."""
IDENTITY_KEYS: tuple[str, ...] = ("method", "weighting", "distill.weighting", "teacher", "training.seed", "run_name")
"""``distill.weighting`` is the newer home of the MSD scheme: identity, never a variant."""
DATASET_VARIANT_KEYS: tuple[str, ...] = ("annotations.val", "annotations.test")
VARIANT_LABELS: dict[str, str] = {
    "distill.temperature": "τ",
    "distill.saliency": "saliency",
    "distill.class_reduction": "D over classes",
    "distill.alpha": "alpha",
    "distill.weighting_params.temperature": "T_w",
    "views.removal": "removal",
    "views.teacher_loss": "teacher view loss",
}


def same_value(a: Any, b: Any) -> bool:
    """Config values equal up to int/float spelling (``1`` vs ``1.0``)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b or a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return abs(float(a) - float(b)) <= 1e-12 * max(1.0, abs(float(a)))
    return json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)


def _is_variant_key(key: str, dataset: str) -> bool:
    if key in NON_RESULT_KEYS or key in IDENTITY_KEYS:
        return False
    if key.startswith(VARIANT_PREFIXES) or key == "checkpoint.rule":
        return True
    return any(key == f"dataset_config.{dataset}.{k}" for k in DATASET_VARIANT_KEYS)


@cache
def _defaults(dataset: str, model: str) -> dict[str, Any]:
    """The shipped default value of every variant key for this (dataset, model)."""
    from omegaconf import OmegaConf

    from benchmark.config.loader import load_config

    args = [f"dataset={dataset}"] + ([f"model={model}"] if model else [])
    try:
        config = OmegaConf.to_container(load_config(args), resolve=False)
    except Exception:  # noqa: BLE001 - an unknown dataset/model: compare with the plain defaults
        config = OmegaConf.to_container(load_config([]), resolve=False)
    return {k: v for k, v in flatten_dotted(config).items() if _is_variant_key(k, dataset)}


def default_value(key: str, dataset: str = "hateful_memes", model: str = "") -> Any:
    """The shipped default of a variant key (``distill.temperature`` -> 1.0)."""
    return _defaults(dataset, model).get(key)


def variant_of(flat: dict[str, Any], dataset: str, model: str) -> tuple[tuple[str, Any], ...]:
    """The result-changing keys whose value differs from the defaults, sorted."""
    defaults = _defaults(dataset, model)
    out = []
    for key, value in flat.items():
        if not _is_variant_key(key, dataset):
            continue
        if key not in defaults or not same_value(value, defaults[key]):
            out.append((key, value))
    return tuple(sorted(out, key=lambda kv: kv[0]))


def variant_label(variant: Iterable[tuple[str, Any]]) -> str:
    """``"τ=2"``, ``"saliency=shapley"``; empty for the default variant."""
    parts = []
    for key, value in variant:
        name = VARIANT_LABELS.get(key, key.rpartition(".")[2])
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        parts.append(f"{name}={value}")
    return ",".join(parts)


def setting_of(flat: dict[str, Any], dataset: str) -> str:
    """A short hash of everything that is neither volatile, identity nor variant."""
    kept = {}
    for key, value in flat.items():
        if key.split(".")[0] in ("model_config", "dataset_config"):
            section, _, rest = key.partition(".")
            active = flat.get("model") if section == "model_config" else dataset
            if not rest.startswith(f"{active}."):
                continue
            if section == "dataset_config" and rest == f"{active}.data_dir":
                continue  # where the data lives is not what it is (as in the run id): a moved data folder keeps its runs
        if any(key == v or key.startswith(v + ".") for v in (*VOLATILE_KEYS, *IDENTITY_KEYS)):
            continue
        if _is_variant_key(key, dataset) or key in NON_RESULT_KEYS:
            continue
        kept[key] = value
    payload = json.dumps(kept, sort_keys=True, default=str)
    return hashlib.sha1(payload.encode()).hexdigest()[:10]


MANIFEST = "msd_synthetic.json"  # benchmark.data.make: what a generated dataset holds


@lru_cache(maxsize=64)
def _manifest_counts(path: str) -> dict[str, int]:
    try:
        summary = json.loads(Path(path).read_text()).get("summary") or {}
    except (OSError, json.JSONDecodeError):
        return {}
    return {str(k): int(v) for k, v in (summary.get("splits") or {}).items()}


@lru_cache(maxsize=256)
def _file_count(path: str) -> int | None:
    """Samples in one annotation file: the generator's manifest when there is one (free), else
    the file's non-empty lines (real MMF data: one JSON object per line)."""
    file = Path(path)
    for parent in file.parents:
        manifest = parent / MANIFEST
        if manifest.exists():
            counts = _manifest_counts(str(manifest))
            for stem in (file.stem, file.stem.removeprefix("imdb_")):  # VQA2: imdb_val2014.npy -> val2014
                if stem in counts:
                    return counts[stem]
            break
        if parent == parent.parent or parent.name == "datasets":
            break
    if file.suffix == ".jsonl" and file.exists():
        with file.open("rb") as handle:
            return sum(1 for line in handle if line.strip())
    return None


@cache
def _suite_defaults() -> Any:
    return OmegaConf.load(DEFAULTS_FILE)


def current_data_root() -> Path:
    """Where a run started now would read its data (``env.data_dir`` of the defaults, so
    MSD_DATA_DIR or the user cache), as the ``datasets`` folder split files are relative to."""
    return Path(_suite_defaults().env.data_dir).expanduser() / "datasets"  # oc.env resolves on access


def data_found_at(data_dir: str | None, fingerprints: dict[str, str] | None) -> str | None:
    """The ``datasets`` folder that holds a run's data now: the recorded one while it exists.

    A run store outlives the data folder it was trained from (a from-nothing rebuild in a
    scratch folder, whose runs are then copied into ``results/``). When the recorded folder is
    gone, the current data folder is taken instead, but only if every file the run read has
    there the content hash the run recorded (``data_fingerprint``; a sidecar makes that one
    ``stat`` a file): the same bytes, so the same counts and ground truth. Other data under
    the same names is never read for a run. None when neither holds the data."""
    if data_dir and Path(data_dir).is_dir():
        return data_dir
    here = current_data_root()
    if fingerprints and all(content_hash(here / rel) == digest for rel, digest in fingerprints.items()):
        return str(here)
    return None


def split_sizes(splits: dict[str, list[str]], data_dir: str | None) -> dict[str, int | None]:
    """Samples per split (train, val, test) of a run, from its summary's split files and the
    data's manifest; None where the files cannot be found (data moved or deleted)."""
    out: dict[str, int | None] = {}
    for split, files in splits.items():
        counts = [_file_count(str(Path(data_dir or "", f))) for f in files or []]
        out[split] = sum(counts) if counts and all(c is not None for c in counts) else None
    return out


def _run_row(path: Path) -> dict[str, Any] | None:
    try:
        summary = json.loads((path / "summary.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    try:
        config = yaml.safe_load((path / "config.yaml").read_text()) or {}
    except (FileNotFoundError, yaml.YAMLError):
        config = {}
    flat = flatten_dotted(config)
    dataset = str(summary.get("dataset") or config.get("dataset"))
    model = str(summary.get("model") or config.get("model") or "")
    method = str(summary.get("method") or config.get("method"))
    weighting = summary.get("weighting") if method == "msd" else None
    if method == "msd" and weighting is None:
        weighting = config.get("weighting") or flat.get("distill.weighting")
    details = summary.get("method_details") or {}
    info = summary.get("dataset_info") or {}
    variant = variant_of(flat, dataset, model)
    row: dict[str, Any] = {
        "run_id": path.name,
        "path": str(path),
        "status": str(summary.get("status", "unknown")),
        "dataset": dataset,
        "model": model,
        "method": method,
        "weighting": weighting,
        "seed": int(summary.get("seed", flat.get("training.seed", 0)) or 0),
        "teacher_run": details.get("teacher_run") or summary.get("teacher"),
        "teacher_cache": details.get("teacher_cache"),
        "row": row_label(method, weighting),
        "variant": variant,
        "variant_label": variant_label(variant),
        "setting": setting_of(flat, dataset),
        "task": info.get("task"),
        "image_size": info.get("image_size") or None,  # pixel datasets: the side the images are read at
        "headline_metric": summary.get("headline_metric"),
        "model_params": summary.get("model_params"),
        "finished_at": summary.get("finished_at"),
        "wall_time_s": summary.get("wall_time_s"),
        "train_time_s": summary.get("train_time_s"),
        "hpo_study": hpo.get("study") if isinstance(hpo := config.get("hpo"), dict) else None,
        "has_predictions": (path / "predictions.parquet").exists(),
        "has_metrics": (path / "metrics.jsonl").exists(),
        "data_dir": (data_dir := data_found_at(flat.get(f"dataset_config.{dataset}.data_dir"),
                                               (summary.get("data_fingerprint") or {}).get("files"))),
        "ground_truth": flat.get(f"dataset_config.{dataset}.ground_truth"),
        "env_data_dir": flat.get("env.data_dir"),
        "annotations": {s: flat.get(f"dataset_config.{dataset}.annotations.{s}") for s in ("train", "val", "test")},
        "max_epochs": flat.get("training.max_epochs"),
        "max_updates": flat.get("training.max_updates"),
        "epochs_run": summary.get("epochs_started"),
        "batch_size": flat.get("training.batch_size"),
        "early_stop": bool(flat.get("training.early_stop.enabled", False)),
        "patience": flat.get("training.early_stop.patience"),
        "meta_hold_out": (flat.get("data.meta_split.fraction") if flat.get("data.meta_split.hold_out") == "all"
                          else None),
        "split_sizes": split_sizes(summary.get("splits") or {}, data_dir),
    }
    row.update({k: float(v) for k, v in (summary.get("metrics") or {}).items() if isinstance(v, (int, float))})
    return row


def load_runs(save_dir: str | Path) -> pd.DataFrame:
    """Every run directory under ``save_dir`` with a readable summary (any status)."""
    root = Path(save_dir)
    rows = []
    if root.is_dir():
        for path in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
            row = _run_row(path)
            if row is not None:
                rows.append(row)
    frame = pd.DataFrame(rows)
    if frame.empty:
        return pd.DataFrame(columns=["run_id", "path", "status", "dataset", "method", "weighting", "seed",
                                     "row", "variant", "variant_label", "setting", "finished_at"])
    frame["completed"] = frame["status"] == "completed"
    return frame


def select_setting(runs: pd.DataFrame, scope: Any = None) -> tuple[pd.DataFrame, list[str]]:
    """Completed runs of the allowed settings per dataset (see the module docstring), and notes.

    ``scope`` (an :class:`analysis.scope.GridScope`) admits, for the datasets its grids cover,
    only the settings they make; other datasets fall back to the setting with the most
    completed student runs. HPO trials are always left out. Returns the selected runs and
    human-readable notes about what was left out, for the tables' footnotes and the report.
    """
    done = runs[runs.get("completed", pd.Series(dtype=bool)).astype(bool)] if not runs.empty else runs
    if done.empty:
        return done, []
    notes: list[str] = []
    if "hpo_study" in done:
        trials = done["hpo_study"].notna()
        if trials.any():
            notes.append(f"{int(trials.sum())} completed HPO trial run(s) left out of the tables "
                         f"(studies: {', '.join(sorted(map(str, done.loc[trials, 'hpo_study'].unique())))}).")
            done = done[~trials]
    chosen: list[pd.DataFrame] = []
    for dataset, group in done.groupby("dataset", sort=False):
        if scope is not None and scope.covers(dataset):
            picked = group[group["setting"].isin(scope.settings[dataset])]
            ignored = len(group) - len(picked)
            if ignored:
                notes.append(f"{DATASET_TITLES.get(dataset, dataset)}: {ignored} completed run(s) not made by grid {scope.label()} "
                             "(another scale or grid, or made by an older config) were ignored.")
            if not picked.empty:
                chosen.append(picked)
            continue
        students = group[group["method"] != "teacher"]
        pool = students if not students.empty else group
        stats = pool.groupby("setting").agg(n=("run_id", "size"), latest=("finished_at", lambda s: str(max(map(str, s)))))
        setting = stats.sort_values(["n", "latest"], ascending=False).index[0]
        picked = pool[pool["setting"] == setting]
        teacher_ids = set(picked["teacher_run"].dropna())
        teachers = group[(group["method"] == "teacher") & (group["run_id"].isin(teacher_ids) | (group["setting"] == setting))]
        if not students.empty:
            picked = pd.concat([picked, teachers])
        ignored = len(group) - len(picked)
        if scope is not None:
            notes.append(f"{DATASET_TITLES.get(dataset, dataset)}: no grid of {scope.label()} makes this dataset; its runs of the setting with "
                         "the most student runs are used.")
        if ignored:
            notes.append(f"{DATASET_TITLES.get(dataset, dataset)}: {ignored} completed run(s) of another configuration (e.g. another grid "
                         f"scale or model) were ignored; the {len(picked)} runs of setting {setting} are used.")
        chosen.append(picked)
    if not chosen:
        return done.iloc[0:0], notes
    return pd.concat(chosen, ignore_index=True), notes


def select(runs: pd.DataFrame, dataset: str, method: str, weighting: str | None = None,
           variant: tuple[tuple[str, Any], ...] = ()) -> pd.DataFrame:
    """Runs of one table cell: dataset, method, weighting (MSD only) and exact variant."""
    if runs.empty:
        return runs
    mask = (runs["dataset"] == dataset) & (runs["method"] == method)
    if method == "msd":
        mask &= runs["weighting"] == weighting
    mask &= runs["variant"].map(lambda v: same_variant(v, variant))
    return runs[mask].sort_values("seed")


def same_variant(a: tuple[tuple[str, Any], ...], b: tuple[tuple[str, Any], ...]) -> bool:
    """Two variants are the same keys with the same values (``2`` equals ``2.0``)."""
    return len(a) == len(b) and all(ka == kb and same_value(va, vb) for (ka, va), (kb, vb) in zip(a, b))


@lru_cache(maxsize=256)
def _read_predictions(path: str) -> pd.DataFrame:
    return pd.read_parquet(Path(path) / "predictions.parquet")


def read_predictions(run_path: str | Path, split: str, view: str = "multi") -> pd.DataFrame:
    """One run's per-sample outputs on a split and view, sorted by ``sample_index``."""
    frame = _read_predictions(str(run_path))
    part = frame[(frame["split"] == split) & (frame["view"] == view)]
    return part.sort_values("sample_index").reset_index(drop=True)


def predictions(runs: pd.DataFrame, split: str, view: str | None = None) -> pd.DataFrame:
    """Predictions of many runs joined with their keys (dataset, row, seed, variant, ...)."""
    keys = ["run_id", "dataset", "method", "weighting", "row", "seed", "variant_label"]
    frames = []
    for _, run in runs[runs["has_predictions"]].iterrows():
        frame = _read_predictions(str(run["path"]))
        part = frame[frame["split"] == split]
        if view is not None:
            part = part[part["view"] == view]
        part = part.copy()
        for key in keys:
            part[key] = run[key]
        frames.append(part)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=[*keys, "split", "view"])
