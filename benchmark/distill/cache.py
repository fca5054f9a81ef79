"""The teacher-output cache (see docs/cache.md).

After a teacher is trained, its logits on all three views and its per-sample saliency (every
registered definition) are computed once per split and shared by every student run, so a
student step never runs the teacher. Layout::

    <env.cache_dir>/teacher/<key>/
        meta.json                 key, inputs, array specs with per-chunk checksums, teacher metric re-check
        <split>.logits.npy        float16 [N, 3 views, C]          (memory-mapped when read)
        <split>.saliency.npy      float32 [N, definitions, 2 modalities]

``N`` is the number of records in the split's annotation files and rows are indexed by a
sample's ``sample_index``, so the train and meta subsets share the train arrays.

Each array is one plain ``.npy`` file whose rows are grouped into fixed-size chunks of about
4 MiB, each with an xxh3 checksum in meta.json (:mod:`benchmark.distill.cache_store` says why
one file with chunk-aligned rows rather than a file per chunk). The build holds one batch and
the chunk being filled, whatever ``N`` is; opening checks sizes and headers only, and a chunk's
checksum is checked the first time a row of it is read. Small caches (up to
``EAGER_VERIFY_BYTES``) are checked whole when opened, so damage is found before training and
the cache rebuilt; in a large one a damaged chunk stops training with a message saying how to
rebuild (``msd cache verify`` checks every chunk up front).

Concurrency: opening never writes. The build runs under a lock (so two runs needing the same
cache build it once), into a temporary directory renamed into place when complete, so a
partially built cache is never visible.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.progress import Progress

from benchmark import MODALITIES, VIEWS
from benchmark.config.loader import dataset_node
from benchmark.data.build import build_dataloader, build_dataset
from benchmark.distill.cache_store import (
    CHUNK_BYTES,
    ChunkedArray,
    ChunkedArrayWriter,
    CorruptCacheError,
    StaleCacheError,
    chunk_rows_for,
)
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
from benchmark.grid.locks import FileLock
from benchmark.registry import registry
from benchmark.train.batching import to_device
from benchmark.train.checkpoint import BEST
from benchmark.train.metrics import compute_metrics, metric_key

__all__ = ["CACHE_VERSION", "CorruptCacheError", "StaleCacheError", "TeacherCache", "build_cache", "cache_key",
           "get_teacher_cache", "open_cache", "write_split"]

CACHE_VERSION = 2  # 2: chunked arrays with per-chunk checksums in meta.json
CACHED_SPLITS = ("train", "val", "test")
KINDS = ("logits", "saliency")
FP16_MAX = 6.0e4
EAGER_VERIFY_BYTES = 256 << 20
"""Caches up to this size are checked whole when opened (about 0.1 s from disk, far less from the
page cache); larger ones chunk by chunk as rows are read."""
console = Console(stderr=True)

TeacherBatch = tuple[np.ndarray, dict[str, torch.Tensor], torch.Tensor]
"""``(sample_index rows, float32 logits per view [B, C], targets)``: what one split's writer consumes."""


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


def cache_root(config: DictConfig) -> Path:
    return Path(str(config.env.cache_dir)) / "teacher"


def rebuild_command(meta: dict) -> str:
    inputs = meta.get("inputs") or {}
    return (f"msd cache build --rebuild teacher={inputs.get('teacher_run', '<teacher run>')} "
            f"dataset={inputs.get('dataset', '<dataset>')}")


