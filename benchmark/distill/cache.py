"""The teacher-output cache (docs/architecture.md §4.6).

After a teacher is trained, its logits on all three views and its per-sample saliency (every
registered definition) are computed once per split and shared by every student run, so a
student step never runs the teacher. Layout::

    <env.cache_dir>/teacher/<key>/
        meta.json                 key, inputs, shapes, teacher metric re-check
        <split>.logits.npy        float16 [N, 3 views, C]   (memory-mapped when read)
        <split>.saliency.npy      float32 [N, definitions, 2 modalities]

``N`` is the number of records in the split's annotation files and rows are indexed by a
sample's ``sample_index``, so the train and meta subsets share the train arrays. The
directory is built under a temporary name and renamed when complete.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.progress import Progress

from benchmark import VIEWS
from benchmark.config.loader import dataset_node
from benchmark.data.build import build_dataloader, build_dataset
from benchmark.distill.fingerprint import (
    dataset_files,
    digest,
    path_fingerprint,
    preprocessing_payload,
    sha256_file,
)
from benchmark.distill.ground_truth import saliency_truth_correlation
from benchmark.distill.saliency import compute_saliency
from benchmark.distill.teacher import LoadedTeacher
from benchmark.errors import CheckpointError
from benchmark.registry import registry
from benchmark.train.batching import to_device
from benchmark.train.checkpoint import BEST
from benchmark.train.metrics import compute_metrics

CACHE_VERSION = 1
CACHED_SPLITS = ("train", "val", "test")
MODALITIES = ("image", "text")
FP16_MAX = 6.0e4
console = Console(stderr=True)


class StaleCacheError(RuntimeError):
    """The cache on disk does not match what it claims to hold; it will be rebuilt."""


def full_split_config(config: DictConfig) -> DictConfig:
    """The config with no meta hold-out, so ``train`` covers the whole train file."""
    copy = OmegaConf.create(OmegaConf.to_container(config, resolve=True))
    OmegaConf.update(copy, "data.meta_split.fraction", 0.0, force_add=True)
    return copy


def cache_key(config: DictConfig, teacher: LoadedTeacher) -> tuple[str, dict]:
    dataset_cfg = dataset_node(config)
    inputs = {
        "version": CACHE_VERSION,
        "teacher_checkpoint_sha256": sha256_file(teacher.run.file(BEST)),
        "teacher_run": teacher.run.run_id,
        "dataset": config.dataset,
        "dataset_files": [path_fingerprint(p) for p in dataset_files(dataset_cfg, CACHED_SPLITS)],
        "preprocessing": preprocessing_payload(dataset_cfg),
        "view_rule": str(teacher.config.views.removal),
        "splits": list(CACHED_SPLITS),
    }
    return digest(inputs)[:20], inputs


@dataclass
class TeacherCache:
    path: Path
    meta: dict

    @property
    def definitions(self) -> list[str]:
        return list(self.meta["saliency_definitions"])

    def _array(self, split: str, kind: str) -> np.ndarray:
        arrays = self.__dict__.setdefault("_arrays", {})
        if (split, kind) not in arrays:
            arrays[(split, kind)] = np.load(self.path / f"{split}.{kind}.npy", mmap_mode="r")
        return arrays[(split, kind)]

    def logits(self, split: str, sample_index: torch.Tensor) -> dict[str, torch.Tensor]:
        rows = np.asarray(self._array(split, "logits")[sample_index.cpu().numpy()], dtype=np.float32)
        return {view: torch.from_numpy(rows[:, i]) for i, view in enumerate(VIEWS)}

    def saliency(self, split: str, sample_index: torch.Tensor, definition: str) -> dict[str, torch.Tensor]:
        j = self.definitions.index(definition)
        rows = np.asarray(self._array(split, "saliency")[sample_index.cpu().numpy(), j], dtype=np.float32)
        return {m: torch.from_numpy(rows[:, i].copy()) for i, m in enumerate(MODALITIES)}

    def population_saliency(self, split: str, sample_index: np.ndarray, definition: str) -> dict[str, float]:
        j = self.definitions.index(definition)
        rows = np.asarray(self._array(split, "saliency")[np.sort(sample_index), j], dtype=np.float64)
        return {m: float(rows[:, i].mean()) for i, m in enumerate(MODALITIES)}

    def validate(self) -> None:
        """Shapes and sizes of every file against meta.json (catches truncation)."""
        for split, shape in self.meta["shapes"].items():
            for kind in ("logits", "saliency"):
                try:
                    array = np.load(self.path / f"{split}.{kind}.npy", mmap_mode="r")
                except (OSError, ValueError) as exc:
                    raise StaleCacheError(f"{split}.{kind}.npy is unreadable ({exc})") from exc
                expected = tuple(shape[kind])
                if array.shape != expected:
                    raise StaleCacheError(f"{split}.{kind}.npy has shape {array.shape}, expected {expected}")


def open_cache(path: Path, key: str) -> TeacherCache:
    meta_path = path / "meta.json"
    if not meta_path.exists():
        raise StaleCacheError("meta.json is missing")
    meta = json.loads(meta_path.read_text())
    if meta.get("key") != key:
        raise StaleCacheError(f"it was built for key {meta.get('key')}, not {key}")
    cache = TeacherCache(path, meta)
    cache.validate()
    return cache


def spot_check(cache: TeacherCache, config: DictConfig, teacher: LoadedTeacher, device: torch.device, k: int) -> None:
    """Re-run the live teacher on ``k`` training samples and compare with the cache."""
    if k <= 0:
        return
    dataset = build_dataset(full_split_config(config), "train")
    picks = np.random.default_rng(0).choice(len(dataset), size=min(k, len(dataset)), replace=False)
    batch = torch.utils.data.default_collate([dataset[int(i)] for i in picks])
    batch = to_device(batch, device)
    with torch.no_grad():
        live = teacher.model.forward_views(batch, VIEWS)
    cached = cache.logits("train", batch["sample_index"])
    for view in VIEWS:
        expected = live[view].float().cpu().clamp(-FP16_MAX, FP16_MAX)
        if not torch.allclose(cached[view], expected, atol=2e-2, rtol=2e-2):
            diff = float((cached[view] - expected).abs().max())
            raise StaleCacheError(f"view {view!r} differs from the live teacher by up to {diff:.4g}")


def build_cache(config: DictConfig, teacher: LoadedTeacher, key: str, inputs: dict, target: Path, device: torch.device) -> TeacherCache:
    full = full_split_config(config)
    dataset_cfg = dataset_node(config)
    definitions = registry.names("saliency")
    tmp = target.with_name(f".{target.name}.building")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    shapes: dict[str, dict] = {}
    recheck: dict[str, float] = {}
    with Progress(console=console, transient=True) as progress:
        for split in CACHED_SPLITS:
            dataset = build_dataset(full, split)
            loader = build_dataloader(dataset, batch_size=int(config.training.batch_size) * 2, shuffle=False)
            n, c = len(dataset), dataset.info.num_labels
            logits_out = np.lib.format.open_memmap(tmp / f"{split}.logits.npy", "w+", np.float16, (n, len(VIEWS), c))
            sal_out = np.lib.format.open_memmap(tmp / f"{split}.saliency.npy", "w+", np.float32, (n, len(definitions), 2))
            multi, targets = [], []
            task = progress.add_task(f"teacher cache {config.dataset}/{split}", total=len(loader))
            for batch in loader:
                batch = to_device(batch, device)
                with torch.no_grad():
                    outputs = {v: t.float() for v, t in teacher.model.forward_views(batch, VIEWS).items()}
                rows = batch["sample_index"].cpu().numpy()
                stacked = torch.stack([outputs[v] for v in VIEWS], 1).clamp(-FP16_MAX, FP16_MAX)
                logits_out[rows] = stacked.cpu().numpy().astype(np.float16)
                for j, name in enumerate(definitions):
                    sal = compute_saliency(outputs, batch["targets"], dataset.info.task, method=name)
                    sal_out[rows, j] = torch.stack([sal[m] for m in MODALITIES], 1).cpu().numpy()
                multi.append(outputs["multi"].cpu())
                targets.append(batch["targets"].cpu())
                progress.advance(task)
            logits_out.flush()
            sal_out.flush()
            del logits_out, sal_out
            shapes[split] = {"logits": [n, len(VIEWS), c], "saliency": [n, len(definitions), 2]}
            if split == "val":
                recheck = compute_metrics([str(dataset_cfg.headline_metric)], torch.cat(multi), torch.cat(targets),
                                          dataset.info.task, prefix=f"val/{config.dataset}", view="multi")
    _recheck_teacher_metric(teacher, recheck)
    meta = {"key": key, "inputs": inputs, "shapes": shapes, "saliency_definitions": definitions,
            "teacher_recheck": recheck, "dtype": "float16"}
    (tmp / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True, default=str))
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    _record_truth_correlation(full, teacher, target, definitions)
    return TeacherCache(target, meta)


def _record_truth_correlation(config: DictConfig, teacher: LoadedTeacher, target: Path, definitions: list[str]) -> None:
    """Write the saliency-vs-ground-truth Spearman ρ into the teacher's summary (synthetic data only)."""
    correlation = saliency_truth_correlation(config, target, definitions)
    if correlation:
        teacher.run.update_summary(saliency_vs_ground_truth=correlation)
        teacher.summary["saliency_vs_ground_truth"] = correlation


