"""Method-conditional search spaces.

Why conditions live here and not in each search file: a hyper-parameter that the method
never reads (``T_w`` for KD, a learning rate of the weight network for ``instance``)
would still be sampled, spend the sampler's budget on a dimension with no effect, and make
two identical runs look like different trials. Every known key therefore carries the
methods it matters to (:data:`KNOWN`), a search file inherits that condition, and a space
whose base can never use a key is refused before any training.

Define-by-run (Optuna's model): parameters are suggested in dependency order, a parameter
is suggested only when its condition holds for the values fixed by the base config or
sampled earlier in the same trial (``distill.weighting`` may itself be searched).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from benchmark.errors import ConfigError

KINDS = ("float", "int", "categorical")
DISTILLING = ("kd", "msd")
_ENTRY_FIELDS = ("type", "low", "high", "log", "step", "choices", "when", "grid")


@dataclass(frozen=True)
class Param:
    """One searched config key: its distribution and the condition under which it exists."""

    key: str
    kind: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple[Any, ...] = ()
    when: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)
    grid: tuple[Any, ...] = ()  # values for the grid sampler (categoricals use their choices)

    def distribution(self) -> BaseDistribution:
        if self.kind == "float":
            return FloatDistribution(float(self.low), float(self.high), log=self.log, step=self.step)  # type: ignore[arg-type]
        if self.kind == "int":
            return IntDistribution(int(self.low), int(self.high), log=self.log, step=int(self.step or 1))  # type: ignore[arg-type]
        return CategoricalDistribution(list(self.choices))

    def suggest(self, trial: optuna.Trial) -> Any:
        if self.kind == "float":
            return trial.suggest_float(self.key, float(self.low), float(self.high), log=self.log, step=self.step)  # type: ignore[arg-type]
        if self.kind == "int":
            return trial.suggest_int(self.key, int(self.low), int(self.high), log=self.log, step=int(self.step or 1))  # type: ignore[arg-type]
        return trial.suggest_categorical(self.key, list(self.choices))

    def applies(self, values: Mapping[str, Any]) -> bool:
        """True when every condition key has (or was sampled to) an allowed value."""
        return all(values.get(key) in allowed for key, allowed in self.when.items())

    def example(self) -> Any:
        """A value inside the range, to let the config loader check that the key exists."""
        if self.kind == "categorical":
            return self.choices[0]
        if self.kind == "int":
            return int(self.low)  # type: ignore[arg-type]
        return float(self.low)  # type: ignore[arg-type]

    def grid_values(self) -> list[Any]:
        if self.kind == "categorical":
            return list(self.grid or self.choices)
        if not self.grid:
            raise ConfigError(
                f"The grid sampler needs a finite list of values for {self.key!r}: add `grid: [..]` to its "
                "space entry (or make it categorical)."
            )
        return list(self.grid)

    def describe(self) -> str:
        if self.kind == "categorical":
            body = "{" + ", ".join(map(str, self.choices)) + "}"
        else:
            body = f"[{self.low:g}, {self.high:g}]{' log' if self.log else ''}"
        cond = " if " + " and ".join(f"{k} in {list(v)}" for k, v in self.when.items()) if self.when else ""
        return f"{self.key} {self.kind} {body}{cond}"


# The default space of every key the paper's methods search (docs/protocol.md §4.4, §6) and the
# methods each key matters to. Ranges are wide enough for the embedded data and the paper's
# usual settings (tau up to 8, alpha over (0, 1)); search files narrow or widen them.
KNOWN: dict[str, Param] = {
    p.key: p
    for p in (
        Param("optimizer.params.lr", "float", 1e-4, 1e-2, log=True),
        Param("distill.alpha", "float", 0.1, 0.9, when={"method": DISTILLING}),
        Param("distill.temperature", "float", 1.0, 8.0, log=True, when={"method": DISTILLING}),
        Param("distill.weighting_params.temperature", "float", 0.25, 4.0, log=True,
              when={"method": ("msd",), "distill.weighting": ("instance",)}),
        Param("distill.weighting_params.meta_lr", "float", 1e-3, 1e-1, log=True,
              when={"method": ("msd",), "distill.weighting": ("learned",)}),
        Param("distill.weighting_params.parameterisation", "categorical", choices=("mlp", "global"),
              when={"method": ("msd",), "distill.weighting": ("learned",)}),
        Param("distill.weighting_params.inner_lr", "float", 1e-3, 1e-1, log=True,
              when={"method": ("msd",), "distill.weighting": ("learned",)}),
    )
}
# What ``space: default`` searches: the method-conditional space (inner_lr is
# known, so its condition is enforced, but only searched when a file asks for it).
DEFAULT_KEYS = (
    "optimizer.params.lr",
    "distill.alpha",
    "distill.temperature",
    "distill.weighting_params.temperature",
    "distill.weighting_params.meta_lr",
    "distill.weighting_params.parameterisation",
)
# Short names of the known keys, for trial lines and grid cell names (two end in "temperature").
LABELS = {
    "optimizer.params.lr": "lr",
    "distill.alpha": "alpha",
    "distill.temperature": "tau",
    "distill.weighting_params.temperature": "Tw",
    "distill.weighting_params.meta_lr": "metalr",
    "distill.weighting_params.inner_lr": "innerlr",
    "distill.weighting_params.parameterisation": "wnet",
}


def label(key: str) -> str:
    return LABELS.get(key, key.rpartition(".")[2])


@dataclass
class SearchSpace:
    """The parameters of a search, in the order they are suggested."""

    params: list[Param]

    def sample(self, trial: optuna.Trial, fixed: Mapping[str, Any]) -> dict[str, Any]:
        """Suggest every applicable parameter; ``fixed`` holds the base's method/distill.weighting."""
        values = dict(fixed)
        out: dict[str, Any] = {}
        for param in self.params:
            if param.applies(values):
                out[param.key] = values[param.key] = param.suggest(trial)
        return out

    def names(self) -> list[str]:
        return [p.key for p in self.params]

    def grid_search_space(self) -> dict[str, list[Any]]:
        return {p.key: p.grid_values() for p in self.params}

    def describe(self) -> list[str]:
        return [p.describe() for p in self.params]


