"""Registries of Optuna samplers and pruners, keyed by the names search files use.

Why registries: a search file names its sampler (``tpe``) and passes keyword arguments
straight to Optuna's constructor. A new sampler is one entry here; an unknown name or a
misspelt argument fails when the file is loaded, naming what is accepted, instead of
minutes into a search.
"""

from __future__ import annotations

import inspect
import warnings
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import optuna

from benchmark.errors import ConfigError
from benchmark.hpo.space import SearchSpace

warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


@dataclass(frozen=True)
class Choice:
    """``sampler: tpe`` or ``sampler: {type: tpe, n_startup_trials: 5}`` after parsing."""

    name: str
    params: Mapping[str, Any]


@dataclass(frozen=True)
class _Entry:
    cls: type
    defaults: Mapping[str, Any]
    build: Callable[[type, dict[str, Any], SearchSpace], Any]
    multi_objective: bool = True
    help: str = ""


def _plain(cls: type, params: dict[str, Any], space: SearchSpace) -> Any:
    return cls(**params)


def _grid(cls: type, params: dict[str, Any], space: SearchSpace) -> Any:
    return cls(search_space=space.grid_search_space(), **params)


SAMPLERS: dict[str, _Entry] = {
    # constant_liar: parallel workers do not all sample next to the same running trial.
    "tpe": _Entry(optuna.samplers.TPESampler, {"n_startup_trials": 5, "constant_liar": True}, _plain,
                  help="Tree-structured Parzen estimator (default)"),
    "random": _Entry(optuna.samplers.RandomSampler, {}, _plain, help="independent uniform sampling"),
    "grid": _Entry(optuna.samplers.GridSampler, {}, _grid, help="every combination of each parameter's `grid` values"),
    "cmaes": _Entry(optuna.samplers.CmaEsSampler, {"n_startup_trials": 1}, _plain, multi_objective=False,
                    help="CMA-ES (needs the `cmaes` package); categoricals fall back to random"),
    "nsga2": _Entry(optuna.samplers.NSGAIISampler, {}, _plain, help="NSGA-II, for multi-objective searches"),
}

PRUNERS: dict[str, _Entry] = {
    "median": _Entry(optuna.pruners.MedianPruner, {"n_startup_trials": 4, "n_warmup_steps": 0}, _plain,
                     help="prune below the median of earlier trials at the same step (default)"),
    "percentile": _Entry(optuna.pruners.PercentilePruner, {"percentile": 25.0, "n_startup_trials": 4}, _plain),
    "hyperband": _Entry(optuna.pruners.HyperbandPruner, {"min_resource": 1, "reduction_factor": 3}, _plain),
    "successive_halving": _Entry(optuna.pruners.SuccessiveHalvingPruner, {}, _plain),
    "threshold": _Entry(optuna.pruners.ThresholdPruner, {}, _plain, help="prune outside fixed lower/upper bounds"),
    "none": _Entry(optuna.pruners.NopPruner, {}, _plain, help="never prune"),
}


def parse_choice(raw: Any, registry: Mapping[str, _Entry], default: str, what: str, where: str) -> Choice:
    """Validate a ``sampler:``/``pruner:`` entry: known name, accepted keyword arguments."""
    if raw is None:
        raw = default
    if isinstance(raw, str):
        name, params = raw, {}
    elif isinstance(raw, Mapping):
        params = {str(k): v for k, v in raw.items() if k != "type"}
        name = str(raw.get("type") or default)
    else:
        raise ConfigError(f"{where}: '{what}' must be a name or a mapping with 'type' and its arguments.")
    if name not in registry:
        raise ConfigError(f"{where}: unknown {what} {name!r}. Known: {describe(registry)}.")
    accepted = _accepted(registry[name].cls)
    bad = sorted(set(params) - accepted - {"search_space"})
    if bad or "search_space" in params:
        raise ConfigError(
            f"{where}: {what} {name!r} does not take {', '.join(map(repr, bad or ['search_space']))}. "
            f"Accepted: {', '.join(sorted(accepted - {'search_space'}))}."
        )
    return Choice(name, params)


