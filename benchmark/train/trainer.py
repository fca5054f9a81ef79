"""The training loop shared by teachers and every student method.

Thin on purpose: the objective comes from the method (``benchmark.distill.methods``), the
model and data from their registries, metrics from ``benchmark.train.metrics``. The trainer
owns the loop, evaluation cadence, early stopping, checkpoints and the run directory.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

import torch
from omegaconf import DictConfig

from benchmark.config.loader import dataset_node, weighting_of
from benchmark.config.rules import rule_values
from benchmark.data.build import build_dataloader, build_dataset
from benchmark.data.fingerprint import data_fingerprint, refuse_changed_data
from benchmark.errors import CheckpointError, ConfigError
from benchmark.models.build import build_model, describe_model
from benchmark.registry import registry
from benchmark.tracking.failure import DiskReserve, RunFailure, record_failure
from benchmark.tracking.failure import describe as describe_failure
from benchmark.tracking.liveness import Heartbeat
from benchmark.tracking.progress import TrainingProgress
from benchmark.tracking.run_id import compute_run_id
from benchmark.tracking.run_status import COMPLETED, INTERRUPTED, RUNNING
from benchmark.tracking.run_store import RunDir, RunStore
from benchmark.train import checkpoint as ckpt
from benchmark.train.batching import batch_size_of, resolve_device, to_device
from benchmark.train.cost import cost_settings, measure_cost
from benchmark.train.distributed import DistContext, init_distributed, rank_device, wrap_model
from benchmark.train.early_stop import EarlyStopping
from benchmark.train.evaluate import collect_outputs, predictions_frame, score_outputs, shard_loader
from benchmark.train.method_context import MethodContext
from benchmark.train.optim import build_optimizer, build_scheduler
from benchmark.train.precision import build_precision
from benchmark.train.provenance import environment, git_commit
from benchmark.train.run_types import parse_run_type, score_without_training
from benchmark.train.sampler import EpochBatches, update_schedule
from benchmark.train.seeding import seed_everything


class TrainingDivergedError(RuntimeError):
    """The loss became NaN or infinite; the run is marked failed with the step."""


class RunCallback(Protocol):
    """Receives everything the run store receives (W&B logger, HPO reporter, …)."""

    def on_start(self, run: RunDir, config: DictConfig) -> None: ...
    def on_log(self, record: dict[str, Any], step: int) -> None: ...
    def on_finish(self, summary: dict[str, Any]) -> None: ...


@dataclass
class RunResult:
    run_id: str
    run_dir: RunDir
    summary: dict[str, Any]
    skipped: bool = False


@dataclass
class _LoopState:
    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    train_time_s: float = 0.0
    history: list[dict[str, float]] = field(default_factory=list)


def run_experiment(
    config: DictConfig, *, progress: bool = True, callbacks: tuple[RunCallback, ...] = ()
) -> RunResult:
    """Train (or skip, or resume) the run described by a resolved config; or, for MMF's
    ``run_type=val|test|predict``, score a checkpoint without training."""
    run_type = parse_run_type(config)
    run_id = compute_run_id(config)
    run = RunStore(config.env.save_dir).run(run_id)
    if not run_type.train:
        scored = score_without_training(config, run_id, run_type)
        return RunResult(run_id, run, {"status": "scored", "dataset": config.dataset, **scored})
    if run.is_complete():
        return RunResult(run_id, run, run.read_summary() or {}, skipped=True)
    if config.checkpoint.resume and run.file(ckpt.LAST).exists():
        refuse_changed_data(config, (run.read_summary() or {}).get("data_fingerprint"), run_id)
    return Trainer(config, run, progress=progress, callbacks=callbacks).run()


class Trainer:
    def __init__(
        self, config: DictConfig, run: RunDir, *, progress: bool = True, callbacks: tuple[RunCallback, ...] = ()
    ) -> None:
        # Everything here needs only the config and fails before the run directory is written.
        t = config.training
        self.config = config
        self.run_dir = run
        self.update_frequency = int(t.update_frequency)
        if self.update_frequency < 1:
            raise ConfigError(f"training.update_frequency must be >= 1, got {self.update_frequency}.")
        device = resolve_device(str(t.device))
        self.dist: DistContext = init_distributed(str(t.distributed), device, float(t.distributed_timeout_min))
        self.device = rank_device(device, self.dist)
        self.precision = build_precision(bool(t.fp16), str(t.amp_dtype), self.device)
        refusal = registry.get_method(str(config.method)).distributed_refusal(config) if self.dist.enabled else None
        if refusal:
            raise ConfigError(refusal)
        self.final_splits = parse_run_type(config).splits
        self.callbacks = callbacks if self.dist.is_main else ()
        self.show_progress = progress and self.dist.is_main
        self.dataset_cfg = dataset_node(config)

    # -- public ------------------------------------------------------------------------------
    def run(self) -> RunResult:
        started = time.time()
        self._load_data()  # before anything is written: a world larger than the data fails here
        previous = self.run_dir.read_summary() or {}
        self.summary: dict[str, Any] = {
            "run_id": self.run_dir.run_id,
            "status": RUNNING,
            "attempt": int(previous.get("attempt", 0)) + 1,
            "started_at": _now(),
            **self._identity(),
            **({"pid": os.getpid(), "host": socket.gethostname()} if self.dist.is_main else {}),
        }
        # The heartbeat beats before the summary says "running", so a reader never sees a
        # running run without one; the reserve pays for error.log when the disk fills up.
        self.reserve = DiskReserve(self.run_dir.path) if self.dist.is_main else None
        heartbeat = Heartbeat(self.run_dir.path, progress=self._progress) if self.dist.is_main else None
        try:
            if self.dist.is_main:
                self.reserve.create()
                heartbeat.start()
                self.run_dir.write_config(self.config)
                self.run_dir.write_summary(self.summary)
            for callback in self.callbacks:
                callback.on_start(self.run_dir, self.config)
            self._setup()
            self._train()
            self._finish(started)
        except BaseException as exc:
            self._fail(exc, started)
            raise
        finally:
            if heartbeat is not None:
                heartbeat.stop()
            if self.reserve is not None:
                self.reserve.release()
            self.dist.shutdown()
        return RunResult(self.run_dir.run_id, self.run_dir, self.summary)

    def _progress(self) -> dict[str, Any]:
        """What the heartbeat shows of a running run (``msd runs list``)."""
        state = getattr(self, "state", None)
        if state is None:
            return {}
        return {"step": state.step, "epochs_started": state.epoch + (1 if state.batch_in_epoch else 0),
                "total_updates": getattr(self, "total_updates", None)}

    def setup(self) -> None:
        """Data, model, method and optimizer without a run being written (benchmarks, tests)."""
        self._load_data()
        self.summary = {}
        self._setup()

    # -- setup -------------------------------------------------------------------------------
    def _identity(self) -> dict[str, Any]:
        c = self.config
        return {
            "dataset": c.dataset,
            "model": c.model,
            "method": c.method,
            "weighting": weighting_of(c) if c.method == "msd" else None,
            "seed": int(c.training.seed),
            "teacher": c.get("teacher"),
            "run_name": c.get("run_name"),
            "data_fingerprint": data_fingerprint(c).to_dict(),  # what a resume must find unchanged
            "rules": rule_values(c),
            "git_commit": git_commit(),
            "environment": environment(),
            "device": str(self.device),
            "world_size": self.dist.world_size,
            "precision": self.precision.describe(),
            "update_frequency": self.update_frequency,
        }

    def _setup(self) -> None:
        c = self.config
        if c.training.get("threads"):
            torch.set_num_threads(int(c.training.threads))
        # Each rank draws its own dropout masks; DDP gives every rank rank 0's initial weights.
        seed_everything(int(c.training.seed) + self.dist.rank, bool(c.training.deterministic))
        self.model = build_model(c, self.info).to(self.device)
        self.method = registry.get_method(str(c.method))(c, self.info)
        self.method.prepare(MethodContext(device=self.device, train_set=self.train_set, dist=self.dist))
        if bool(c.training.compile):
            self.model.forward_views = torch.compile(self.model.forward_views)
        self.train_model = wrap_model(self.model, self.dist, bool(c.training.find_unused_parameters))
        batch_size = int(c.training.batch_size)
        pin = _pin_memory(str(c.training.pin_memory), self.device)
        workers = int(c.training.num_workers)
        self.batches = EpochBatches(len(self.train_set), batch_size, int(c.training.seed),
                                    rank=self.dist.rank, world_size=self.dist.world_size)
        self.train_loader = build_dataloader(self.train_set, batch_size, batch_sampler=self.batches,
                                             num_workers=workers, pin_memory=pin)
        self.eval_loaders = {
            split: build_dataloader(shard_loader(ds, self.dist), batch_size=max(1, 2 * batch_size // self.dist.world_size),
                                    num_workers=workers, pin_memory=pin)
            for split, ds in self.eval_sets.items()
        }
        self.batches_per_epoch = self.batches.batches_per_epoch()
        self.updates_per_epoch, total = update_schedule(
            self.batches_per_epoch, self.update_frequency, int(c.training.max_epochs), c.training.get("max_updates"))
        self.total_updates = total
        self.eval_interval = int(c.training.evaluation_interval or self.updates_per_epoch)
        self.optimizer = build_optimizer(self.model, c)
        self.scheduler = build_scheduler(self.optimizer, c, total)
        metric_names = c.evaluation.metrics or self.dataset_cfg.metrics
        self.metric_names = [str(m) for m in metric_names]
        criteria = c.training.early_stop.criteria or f"val/{self.info.name}/{self.dataset_cfg.headline_metric}"
        self.early_stop = EarlyStopping(
            criteria=str(criteria),
            minimize=bool(c.training.early_stop.minimize),
            patience=int(c.training.early_stop.patience) if c.training.early_stop.enabled else 0,
        )
        self.state = _LoopState()
        self.summary.update(
            {
                "model_params": self.model.num_parameters(),
                "model_description": describe_model(self.model),
                "dataset_info": self.info.to_dict(),
                "total_updates": total,
                "checkpoint_rule": str(c.checkpoint.rule),
                "early_stop_criteria": self.early_stop.criteria,
                "splits": {s: list(self.dataset_cfg.annotations.get(s, [])) for s in ("train", *c.evaluation.splits)},
                "method_details": self.method.summary(),
            }
        )
        self._maybe_resume()

    def _load_data(self) -> None:
        c = self.config
        self.train_set = build_dataset(c, "train")
        self.info = self.train_set.info
        self.eval_sets = {split: build_dataset(c, split) for split in c.evaluation.splits}
        if "val" not in self.eval_sets:
            self.eval_sets["val"] = build_dataset(c, "val")
        self._check_world_fits_data()

    def _check_world_fits_data(self) -> None:
        """Every rank needs a share of every split and of every batch."""
        world = self.dist.world_size
        if world == 1:
            return
        sizes = {"train": len(self.train_set), **{s: len(ds) for s, ds in self.eval_sets.items()}}
        small = {s: n for s, n in sizes.items() if n < world}
        if small or int(self.config.training.batch_size) < world:
            raise ConfigError(
                f"A world of {world} ranks is larger than the data: split sizes {sizes}, global batch "
                f"training.batch_size={int(self.config.training.batch_size)}. Every rank needs at least one "
                "sample of each split and of each batch; launch fewer processes."
            )

    def _maybe_resume(self) -> None:
        state = None
        if self.config.checkpoint.resume:
            state = ckpt.load_training_state(self.run_dir.file(ckpt.LAST), self.model, self.optimizer, self.scheduler)
        if state is None and self.config.checkpoint.get("resume_file"):
            state = self._start_from_file(Path(str(self.config.checkpoint.resume_file)).expanduser())
        if state is None:
            if self.dist.is_main:  # a start from step 0: rows of an attempt killed before its first checkpoint go
                self.run_dir.truncate_metrics(0)
            return
        self.state.step = state["step"]
        self.state.epoch = state["epoch"]
        self.state.batch_in_epoch = state["batch_in_epoch"]
        self.state.train_time_s = state.get("train_time_s", 0.0)
        self.early_stop.load_state_dict(state["early_stop"])
        self.method.load_state_dict(state.get("method") or {})
        self.precision.load_state_dict(state.get("grad_scaler") or {})
        if self.dist.is_main:
            self.run_dir.truncate_metrics(self.state.step)
        self.summary["resumed_from_step"] = self.state.step

    def _start_from_file(self, path: Path) -> dict[str, Any] | None:
        """MMF's ``checkpoint.resume_file``: a training state (``last.pt``) resumes with its
        optimizer and counters; a weights file (``checkpoint.pt``) is where training starts."""
        payload = ckpt.load_checkpoint(path)
        if not isinstance(payload, dict) or "model" not in payload:
            raise CheckpointError(f"checkpoint.resume_file={path} holds no model weights.")
        if "optimizer" in payload:
            return ckpt.load_training_state(path, self.model, self.optimizer, self.scheduler, strict_file=True)
        ckpt.load_weights_strict(self.model, payload["model"], str(path))
        self.summary["initialised_from"] = str(path)
        return None

    # -- loop --------------------------------------------------------------------------------
    def _train(self) -> None:
        s = self.state
        with TrainingProgress(self.run_dir.run_id, self.total_updates, enabled=self.show_progress) as bar:
            bar.advance_to(s.step)
            self.optimizer.zero_grad(set_to_none=True)
            while s.step < self.total_updates and not self.early_stop.should_stop:
                self.batches.set_position(s.epoch, s.batch_in_epoch)
                update = _Update.start(self.batches.global_batch_sizes(s.epoch), s.batch_in_epoch, self.update_frequency)
                for batch in self.train_loader:
                    tick = time.time()
                    self._micro_step(batch, update)
                    s.train_time_s += time.time() - tick
                    if not update.complete:
                        continue
                    terms = self._apply_update(update)
                    s.step += 1
                    s.batch_in_epoch += update.size
                    if s.step % int(self.config.training.log_interval) == 0 or s.step == 1:
                        self._log({"type": "train", **terms, "lr": self.scheduler.get_last_lr()[0], "epoch": s.epoch})
                    bar.update(s.step, loss=terms["loss/total"])
                    if s.step % self.eval_interval == 0 or s.step >= self.total_updates:
                        self._evaluate_and_checkpoint(bar)
                    if s.step >= self.total_updates or self.early_stop.should_stop:
                        break
                    update = update.next()
                else:
                    s.epoch += 1
                    s.batch_in_epoch = 0
                    continue
                if s.batch_in_epoch >= self.batches_per_epoch:
                    s.epoch += 1
                    s.batch_in_epoch = 0

    def train_step(self, batch: dict) -> dict[str, float]:
        """One whole update on one batch (benchmarks time exactly what training runs)."""
        update = _Update([batch_size_of(batch) * self.dist.world_size], 1, 0, 1, batch_size_of(batch) * self.dist.world_size)
        self._micro_step(batch, update)
        return self._apply_update(update)

    def _micro_step(self, batch: dict, update: _Update) -> None:
        """Forward and backward of one (rank-local) batch, scaled so that the update's gradient
        is the mean over all of its samples, whatever the world size and accumulation."""
        self.model.train()
        batch = to_device(batch, self.device)
        local = batch_size_of(batch)
        scale = self.dist.world_size * local / update.num_samples
        last = update.done + 1 == update.size
        sync = contextlib.nullcontext() if last or not self.dist.enabled else self.train_model.ddp.no_sync()
        with sync:
            with self.precision.autocast():
                loss, terms = self.method.training_loss(self.train_model, batch)
            self.precision.backward(loss if scale == 1.0 else loss * scale)
        update.add(terms, local, finite=torch.isfinite(loss.detach()))

    def _apply_update(self, update: _Update) -> dict[str, float]:
        terms = update.mean_terms()
        if not self.dist.all_agree(update.is_finite):
            if self.config.training.fail_on_nan:
                raise TrainingDivergedError(
                    f"Loss became non-finite at update {self.state.step + 1} (terms: {terms}). Lower "
                    "optimizer.params.lr or check the inputs; set training.fail_on_nan=false to skip such "
                    "updates instead."
                )
            self.optimizer.zero_grad(set_to_none=True)
            return terms
        self.precision.unscale(self.optimizer)
        clip = self.config.training.get("clip_grad_norm")
        if clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), float(clip))
        self.precision.step(self.optimizer)
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return terms

    def _score(self, split: str, views: tuple[str, ...]):
        """Outputs of every rank's shard, gathered in the original sample order."""
        with self.precision.autocast():
            return collect_outputs(self.model, self.eval_loaders[split], views, self.device, split, dist=self.dist)

    def _evaluate_and_checkpoint(self, bar: TrainingProgress) -> None:
        views = tuple(self.config.evaluation.get("views_during_training") or ("multi",))
        outputs = self._score("val", views)
        scores = score_outputs(outputs, self.metric_names, self.info)
        value = scores.get(self.early_stop.criteria)
        if value is None:
            raise KeyError(
                f"Early-stopping criterion {self.early_stop.criteria!r} is not among the computed metrics "
                f"{sorted(scores)}; fix training.early_stop.criteria."
            )
        improved = self.early_stop.update(value, self.state.step)
        if improved and self.dist.is_main:
            ckpt.save_best(self.run_dir, self.model, self.state.step, self.early_stop.criteria, value, self.info)
        self._log({"type": "val", **scores, **self.method.evaluation_log(), "epoch": self.state.epoch,
                   "best_so_far": self.early_stop.best_value})
        bar.update(self.state.step, metric=value, epoch=self.state.epoch + self.state.batch_in_epoch / self.batches_per_epoch)
        if self.dist.is_main:
            ckpt.save_training_state(
                self.run_dir, self.model, self.optimizer, self.scheduler,
                step=self.state.step, epoch=self.state.epoch, batch_in_epoch=self.state.batch_in_epoch,
                early_stop=self.early_stop.state_dict(), train_time_s=self.state.train_time_s,
                method=self.method.state_dict(), grad_scaler=self.precision.state_dict(),
            )

    def _log(self, record: dict[str, Any]) -> None:
        if not self.dist.is_main:
            return
        record = {"trainer/global_step": self.state.step, **record}
        self.run_dir.append_metrics(record)
        for callback in self.callbacks:
            callback.on_log(record, self.state.step)

    # -- end ---------------------------------------------------------------------------------
    def _finish(self, started: float) -> None:
        c = self.config
        if str(c.checkpoint.rule) != "best" and self.dist.is_main:
            ckpt.save_best(self.run_dir, self.model, self.state.step, "last", float("nan"), self.info)
        self.dist.barrier()  # checkpoint.pt is on disk for every rank
        if str(c.checkpoint.rule) == "best":
            ckpt.load_best_weights(self.run_dir, self.model)
        views = tuple(c.evaluation.views)
        metrics: dict[str, float] = {}
        frames = []
        for split in self.final_splits:
            outputs = self._score(split, views)
            metrics.update(score_outputs(outputs, self.metric_names, self.info))
            if c.evaluation.predictions:
                frames.append(predictions_frame(outputs, self.info, int(c.evaluation.get("predictions_max_labels", 64))))
        if frames and self.dist.is_main:
            import pandas as pd

            self.run_dir.write_predictions(pd.concat(frames, ignore_index=True))
        self._log({"type": "final", **metrics})
        cost = self._measure_cost()
        if cost is not None:
            self.summary["cost"] = cost
        headline = f"{self.info.name}/{self.dataset_cfg.headline_metric}"
        self.summary.update(
            {
                "status": COMPLETED,
                "finished_at": _now(),
                "metrics": metrics,
                "headline_metric": str(self.dataset_cfg.headline_metric),
                "headline": {split: metrics.get(f"{split}/{headline}") for split in self.final_splits},
                "best_step": self.early_stop.best_step,
                "best_value": self.early_stop.best_value,
                "updates": self.state.step,
                "epochs_started": self.state.epoch + (1 if self.state.batch_in_epoch else 0),
                "stopped_early": self.early_stop.should_stop,
                "train_time_s": round(self.state.train_time_s, 3),
                "wall_time_s": round(time.time() - started, 3),
            }
        )
        if self.dist.is_main:  # completed first: a kill in between leaves a complete run, not a lost last.pt
            self.run_dir.write_summary(self.summary)
            ckpt.remove_training_state(self.run_dir)
        for callback in self.callbacks:
            callback.on_finish(self.summary)

    def _measure_cost(self) -> dict[str, Any] | None:
        """FLOPs, latency and peak memory of the evaluated weights (benchmark.train.cost), on
        the first test (else val) samples; main rank only; ``evaluation.cost.enabled=false`` skips."""
        settings = cost_settings(self.config.evaluation.get("cost"))
        if not settings.enabled or not self.dist.is_main:
            return None
        split = "test" if "test" in self.eval_sets else "val"
        return measure_cost(self.model, self.eval_sets[split], self.device, settings)

    def _fail(self, exc: BaseException, started: float) -> None:
        """Record the crash and attach a :class:`RunFailure` for the CLI; never raises itself
        (a full disk must not turn the user's error into a chained traceback)."""
        status = _failure_status(exc)
        message = describe_failure(exc)
        progress = self._progress()
        self.summary.update(
            {
                "status": status,
                "finished_at": _now(),
                "error": f"{type(exc).__name__}: {exc}",
                "wall_time_s": round(time.time() - started, 3),
                **({"updates": progress["step"], "epochs_started": progress["epochs_started"]} if progress else {}),
            }
        )
        if not self.dist.is_main:
            return
        log, note = record_failure(self.run_dir.path, self.summary, message, exc, self.reserve)
        for callback in self.callbacks:
            try:
                callback.on_finish(self.summary)
            except Exception as err:  # noqa: BLE001 - the run's own exception is what counts
                note += f" A tracking callback failed too ({type(err).__name__}: {err})."
        with contextlib.suppress(AttributeError, TypeError):
            exc.run_failure = RunFailure(self.run_dir.run_id, status, message, log, note.strip())  # type: ignore[attr-defined]


