"""The training loop shared by teachers and every student method.

Thin on purpose: the objective comes from the method (``benchmark.distill.methods``), the
model and data from their registries, metrics from ``benchmark.train.metrics``. The trainer
owns the loop, evaluation cadence, early stopping, checkpoints and the run directory.
"""

from __future__ import annotations

import math
import time
import traceback
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Protocol

import torch
from omegaconf import DictConfig

from benchmark.config.loader import dataset_node
from benchmark.config.rules import rule_values
from benchmark.data.build import build_dataloader, build_dataset
from benchmark.models.build import build_model, describe_model
from benchmark.registry import registry
from benchmark.tracking.progress import TrainingProgress
from benchmark.tracking.run_id import compute_run_id
from benchmark.tracking.run_store import RunDir, RunStore
from benchmark.train import checkpoint as ckpt
from benchmark.train.batching import resolve_device, to_device
from benchmark.train.early_stop import EarlyStopping
from benchmark.train.evaluate import collect_outputs, predictions_frame, score_outputs
from benchmark.train.optim import build_optimizer, build_scheduler
from benchmark.train.provenance import environment, git_commit
from benchmark.train.sampler import EpochSampler
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
    """Train (or skip, or resume) the run described by a resolved config."""
    run_id = compute_run_id(config)
    run = RunStore(config.env.save_dir).run(run_id)
    if run.is_complete():
        return RunResult(run_id, run, run.read_summary() or {}, skipped=True)
    return Trainer(config, run, progress=progress, callbacks=callbacks).run()


