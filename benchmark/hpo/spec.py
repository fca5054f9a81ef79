"""Search files (``experiments/hpo/*.yaml``): base config + space + objective + budget.

Why a file and not command-line flags: a fair comparison of methods is only fair if every
method's search is written down with the same budget, sampler and pruner, and can be
re-run. The file is validated completely when it is loaded (keys, ranges, metric, sampler
arguments), so a typo fails in a second, not after the teacher has trained.

Format (``docs/hpo.md`` has the reference)::

    name: msd_instance_hateful_memes     # study name (default: file name)
    base:                                # MMF keys, nested or dotted, or a list of key=value
      dataset: hateful_memes
      model: late_fusion
      method: msd
      distill.weighting: instance
    teacher: auto                        # auto | <run id or dir> | {overrides: {...}}
    data: {size: null, seed: 0}          # `msd data make` arguments if the data is missing
    space:                               # `default` or key -> range (see space.py)
      distill.alpha: {low: 0.1, high: 0.9}
      distill.temperature: {low: 1, high: 8, log: true}
    objective: {metric: null, direction: null}   # null = headline val metric, its direction
    budget: {trials: 20, timeout_s: null, cpu_s: null}
    sampler: {type: tpe, seed: 0}        # tpe | random | grid | cmaes | nsga2
    pruner: {type: median}               # median | hyperband | percentile | threshold | none
    storage: null                        # null = sqlite:///results/hpo/<study>.db
    resume: {heartbeat_interval: 10, grace_period: 60, max_retry: 2}
    scales: {smoke: {base: {...}, budget: {...}, data: {...}, teacher: {...}}}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from benchmark.config.fields import check_fields
from benchmark.config.loader import (
    canonical_key,
    dataset_node,
    flatten_dotted,
    load_config,
    load_yaml,
    move_keys,
    parse_value,
    weighting_of,
)
from benchmark.errors import ConfigError, UserError
from benchmark.hpo.samplers import PRUNERS, SAMPLERS, Choice, parse_choice, supports_multi_objective
from benchmark.hpo.space import SearchSpace, parse_space
from benchmark.hpo.storage import Heartbeat, check_study_name
from benchmark.train.metrics import metric_direction

_TOP = ("name", "description", "base", "teacher", "data", "space", "objective", "budget", "sampler", "pruner",
        "storage", "resume", "scales")
_SCALE_FIELDS = ("base", "teacher", "data", "budget", "space", "sampler", "pruner")
SELECTORS = ("config", "model", "dataset")
# Summary fields that may be objectives besides metrics (e.g. NSGA-II: quality vs cost).
SUMMARY_OBJECTIVES = ("train_time_s", "wall_time_s", "model_params", "updates")


class SearchFileError(ConfigError):
    """A search file is malformed; the message names the file and the entry."""


@dataclass(frozen=True)
class TeacherSpec:
    """``auto`` trains the dataset's default teacher once; ``ref`` names an existing run."""

    auto: bool = True
    ref: str | None = None
    overrides: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DataSpec:
    size: int | None = None
    seed: int = 0


