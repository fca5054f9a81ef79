"""Weights & Biases tracking as a :class:`~benchmark.train.trainer.RunCallback`.

Why a callback and offline by default: the local run store is the record of truth and is
always written; W&B mirrors it (docs/architecture.md §5) without needing an
account. Offline runs land in ``<tracking.wandb.dir>/wandb/offline-run-*`` and are uploaded
later with ``msd wandb sync`` (or ``wandb sync results/wandb/offline-run-*``).

What is logged: the resolved config; every ``metrics.jsonl`` record under its MMF key with
``trainer/global_step`` as the step metric; weight distributions (``weight/*_hist`` lists)
as histograms; at the end the first rows of the predictions as a table, the saliency
histogram of the teacher cache, and the checkpoint and teacher cache as *reference*
artifacts (a ``file://`` URI and checksum, never a copy of big files).

A tracking problem must never fail or hang a training run: every W&B call is guarded, the
service is started with short timeouts and no system-stats sampler, and ``finish`` always
runs, with ``exit_code=1`` for a failed run.
"""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from benchmark.tracking.run_store import RunDir

PROJECT = "msd-benchmark"
STEP_METRIC = "trainer/global_step"
WEIGHT_BINS = np.linspace(0.0, 2.0, 21)  # MSD weights live in [0, 2]
SALIENCY_BINS = 40
MODES = ("offline", "online", "disabled")
# (init argument, environment variable): the environment wins, as everywhere in W&B.
_ENV_WINS = (("mode", "WANDB_MODE"), ("project", "WANDB_PROJECT"), ("entity", "WANDB_ENTITY"), ("dir", "WANDB_DIR"))