def parse_space(raw: Any, fixed: Mapping[str, Any], where: str) -> SearchSpace:
    """A search file's ``space:`` (``default`` or a mapping) checked against the base.

    ``fixed`` has the base config's values of the condition keys (method, distill.weighting).
    """
    if raw is None or raw == "default":
        params = [KNOWN[k] for k in DEFAULT_KEYS if _can_apply(KNOWN[k], fixed, {})]
        if not params:
            raise ConfigError(f"{where}: the default space has no parameter for {dict(fixed)}.")
        return SearchSpace(_ordered(params))
    if not isinstance(raw, Mapping) or not raw:
        raise ConfigError(f"{where}: 'space' must be `default` or a mapping of config keys to ranges.")
    params = [_parse_entry(str(key), entry, f"{where}, space.{key}") for key, entry in raw.items()]
    searched = {p.key: p for p in params}
    for param in params:
        if not _can_apply(param, fixed, searched):
            only = ", ".join(f"{k} in {list(v)}" for k, v in param.when.items())
            have = ", ".join(f"{k}={fixed.get(k)}" for k in param.when)
            raise ConfigError(
                f"{where}: {param.key!r} only matters when {only}, but the base has {have} and does not "
                f"search it. Remove {param.key!r} from the space, or change the base (or search "
                f"{'/'.join(param.when)} as a categorical)."
            )
    return SearchSpace(_ordered(params))


def _parse_entry(key: str, entry: Any, where: str) -> Param:
    known = KNOWN.get(key)
    if entry == "default" or entry is None:
        if known is None:
            raise ConfigError(f"{where}: no default range for {key!r}; give type/low/high (or choices).")
        return known
    if isinstance(entry, list):
        entry = {"type": "categorical", "choices": entry}
    if not isinstance(entry, Mapping):
        raise ConfigError(f"{where}: expected `default`, a list of choices, or a mapping with {', '.join(_ENTRY_FIELDS)}.")
    unknown = [f for f in entry if f not in _ENTRY_FIELDS]
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {unknown}; allowed: {', '.join(_ENTRY_FIELDS)}.")
    kind = str(entry.get("type") or (known.kind if known else ("categorical" if "choices" in entry else "")))
    if kind not in KINDS:
        raise ConfigError(f"{where}: 'type' must be one of {', '.join(KINDS)} (got {kind or 'nothing'}).")
    base = known if known is not None and known.kind == kind else Param(key, kind)
    when = {str(k): tuple(v if isinstance(v, list) else [v]) for k, v in (entry.get("when") or {}).items()}
    param = replace(
        base,
        low=entry.get("low", base.low), high=entry.get("high", base.high), log=bool(entry.get("log", base.log)),
        step=entry.get("step", base.step), choices=tuple(entry.get("choices") or base.choices),
        when={**base.when, **when}, grid=tuple(entry.get("grid") or ()),
    )
    _check_range(param, where)
    return param


def _check_range(param: Param, where: str) -> None:
    if param.kind == "categorical":
        if not param.choices:
            raise ConfigError(f"{where}: a categorical parameter needs a non-empty 'choices' list.")
        return
    if param.low is None or param.high is None:
        raise ConfigError(f"{where}: a {param.kind} parameter needs 'low' and 'high'.")
    try:
        low, high = float(param.low), float(param.high)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: 'low' and 'high' must be numbers (got {param.low!r}, {param.high!r}).") from exc
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise ConfigError(f"{where}: need low < high, got low={low:g}, high={high:g}.")
    if param.log and low <= 0:
        raise ConfigError(f"{where}: a log-scale range needs low > 0 (got {low:g}).")
    if param.log and param.step:
        raise ConfigError(f"{where}: 'step' and 'log' cannot be combined (Optuna samples one or the other).")


def _can_apply(param: Param, fixed: Mapping[str, Any], searched: Mapping[str, Param]) -> bool:
    """Whether some trial could use ``param``: each condition key is fixed to an allowed
    value, or searched with at least one allowed choice."""
    for key, allowed in param.when.items():
        if key in searched and searched[key].kind == "categorical":
            if not set(map(repr, searched[key].choices)) & set(map(repr, allowed)):
                return False
        elif fixed.get(key) not in allowed:
            return False
    return True


def _ordered(params: list[Param]) -> list[Param]:
    """Keys that others depend on (``method``, ``distill.weighting``) first; otherwise file order."""
    depended = {k for p in params for k in p.when}
    return sorted(params, key=lambda p: 0 if p.key in depended else 1)