class Trainer:
    def __init__(
        self, config: DictConfig, run: RunDir, *, progress: bool = True, callbacks: tuple[RunCallback, ...] = ()
    ) -> None:
        self.config = config
        self.run_dir = run
        self.callbacks = callbacks
        self.show_progress = progress
        self.device = resolve_device(str(config.training.device))
        self.dataset_cfg = dataset_node(config)

    # -- public ------------------------------------------------------------------------------
    def run(self) -> RunResult:
        started = time.time()
        previous = self.run_dir.read_summary() or {}
        self.run_dir.write_config(self.config)
        self.summary: dict[str, Any] = {
            "run_id": self.run_dir.run_id,
            "status": "running",
            "attempt": int(previous.get("attempt", 0)) + 1,
            "started_at": _now(),
            **self._identity(),
        }
        self.run_dir.write_summary(self.summary)
        for callback in self.callbacks:
            callback.on_start(self.run_dir, self.config)
        try:
            self._setup()
            self._train()
            self._finish(started)
        except BaseException as exc:
            self._fail(exc, started)
            raise
        return RunResult(self.run_dir.run_id, self.run_dir, self.summary)

    # -- setup -------------------------------------------------------------------------------
    def _identity(self) -> dict[str, Any]:
        c = self.config
        return {
            "dataset": c.dataset,
            "model": c.model,
            "method": c.method,
            "weighting": c.weighting if c.method == "msd" else None,
            "seed": int(c.training.seed),
            "teacher": c.get("teacher"),
            "run_name": c.get("run_name"),
            "rules": rule_values(c),
            "git_commit": git_commit(),
            "environment": environment(),
        }

    def _setup(self) -> None:
        c = self.config
        if c.training.get("threads"):
            torch.set_num_threads(int(c.training.threads))
        seed_everything(int(c.training.seed), bool(c.training.deterministic))
        self.train_set = build_dataset(c, "train")
        self.info = self.train_set.info
        self.eval_sets = {split: build_dataset(c, split) for split in c.evaluation.splits}
        self.model = build_model(c, self.info).to(self.device)
        self.method = registry.get_method(str(c.method))(c, self.info)
        self.method.prepare(self)
        self.sampler = EpochSampler(len(self.train_set), seed=int(c.training.seed))
        self.train_loader = build_dataloader(
            self.train_set, batch_size=int(c.training.batch_size), sampler=self.sampler,
            num_workers=int(c.training.num_workers),
        )
        self.eval_loaders = {
            split: build_dataloader(ds, batch_size=int(c.training.batch_size) * 2, shuffle=False)
            for split, ds in self.eval_sets.items()
        }
        batches_per_epoch = math.ceil(len(self.train_set) / int(c.training.batch_size))
        self.batches_per_epoch = batches_per_epoch
        total = batches_per_epoch * int(c.training.max_epochs)
        if c.training.get("max_updates"):
            total = min(total, int(c.training.max_updates))
        self.total_updates = total
        self.eval_interval = int(c.training.evaluation_interval or batches_per_epoch)
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
        if "val" not in self.eval_loaders:
            self.eval_loaders["val"] = build_dataloader(build_dataset(c, "val"), int(c.training.batch_size) * 2)
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

    def _maybe_resume(self) -> None:
        if not self.config.checkpoint.resume:
            return
        state = ckpt.load_training_state(self.run_dir, self.model, self.optimizer, self.scheduler)
        if state is None:
            return
        self.state.step = state["step"]
        self.state.epoch = state["epoch"]
        self.state.batch_in_epoch = state["batch_in_epoch"]
        self.state.train_time_s = state.get("train_time_s", 0.0)
        self.early_stop.load_state_dict(state["early_stop"])
        self.method.load_state_dict(state.get("method") or {})
        self.run_dir.truncate_metrics(self.state.step)
        self.summary["resumed_from_step"] = self.state.step

    # -- loop --------------------------------------------------------------------------------
    def _train(self) -> None:
        c = self.config
        s = self.state
        with TrainingProgress(self.run_dir.run_id, self.total_updates, enabled=self.show_progress) as bar:
            bar.advance_to(s.step)
            while s.step < self.total_updates and not self.early_stop.should_stop:
                self.sampler.set_position(s.epoch, s.batch_in_epoch * int(c.training.batch_size))
                for batch in self.train_loader:
                    tick = time.time()
                    terms = self._train_step(batch)
                    s.train_time_s += time.time() - tick
                    s.step += 1
                    s.batch_in_epoch += 1
                    if s.step % int(c.training.log_interval) == 0 or s.step == 1:
                        self._log({"type": "train", **{k: float(v) for k, v in terms.items()},
                                   "lr": self.scheduler.get_last_lr()[0], "epoch": s.epoch})
                    bar.update(s.step, loss=float(terms["loss/total"]))
                    if s.step % self.eval_interval == 0 or s.step >= self.total_updates:
                        self._evaluate_and_checkpoint(bar)
                    if s.step >= self.total_updates or self.early_stop.should_stop:
                        break
                else:
                    s.epoch += 1
                    s.batch_in_epoch = 0
                    continue
                if s.batch_in_epoch >= self.batches_per_epoch:
                    s.epoch += 1
                    s.batch_in_epoch = 0

    def _train_step(self, batch: dict) -> dict[str, torch.Tensor]:
        self.model.train()
        batch = to_device(batch, self.device)
        loss, terms = self.method.training_loss(self.model, batch)
        if not torch.isfinite(loss):
            if self.config.training.fail_on_nan:
                raise TrainingDivergedError(
                    f"Loss became {loss.item()} at update {self.state.step + 1} "
                    f"(terms: { {k: float(v) for k, v in terms.items()} }). Lower optimizer.params.lr "
                    "or check the inputs; set training.fail_on_nan=false to skip such batches instead."
                )
            self.optimizer.zero_grad(set_to_none=True)
            return terms
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        clip = self.config.training.get("clip_grad_norm")
        if clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), float(clip))
        self.optimizer.step()
        self.scheduler.step()
        return terms

    def _evaluate_and_checkpoint(self, bar: TrainingProgress) -> None:
        views = tuple(self.config.evaluation.get("views_during_training") or ("multi",))
        outputs = collect_outputs(self.model, self.eval_loaders["val"], views, self.device, "val")
        scores = score_outputs(outputs, self.metric_names, self.info)
        value = scores.get(self.early_stop.criteria)
        if value is None:
            raise KeyError(
                f"Early-stopping criterion {self.early_stop.criteria!r} is not among the computed metrics "
                f"{sorted(scores)}; fix training.early_stop.criteria."
            )
        improved = self.early_stop.update(value, self.state.step)
        if improved:
            ckpt.save_best(self.run_dir, self.model, self.state.step, self.early_stop.criteria, value, self.info)
        self._log({"type": "val", **scores, **self.method.evaluation_log(), "epoch": self.state.epoch,
                   "best_so_far": self.early_stop.best_value})
        bar.update(self.state.step, metric=value)
        ckpt.save_training_state(
            self.run_dir, self.model, self.optimizer, self.scheduler,
            step=self.state.step, epoch=self.state.epoch, batch_in_epoch=self.state.batch_in_epoch,
            early_stop=self.early_stop.state_dict(), train_time_s=self.state.train_time_s,
            method=self.method.state_dict(),
        )

    def _log(self, record: dict[str, Any]) -> None:
        record = {"trainer/global_step": self.state.step, **record}
        self.run_dir.append_metrics(record)
        for callback in self.callbacks:
            callback.on_log(record, self.state.step)

    # -- end ---------------------------------------------------------------------------------
    def _finish(self, started: float) -> None:
        c = self.config
        if str(c.checkpoint.rule) == "best":
            ckpt.load_best_weights(self.run_dir, self.model)
        else:
            ckpt.save_best(self.run_dir, self.model, self.state.step, "last", float("nan"), self.info)
        views = tuple(c.evaluation.views)
        metrics: dict[str, float] = {}
        frames = []
        for split, loader in self.eval_loaders.items():
            outputs = collect_outputs(self.model, loader, views, self.device, split)
            metrics.update(score_outputs(outputs, self.metric_names, self.info))
            if c.evaluation.predictions:
                frames.append(predictions_frame(outputs, self.info, int(c.evaluation.get("predictions_max_labels", 64))))
        if frames:
            import pandas as pd

            self.run_dir.write_predictions(pd.concat(frames, ignore_index=True))
        self._log({"type": "final", **metrics})
        headline = f"{self.info.name}/{self.dataset_cfg.headline_metric}"
        self.summary.update(
            {
                "status": "completed",
                "finished_at": _now(),
                "metrics": metrics,
                "headline_metric": str(self.dataset_cfg.headline_metric),
                "headline": {split: metrics.get(f"{split}/{headline}") for split in self.eval_loaders},
                "best_step": self.early_stop.best_step,
                "best_value": self.early_stop.best_value,
                "updates": self.state.step,
                "epochs_started": self.state.epoch + (1 if self.state.batch_in_epoch else 0),
                "stopped_early": self.early_stop.should_stop,
                "train_time_s": round(self.state.train_time_s, 3),
                "wall_time_s": round(time.time() - started, 3),
            }
        )
        ckpt.remove_training_state(self.run_dir)
        self.run_dir.write_summary(self.summary)
        for callback in self.callbacks:
            callback.on_finish(self.summary)

    def _fail(self, exc: BaseException, started: float) -> None:
        self.summary.update(
            {
                "status": _failure_status(exc),
                "finished_at": _now(),
                "error": f"{type(exc).__name__}: {exc}",
                "wall_time_s": round(time.time() - started, 3),
            }
        )
        self.run_dir.path.mkdir(parents=True, exist_ok=True)
        (self.run_dir.file("error.log")).write_text("".join(traceback.format_exception(exc)))
        self.run_dir.write_summary(self.summary)
        for callback in self.callbacks:
            callback.on_finish(self.summary)


def _failure_status(exc: BaseException) -> str:
    """``interrupted`` for Ctrl-C / kills, a status the exception carries (e.g. an HPO trial
    that was ``pruned``), else ``failed``."""
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted"
    return str(getattr(exc, "run_status", "failed"))


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
