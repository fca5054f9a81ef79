"""Step times for ``msd grid plan``: measured here with the suite's own training parts, or read
from a file of measurements made on another machine (a GPU node).

What is timed is a *probe*: one distinct (kind of work, model, size preset, dataset, per-device
batch, precision). Kinds:

- ``train:<method kind>``: one optimizer update on one batch, built from the trainer's parts
  (``build_model``, the registered method's ``training_loss``, ``build_optimizer``,
  ``build_scheduler``, :mod:`benchmark.train.precision`, gradient clipping). Method kinds:
  ``label`` (teacher, student_only), ``kd``, ``msd``, ``msd-learned`` (with its meta step), and
  ``-live`` for a live teacher. The forward/backward part and the optimizer part are timed
  apart, so an update of ``update_frequency`` batches costs ``f x forward/backward + optimizer``.
- ``forward:<views>``: one no-grad ``forward_views`` batch, as evaluation and the teacher cache
  run it.

Why probes and not whole runs: a grid has hundreds of cells but a handful of distinct probes,
each a few steps long, so a plan costs seconds on a CPU and minutes for BERT-base on one.

A cached teacher's outputs are served from memory (the cache's page-cache-resident case); a
live teacher is a randomly initialised model of the teacher's preset (same cost as trained).
"""

from __future__ import annotations

import itertools
import json
import os
import platform
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig

from benchmark import MODALITIES, VIEWS
from benchmark.config.loader import size_preset
from benchmark.errors import ConfigError
from benchmark.grid.plan_data import CellData, PlanError
from benchmark.models.build import build_model
from benchmark.registry import registry
from benchmark.train.batching import to_device
from benchmark.train.optim import build_optimizer, build_scheduler
from benchmark.train.precision import build_precision

FILE_FORMAT = "msd-step-times/1"
TRAIN, FORWARD = "train", "forward"
MEASURED = "measured here"
CACHE_ROWS = 4096  # rows of stand-in teacher outputs; sample indices wrap around them


@dataclass(frozen=True)
class Probe:
    kind: str  # train:<method kind> | forward:<view+view>
    model: str
    size: str
    dataset: str
    batch_size: int  # per device
    precision: str  # fp32 | bfloat16 | float16

    def describe(self) -> str:
        return f"{self.kind} {self.model}/{self.size} on {self.dataset}, batch {self.batch_size}, {self.precision}"

    def matches(self, entry: dict[str, Any]) -> bool:
        mine = asdict(self)
        return all(entry.get(k) == v or (k == "dataset" and entry.get(k) == "*") for k, v in mine.items())


@dataclass(frozen=True)
class StepTime:
    seconds: float  # median of a whole step (train: forward + backward + optimizer)
    optimizer_seconds: float = 0.0  # of which the optimizer (clip, step, scheduler)
    source: str = MEASURED  # or the file it was read from
    device: str = ""
    repeats: int = 0

    def update_seconds(self, update_frequency: int) -> float:
        """An update of ``update_frequency`` batches: each one forward/backward, one optimizer step."""
        return update_frequency * (self.seconds - self.optimizer_seconds) + self.optimizer_seconds


def precision_name(config: DictConfig) -> str:
    return str(config.training.amp_dtype) if bool(config.training.get("fp16", False)) else "fp32"


def method_kind(config: DictConfig) -> str:
    """What a training step of this config costs like: the loss's structure, not its weights."""
    method = str(config.method)
    cls = registry.get_method(method)
    if not getattr(cls, "needs_teacher", False):
        return "label"
    kind = method
    if method == "msd" and getattr(registry.get_weighting(str(config.distill.weighting)), "learned", False):
        kind += "-learned"
    if str(config.distill.get("teacher_source", "cache")) == "live":
        kind += "-live"
    return kind


def train_probe(config: DictConfig, batch_size: int) -> Probe:
    return Probe(f"{TRAIN}:{method_kind(config)}", str(config.model), size_preset(config), str(config.dataset),
                 int(batch_size), precision_name(config))


def forward_probe(config: DictConfig, views: tuple[str, ...], batch_size: int) -> Probe:
    return Probe(f"{FORWARD}:{'+'.join(views)}", str(config.model), size_preset(config), str(config.dataset),
                 int(batch_size), precision_name(config))


