"""Resolved run configs for grid cells, built fast and exactly as ``msd run`` would.

Why not just ``build_config`` per cell: it re-reads and merges every YAML on each call
(~60 ms), and a 100-cell grid would spend seconds on it at every ``msd grid show``. Here
the merged defaults are loaded once per (config, model, dataset) group and a cell's
overrides are applied to a plain copy of that tree (a ``+key`` is added, as the loader adds
it); anything the fast path cannot vouch for (a key inside an open mapping, a typo) goes
through ``load_config`` itself, so errors read exactly as on the command line. A test
checks both paths agree.
"""

from __future__ import annotations

import copy
from typing import Any

from omegaconf import DictConfig, OmegaConf

from benchmark.config.loader import (
    canonical_arg,
    flatten_keys,
    load_config,
    parse_value,
    resolve,
    resolve_tree,
)
from benchmark.errors import ConfigError
from benchmark.grid.spec import (
    AXIS_ALIASES,
    FAMILY_AXIS,
    SELECTOR_KEYS,
    Axis,
    GridError,
    GridSpec,
    Resources,
    TeacherFamily,
)

CORE_AXES = ("dataset", "model", "method", "distill.weighting", "seed")
TEACHER = "teacher"


def format_arg(key: str, value: Any) -> str:
    """``key=value`` such that MMF's ``literal_eval`` parsing gives ``value`` back."""
    if key in SELECTOR_KEYS:
        return f"{key}={value}"
    if isinstance(value, str) and parse_value(value) == value:
        return f"{key}={value}"
    if value is None:
        return f"{key}=null"
    return f"{key}={value!r}"


