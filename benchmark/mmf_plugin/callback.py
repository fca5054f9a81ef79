"""``msd_wandb``: MMF training logged to W&B with this suite's conventions.

Why not MMF's own ``training.wandb``: on a current stack it fails at ``wandb.init`` (it passes
the OmegaConf object as ``config``) and, once patched, hangs at exit (it finishes the run in
``__del__``, during interpreter teardown). This callback reuses the suite's guarded
:class:`benchmark.tracking.wandb_logger.WandbLogger`: project ``msd-benchmark``, ``offline``
unless ``WANDB_MODE`` (or ``mode``) says otherwise, metrics under MMF's keys
(``train/hateful_memes/msd_kd``, ``val/hateful_memes/roc_auc``) against
``trainer/global_step`` (= MMF's ``num_updates``), the ``msd_kd`` terms under the suite's
names (``loss/kd``, ``weight/image_mean`` …), and a run that is always finished: at
``teardown`` when MMF completes, with ``exit_code=1`` at interpreter exit otherwise.

Usage: ``training.callbacks: [{type: msd_wandb, params: {}}]``.
"""

from __future__ import annotations

import atexit
from pathlib import Path
from typing import Any

from mmf.common.registry import registry
from mmf.trainers.callbacks.base import Callback
from omegaconf import DictConfig

from benchmark.mmf_plugin.loss import MSDKDLoss
from benchmark.tracking.run_store import RunDir
from benchmark.tracking.wandb_logger import PROJECT, WandbLogger, resolve_mode


@registry.register_callback("msd_wandb")
class MSDWandbCallback(Callback):
    """Mirrors MMF's meters into one W&B run; ``params`` are ``wandb.init``'s, all optional."""

    def __init__(
        self,
        config: DictConfig,
        trainer: Any,
        project: str = PROJECT,
        entity: str | None = None,
        mode: str | None = None,
        dir: str | None = None,
        name: str | None = None,
        group: str | None = None,
        job_type: str = "student",
        tags: list[str] | tuple[str, ...] = (),
    ) -> None:
        super().__init__(config, trainer)
        save_dir = Path(str(config.get("env", {}).get("save_dir") or "./save"))
        dataset = str(config.get("datasets") or config.get("dataset") or "")
        self.logger = WandbLogger(
            name=name, group=group, job_type=job_type, project=project, entity=entity,
            mode=mode or resolve_mode(None), dir=dir or str(save_dir),
            tags=(*tags, *(t for t in (dataset, str(config.get("model") or "")) if t)),
            table_rows=0, artifacts=False, resume_by_run_id=False,
        )
        self.run_dir = RunDir(save_dir.resolve())
        self.started = False
        self.finished = False
        atexit.register(self._finish, "failed")

    # -- plumbing ------------------------------------------------------------------------------
    def _step(self) -> int:
        return int(getattr(self.trainer, "num_updates", 0) or 0)

    def _log(self, record: dict[str, Any]) -> None:
        if self.finished:
            return
        if not self.started:
            self.started = True
            self.logger.on_start(self.run_dir, self.config)
        self.logger.on_log({"trainer/global_step": self._step(), **record}, self._step())

    def _finish(self, status: str) -> None:
        if self.finished:
            return
        self.finished = True
        if self.started:
            self.logger.on_finish({"status": status, "run_id": self.run_dir.run_id})

    def _terms(self) -> dict[str, float]:
        model = getattr(self.trainer, "model", None)
        if model is None:
            return {}
        terms: dict[str, float] = {}
        for module in model.modules():
            if isinstance(module, MSDKDLoss):
                terms.update(module.last_terms)
        return terms

    @staticmethod
    def _scalars(meter: Any) -> dict[str, float]:
        return {k: float(v) for k, v in meter.get_scalar_dict().items()} if meter is not None else {}

    # -- MMF hooks -----------------------------------------------------------------------------
    def on_update_end(self, **kwargs: Any) -> None:
        if not kwargs.get("should_log"):
            return
        record: dict[str, Any] = {"type": "train", **self._scalars(kwargs.get("meter")), **self._terms()}
        optimizer = getattr(self.trainer, "optimizer", None)
        if optimizer is not None:
            record["train/learning_rate"] = float(optimizer.param_groups[0]["lr"])
        self._log(record)

    def on_validation_end(self, **kwargs: Any) -> None:
        self._log({"type": "val", **self._scalars(kwargs.get("meter"))})

    def on_test_end(self, **kwargs: Any) -> None:
        self._log({"type": "final", **self._scalars(kwargs.get("meter"))})

    def teardown(self, **kwargs: Any) -> None:
        self._finish("completed")
