"""A trial is an ordinary suite run: ``run_experiment`` on the base config + sampled values.

Why ordinary runs: a tuned configuration must be reproducible with ``msd run`` and land in
the same run store (and W&B project) as every other run, so analysis never needs to know a
run came from a search. The link is kept on both sides: the trial stores the run id
(``user_attrs["run_id"]``) and, with W&B on, its W&B run (``wandb_run_id``, ``wandb_project``);
the run's config stores the study and trial number under
``hpo.*`` — a volatile key, so the run id does not depend on which trial asked for it and
two trials with identical values share one run (the second one finds it complete).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import optuna
from omegaconf import DictConfig

from benchmark.config.loader import build_config
from benchmark.config.validate import validate_config
from benchmark.hpo.prepare import Prepared
from benchmark.hpo.recovery import FAIL_REASON, OWNER, OwnerHeartbeat, counts_against_budget, owner_record
from benchmark.hpo.spec import Objective, SearchSpec, to_arg
from benchmark.tracking.run_store import RunDir

# Keys of a trial's arguments that do not belong in a reproducible `key=value` line: paths
# of this machine and bookkeeping. ``env.data_dir`` stays: the dataset paths interpolate it,
# so it is part of the run id.
_NOT_REPRODUCED_PREFIXES = ("env.", "hpo.")
_REPRODUCED_ENV = ("env.data_dir",)
_NOT_REPRODUCED_KEYS = ("training.threads",)


class PrunedRun(optuna.TrialPruned):
    """Raised from the reporter when Optuna prunes: the trainer records status ``pruned``
    (``run_status``), Optuna records the trial PRUNED (it is a ``TrialPruned``)."""

    run_status = "pruned"


class SurplusTrial(RuntimeError):
    """Parallel workers asked for more trials than the budget; this one is not run."""


class TrialReporter:
    """RunCallback: every validation record becomes an intermediate value of the trial.

    The step Optuna sees is the *evaluation number* (1, 2, …), not the update: pruner
    settings such as ``n_warmup_steps: 3`` or Hyperband's ``min_resource`` then mean the same
    on every dataset and data size. A resumed run continues the count from its metrics.
    Multi-objective trials cannot report (Optuna has no intermediate values for them): the
    reporter then only records the run directory and status."""

    def __init__(self, trial: optuna.Trial, metric: str, prune: bool, report: bool = True) -> None:
        self.trial, self.metric = trial, metric
        self.report, self.prune = report, prune and report
        self.run: RunDir | None = None
        self.evaluations: int | None = None

    def on_start(self, run: RunDir, config: DictConfig) -> None:
        self.run = run
        self.trial.set_user_attr("run_dir", str(run.path))

    def on_log(self, record: dict[str, Any], step: int) -> None:
        if not self.report or record.get("type") != "val" or self.metric not in record:
            return
        if self.evaluations is None:  # first evaluation of this process: count earlier ones
            earlier = self.run.read_metrics() if self.run is not None else []
            self.evaluations = sum(r.get("type") == "val" and int(r.get("trainer/global_step", 0)) < step
                                   for r in earlier)
        self.evaluations += 1
        value = float(record[self.metric])
        if not math.isfinite(value):
            return
        self.trial.report(value, self.evaluations)
        if self.prune and self.trial.should_prune():
            raise PrunedRun(f"trial {self.trial.number} pruned at update {step}, evaluation {self.evaluations} "
                            f"({self.metric} = {value:.4f})")

    def on_finish(self, summary: dict[str, Any]) -> None:
        self.trial.set_user_attr("run_status", summary.get("status"))

    def replay(self, records: list[dict[str, Any]]) -> None:
        """A run found complete (same values as an earlier trial) still shows its curve."""
        if not self.report:
            return
        evaluations = [r for r in records if r.get("type") == "val" and self.metric in r]
        for number, record in enumerate(evaluations, start=1):
            self.trial.report(float(record[self.metric]), number)


@dataclass
class TrialObjective:
    """The callable handed to ``study.optimize``."""

    spec: SearchSpec
    prepared: Prepared
    study_name: str
    budget_trials: int | None = None
    prune: bool = True
    wandb: bool = True
    journal: bool = False

    def __call__(self, trial: optuna.Trial) -> float | list[float]:
        trial.set_user_attr(FAIL_REASON, None)
        trial.set_user_attr(OWNER, owner_record())
        self._check_surplus(trial)  # raises SurplusTrial, which the study catches
        started_cpu, started_wall = time.process_time(), time.time()
        try:
            if self.journal:
                with OwnerHeartbeat(trial, self.spec.heartbeat.interval_s):
                    return self._run(trial)
            return self._run(trial)
        except optuna.TrialPruned:
            raise
        except KeyboardInterrupt:
            trial.set_user_attr(FAIL_REASON, "interrupted")
            raise
        except BaseException as exc:
            trial.set_user_attr(FAIL_REASON, "error")
            trial.set_user_attr("error", f"{type(exc).__name__}: {exc}"[:2000])
            raise
        finally:
            trial.set_user_attr("cpu_s", round(time.process_time() - started_cpu, 3))
            trial.set_user_attr("wall_s", round(time.time() - started_wall, 3))

    def _run(self, trial: optuna.Trial) -> float | list[float]:
        from benchmark.grid.locks import FileLock, run_lock_path
        from benchmark.tracking.run_id import compute_run_id
        from benchmark.train.trainer import run_experiment

        params = self.spec.space.sample(trial, self.spec.fixed)
        sampled = [to_arg(k, v) for k, v in params.items()]
        args = [*self.prepared.args, *sampled]
        config = build_config([*args, f"+hpo.study={self.study_name}", f"+hpo.trial={trial.number}"])
        validate_config(config, where=f"trial {trial.number} ({' '.join(sampled)})")  # before its lock and W&B run
        run_id = compute_run_id(config)
        trial.set_user_attr("run_id", run_id)
        trial.set_user_attr("args", reproducible_args(args))
        reporter = TrialReporter(trial, self.spec.objectives[0].metric, self.prune,
                                 report=not self.spec.multi_objective)
        callbacks: tuple = (reporter, *self._wandb(config, trial, run_id))
        with FileLock(run_lock_path(config.env.save_dir, run_id)):  # identical values in two workers
            result = run_experiment(config, progress=False, callbacks=callbacks)
        trial.set_user_attr("reused_run", bool(result.skipped))
        if result.skipped:
            reporter.replay(result.run_dir.read_metrics())
        _note_trial(result.run_dir, self.study_name, trial.number)
        values = [objective_value(result.summary, o) for o in self.spec.objectives]
        trial.set_user_attr("run_status", result.summary.get("status"))
        if any(not math.isfinite(v) for v in values):
            trial.set_user_attr(FAIL_REASON, "nan")
        return values[0] if len(values) == 1 else values

    def _wandb(self, config: DictConfig, trial: optuna.Trial, run_id: str) -> tuple:
        """The W&B logger, and the trial's link to its W&B run: the id is derived from the run id
        (one W&B run per run, resumed by a retried trial), so it is known before training."""
        if not self.wandb:
            return ()
        from benchmark.tracking.wandb_logger import wandb_callbacks, wandb_run_id

        loggers = wandb_callbacks(config, name=f"{self.study_name}/trial-{trial.number}", group=self.study_name,
                                  job_type="hpo")
        for logger in loggers:
            where = logger.settings.init_args()
            trial.set_user_attr("wandb_run_id", wandb_run_id(run_id))
            trial.set_user_attr("wandb_project", where.get("project"))
            if where.get("entity"):
                trial.set_user_attr("wandb_entity", where["entity"])
        return loggers

    def _check_surplus(self, trial: optuna.Trial) -> None:
        """With several workers two may start the last trial at once; the later one yields."""
        if self.budget_trials is None:
            return
        before = [t for t in trial.study.get_trials(deepcopy=False) if t.number < trial.number]
        if sum(counts_against_budget(t) for t in before) >= self.budget_trials:
            trial.set_user_attr(FAIL_REASON, "surplus")
            trial.study.stop()
            raise SurplusTrial(f"trial {trial.number}: the budget of {self.budget_trials} trials is used up")


def objective_value(summary: dict[str, Any], objective: Objective) -> float:
    """The final validation metric of the kept checkpoint (or a summary field like time)."""
    if objective.is_metric:
        value = (summary.get("metrics") or {}).get(objective.metric)
        if value is None and summary.get("early_stop_criteria") == objective.metric:
            value = summary.get("best_value")
    else:
        value = summary.get(objective.metric)
    return float("nan") if value is None else float(value)


def reproducible_args(args: list[str]) -> list[str]:
    """The trial's MMF arguments without bookkeeping: what ``msd run`` needs to give the
    same run id (and so find the trial's run complete in the same store)."""
    out = []
    for arg in args:
        key = arg.partition("=")[0].lstrip("+")
        if key in _NOT_REPRODUCED_KEYS:
            continue
        if key.startswith(_NOT_REPRODUCED_PREFIXES) and key not in _REPRODUCED_ENV:
            continue
        out.append(arg)
    return out


def _note_trial(run: RunDir, study: str, number: int) -> None:
    """The run's summary lists every trial that used it (several, when values repeat)."""
    summary = run.read_summary()
    if summary is None:
        return
    trials = [t for t in summary.get("hpo_trials", []) if t != {"study": study, "trial": number}]
    run.update_summary(hpo_trials=[*trials, {"study": study, "trial": number}])
