"""Reading the synthetic generators' ground-truth side file for the saliency check."""

from __future__ import annotations

import json

import numpy as np
from omegaconf import OmegaConf

from benchmark.distill.ground_truth import saliency_truth_correlation, true_reliance


def _config(data_dir: str) -> OmegaConf:
    return OmegaConf.create({"dataset": "toy", "dataset_config": {"toy": {
        "data_dir": data_dir, "ground_truth": "toy/extras/truth.jsonl",
        "annotations": {"train": ["toy/annotations/train.jsonl"], "val": ["toy/annotations/val.jsonl"]}}}})


def _write_truth(root, rows):
    path = root / "toy" / "extras" / "truth.jsonl"
    path.parent.mkdir(parents=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_true_reliance_reads_a_home_relative_data_dir(tmp_path, monkeypatch):
    # Run configs keep "~/..." unexpanded (portable run ids); the reader must expand it.
    monkeypatch.setenv("HOME", str(tmp_path))
    rows = [{"file": "annotations/val.jsonl", "split": "val", "index": i,
             "image_reliance": float(i % 2), "text_reliance": float(1 - i % 2)} for i in (2, 0, 1)]
    _write_truth(tmp_path / "data", rows)
    indices, diff = true_reliance(_config("~/data"), "val")
    assert indices.tolist() == [0, 1, 2] and diff.tolist() == [-1.0, 1.0, -1.0]
    assert true_reliance(_config("~/data"), "train") is None  # no rows for that file


def test_correlation_against_a_cached_saliency_by_hand(tmp_path):
    rows = [{"file": "annotations/val.jsonl", "split": "val", "index": i,
             "image_reliance": r, "text_reliance": 0.0} for i, r in enumerate([0.0, 1.0, 2.0, 3.0])]
    _write_truth(tmp_path, rows)
    cache = tmp_path / "cache"
    cache.mkdir()
    # [samples, definitions, (image, text)]: definition 0 ranks like the truth, definition 1 reversed.
    saliency = np.zeros((4, 2, 2), dtype=np.float16)
    saliency[:, 0, 0] = [0.1, 0.2, 0.3, 0.4]
    saliency[:, 1, 1] = [0.1, 0.2, 0.3, 0.4]
    np.save(cache / "val.saliency.npy", saliency)
    rho = saliency_truth_correlation(_config(str(tmp_path)), cache, ["divergence", "loss"])
    assert rho == {"val": {"divergence": 1.0, "loss": -1.0}}