def _recheck_teacher_metric(teacher: LoadedTeacher, recheck: dict[str, float], tol: float = 1e-3) -> None:
    recorded = teacher.summary.get("metrics") or {}
    for key, value in recheck.items():
        if key in recorded and abs(float(recorded[key]) - float(value)) > tol:
            raise CheckpointError(
                f"Teacher {teacher.run.run_id}: {key} recomputed now is {value:.4f} but its summary says "
                f"{float(recorded[key]):.4f}. The data, code or checkpoint changed since the teacher was "
                "trained; retrain the teacher (or restore the data it was trained on)."
            )


def get_teacher_cache(
    config: DictConfig, teacher: LoadedTeacher, device: torch.device, *, spot_check_samples: int = 4,
    rebuild: bool = False,
) -> TeacherCache:
    """Open the cache for this teacher and dataset, building or rebuilding it when needed."""
    key, inputs = cache_key(config, teacher)
    target = Path(str(config.env.cache_dir)) / "teacher" / key
    if target.exists() and not rebuild:
        try:
            cache = open_cache(target, key)
            spot_check(cache, config, teacher, device, spot_check_samples)
            if "saliency_vs_ground_truth" not in teacher.summary:  # a cache built before it was recorded
                _record_truth_correlation(full_split_config(config), teacher, target,
                                          list(cache.meta["saliency_definitions"]))
            return cache
        except StaleCacheError as exc:
            console.print(f"[yellow]Teacher cache {target} is stale or corrupt ({exc}); rebuilding it.[/yellow]", soft_wrap=True)
    return build_cache(config, teacher, key, inputs, target, device)
