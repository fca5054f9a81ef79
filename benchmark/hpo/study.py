"""Running a search: one study in a storage, any number of cooperating worker processes.

Why the budget is a property of the *study* and not of the process: ``--trials 20`` means
"the study has 20 trials", so a second ``msd hpo run`` on the same study (another worker,
or a restart after a crash) works towards the same 20 and never past them, and a finished
search re-run does nothing. Trials count when they finished (complete, pruned, or failed
by an error of their own) or are running/queued; interrupted trials do not count, their
retry does (:mod:`benchmark.hpo.recovery`).

``--workers N`` starts N processes of ``msd hpo run`` on the same storage, each running one
trial at a time with ``training.threads = 1`` (as the grid's workers: a thread count taken
from the cores would make a trial's result depend on the machine, docs/reproducibility.md).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from benchmark.errors import UserError
from benchmark.grid.locks import FileLock
from benchmark.hpo import storage as st
from benchmark.hpo.objective import SurplusTrial, TrialObjective
from benchmark.hpo.prepare import prepare
from benchmark.hpo.recovery import counts_against_budget, recover
from benchmark.hpo.samplers import build_pruner, build_sampler
from benchmark.hpo.space import label
from benchmark.hpo.spec import Budget, SearchSpec
from benchmark.train.trainer import TrainingDivergedError

optuna.logging.set_verbosity(optuna.logging.WARNING)


@dataclass
class SearchReport:
    study: str
    storage: str
    directions: list[str]
    trials: list[FrozenTrial]
    budget: Budget
    wall_s: float = 0.0
    notes: list[str] = field(default_factory=list)

    def count(self, state: TrialState) -> int:
        return sum(t.state == state for t in self.trials)

    @property
    def used(self) -> int:
        return sum(counts_against_budget(t) and t.state.is_finished() for t in self.trials)

    @property
    def cpu_s(self) -> float:
        return sum(float(t.user_attrs.get("cpu_s") or 0.0) for t in self.trials)

    @property
    def trial_wall_s(self) -> float:
        return sum(float(t.user_attrs.get("wall_s") or 0.0) for t in self.trials)

    def best(self) -> FrozenTrial | None:
        done = [t for t in self.trials if t.state == TrialState.COMPLETE and t.values]
        if not done:
            return None
        sign = 1 if self.directions[0] == "maximize" else -1
        return max(done, key=lambda t: sign * t.values[0])


def open_study(spec: SearchSpec, url: str, name: str) -> optuna.Study:
    """Create or load the study; a study created with other directions is refused."""
    storage = st.open_storage(url, spec.heartbeat)
    sampler = build_sampler(spec.sampler, spec.space)
    pruner = build_pruner(spec.pruner)
    try:
        existing = optuna.load_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner)
    except KeyError:
        existing = None
    if existing is not None:
        have = [d.name.lower() for d in existing.directions]
        if have != spec.directions:
            raise UserError(f"Study {name!r} in {st.safe_url(url)} optimises {have}, the search file {spec.path} "
                            f"{spec.directions}: use another --study name.")
        if existing.metric_names is None:  # a study created before metric names were set
            name_metrics(existing, spec)
        return existing
    try:
        study = optuna.create_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner,
                                    directions=spec.directions, load_if_exists=True)
    except optuna.exceptions.DuplicatedStudyError:  # another worker created it in between
        study = optuna.load_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner)
    for key, value in study_attrs(spec).items():
        study.set_user_attr(key, value)
    name_metrics(study, spec)
    return study


def name_metrics(study: optuna.Study, spec: SearchSpec) -> None:
    """Name each objective by its metric (``val/hateful_memes/roc_auc``), so Optuna's plots and
    optuna-dashboard label their axes with it instead of "Objective Value"."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names([o.metric for o in spec.objectives])


def study_attrs(spec: SearchSpec) -> dict[str, Any]:
    """What ``msd hpo best`` / ``grid`` / ``compare`` read back without the search file."""
    return {
        "search_file": str(spec.path), "scale": spec.scale, "base_args": spec.base_args,
        "objectives": [[o.metric, o.direction] for o in spec.objectives], "space": spec.space.describe(),
        "searched_keys": spec.space.names(), **{k: v for k, v in spec.fixed.items()},
        "sampler": spec.sampler.name, "pruner": spec.pruner.name,
    }


def run_search(
    spec: SearchSpec, *, budget: Budget, storage: str | None = None, study_name: str | None = None,
    workers: int = 1, threads: int | None = None, extra_args: Sequence[str] = (), worker_index: int | None = None,
    wandb: bool = True, log: Any = print,
) -> SearchReport:
    """Prepare once, then run trials until the study's budget is used (or the time is up)."""
    name = st.check_study_name(study_name or spec.name)
    url = st.resolve_url(name, storage, spec.storage)
    budget = budget.check(f"Search {spec.path}")
    started = time.time()
    if workers > 1 and threads is None:
        threads = 1  # as the grid's workers: never from the cores, so a trial's result does not depend on the machine
    study = open_study(spec, url, name)  # first: a wrong URL fails before the teacher trains
    prepared = prepare(spec, list(extra_args), threads=threads, study=name, wandb=wandb,
                       log=log if worker_index is None else _quiet)
    with FileLock(st.lock_dir(url) / f"{name}.recover.lock"):
        for message in recover(study, max_retry=spec.heartbeat.max_retry, grace_s=spec.heartbeat.grace_s,
                               journal=st.kind(url) == "journal"):
            log(message)
    if workers > 1 and worker_index is None:
        _spawn_workers(spec, name, url, budget, workers, threads, extra_args, wandb, log)
    else:
        _optimize(study, spec, prepared, name, url, budget, wandb, log)
    return SearchReport(name, url, spec.directions, study.get_trials(deepcopy=False), budget,
                        wall_s=time.time() - started, notes=prepared.notes)


