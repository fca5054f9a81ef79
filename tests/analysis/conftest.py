"""A hand-built run store, so the analysis tests need no training.

``FakeStore.add_run`` writes one run directory the way the trainer does: ``config.yaml``,
``summary.json`` (metrics computed with the suite's own metric functions from the
predictions it writes, so summaries and predictions agree), ``predictions.parquet`` (three
views on val and test), ``metrics.jsonl`` (with MSD weight records) and an empty
``checkpoint.pt``. Model quality is a ``skill`` knob: logits = skill · signal + noise.
Helpers are handed out as fixtures because the suite imports tests with
``--import-mode=importlib``.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from benchmark.train.metrics import compute_metrics

N_SAMPLES = 60
TASKS = {
    "hateful_memes": ("single_label", 2, ["roc_auc", "accuracy", "binary_f1"], "roc_auc"),
    "mmimdb": ("multi_label", 6, ["multilabel_micro_f1", "multilabel_macro_f1", "accuracy"], "multilabel_micro_f1"),
    "vqa2": ("soft_score", 7, ["vqa_accuracy"], "vqa_accuracy"),
}


def _targets(dataset: str, rng: np.random.Generator) -> np.ndarray:
    task, classes, _, _ = TASKS[dataset]
    if task == "single_label":
        return rng.integers(0, classes, N_SAMPLES)
    if task == "multi_label":
        hot = (rng.random((N_SAMPLES, classes)) < 0.35).astype(np.float32)
        hot[:, 0] = 0.0  # MMF's <unk> column is never positive
        return hot
    soft = np.zeros((N_SAMPLES, classes), dtype=np.float32)
    soft[np.arange(N_SAMPLES), rng.integers(1, classes, N_SAMPLES)] = 1.0
    soft[np.arange(N_SAMPLES), rng.integers(1, classes, N_SAMPLES)] += 0.3
    return np.minimum(soft, 1.0)


def _logits(dataset: str, targets: np.ndarray, skill: float, rng: np.random.Generator) -> np.ndarray:
    task, classes, _, _ = TASKS[dataset]
    signal = np.eye(classes)[targets] if task == "single_label" else targets * 2 - 1
    return (skill * signal + rng.normal(0, 1, (N_SAMPLES, classes))).astype(np.float32)


def _frame(split: str, view: str, targets: np.ndarray, logits: np.ndarray, task: str) -> pd.DataFrame:
    masked = logits.copy()
    if task == "soft_score":
        masked[:, 0] = -np.inf
    pred = masked.argmax(1)
    frame = pd.DataFrame({"split": split, "view": view, "sample_index": np.arange(N_SAMPLES),
                          "id": [str(1000 + i) for i in range(N_SAMPLES)], "pred": pred})
    if task == "single_label":
        frame["target"] = targets
        frame["score"] = (pred == targets).astype(np.float32)
    elif task == "soft_score":
        frame["score"] = targets[np.arange(N_SAMPLES), pred]
        frame["target"] = list(targets)
    else:
        frame["target"] = list(targets)
        frame["score"] = (((1 / (1 + np.exp(-logits))) > 0.5) == (targets > 0.5)).mean(1)
    frame["logits"] = list(logits)
    return frame


@cache
def _annotations(dataset: str) -> dict[str, list[str]]:
    """The shipped split files (a run with other files would be an ablation variant)."""
    from benchmark.config.loader import load_config

    node = load_config([f"dataset={dataset}"]).dataset_config[dataset].annotations
    return {split: list(node[split]) for split in ("train", "val", "test")}


class FakeStore:
    """Writes run directories under ``root/runs`` (and ground truth under ``root/data``)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.runs = self.root / "runs"
        self.data = self.root / "data"
        self.runs.mkdir(parents=True, exist_ok=True)

    def _truth(self, dataset: str) -> str:
        """A ground-truth side file: the image decides even samples, the text odd ones."""
        path = self.data / dataset / "extras" / "msd_ground_truth.jsonl"
        test_file = Path(_annotations(dataset)["test"][0]).name
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            lines = [json.dumps({"file": f"annotations/{test_file}", "split": "test", "index": i, "id": 1000 + i,
                                 "image_reliance": 1.0 if i % 2 == 0 else 0.0,
                                 "text_reliance": 0.0 if i % 2 == 0 else 1.0}) for i in range(N_SAMPLES)]
            path.write_text("\n".join(lines) + "\n")
        return f"{dataset}/extras/msd_ground_truth.jsonl"

    def add_run(self, dataset: str, method: str, weighting: str | None = None, seed: int = 0, skill: float = 1.0,
                variant: dict[str, Any] | None = None, status: str = "completed", params: int | None = None,
                epochs: int = 8) -> Path:
        task, classes, metrics, headline = TASKS[dataset]
        variant = variant or {}
        distill = {"alpha": 0.5, "temperature": 1.0, "saliency": "divergence", "cache_spot_check": 4}
        for key, value in variant.items():
            distill[key.split(".", 1)[1]] = value
        config = {
            "dataset": dataset, "model": "late_fusion", "method": method,
            "weighting": weighting if method == "msd" else "none", "teacher": None,
            "training": {"seed": seed, "max_epochs": epochs, "batch_size": 64},
            "distill": distill, "views": {"removal": "drop"},
            "env": {"data_dir": str(self.data), "save_dir": str(self.runs)},
            "dataset_config": {dataset: {
                "data_dir": str(self.data), "ground_truth": self._truth(dataset),
                "annotations": _annotations(dataset)}},
        }
        teacher = None if method in ("teacher", "student_only") else f"{dataset}-teacher-seed{seed}"
        # The id (and so the noise of the logits) must not depend on the tmp path: stable data.
        key = json.dumps([dataset, method, weighting, seed, variant, epochs, skill, status], sort_keys=True)
        run_id = f"{dataset}-{method}-{hashlib.sha1(key.encode()).hexdigest()[:12]}"
        if method == "teacher":
            run_id = f"{dataset}-teacher-seed{seed}" + ("" if epochs == 8 else f"-e{epochs}")
        path = self.runs / run_id
        path.mkdir(parents=True, exist_ok=True)
        (path / "config.yaml").write_text(yaml.safe_dump(config))
        noise = np.random.default_rng(int(hashlib.sha1(run_id.encode()).hexdigest()[:8], 16))
        frames, scores = [], {}
        for split in ("val", "test"):
            # One test set for every run of a dataset, as in reality (seeds change the model only).
            targets = _targets(dataset, np.random.default_rng([ord(split[0]), len(dataset)]))
            for view, factor in (("multi", 1.0), ("image", 0.6), ("text", 0.4)):
                logits = _logits(dataset, targets, skill * factor, noise)
                frames.append(_frame(split, view, targets, logits, task))
                scores.update(compute_metrics(metrics, torch.tensor(logits), torch.tensor(targets), task,
                                              prefix=f"{split}/{dataset}", view=view))
        pd.concat(frames, ignore_index=True).to_parquet(path / "predictions.parquet", index=False)
        records = [{"trainer/global_step": s, "type": "val", f"val/{dataset}/{headline}": 0.5} for s in (10, 20, 30)]
        if method == "msd":
            for i, r in enumerate(records):
                r.update({"weight/image_mean": 1.0 + 0.1 * i, "weight/text_mean": 1.0 - 0.1 * i,
                          "weight/image_std": 0.05, "weight/text_std": 0.05})
        (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
        (path / "checkpoint.pt").write_bytes(b"")
        summary = {
            "run_id": run_id, "status": status, "dataset": dataset, "model": "late_fusion", "method": method,
            "weighting": weighting if method == "msd" else None, "seed": seed, "teacher": teacher,
            "metrics": scores if status == "completed" else {}, "headline_metric": headline,
            "headline": {s: scores[f"{s}/{dataset}/{headline}"] for s in ("val", "test")},
            "model_params": params or (4_000_000 if method == "teacher" else 1_000_000),
            "dataset_info": {"task": task, "num_labels": classes, "name": dataset},
            "method_details": {"teacher_run": teacher, "temperature": distill["temperature"]},
            "finished_at": f"2026-01-01T00:00:{seed:02d}+00:00", "wall_time_s": 1.0, "train_time_s": 0.5,
        }
        (path / "summary.json").write_text(json.dumps(summary))
        return path

    def add_grid(self, datasets: tuple[str, ...] = ("hateful_memes", "mmimdb", "vqa2"), seeds: tuple[int, ...] = (0, 1, 2),
                 skills: dict[str, float] | None = None) -> None:
        """Teacher, student, KD and the four MSD schemes for every dataset and seed."""
        skills = skills or {"teacher": 2.0, "student_only": 0.6, "kd": 0.8, "msd/uniform": 0.85,
                            "msd/population": 0.8, "msd/instance": 1.6, "msd/learned": 0.7}
        for dataset in datasets:
            for seed in seeds:
                for cell, skill in skills.items():
                    method, _, weighting = cell.partition("/")
                    self.add_run(dataset, method, weighting or None, seed, skill + 0.05 * seed)

    def remove(self, dataset: str, method: str, weighting: str | None = None, seed: int | None = None) -> list[str]:
        removed = []
        for path in sorted(self.runs.iterdir()):
            s = json.loads((path / "summary.json").read_text())
            if (s["dataset"], s["method"], s.get("weighting")) == (dataset, method, weighting) and seed in (None, s["seed"]):
                shutil.rmtree(path)
                removed.append(path.name)
        return removed

    def summaries(self) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        """``(summary, config)`` of every run, read back from disk."""
        return [(json.loads((p / "summary.json").read_text()), yaml.safe_load((p / "config.yaml").read_text()))
                for p in sorted(self.runs.iterdir())]


@pytest.fixture
def fake_store(tmp_path) -> FakeStore:
    """An empty fake store in this test's tmp dir."""
    return FakeStore(tmp_path / "store")


@pytest.fixture(scope="session")
def analyzed_store(tmp_path_factory) -> tuple[FakeStore, Path]:
    """A full fake grid, analysed once with ``msd analyze all`` (tables, figures, report)."""
    from typer.testing import CliRunner

    from benchmark.cli import app

    store = FakeStore(tmp_path_factory.mktemp("analyzed") / "store")
    store.add_grid()
    store.add_run("hateful_memes", "kd", seed=0, skill=0.1, variant={"distill.temperature": 2.0})
    store.add_run("mmimdb", "kd", seed=1, skill=0.2, variant={"distill.class_reduction": "sum"})
    out = store.root / "results"
    result = CliRunner().invoke(app, ["analyze", "all", "--save-dir", str(store.runs), "--out", str(out),
                                      "--cache-dir", str(store.root / "cache"), "--bootstrap", "200",
                                      "--expected-seeds", "3", "--wandb-dir", str(store.root / "wandb"),
                                      "--scope", "largest"])  # the fake runs were made by no grid file
    assert result.exit_code == 0, result.output
    return store, out


@pytest.fixture
def store_tools() -> Any:
    from types import SimpleNamespace

    return SimpleNamespace(FakeStore=FakeStore, N_SAMPLES=N_SAMPLES, TASKS=TASKS)