def describe_device(device: torch.device, threads: int) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    cpu = platform.processor() or platform.machine()
    return f"cpu ({cpu}, {threads} torch thread{'s' if threads != 1 else ''}, {os.cpu_count()} cores)"


class StepTimer:
    """Measures probes on this machine: ``warmup`` discarded steps, then the median of ``repeats``."""

    def __init__(self, device: torch.device, threads: int, warmup: int = 2, repeats: int = 5) -> None:
        self.device = device
        self.threads = threads
        self.warmup = max(0, warmup)
        self.repeats = max(1, repeats)
        self.description = describe_device(device, threads)

    def measure(self, probe: Probe, config: DictConfig, data: CellData,
                teacher_config: DictConfig | None = None) -> StepTime:
        torch.set_num_threads(self.threads)
        torch.manual_seed(0)
        try:
            precision = build_precision(bool(config.training.get("fp16", False)), str(config.training.amp_dtype),
                                        self.device)
        except ConfigError as exc:
            raise PlanError(f"Cannot time {probe.describe()} on {self.device.type}: {exc} Measure on a machine "
                            "that can (`msd grid plan ... --save-step-times FILE` there), then pass "
                            "--step-times FILE here.") from exc
        batch = to_device(data.batch(probe.batch_size), self.device)
        if probe.kind.startswith(TRAIN):
            step = self._train_step(config, data, batch, precision, teacher_config)
        else:
            step = self._forward(config, data, batch, precision, tuple(probe.kind.partition(":")[2].split("+")))
        for _ in range(self.warmup):
            step()
        runs = [step() for _ in range(self.repeats)]
        return StepTime(statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs),
                        device=self.description, repeats=self.repeats)

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _train_step(self, config: DictConfig, data: CellData, batch: dict, precision: Any,
                    teacher_config: DictConfig | None):
        model = build_model(config, data.info).to(self.device)
        method = registry.get_method(str(config.method))(config, data.info)
        if getattr(method, "needs_teacher", False):
            _attach_teacher(method, config, teacher_config, data, batch, self.device)
        optimizer = build_optimizer(model, config)
        scheduler = build_scheduler(optimizer, config, 1_000_000)
        clip = config.training.get("clip_grad_norm")

        def step() -> tuple[float, float]:
            self._sync()
            start = time.perf_counter()
            model.train()
            with precision.autocast():
                loss, _ = method.training_loss(model, batch)
            precision.backward(loss)
            self._sync()
            middle = time.perf_counter()
            precision.unscale(optimizer)
            if clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), float(clip))
            precision.step(optimizer)
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            self._sync()
            end = time.perf_counter()
            return end - start, end - middle

        return step

    def _forward(self, config: DictConfig, data: CellData, batch: dict, precision: Any, views: tuple[str, ...]):
        model = build_model(config, data.info).to(self.device).eval()

        @torch.no_grad()
        def step() -> tuple[float, float]:
            self._sync()
            start = time.perf_counter()
            with precision.autocast():
                model.forward_views(batch, views)
            self._sync()
            return time.perf_counter() - start, 0.0

        return step


class MemoryTeacherOutputs:
    """Stand-in for a built teacher cache (the two lookups a student step makes), in memory."""

    def __init__(self, num_labels: int, definitions: list[str]) -> None:
        rng = np.random.default_rng(0)
        self.definitions = definitions
        self._logits = rng.standard_normal((CACHE_ROWS, len(VIEWS), num_labels)).astype(np.float16)
        self._saliency = rng.random((CACHE_ROWS, len(definitions), 2)).astype(np.float32)

    def logits(self, split: str, sample_index: torch.Tensor) -> dict[str, torch.Tensor]:
        rows = np.asarray(self._logits[sample_index.cpu().numpy() % CACHE_ROWS], dtype=np.float32)
        return {view: torch.from_numpy(rows[:, i]) for i, view in enumerate(VIEWS)}

    def saliency(self, split: str, sample_index: torch.Tensor, definition: str) -> dict[str, torch.Tensor]:
        j = self.definitions.index(definition)
        rows = self._saliency[sample_index.cpu().numpy() % CACHE_ROWS, j]
        return {m: torch.from_numpy(rows[:, i].copy()) for i, m in enumerate(MODALITIES)}

    def population_saliency(self, split: str, sample_index: Any, definition: str) -> dict[str, float]:
        j = self.definitions.index(definition)
        return {m: float(self._saliency[:, j, i].mean()) for i, m in enumerate(MODALITIES)}


