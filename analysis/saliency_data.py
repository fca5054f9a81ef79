"""Per-sample teacher saliency and the synthetic data's ground truth, read from disk.

Where the scores come from, in order of preference:

1. the **teacher cache** (``<cache>/<split>.saliency.npy``, every registered definition,
   computed once from the frozen teacher when its students were trained). It covers the
   train split, over which dataset-level saliency is defined (docs/protocol.md §5.2), and val/test.
   The cache is found through the students' ``method_details.teacher_cache`` or by scanning
   ``<cache_dir>/teacher/*/meta.json`` for the teacher's run id.
2. the teacher's **predictions.parquet** (val/test only): the logits of the three views are
   put through :func:`benchmark.distill.saliency.compute_saliency` for each definition.

Ground truth (synthetic data only) is ``<dataset data_dir>/<ground_truth>``, a jsonl with one
record per sample (``file``, ``index``, ``image_reliance``, ``text_reliance``); it is joined on
the split's annotation file name and the record index, which is the ``sample_index`` of the
run store and the row of the cache.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.load import read_predictions


@dataclass
class TeacherSaliency:
    """Per-sample saliency of one teacher on one split, for each definition."""

    run_id: str
    split: str
    source: str  # "cache" or "predictions"
    sample_index: np.ndarray
    scores: dict[str, tuple[np.ndarray, np.ndarray]]  # definition -> (s_image, s_text)

    def difference(self, definition: str = "divergence") -> np.ndarray:
        s_image, s_text = self.scores[definition]
        return s_image - s_text


def find_cache(teacher_id: str, runs: pd.DataFrame, cache_dir: str | Path | None = None) -> Path | None:
    """The teacher-cache directory of a teacher run, if it still exists."""
    if not runs.empty and "teacher_cache" in runs:
        used = runs[(runs["teacher_run"] == teacher_id) & runs["teacher_cache"].notna()]
        for path in used["teacher_cache"].unique():
            if (Path(path) / "meta.json").exists():
                return Path(path)
    if cache_dir is not None:
        for meta in sorted(Path(cache_dir).glob("teacher/*/meta.json")):
            try:
                inputs = json.loads(meta.read_text()).get("inputs", {})
            except (OSError, json.JSONDecodeError):
                continue
            if inputs.get("teacher_run") == teacher_id:
                return meta.parent
    return None


def from_cache(path: Path, teacher_id: str, split: str) -> TeacherSaliency | None:
    meta = json.loads((path / "meta.json").read_text())
    file = path / f"{split}.saliency.npy"
    if not file.exists():
        return None
    array = np.load(file, mmap_mode="r")
    definitions = list(meta.get("saliency_definitions") or [])
    scores = {d: (np.asarray(array[:, j, 0], dtype=np.float64), np.asarray(array[:, j, 1], dtype=np.float64))
              for j, d in enumerate(definitions)}
    return TeacherSaliency(teacher_id, split, "cache", np.arange(array.shape[0]), scores)


def from_predictions(run: pd.Series, split: str) -> TeacherSaliency | None:
    """Recompute every registered saliency definition from the three views' logits."""
    import torch

    from benchmark.distill.saliency import compute_saliency
    from benchmark.registry import registry

    if not run.get("has_predictions") or not run.get("task"):
        return None
    views = {v: read_predictions(run["path"], split, v) for v in ("multi", "image", "text")}
    if any(f.empty or "logits" not in f or f["logits"].isna().any() for f in views.values()):
        return None
    index = views["multi"]["sample_index"].to_numpy()
    if any(not np.array_equal(f["sample_index"].to_numpy(), index) for f in views.values()):
        return None
    logits = {v: torch.tensor(np.stack(f["logits"].to_numpy()), dtype=torch.float32) for v, f in views.items()}
    target = views["multi"]["target"]
    if target.isna().any():
        return None
    raw = target.to_numpy()
    targets = torch.tensor(np.stack(raw) if isinstance(raw[0], (list, np.ndarray)) else raw.astype(np.int64))
    scores = {}
    for definition in registry.names("saliency"):
        sal = compute_saliency(logits, targets, str(run["task"]), method=definition)
        scores[definition] = (sal["image"].double().numpy(), sal["text"].double().numpy())
    return TeacherSaliency(str(run["run_id"]), split, "predictions", index, scores)


def teacher_saliency(teacher: pd.Series, runs: pd.DataFrame, splits: tuple[str, ...] = ("train", "test"),
                     cache_dir: str | Path | None = None) -> TeacherSaliency | None:
    """The first available source for the first split that has one (module docstring)."""
    cache = find_cache(str(teacher["run_id"]), runs, cache_dir)
    for split in splits:
        if cache is not None:
            found = from_cache(cache, str(teacher["run_id"]), split)
            if found is not None:
                return found
        if split in ("val", "test"):
            found = from_predictions(teacher, split)
            if found is not None:
                return found
    return None


@lru_cache(maxsize=32)
def _read_truth(path: str) -> pd.DataFrame:
    return pd.read_json(path, lines=True)


def ground_truth_path(run: pd.Series) -> Path | None:
    """Where the dataset's ground-truth side file is, or None (real data has none)."""
    rel = run.get("ground_truth")
    if not rel:
        return None
    bases = [run.get("data_dir"), run.get("env_data_dir")]
    if run.get("env_data_dir"):
        bases.append(str(Path(str(run["env_data_dir"])) / "datasets"))
    for base in bases:
        if base and (Path(str(base)) / str(rel)).is_file():
            return Path(str(base)) / str(rel)
    return None


def ground_truth(run: pd.Series, split: str) -> pd.DataFrame | None:
    """``sample_index`` and true ``image_reliance - text_reliance`` for a split, or None."""
    path = ground_truth_path(run)
    annotations = (run.get("annotations") or {}).get(split)
    if path is None or not annotations:
        return None
    truth = _read_truth(str(path))
    if not {"file", "index", "image_reliance", "text_reliance"} <= set(truth.columns):
        return None
    frames, offset = [], 0
    for annotation in annotations:
        part = truth[truth["file"].map(lambda f: Path(str(f)).name) == Path(str(annotation)).name]
        if part.empty:
            return None
        frames.append(pd.DataFrame({"sample_index": part["index"].to_numpy() + offset,
                                    "true_diff": (part["image_reliance"] - part["text_reliance"]).to_numpy()}))
        offset += len(part)
    return pd.concat(frames, ignore_index=True)


def spearman_vs_truth(sal: TeacherSaliency, truth: pd.DataFrame, definition: str) -> float:
    """Spearman correlation of estimated vs true (image - text) reliance on the joined samples."""
    from benchmark.distill.saliency import spearman_with_ground_truth

    est = pd.DataFrame({"sample_index": sal.sample_index, "est_diff": sal.difference(definition)})
    joined = est.merge(truth, on="sample_index")
    if len(joined) < 2:
        return float("nan")
    return spearman_with_ground_truth(joined["est_diff"].to_numpy(copy=True), joined["true_diff"].to_numpy(copy=True))