def build_sampler(choice: Choice, space: SearchSpace) -> optuna.samplers.BaseSampler:
    """The sampler; with a ``seed``, seeded per trial (:class:`TrialSeededSampler`)."""
    entry = SAMPLERS[choice.name]
    params = {**entry.defaults, **choice.params}
    params = {k: v for k, v in params.items() if k in _accepted(entry.cls)}
    seed = params.pop("seed", None)

    def make(trial_seed: int | None) -> optuna.samplers.BaseSampler:
        try:
            return entry.build(entry.cls, {**params, **({"seed": trial_seed} if "seed" in _accepted(entry.cls) else {})},
                               space)
        except (TypeError, ValueError, ImportError, ModuleNotFoundError) as exc:
            hint = " Install it with `pip install cmaes`." if choice.name == "cmaes" and "cmaes" in str(exc) else ""
            raise ConfigError(f"Cannot build sampler {choice.name!r} with {params}: {exc}.{hint}") from exc

    return make(None) if seed is None else TrialSeededSampler(make, int(seed))


class TrialSeededSampler(optuna.samplers.BaseSampler):
    """Re-seeds the wrapped sampler before every trial from the seed, the study name and the
    trial number.

    Why: processes that share a study (``--workers``, or several ``msd hpo run``) each hold
    their own sampler; with one fixed seed they draw the same "random" values and train the
    same configs twice. Trial numbers are unique across processes, so per-trial seeds are
    too — and a study run by one process still draws the same values every time. The study
    name keeps two studies of one search file (an exploratory one and a ``-fair-t20`` one)
    from drawing the same values and silently sharing runs, which would make the second
    look free in CPU-seconds. The samplers keep no state between trials beyond their RNG
    (TPE, random, NSGA-II and CMA-ES read the history from the storage), so a fresh sampler
    per trial loses nothing.
    """

    def __init__(self, factory: Callable[[int | None], optuna.samplers.BaseSampler], seed: int) -> None:
        self._factory, self._seed = factory, seed
        self._inner = factory(seed)

    def trial_seed(self, study_name: str, number: int) -> int:
        return (self._seed + zlib.crc32(study_name.encode()) + number) % 2**31

    def before_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        self._inner = self._factory(self.trial_seed(study.study_name, trial.number))
        self._inner.before_trial(study, trial)

    def infer_relative_search_space(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
        return self._inner.infer_relative_search_space(study, trial)

    def sample_relative(self, study: optuna.Study, trial: optuna.trial.FrozenTrial, search_space: dict[str, Any]) -> dict[str, Any]:
        return self._inner.sample_relative(study, trial, search_space)

    def sample_independent(self, study: optuna.Study, trial: optuna.trial.FrozenTrial, param_name: str,
                           param_distribution: Any) -> Any:
        return self._inner.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial, state: Any, values: Any) -> None:
        self._inner.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self._inner.reseed_rng()


def build_pruner(choice: Choice) -> optuna.pruners.BasePruner:
    entry = PRUNERS[choice.name]
    params = {**entry.defaults, **choice.params}
    try:
        return entry.build(entry.cls, params, SearchSpace([]))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"Cannot build pruner {choice.name!r} with {params}: {exc}") from exc


def supports_multi_objective(choice: Choice) -> bool:
    return SAMPLERS[choice.name].multi_objective


def describe(registry: Mapping[str, _Entry]) -> str:
    return ", ".join(f"{name}" + (f" ({e.help})" if e.help else "") for name, e in registry.items())


def _accepted(cls: type) -> set[str]:
    sig = inspect.signature(cls.__init__)
    return {n for n, p in sig.parameters.items() if n != "self" and p.kind is not p.VAR_KEYWORD}