# -- reading ---------------------------------------------------------------------------------------
@dataclass
class TeacherCache:
    """A built cache, read through memory maps; every chunk is checked before its rows are used."""

    path: Path
    meta: dict
    _arrays: dict[tuple[str, str], ChunkedArray] = field(default_factory=dict, repr=False)

    @property
    def definitions(self) -> list[str]:
        return list(self.meta["saliency_definitions"])

    @property
    def nbytes(self) -> int:
        return sum(self._array(split, kind).nbytes for split in self.meta["arrays"] for kind in KINDS)

    def _array(self, split: str, kind: str) -> ChunkedArray:
        if (split, kind) not in self._arrays:
            hint = (f"Rebuild the cache: `{rebuild_command(self.meta)}` (or delete {self.path}; "
                    "the next run that needs it rebuilds it).")
            self._arrays[(split, kind)] = ChunkedArray(self.path, self.meta["arrays"][split][kind],
                                                       describe=f"Teacher cache {self.path}: {split}.{kind}",
                                                       rebuild_hint=hint)
        return self._arrays[(split, kind)]

    def logits(self, split: str, sample_index: torch.Tensor) -> dict[str, torch.Tensor]:
        rows = np.asarray(self._array(split, "logits").take(sample_index.cpu().numpy()), dtype=np.float32)
        return {view: torch.from_numpy(rows[:, i]) for i, view in enumerate(VIEWS)}

    def saliency(self, split: str, sample_index: torch.Tensor, definition: str) -> dict[str, torch.Tensor]:
        j = self.definitions.index(definition)
        rows = np.asarray(self._array(split, "saliency").take(sample_index.cpu().numpy())[:, j], dtype=np.float32)
        return {m: torch.from_numpy(rows[:, i].copy()) for i, m in enumerate(MODALITIES)}

    def population_saliency(self, split: str, sample_index: np.ndarray, definition: str) -> dict[str, float]:
        j = self.definitions.index(definition)
        rows = np.asarray(self._array(split, "saliency").take(np.sort(sample_index))[:, j], dtype=np.float64)
        return {m: float(rows[:, i].mean()) for i, m in enumerate(MODALITIES)}

    def validate(self) -> None:
        """Sizes and headers of every file against meta.json (catches truncation); reads no data."""
        for split in self.meta["arrays"]:
            for kind in KINDS:
                self._array(split, kind).check_layout()

    def arrays(self) -> Iterator[tuple[str, ChunkedArray]]:
        """``("<split>.<kind>", array)`` for every array in the cache."""
        for split in self.meta["arrays"]:
            for kind in KINDS:
                yield f"{split}.{kind}", self._array(split, kind)

    def verify_all(self, on_bytes: Callable[[int], None] | None = None) -> None:
        """Check every chunk now (``msd cache verify``, and small caches on open)."""
        for _, array in self.arrays():
            for nbytes in array.verify_all():
                if on_bytes is not None:
                    on_bytes(nbytes)

    def close(self) -> None:
        for array in self._arrays.values():
            array.close()


VERIFY_ON_OPEN: dict[str, Callable[[TeacherCache], bool]] = {
    "lazy": lambda cache: False,
    "full": lambda cache: True,
    "auto": lambda cache: cache.nbytes <= EAGER_VERIFY_BYTES,
}
"""Whether opening checks every chunk at once; chunks not checked then are checked on first read."""


def open_cache(path: Path, key: str, verify: str = "auto") -> TeacherCache:
    """Open a built cache read-only; :class:`StaleCacheError` if it is not exactly what ``key`` names."""
    if verify not in VERIFY_ON_OPEN:
        raise ValueError(f"verify must be one of {sorted(VERIFY_ON_OPEN)}, got {verify!r}")
    meta_path = Path(path) / "meta.json"
    if not meta_path.exists():
        raise StaleCacheError("meta.json is missing")
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError) as exc:
        raise StaleCacheError(f"meta.json is unreadable ({exc})") from exc
    if meta.get("key") != key:
        raise StaleCacheError(f"it was built for key {meta.get('key')}, not {key}")
    version = meta.get("version", (meta.get("inputs") or {}).get("version"))
    if version != CACHE_VERSION or not isinstance(meta.get("arrays"), dict):
        raise StaleCacheError(f"it was written by cache format version {version}, without per-chunk checksums; "
                              f"this version reads format {CACHE_VERSION}")
    cache = TeacherCache(Path(path), meta)
    try:
        cache.validate()
        if VERIFY_ON_OPEN[verify](cache):
            cache.verify_all()
    except (KeyError, TypeError, ValueError) as exc:
        raise StaleCacheError(f"meta.json does not describe its arrays ({exc!r})") from exc
    return cache


def spot_check(cache: TeacherCache, config: DictConfig, teacher: LoadedTeacher, device: torch.device, k: int) -> None:
    """Re-run the live teacher on ``k`` training samples and compare with the cache.

    Complements the checksums: they say the bytes are the ones written; this says the teacher
    (code and weights) still produces them.
    """
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


# -- writing ---------------------------------------------------------------------------------------
STREAMED_METRICS = frozenset({"accuracy", "vqa_accuracy"})
"""Metrics that are a mean of per-sample scores, so the mean of per-batch values weighted by batch
size is exact. The others (ROC AUC, F1) need every sample at once; the datasets that use them
have at most a few dozen classes, so holding their val logits costs tens of MB even at 200k
samples, while VQA2's 3,129 answers would cost GBs (and VQA2's metric streams)."""