def _quiet(message: str) -> None:
    """Workers do not repeat what the parent already printed about data and teacher."""


def budget_used(study: optuna.Study, budget: Budget) -> str | None:
    """Why the study needs no more trials, or None."""
    trials = study.get_trials(deepcopy=False)
    if budget.trials is not None and sum(counts_against_budget(t) for t in trials) >= budget.trials:
        return f"{budget.trials} trials"
    if budget.cpu_s is not None and sum(float(t.user_attrs.get("cpu_s") or 0) for t in trials) >= budget.cpu_s:
        return f"{budget.cpu_s:g} CPU-seconds"
    return None


def _optimize(study: optuna.Study, spec: SearchSpec, prepared: Any, name: str, url: str, budget: Budget,
              wandb: bool, log: Any) -> None:
    if (done := budget_used(study, budget)) is not None:
        log(f"study {name}: budget of {done} already used; nothing to run")
        return
    objective = TrialObjective(spec, prepared, name, budget_trials=budget.trials, prune=spec.pruner.name != "none",
                               wandb=wandb, journal=st.kind(url) == "journal")

    def after_trial(study: optuna.Study, trial: FrozenTrial) -> None:
        log(describe_trial(trial))
        if budget_used(study, budget) is not None:
            study.stop()

    study.optimize(objective, n_trials=None, timeout=budget.timeout_s, callbacks=[after_trial],
                   catch=(TrainingDivergedError, SurplusTrial), gc_after_trial=False, show_progress_bar=False)


def describe_trial(trial: FrozenTrial) -> str:
    """One line per finished trial: what a user watching the terminal wants to know."""
    state = trial.state.name
    attrs = trial.user_attrs
    value = f" value={trial.values[0]:.4f}" if trial.values and len(trial.values) == 1 else (
        f" values={[round(v, 4) for v in trial.values]}" if trial.values else "")
    if trial.state == TrialState.PRUNED and trial.intermediate_values:
        step = max(trial.intermediate_values)
        value = f" at evaluation {step} ({trial.intermediate_values[step]:.4f})"
    why = f" [{attrs.get('fail_reason')}: {attrs.get('error', '')}]" if trial.state == TrialState.FAIL else ""
    params = " ".join(f"{label(k)}={v:.4g}" if isinstance(v, float) else f"{label(k)}={v}" for k, v in trial.params.items())
    return (f"trial {trial.number:>3} {state:<8}{value}  {params}  run={attrs.get('run_id', '-')} "
            f"({float(attrs.get('wall_s') or 0):.1f} s){why}")


def _spawn_workers(spec: SearchSpec, name: str, url: str, budget: Budget, workers: int, threads: int | None,
                   extra_args: Sequence[str], wandb: bool, log: Any) -> None:
    """N ``msd hpo run`` processes on the same storage; Ctrl-C reaches them all."""
    base = [sys.executable, "-m", "benchmark.cli", "hpo", "run", str(spec.path), "--study", name, "--storage", url,
            "--no-plots"]
    if spec.scale:
        base += ["--scale", spec.scale]
    for flag, value in (("--trials", budget.trials), ("--timeout", budget.timeout_s), ("--cpu-seconds", budget.cpu_s),
                        ("--threads", threads)):
        if value is not None:
            base += [flag, str(value)]
    if not wandb:
        base.append("--no-wandb")
    env = {**os.environ, "OMP_NUM_THREADS": str(threads or 1), "MKL_NUM_THREADS": str(threads or 1)}
    procs = [subprocess.Popen([*base, "--worker-index", str(i), *extra_args], env=env) for i in range(workers)]
    log(f"study {name}: {workers} workers started (pids {', '.join(str(p.pid) for p in procs)}), "
        f"{threads} torch thread(s) each, storage {st.safe_url(url)}")
    try:
        codes = [p.wait() for p in procs]
    except KeyboardInterrupt:  # a terminal's Ctrl-C already reached the workers (same group)
        for p in procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.send_signal(signal.SIGTERM)
                p.wait()
        raise
    bad = [(p.pid, c) for p, c in zip(procs, codes) if c != 0]
    if bad:
        raise UserError(f"study {name}: worker(s) exited with errors: {bad}; their output is above. "
                        "Re-run the same command to continue the study.")


def load_existing(name: str, storage: str | None = None) -> tuple[optuna.Study, str]:
    """A study by name (``msd hpo best/plot/show``), with a clear error when absent."""
    url = st.resolve_url(name, storage)
    local = st.sqlite_path(url) or (st.journal_path(url) if st.kind(url) == "journal" else None)
    if local is not None and not Path(local).exists():
        raise UserError(f"No study storage at {local}: run `msd hpo run FILE` first, or pass --storage URL.")
    store = st.open_storage(url)
    try:
        return optuna.load_study(study_name=name, storage=store), url
    except KeyError as exc:
        names = [s.study_name for s in optuna.get_all_study_summaries(store)]
        raise UserError(f"No study {name!r} in {st.safe_url(url)}; it holds: {', '.join(names) or 'nothing'}.") from exc