@dataclass
class _Update:
    """The micro-batches of one optimizer update (``training.update_frequency`` of them, fewer
    at the end of an epoch), with the number of samples they hold across all ranks."""

    sizes: list[int]
    frequency: int
    first: int
    size: int
    num_samples: int
    done: int = 0
    finite: torch.Tensor | None = None
    weighted: dict[str, torch.Tensor] = field(default_factory=dict)
    last_terms: dict[str, torch.Tensor] = field(default_factory=dict)
    local_samples: int = 0

    @classmethod
    def start(cls, global_sizes: list[int], first: int, frequency: int) -> _Update:
        group = global_sizes[first : first + frequency]
        return cls(global_sizes, frequency, first, len(group), sum(group))

    def next(self) -> _Update:
        return _Update.start(self.sizes, self.first + self.size, self.frequency)

    @property
    def complete(self) -> bool:
        return self.done == self.size

    def add(self, terms: dict[str, torch.Tensor], local: int, finite: torch.Tensor) -> None:
        """Kept as tensors: reading a GPU value waits for the GPU, so the update reads its terms
        once, at its end, not once per term and micro-batch."""
        self.done += 1
        self.finite = finite if self.finite is None else self.finite & finite
        self.local_samples += local
        self.last_terms = {name: torch.as_tensor(value).detach().float() for name, value in terms.items()}
        for name, value in self.last_terms.items():
            self.weighted[name] = self.weighted[name] + value * local if name in self.weighted else value * local

    @property
    def is_finite(self) -> bool:
        return self.finite is None or bool(self.finite)

    def mean_terms(self) -> dict[str, float]:
        """This rank's terms, averaged over the update's samples (what one big batch would log)."""
        terms = self.last_terms if self.done == 1 else {k: v / max(1, self.local_samples) for k, v in self.weighted.items()}
        if not terms:
            return {}
        device = next(iter(terms.values())).device
        return dict(zip(terms, torch.stack([v.to(device) for v in terms.values()]).tolist()))


def _pin_memory(setting: str, device: torch.device) -> bool:
    if setting == "auto":
        return device.type == "cuda"
    if setting not in ("true", "false", "True", "False"):
        raise ConfigError(f"training.pin_memory must be auto, true or false, got {setting!r}.")
    return setting in ("true", "True")


def _failure_status(exc: BaseException) -> str:
    """``interrupted`` for Ctrl-C / kills, a status the exception carries (e.g. an HPO trial
    that was ``pruned``), else ``failed``."""
    if isinstance(exc, KeyboardInterrupt):  # Ctrl-C, and SIGTERM (benchmark.tracking.failure.Terminated)
        return INTERRUPTED
    return str(getattr(exc, "run_status", "failed"))


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