@dataclass(frozen=True)
class Budget:
    trials: int | None = None
    timeout_s: float | None = None
    cpu_s: float | None = None

    def replace(self, **changes: Any) -> Budget:
        merged = {**self.__dict__, **{k: v for k, v in changes.items() if v is not None}}
        return Budget(**merged)

    def check(self, where: str) -> Budget:
        if self.trials is None and self.timeout_s is None and self.cpu_s is None:
            raise SearchFileError(f"{where}: the budget needs `trials`, `timeout_s` or `cpu_s` (or pass --trials N).")
        for name in ("trials", "timeout_s", "cpu_s"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise SearchFileError(f"{where}: budget.{name} must be positive, got {value}.")
        return self


@dataclass(frozen=True)
class Objective:
    """One optimised quantity: a validation metric key (or a summary field) and a direction."""

    metric: str
    direction: str  # "maximize" | "minimize"

    @property
    def is_metric(self) -> bool:
        return self.metric.startswith("val/")


@dataclass
class SearchSpec:
    name: str
    path: Path
    scale: str | None
    description: str
    base_args: list[str]
    fixed: dict[str, Any]  # dataset, model, method, distill.weighting, seed of the base config
    teacher: TeacherSpec
    data: DataSpec
    space: SearchSpace
    objectives: list[Objective]
    budget: Budget
    sampler: Choice
    pruner: Choice
    storage: str | None
    heartbeat: Heartbeat

    @property
    def multi_objective(self) -> bool:
        return len(self.objectives) > 1

    @property
    def directions(self) -> list[str]:
        return [o.direction for o in self.objectives]


def load_search(path: str | Path, scale: str | None = None) -> SearchSpec:
    """Parse and validate a search file (with its ``includes:``), applying ``scale``."""
    path = Path(path).expanduser()
    where = f"Search file {path}"
    if not path.is_file():
        raise SearchFileError(f"{where} does not exist (search files live in experiments/hpo/*.yaml).")
    try:
        raw = OmegaConf.to_container(load_yaml(path), resolve=False)
    except ConfigError as exc:
        raise SearchFileError(f"{where}: {exc}") from exc
    assert isinstance(raw, dict)
    raw = move_keys(raw, where)  # `weighting` (the old top-level key) -> distill.weighting, with a warning
    _check_fields(raw, _TOP, where)
    raw = _apply_scale(raw, scale, where)
    base_args = _base_args(raw.get("base") or {}, path, where)
    probe = _probe(base_args, where)
    fixed = {"dataset": str(probe.dataset), "model": str(probe.model), "method": str(probe.method),
             "distill.weighting": weighting_of(probe), "seed": int(probe.training.seed)}
    try:
        space = parse_space(raw.get("space"), fixed, where)
    except ConfigError as exc:
        raise SearchFileError(str(exc)) from exc
    _check_space_keys(space, base_args, where)
    objectives = _objectives(raw.get("objective"), probe, where)
    try:
        sampler = parse_choice(raw.get("sampler"), SAMPLERS, "tpe", "sampler", where)
        pruner = parse_choice(raw.get("pruner"), PRUNERS, "none" if len(objectives) > 1 else "median", "pruner", where)
    except ConfigError as exc:
        raise SearchFileError(str(exc)) from exc
    if len(objectives) > 1:
        if pruner.name != "none":
            raise SearchFileError(f"{where}: Optuna cannot prune multi-objective searches; set `pruner: none`.")
        if not supports_multi_objective(sampler):
            raise SearchFileError(f"{where}: sampler {sampler.name!r} is single-objective; use nsga2, tpe or random.")
    if sampler.name == "grid":
        try:
            space.grid_search_space()
        except ConfigError as exc:
            raise SearchFileError(f"{where}: {exc}") from exc
    budget = _budget(raw.get("budget") or {}, where)
    name = check_study_name(str(raw.get("name") or path.stem) + (f"-{scale}" if scale else ""))
    resume = raw.get("resume") or {}
    _check_fields(resume, ("heartbeat_interval", "grace_period", "max_retry"), f"{where}, resume")
    heartbeat = Heartbeat(int(resume.get("heartbeat_interval", 10)), int(resume.get("grace_period", 60)),
                          int(resume.get("max_retry", 2)))
    return SearchSpec(
        name=name, path=path.resolve(), scale=scale, description=str(raw.get("description") or ""),
        base_args=base_args, fixed=fixed, teacher=_teacher(raw.get("teacher", "auto"), where),
        data=_data(raw.get("data") or {}, where), space=space, objectives=objectives, budget=budget,
        sampler=sampler, pruner=pruner, storage=raw.get("storage"), heartbeat=heartbeat,
    )


def to_arg(key: str, value: Any) -> str:
    """``key=value`` such that the loader's ``literal_eval`` gives ``value`` back."""
    if key.lstrip("+") in SELECTORS or (isinstance(value, str) and parse_value(value) == value):
        return f"{key}={value}"
    if value is None:
        return f"{key}=null"
    if isinstance(value, bool):
        return f"{key}={'true' if value else 'false'}"
    return f"{key}={value!r}"


# -- parts -------------------------------------------------------------------------------------
def _apply_scale(raw: dict[str, Any], scale: str | None, where: str) -> dict[str, Any]:
    scales = raw.get("scales") or {}
    if scale is None:
        return raw
    if scale not in scales:
        raise SearchFileError(f"{where} has no scale {scale!r}. Scales: {', '.join(scales) or 'none'}.")
    change = scales[scale] or {}
    _check_fields(change, _SCALE_FIELDS, f"{where}, scales.{scale}")
    out = dict(raw)
    for key, value in change.items():
        if key in ("base", "data", "budget") and isinstance(value, Mapping):
            if key == "base":
                out[key] = {**_base_mapping(raw.get("base") or {}), **flatten_dotted(value)}
            else:
                out[key] = {**(raw.get(key) or {}), **value}
        elif key == "teacher" and isinstance(value, Mapping) and isinstance(raw.get("teacher"), Mapping):
            out[key] = {**raw["teacher"], **value}
        else:
            out[key] = value
    return out


def _base_mapping(base: Any, where: str = "Search file") -> dict[str, Any]:
    """``base`` as ``{dotted.key: value}``, from a (nested) mapping or a key=value list."""
    if isinstance(base, Mapping):
        return flatten_dotted(base)
    if not isinstance(base, list):
        raise SearchFileError(f"{where}: 'base' must be a mapping of config keys or a list of key=value.")
    out: dict[str, Any] = {}
    for arg in base:
        if "=" not in str(arg):
            raise SearchFileError(f"{where}: base entry {arg!r} is not of the form key=value.")
        key, _, value = str(arg).partition("=")
        out[canonical_key(key.strip(), where)] = parse_value(value)
    return out


def _base_args(base: Any, path: Path, where: str) -> list[str]:
    args = []
    for key, value in _base_mapping(base, where).items():
        if key == "config":
            target = Path(str(value)).expanduser()
            value = str(target if target.is_absolute() else (path.parent / target).resolve())
        if key.lstrip("+").startswith("hpo.") or key.lstrip("+") == "hpo":
            raise SearchFileError(f"{where}: base key {key!r}: `hpo.*` is written by the search itself.")
        args.append(to_arg(key, value))
    return args


def _probe(args: Sequence[str], where: str) -> DictConfig:
    try:
        return load_config(list(args))
    except UserError as exc:
        raise SearchFileError(f"{where}, base: {exc}") from exc


def _check_space_keys(space: SearchSpace, base_args: list[str], where: str) -> None:
    """Every searched key must be a config key (the loader names the nearest ones)."""
    try:
        load_config([*base_args, *(to_arg(p.key, p.example()) for p in space.params)])
    except UserError as exc:
        raise SearchFileError(f"{where}, space: {exc}") from exc


def _objectives(raw: Any, probe: DictConfig, where: str) -> list[Objective]:
    entries = raw if isinstance(raw, list) else [raw or {}]
    headline = f"val/{probe.dataset}/{dataset_node(probe).headline_metric}"
    out = []
    for i, entry in enumerate(entries):
        if isinstance(entry, str):
            entry = {"metric": entry}
        if not isinstance(entry, Mapping):
            raise SearchFileError(f"{where}: objective[{i}] must be a mapping with 'metric' and 'direction'.")
        _check_fields(entry, ("metric", "direction"), f"{where}, objective")
        metric = str(entry.get("metric") or headline)
        if "/" not in metric and metric not in SUMMARY_OBJECTIVES:
            metric = f"val/{probe.dataset}/{metric}"
        if metric.startswith("test/"):
            raise SearchFileError(
                f"{where}: objective {metric!r} is a test metric; tuning on test leaks the test set into "
                "model selection. Use the validation split (val/...)."
            )
        if not metric.startswith("val/") and metric not in SUMMARY_OBJECTIVES:
            raise SearchFileError(
                f"{where}: objective {metric!r} must be a validation metric (val/<dataset>/<metric>) or one "
                f"of {', '.join(SUMMARY_OBJECTIVES)}."
            )
        direction = entry.get("direction")
        if direction is None:
            direction = "minimize" if metric in SUMMARY_OBJECTIVES else _direction(metric, where)
        direction = {"max": "maximize", "min": "minimize"}.get(str(direction), str(direction))
        if direction not in ("maximize", "minimize"):
            raise SearchFileError(f"{where}: objective direction must be maximize or minimize, got {direction!r}.")
        out.append(Objective(metric, direction))
    return out


def _direction(metric: str, where: str) -> str:
    try:
        return "maximize" if metric_direction(metric) == "max" else "minimize"
    except ConfigError as exc:
        raise SearchFileError(f"{where}: {exc} Or set objective.direction.") from exc


def _budget(raw: Any, where: str) -> Budget:
    _check_fields(raw, ("trials", "timeout_s", "cpu_s"), f"{where}, budget")
    return Budget(
        trials=None if raw.get("trials") is None else int(raw["trials"]),
        timeout_s=None if raw.get("timeout_s") is None else float(raw["timeout_s"]),
        cpu_s=None if raw.get("cpu_s") is None else float(raw["cpu_s"]),
    )


def _teacher(raw: Any, where: str) -> TeacherSpec:
    if raw is None or raw == "auto":
        return TeacherSpec()
    if isinstance(raw, str):
        return TeacherSpec(auto=False, ref=raw)
    if isinstance(raw, Mapping):
        _check_fields(raw, ("overrides", "run"), f"{where}, teacher")
        if raw.get("run"):
            return TeacherSpec(auto=False, ref=str(raw["run"]))
        return TeacherSpec(overrides=flatten_dotted(raw.get("overrides") or {}))
    raise SearchFileError(f"{where}: 'teacher' must be auto, a run id/directory, or {{overrides: {{...}}}}.")


def _data(raw: Any, where: str) -> DataSpec:
    _check_fields(raw, ("size", "seed"), f"{where}, data")
    return DataSpec(size=None if raw.get("size") is None else int(raw["size"]), seed=int(raw.get("seed") or 0))


def _check_fields(node: Any, allowed: Sequence[str], where: str) -> None:
    check_fields(node, allowed, where, SearchFileError)
