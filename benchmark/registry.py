"""MMF-style registry with lazy discovery.

MMF registers classes with decorators (``@registry.register_model("visual_bert")``) and
imports every module at start-up so that the decorators run. That start-up is slow and
breaks when any optional dependency is missing. Here, each kind of component names the
packages that hold its built-ins; they are imported only the first time a name of that
kind is looked up and not found. Third-party packages can add components through the
``msd_benchmark.plugins`` entry-point group, or by importing their module before lookup.

Usage::

    from benchmark.registry import registry

    @registry.register_model("late_fusion")
    class LateFusion(MultimodalModel): ...

    model_cls = registry.get_model("late_fusion")
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable
from importlib import metadata
from typing import Any

from benchmark.errors import ConfigError

# kind -> modules whose import registers that kind's built-in components.
_BUILTIN_MODULES: dict[str, tuple[str, ...]] = {
    "model": ("benchmark.models.late_fusion", "benchmark.models.visual_bert", "benchmark.models.mmbt"),
    "dataset": ("benchmark.data.datasets",),
    "metric": ("benchmark.train.metrics",),
    "loss": ("benchmark.distill.losses",),
    "divergence": ("benchmark.distill.losses",),
    "weighting": ("benchmark.distill.weighting",),
    "saliency": ("benchmark.distill.saliency",),
    "method": ("benchmark.distill.methods", "benchmark.distill.distill_methods"),
    "generator": ("benchmark.data.synthetic",),
    "optimizer": ("benchmark.train.optim",),
    "scheduler": ("benchmark.train.optim",),
    "launcher": ("benchmark.grid.launchers",),
}

ENTRY_POINT_GROUP = "msd_benchmark.plugins"


class Registry:
    """Name -> object tables, one per kind, filled by decorators."""

    def __init__(self) -> None:
        self._tables: dict[str, dict[str, Any]] = {kind: {} for kind in _BUILTIN_MODULES}
        self._discovered: set[str] = set()
        self._plugins_loaded = False

    # -- registration -------------------------------------------------------------------
    def register(self, kind: str, name: str) -> Callable[[Any], Any]:
        table = self._tables.setdefault(kind, {})

        def decorator(obj: Any) -> Any:
            existing = table.get(name)
            if existing is not None and existing is not obj and _qualname(existing) != _qualname(obj):
                raise ValueError(f"{kind} {name!r} is already registered by {_qualname(existing)}")
            table[name] = obj
            return obj

        return decorator

    def __getattr__(self, attr: str) -> Callable[..., Any]:
        # register_model / get_model / list_models ... for every kind, as in MMF.
        for prefix, method in (("register_", self.register), ("get_", self.get)):
            if attr.startswith(prefix):
                kind = attr[len(prefix) :]
                if kind in _BUILTIN_MODULES or kind in self._tables:
                    return lambda name, _k=kind, _m=method: _m(_k, name)
        if attr.startswith("list_"):
            plural = attr[len("list_") :]
            # list_models, list_losses, list_saliencies
            for kind in (plural[:-1], plural[:-2], plural[:-3] + "y"):
                if kind in _BUILTIN_MODULES or kind in self._tables:
                    return lambda _k=kind: self.names(_k)
        raise AttributeError(attr)

    # -- lookup -------------------------------------------------------------------------
    def get(self, kind: str, name: str) -> Any:
        table = self._tables.setdefault(kind, {})
        if name not in table:
            self._discover(kind)
        if name not in table:
            known = sorted(table)
            close = difflib.get_close_matches(str(name), known, n=3)
            hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
            raise ConfigError(
                f"Unknown {kind} {name!r}.{hint} Registered {kind}s: {', '.join(known) or 'none'}. "
                f"A new {kind} is one class decorated with @registry.register_{kind}({name!r})."
            )
        return table[name]

    def names(self, kind: str) -> list[str]:
        self._discover(kind)
        return sorted(self._tables.get(kind, {}))

    def _discover(self, kind: str) -> None:
        if kind in self._discovered:
            return
        self._discovered.add(kind)
        for module in _BUILTIN_MODULES.get(kind, ()):
            importlib.import_module(module)
        self._load_plugins()

    def _load_plugins(self) -> None:
        if self._plugins_loaded:
            return
        self._plugins_loaded = True
        for entry_point in metadata.entry_points(group=ENTRY_POINT_GROUP):
            entry_point.load()


def _qualname(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"


registry = Registry()