class MetricRecheck:
    """The teacher's val metric, recomputed from the logits being cached, in bounded memory."""

    def __init__(self, names: Iterable[str], task: str, prefix: str) -> None:
        self.names, self.task, self.prefix = list(names), task, prefix
        self.sums = {name: 0.0 for name in self.names if name in STREAMED_METRICS}
        self.count = 0
        self.kept: list[tuple[torch.Tensor, torch.Tensor]] = []

    def add(self, logits: torch.Tensor, targets: torch.Tensor) -> None:
        logits, targets = logits.detach().float().cpu(), targets.detach().cpu()
        for name in self.sums:
            self.sums[name] += registry.get_metric(name)(logits, targets, self.task) * logits.size(0)
        self.count += logits.size(0)
        if len(self.sums) < len(self.names):
            self.kept.append((logits, targets))

    def result(self) -> dict[str, float]:
        out = {metric_key(self.prefix, name): value / self.count for name, value in self.sums.items() if self.count}
        rest = [name for name in self.names if name not in self.sums]
        if rest and self.kept:
            logits, targets = (torch.cat(parts) for parts in zip(*self.kept))
            out.update(compute_metrics(rest, logits, targets, self.task, prefix=self.prefix, view="multi"))
        return out


def write_split(directory: Path, split: str, batches: Iterable[TeacherBatch], n: int, num_labels: int, task: str,
                definitions: list[str], chunk_bytes: int = CHUNK_BYTES,
                recheck: MetricRecheck | None = None) -> dict[str, dict]:
    """Write one split's logits and saliency from its batches; returns the array specs for meta.json.

    Memory: one batch, the chunks being filled (one or two, since an unshuffled loader gives
    rows in order) and whatever ``recheck`` keeps.
    """
    shapes = {"logits": (n, len(VIEWS), num_labels), "saliency": (n, len(definitions), len(MODALITIES))}
    dtypes = {"logits": np.float16, "saliency": np.float32}
    writers = {}
    try:
        for kind in KINDS:
            row_bytes = int(np.prod(shapes[kind][1:])) * np.dtype(dtypes[kind]).itemsize
            writers[kind] = ChunkedArrayWriter(Path(directory) / f"{split}.{kind}.npy", shapes[kind], dtypes[kind],
                                               chunk_rows_for(row_bytes, chunk_bytes))
        for rows, outputs, targets in batches:
            stacked = torch.stack([outputs[v] for v in VIEWS], 1).clamp(-FP16_MAX, FP16_MAX)
            writers["logits"].write(rows, stacked.cpu().numpy().astype(np.float16))
            saliency = [compute_saliency(outputs, targets, task, method=name) for name in definitions]
            writers["saliency"].write(rows, torch.stack(
                [torch.stack([s[m].float() for m in MODALITIES], 1) for s in saliency], 1).cpu().numpy())
            if recheck is not None:
                recheck.add(outputs["multi"], targets)
        return {kind: writer.finish() for kind, writer in writers.items()}
    finally:
        for writer in writers.values():
            writer.close()


def teacher_batches(teacher: LoadedTeacher, loader: Iterable[dict], device: torch.device,
                    on_batch: Callable[[], None] | None = None) -> Iterator[TeacherBatch]:
    for batch in loader:
        batch = to_device(batch, device)
        with torch.no_grad():
            outputs = {v: t.float() for v, t in teacher.model.forward_views(batch, VIEWS).items()}
        yield batch["sample_index"].cpu().numpy(), outputs, batch["targets"]
        if on_batch is not None:
            on_batch()


def cache_meta(key: str, inputs: dict, arrays: dict[str, dict], definitions: list[str],
               recheck: dict[str, float]) -> dict:
    return {"version": CACHE_VERSION, "key": key, "inputs": inputs, "arrays": arrays,
            "shapes": {split: {kind: spec["shape"] for kind, spec in kinds.items()} for split, kinds in arrays.items()},
            "saliency_definitions": definitions, "teacher_recheck": recheck, "dtype": "float16"}


def publish(tmp: Path, target: Path) -> None:
    """Move a complete build into place; a replaced cache is renamed away first, then deleted
    (readers that still map its files keep them until they close)."""
    old = target.with_name(f".{target.name}.old.{os.getpid()}")
    if target.exists():
        target.rename(old)
    tmp.rename(target)
    shutil.rmtree(old, ignore_errors=True)