class WandbLogger:
    """Mirror one run into W&B. Construct it, pass it in ``callbacks=``; nothing else."""

    def __init__(
        self,
        *,
        name: str | None = None,
        group: str | None = None,
        job_type: str | None = None,
        project: str = PROJECT,
        entity: str | None = None,
        mode: str = "offline",
        dir: str | Path | None = None,
        tags: tuple[str, ...] = (),
        table_rows: int = 100,
        artifacts: bool = True,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"tracking.wandb.mode must be one of {MODES}, got {mode!r}")
        self.init_args: dict[str, Any] = {"project": project, "entity": entity, "mode": mode,
                                          "dir": str(dir) if dir else None}
        self.name, self.group, self.job_type, self.tags = name, group, job_type, tuple(tags)
        self.table_rows = table_rows
        self.artifacts = artifacts
        self.run: Any = None
        self.run_dir: RunDir | None = None
        self.last_step = 0

    # -- RunCallback -------------------------------------------------------------------------
    def on_start(self, run: RunDir, config: DictConfig) -> None:
        self.run_dir = run
        try:
            import wandb

            args = {k: v for k, v in self.init_args.items() if v is not None}
            for arg, env in _ENV_WINS:
                if os.environ.get(env):
                    args.pop(arg, None)
            if args.get("dir"):
                Path(args["dir"]).mkdir(parents=True, exist_ok=True)
            container = OmegaConf.to_container(config, resolve=True)
            assert isinstance(container, dict)
            self.run = wandb.init(
                **args,
                name=self.name or run.run_id,
                group=self.group,
                job_type=self.job_type,
                tags=list(self.tags),
                config={**container, "run_id": run.run_id},
                reinit="finish_previous",
                settings=wandb.Settings(
                    x_disable_stats=True,  # no sampler thread to join at exit
                    console="off",  # the runner already captures stdout/stderr into log.txt
                    init_timeout=60,
                    finish_timeout=120,
                    quiet=True,
                    x_save_requirements=False,
                ),
            )
            self.run.define_metric(STEP_METRIC)
            self.run.define_metric("*", step_metric=STEP_METRIC)
        except Exception as exc:  # noqa: BLE001 - tracking must not take training down
            self._warn("could not start W&B", exc)
            self.run = None

    def on_log(self, record: dict[str, Any], step: int) -> None:
        if self.run is None:
            return
        try:
            payload = to_wandb_payload(record)
            payload[STEP_METRIC] = self.last_step = step
            self.run.log(payload)
            if record.get("type") == "final":
                self.run.summary.update({k: v for k, v in payload.items() if isinstance(v, (int, float))})
        except Exception as exc:  # noqa: BLE001
            self._warn("could not log to W&B", exc)

    def on_finish(self, summary: dict[str, Any]) -> None:
        if self.run is None:
            return
        ok = summary.get("status") == "completed"
        try:
            self.run.summary.update({"status": summary.get("status"), "run_id": summary.get("run_id"),
                                     "wall_time_s": summary.get("wall_time_s"),
                                     "model_params": summary.get("model_params")})
            if summary.get("error"):
                self.run.summary["error"] = str(summary["error"])[:1000]
            if ok:
                self._log_media(summary)
        except Exception as exc:  # noqa: BLE001
            self._warn("could not log the final results to W&B", exc)
        finally:
            try:
                self.run.finish(exit_code=0 if ok else 1)
            except Exception as exc:  # noqa: BLE001
                self._warn("could not finish the W&B run", exc)
            self.run = None

    # -- media and artifacts -----------------------------------------------------------------
    def _log_media(self, summary: dict[str, Any]) -> None:
        import wandb

        run_dir = self.run_dir
        assert run_dir is not None
        predictions = run_dir.file("predictions.parquet")
        if predictions.exists() and self.table_rows > 0:
            frame = run_dir.read_predictions().head(self.table_rows)
            for column in frame.columns:  # arrays (logits) are shown as JSON text
                if frame[column].map(lambda v: isinstance(v, (list, tuple, np.ndarray))).any():
                    frame[column] = frame[column].map(lambda v: json.dumps(np.asarray(v).round(4).tolist()))
            self.run.log({"predictions": wandb.Table(dataframe=frame), STEP_METRIC: self.last_step})
        details = summary.get("method_details") or {}
        cache = details.get("teacher_cache")
        if cache and Path(cache).is_dir():
            self._log_saliency(Path(cache), str(details.get("saliency_definition") or "divergence"))
        if not self.artifacts:
            return
        checkpoint = run_dir.file("checkpoint.pt")
        if checkpoint.exists():
            art = wandb.Artifact(f"checkpoint-{run_dir.run_id}", type="model",
                                 metadata={"run_id": run_dir.run_id, "rule": summary.get("checkpoint_rule")})
            art.add_reference(checkpoint.resolve().as_uri(), name="checkpoint.pt")
            self.run.log_artifact(art)
        if cache and Path(cache).is_dir():
            art = wandb.Artifact(f"teacher-cache-{Path(cache).name}", type="teacher-cache",
                                 metadata={"teacher_run": details.get("teacher_run")})
            art.add_reference(Path(cache).resolve().as_uri())
            # Logged (not used: offline runs cannot use artifacts) by each student; W&B keeps
            # one version per distinct digest, so the cache appears once however many log it.
            self.run.log_artifact(art)

    def _log_saliency(self, cache: Path, definition: str) -> None:
        """Histogram of ``s_image - s_text`` on val: what the MSD weights react to."""
        import wandb

        meta = json.loads((cache / "meta.json").read_text())
        definitions = list(meta.get("saliency_definitions") or [])
        path = cache / "val.saliency.npy"
        if definition not in definitions or not path.exists():
            return
        sal = np.load(path, mmap_mode="r")[:, definitions.index(definition)]
        diff = np.asarray(sal[:, 0] - sal[:, 1], dtype=np.float64)
        diff = diff[np.isfinite(diff)]
        if diff.size:
            self.run.log({f"saliency/{definition}/image_minus_text": wandb.Histogram(diff, num_bins=SALIENCY_BINS),
                          STEP_METRIC: self.last_step})

    def _warn(self, what: str, exc: BaseException) -> None:
        print(f"[wandb] {what}: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)


def to_wandb_payload(record: dict[str, Any]) -> dict[str, Any]:
    """A metrics.jsonl record as W&B values: numbers as they are, ``*_hist`` as histograms."""
    import wandb

    out: dict[str, Any] = {}
    for key, value in record.items():
        if key in ("type", STEP_METRIC):
            continue
        if key.endswith("_hist") and isinstance(value, (list, tuple)) and len(value) == len(WEIGHT_BINS) - 1:
            out[key] = wandb.Histogram(np_histogram=(np.asarray(value, dtype=np.float64), WEIGHT_BINS))
        elif isinstance(value, bool):
            out[key] = int(value)
        elif isinstance(value, (int, float)) and not (isinstance(value, float) and math.isnan(value)):
            out[key] = value
    return out


def resolve_mode(config: DictConfig | None = None) -> str:
    """``WANDB_MODE`` wins; then ``tracking.wandb.mode``; then ``offline``."""
    env = os.environ.get("WANDB_MODE")
    if env:
        return "offline" if env == "dryrun" else env
    node = OmegaConf.select(config, "tracking.wandb", default=None) if config is not None else None
    return str((node or {}).get("mode") or "offline")


def wandb_callbacks(
    config: DictConfig, *, name: str | None = None, group: str | None = None, job_type: str | None = None
) -> tuple[WandbLogger, ...]:
    """The callbacks for a run: ``()`` when W&B is disabled, else one :class:`WandbLogger`.

    ``msd run`` and the grid runner both call this, so a run is tracked the same way
    whichever command started it.
    """
    node = OmegaConf.select(config, "tracking.wandb", default=None)
    node = OmegaConf.to_container(node, resolve=True) if node is not None else {}
    assert isinstance(node, dict)
    mode = resolve_mode(config)
    if mode == "disabled" or not node.get("enabled", True):
        return ()
    method = str(config.get("method"))
    if job_type is None:
        job_type = "teacher" if method == "teacher" else "student"
    tags = [str(config.get("dataset")), method]
    if method == "msd":
        tags.append(f"weighting:{config.get('weighting')}")
    return (
        WandbLogger(
            name=name, group=group, job_type=job_type, project=str(node.get("project") or PROJECT),
            entity=node.get("entity"), mode=mode if mode in MODES else "offline", dir=node.get("dir"),
            tags=tuple(tags), table_rows=int(node.get("table_rows", 100)), artifacts=bool(node.get("artifacts", True)),
        ),
    )