def _attach_teacher(method: Any, config: DictConfig, teacher_config: DictConfig | None, data: CellData,
                    batch: dict, device: torch.device) -> None:
    """What ``prepare`` gives a distilling method, without a trained teacher or a built cache."""
    from benchmark.distill.meta import MetaWeightLearner
    from benchmark.distill.teacher import LoadedTeacher

    method.device = device
    if str(config.distill.get("teacher_source", "cache")) == "live":
        if teacher_config is None:
            raise PlanError(f"{config.method} with a live teacher: the grid has no teacher cell to time it with.")
        model = build_model(teacher_config, data.info, role="teacher").to(device).eval()
        for param in model.parameters():
            param.requires_grad_(False)
        method.teacher = LoadedTeacher(run=None, config=teacher_config, model=model, summary={})
    else:
        method.cache = MemoryTeacherOutputs(data.info.num_labels, registry.names("saliency"))
    scheme = getattr(method, "scheme", None)
    if scheme is None:
        return
    if scheme.needs_population:
        stand_in = MemoryTeacherOutputs(data.info.num_labels, registry.names("saliency"))
        scheme.setup(stand_in.population_saliency("train", None, str(config.distill.saliency)))
    if getattr(scheme, "learned", False):
        scheme.net.to(device)
        p = config.distill.weighting_params
        method.meta = MetaWeightLearner(scheme, itertools.repeat(batch), method.label_loss,
                                        meta_lr=float(p.meta_lr), inner_lr=float(p.inner_lr), every=int(p.every),
                                        device=device)


# -- files of measurements ---------------------------------------------------------------------
@dataclass
class StepTimesFile:
    path: Path
    device: str
    entries: list[dict[str, Any]]

    def lookup(self, probe: Probe) -> StepTime | None:
        entry = next((e for e in self.entries if probe.matches(e)), None)
        if entry is None:
            return None
        return StepTime(float(entry["seconds"]), float(entry.get("optimizer_seconds") or 0.0), str(self.path),
                        str(entry.get("device") or self.device), int(entry.get("repeats") or 0))


def load_step_times(path: str | Path) -> StepTimesFile:
    """A JSON file of measurements: ``{"format", "device", "measurements": [{probe fields, seconds}]}``."""
    path = Path(path).expanduser()
    try:
        raw = json.loads(path.read_text())
    except OSError as exc:
        raise PlanError(f"Step-times file {path} cannot be read ({exc.strerror or exc}).") from exc
    except json.JSONDecodeError as exc:
        raise PlanError(f"Step-times file {path} is not JSON ({exc.msg}, line {exc.lineno}).") from exc
    required = ("kind", "model", "size", "dataset", "batch_size", "precision", "seconds")
    entries = raw.get("measurements") if isinstance(raw, dict) else None
    if not isinstance(entries, list):
        raise PlanError(f"Step-times file {path} must be an object with a 'measurements' list ({FILE_FORMAT}; "
                        "`msd grid plan ... --save-step-times FILE` writes one).")
    for i, entry in enumerate(entries):
        missing = [k for k in required if not isinstance(entry, dict) or k not in entry]
        if missing:
            raise PlanError(f"Step-times file {path}: measurements[{i}] lacks {', '.join(missing)} "
                            f"(each entry needs {', '.join(required)}).")
        try:
            seconds = float(entry["seconds"])
            batch_size = int(entry["batch_size"])
        except (TypeError, ValueError) as exc:
            raise PlanError(f"Step-times file {path}: measurements[{i}] has a non-numeric seconds or batch_size.") from exc
        if not seconds > 0 or batch_size < 1:
            raise PlanError(f"Step-times file {path}: measurements[{i}] needs seconds > 0 and batch_size >= 1.")
    return StepTimesFile(path, str(raw.get("device") or "unknown device"), entries)


def save_step_times(path: str | Path, device: str, times: dict[Probe, StepTime]) -> Path:
    """Write measurements for ``--step-times`` elsewhere; complete or not at all (temp + rename)."""
    path = Path(path).expanduser()
    payload = {"format": FILE_FORMAT, "device": device,
               "measurements": [{**asdict(p), "seconds": t.seconds, "optimizer_seconds": t.optimizer_seconds,
                                 "repeats": t.repeats, "device": t.device} for p, t in times.items()]}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    os.replace(tmp, path)
    return path