def build_cache(config: DictConfig, teacher: LoadedTeacher, key: str, inputs: dict, target: Path,
                device: torch.device, chunk_bytes: int = CHUNK_BYTES) -> TeacherCache:
    """Compute and write the cache; call it holding :func:`build_lock` (``get_teacher_cache`` does)."""
    full = full_split_config(config)
    dataset_cfg = dataset_node(config)
    definitions = registry.names("saliency")
    started = time.perf_counter()
    tmp = target.with_name(f".{target.name}.building")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        arrays: dict[str, dict] = {}
        recheck: dict[str, float] = {}
        with Progress(console=console, transient=True) as progress:
            for split in CACHED_SPLITS:
                dataset = build_dataset(full, split)
                loader = build_dataloader(dataset, batch_size=int(config.training.batch_size) * 2, shuffle=False)
                metric = (MetricRecheck([str(dataset_cfg.headline_metric)], dataset.info.task,
                                        prefix=f"val/{config.dataset}") if split == "val" else None)
                task = progress.add_task(f"teacher cache {config.dataset}/{split}", total=len(loader))
                batches = teacher_batches(teacher, loader, device, on_batch=lambda t=task: progress.advance(t))
                arrays[split] = write_split(tmp, split, batches, len(dataset), dataset.info.num_labels,
                                            dataset.info.task, definitions, chunk_bytes, recheck=metric)
                if metric is not None:
                    recheck = metric.result()
        _recheck_teacher_metric(teacher, recheck)
        meta = cache_meta(key, inputs, arrays, definitions, recheck)
        # what the cache cost to build (the distillation-cost table, docs/efficiency.md); not in the key
        meta["build"] = {"time_s": round(time.perf_counter() - started, 3), "device": str(device)}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1, sort_keys=True, default=str))
        publish(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
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


# -- the normal path -------------------------------------------------------------------------------
def build_lock(config: DictConfig, key: str) -> FileLock:
    """One builder per cache key; the lock lives outside ``teacher/`` so listings never show it."""
    return FileLock(Path(str(config.env.cache_dir)) / ".locks" / f"teacher-{key}.lock")


def _superseded(root: Path, inputs: dict) -> list[Path]:
    """Caches of the same teacher and dataset written by an older cache format."""
    found = []
    for meta_path in sorted(root.glob("*/meta.json")):
        try:
            old = json.loads(meta_path.read_text())
        except (OSError, ValueError):
            continue
        old_inputs = old.get("inputs") or {}
        if (old_inputs.get("teacher_run"), old_inputs.get("dataset")) == (inputs["teacher_run"], inputs["dataset"]) \
                and old_inputs.get("version") != CACHE_VERSION:
            found.append(meta_path.parent)
    return found


def _open_checked(target: Path, key: str, config: DictConfig, teacher: LoadedTeacher, device: torch.device,
                  spot_check_samples: int, verify: str, quiet: bool = False) -> TeacherCache | None:
    if not target.exists():
        return None
    try:
        cache = open_cache(target, key, verify=verify)
        spot_check(cache, config, teacher, device, spot_check_samples)
        return cache
    except StaleCacheError as exc:
        if not quiet:
            console.print(f"[yellow]Teacher cache {target} is stale or corrupt ({exc}); rebuilding it.[/yellow]",
                          soft_wrap=True)
        return None


def get_teacher_cache(
    config: DictConfig, teacher: LoadedTeacher, device: torch.device, *, spot_check_samples: int = 4,
    rebuild: bool = False, verify: str = "auto",
) -> TeacherCache:
    """Open the cache for this teacher and dataset, building or rebuilding it when needed.

    Opening is read-only, so any number of processes (DDP ranks, grid workers) may open at
    once. A build takes the cache's lock; a process that waited for it opens what the holder
    built instead of building again.
    """
    key, inputs = cache_key(config, teacher)
    target = cache_root(config) / key
    args = (target, key, config, teacher, device, spot_check_samples, verify)
    cache = None if rebuild else _open_checked(*args)
    if cache is not None:
        return cache
    with build_lock(config, key):
        cache = None if rebuild else _open_checked(*args, quiet=True)
        if cache is not None:
            return cache
        for old in _superseded(target.parent, inputs):
            console.print(f"[yellow]Teacher cache {old} was written by an older cache format; building a new one "
                          f"at {target} (the old one is no longer read and can be deleted).[/yellow]", soft_wrap=True)
        return build_cache(config, teacher, key, inputs, target, device)
