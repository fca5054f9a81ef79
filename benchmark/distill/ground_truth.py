"""How well the teacher's saliency recovers the modality reliance the generator recorded.

The synthetic generators write, in a side file never read by training, which evidence
decides each sample (``image_reliance``, ``text_reliance`` per annotation ``file`` and
``index``). Joined with the teacher cache's per-sample saliency, the Spearman correlation of
``s_image - s_text`` with ``image_reliance - text_reliance`` measures the saliency estimator
(docs/protocol.md §5.4, §10.1). Real datasets have no side file, and get no correlation.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from omegaconf import DictConfig

from benchmark.config.loader import dataset_node
from benchmark.distill.saliency import spearman_with_ground_truth


def true_reliance(config: DictConfig, split: str) -> tuple[np.ndarray, np.ndarray] | None:
    """``(sample_index, image_reliance - text_reliance)`` for a split, or None without a side file."""
    node = dataset_node(config)
    if not node.get("ground_truth"):
        return None
    root = Path(str(node.data_dir)).expanduser()  # a run config keeps "~" (run ids stay portable)
    path = root / str(node.ground_truth)
    annotations = list(node.annotations.get(split, []) or [])
    if not path.is_file() or not annotations:
        return None
    by_file: dict[str, dict[int, float]] = {}
    with open(path) as handle:
        for line in handle:
            record = json.loads(line)
            by_file.setdefault(Path(str(record["file"])).name, {})[int(record["index"])] = (
                float(record["image_reliance"]) - float(record["text_reliance"])
            )
    indices, diffs, offset = [], [], 0
    for annotation in annotations:
        part = by_file.get(Path(str(annotation)).name)
        if not part:
            return None
        for index, diff in sorted(part.items()):
            indices.append(offset + index)
            diffs.append(diff)
        offset += len(part)
    return np.asarray(indices), np.asarray(diffs)


def saliency_truth_correlation(config: DictConfig, cache_path: Path, definitions: list[str],
                               splits: tuple[str, ...] = ("train", "val")) -> dict[str, dict[str, float]]:
    """``{split: {definition: spearman rho}}`` for the splits that have ground truth."""
    out: dict[str, dict[str, float]] = {}
    for split in splits:
        truth = true_reliance(config, split)
        saliency_file = cache_path / f"{split}.saliency.npy"
        if truth is None or not saliency_file.exists():
            continue
        indices, true_diff = truth
        saliency = np.load(saliency_file, mmap_mode="r")
        keep = indices < saliency.shape[0]
        indices, true_diff = indices[keep], true_diff[keep]
        out[split] = {
            name: float(spearman_with_ground_truth(
                np.asarray(saliency[indices, j, 0] - saliency[indices, j, 1], dtype=np.float64), true_diff))
            for j, name in enumerate(definitions)
        }
    return out