class ConfigBuilder:
    """Builds resolved configs fast: the merged defaults are loaded once per selector group.

    ``build_config`` re-reads and merges every YAML for each call (~60 ms); a 100-cell grid
    would spend seconds on it at every ``msd grid show``. Overrides are applied here with
    the loader's own strictness; anything unusual (a key inside an open mapping, a typo)
    falls back to ``load_config`` itself so its error message is the user's.
    """

    def __init__(self, spec: GridSpec, extra: tuple[str, ...]) -> None:
        self.spec = spec
        self.extra = tuple(canonical_arg(a, "grid command line") for a in extra)
        self._groups: dict[tuple, tuple[dict[str, Any], set[str]]] = {}
        self._base_cfg = self._group(self._selectors({}))[0]
        if spec.data.size is not None:
            self.extra = (*self.extra, f"env.data_dir={self._sized_data_dir()}")

    def _sized_data_dir(self) -> str:
        """Data of a non-default size lives in its own folder under ``env.data_dir``.

        The generators write one size per folder; a smoke grid (64 samples) sharing the
        folder of the full-size data would regenerate it under runs that are reading it.
        """
        env_args = tuple(a for a in self.extra if a.startswith("env."))
        root = self._slow((*(f"{k}={v}" for k, v in self._selectors({})), *env_args)).env.data_dir
        seed = f"-seed{self.spec.data.seed}" if self.spec.data.seed else ""
        return f"{root}/size{self.spec.data.size}{seed}"

    def defaults(self) -> dict[str, Any]:
        """The core axes' values where a cell does not set them (for its name)."""
        return {k: self.base_value(k) for k in CORE_AXES}

    def base_value(self, key: str) -> Any:
        if key in self.spec.base:
            return self.spec.base[key]
        extra = dict(a.split("=", 1) for a in self.extra if "=" in a)
        if key in extra:
            return parse_value(extra[key])
        node: Any = self._base_cfg
        for part in AXIS_ALIASES.get(key, key).split("."):
            node = node.get(part) if isinstance(node, dict) else None
        return node

    def _selectors(self, values: dict[str, Any]) -> tuple[tuple[str, str], ...]:
        merged = {k: v for k, v in self.spec.base.items() if k in SELECTOR_KEYS}
        merged.update({k: v for k, v in values.items() if k in SELECTOR_KEYS})
        for arg in self.extra:
            key, _, raw = arg.partition("=")
            if key in SELECTOR_KEYS:
                merged[key] = raw
        return tuple(sorted((k, str(v)) for k, v in merged.items()))

    def _group(self, selectors: tuple[tuple[str, str], ...]) -> tuple[dict[str, Any], set[str]]:
        if selectors not in self._groups:
            try:
                config = load_config([f"{k}={v}" for k, v in selectors])
            except ConfigError as exc:
                raise GridError(f"Grid file {self.spec.path}: {exc}") from exc
            tree = OmegaConf.to_container(config, resolve=False)
            self._groups[selectors] = (tree, set(flatten_keys(config)))
        return self._groups[selectors]

    def overrides(self, values: dict[str, Any], role: str) -> dict[str, Any]:
        """Dotted overrides in merge order: base < axis values < per-value overrides < scale."""
        out = {k: v for k, v in self.spec.base.items() if k not in SELECTOR_KEYS}
        axes = {a.key: a for a in self.spec.axes}
        for key, value in values.items():
            if key not in SELECTOR_KEYS and key != FAMILY_AXIS:  # a family name is not a teacher run id
                out[AXIS_ALIASES.get(key, key)] = value
        for key, value in values.items():
            axis: Axis | None = axes.get(key)
            if axis is not None:
                out.update(axis.overrides.get(value, {}))
        if role == TEACHER:
            method_axis = axes.get("method")
            if method_axis is not None:
                out.update(method_axis.overrides.get(TEACHER, {}))
            out.update({"method": TEACHER, "distill.weighting": "none", "teacher": None})
            out.update(self.spec.teacher_overrides)
            family = self.family(values)
            if family is not None:
                out.update(family.settings())
        out.update(self.spec.scale_overrides)
        return out

    def family(self, values: dict[str, Any]) -> TeacherFamily | None:
        """The teacher family a cell's values name (``teachers.families``), if any."""
        name = values.get(FAMILY_AXIS)
        return self.spec.teacher_families.get(name) if name is not None else None

    def resources(self, values: dict[str, Any], role: str) -> Resources:
        res = self.spec.resources
        for axis in self.spec.axes:
            if axis.key in values:
                res = res.merged(axis.resources.get(values[axis.key]))
        if role == TEACHER:
            method_axis = self.spec.axis("method")
            if method_axis is not None:
                res = res.merged(method_axis.resources.get(TEACHER))
            res = res.merged(self.spec.teacher_resources)
            family = self.family(values)
            if family is not None:
                res = res.merged(family.resources)
        return res

    def config(self, values: dict[str, Any], overrides: dict[str, Any]) -> tuple[tuple[str, ...], DictConfig]:
        family = self.family(values) if overrides.get("method") == TEACHER else None
        selectors = self._selectors({**values, **(family.selectors() if family else {})})
        args = tuple([*(f"{k}={v}" for k, v in selectors), *(format_arg(k, v) for k, v in overrides.items()), *self.extra])
        merged, known = self._group(selectors)
        extra_overrides = [a for a in self.extra if a.partition("=")[0] not in SELECTOR_KEYS]
        pairs = [(k, v) for k, v in overrides.items()]
        pairs += [(a.partition("=")[0], parse_value(a.partition("=")[2])) for a in extra_overrides]
        if any(not k.startswith("+") and k not in known for k, _ in pairs):
            return args, self._slow(args)  # open mappings or typos: the loader decides
        tree = copy.deepcopy(merged)
        for key, value in pairs:
            set_dotted(tree, key.removeprefix("+"), value)  # +key: added on purpose, as the loader does
        try:
            return args, resolve_tree(tree)
        except ConfigError as exc:
            raise GridError(f"Grid file {self.spec.path}: {exc}") from exc

    def _slow(self, args: tuple[str, ...]) -> DictConfig:
        try:
            return resolve(load_config(list(args)))
        except ConfigError as exc:
            raise GridError(f"Grid file {self.spec.path}: cell `msd run {' '.join(args)}`: {exc}") from exc


def set_dotted(tree: Any, key: str, value: Any) -> None:
    """``OmegaConf.update(..., merge=True)`` on a plain tree (keys already known to exist)."""
    parts = key.split(".")
    node = tree
    for part in parts[:-1]:
        node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
    last: Any = int(parts[-1]) if isinstance(node, list) else parts[-1]
    current = node[last] if isinstance(node, list) or last in node else None
    if isinstance(value, dict) and isinstance(current, dict):
        merged = copy.deepcopy(current)
        for k, v in value.items():
            set_dotted(merged, str(k), v)
        value = merged
    node[last] = copy.deepcopy(value)
