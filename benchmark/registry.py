"""MMF-style registry with lazy discovery.

MMF registers classes with decorators (``@registry.register_model("visual_bert")``) and
imports every module at start-up so that the decorators run. That start-up is slow and
breaks when any optional dependency is missing. Here, each kind of component names where
its built-ins live (``_HOMES``), and that table is the one place the registry looks: the
first time a name of that kind is looked up and not found, each home is imported, and a
home that is a package has every module directly inside it imported too (``pkgutil``;
names starting with ``_`` left out), so the decorators run.

- Kinds whose package is cheap to import whole (losses, divergences, weightings, saliencies
  and methods in ``benchmark.distill``; models; datasets and their generators) name the
  package: a new component is one class in a new or existing module there, with no list
  to extend. Scanning these costs nothing measurable beyond the modules a lookup's callers
  have imported already (a method lookup imported all of ``benchmark.distill`` before).
- Kinds whose components sit beside infrastructure name their module (metrics, optimizers
  and schedulers in ``benchmark.train``, launchers in ``benchmark.grid``): scanning those
  packages would import the trainer and ``torch._dynamo`` on a metric or launcher lookup
  (seconds at a cold start). A new one goes in that module, or its module is added to
  ``_HOMES``; the "Unknown ..." error says which.

Discovery is per kind and lazy, so ``msd --help`` imports none of it.
Third-party packages add components through the ``msd_benchmark.plugins`` entry-point
group, or by importing their module before lookup.

Usage::

    from benchmark.registry import registry

    @registry.register_model("late_fusion")
    class LateFusion(MultimodalModel): ...

    model_cls = registry.get_model("late_fusion")
"""

from __future__ import annotations

import difflib
import importlib
import pkgutil
from collections.abc import Callable
from importlib import metadata
from typing import Any

from benchmark.errors import ConfigError

# kind -> where its built-ins are registered: a package (all its modules are imported) or a module.
_HOMES: dict[str, tuple[str, ...]] = {
    "model": ("benchmark.models",),
    "dataset": ("benchmark.data",),
    "metric": ("benchmark.train.metrics",),
    "loss": ("benchmark.distill",),
    "divergence": ("benchmark.distill",),
    "weighting": ("benchmark.distill",),
    "saliency": ("benchmark.distill",),
    "method": ("benchmark.distill",),
    "generator": ("benchmark.data.synthetic",),
    "optimizer": ("benchmark.train.optim",),
    "scheduler": ("benchmark.train.optim",),
    "launcher": ("benchmark.grid.launchers",),
}

ENTRY_POINT_GROUP = "msd_benchmark.plugins"


class Registry:
    """Name -> object tables, one per kind, filled by decorators."""

    def __init__(self, homes: dict[str, tuple[str, ...]] | None = None) -> None:
        self._homes = dict(_HOMES if homes is None else homes)
        self._tables: dict[str, dict[str, Any]] = {kind: {} for kind in self._homes}
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
                if kind in self._homes or kind in self._tables:
                    return lambda name, _k=kind, _m=method: _m(_k, name)
        if attr.startswith("list_"):
            plural = attr[len("list_") :]
            # list_models, list_losses, list_saliencies
            for kind in (plural[:-1], plural[:-2], plural[:-3] + "y"):
                if kind in self._homes or kind in self._tables:
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
                f"A new {kind} is one class decorated with @registry.register_{kind}({name!r}) "
                f"{_where(self._homes.get(kind, ()))}."
            )
        return table[name]

    def names(self, kind: str) -> list[str]:
        self._discover(kind)
        return sorted(self._tables.get(kind, {}))

    def _discover(self, kind: str) -> None:
        if kind in self._discovered:
            return
        self._discovered.add(kind)
        for home in self._homes.get(kind, ()):
            for module in _modules_of(home):
                importlib.import_module(module)
        self._load_plugins()

    def _load_plugins(self) -> None:
        if self._plugins_loaded:
            return
        self._plugins_loaded = True
        for entry_point in metadata.entry_points(group=ENTRY_POINT_GROUP):
            entry_point.load()


def _modules_of(home: str) -> list[str]:
    """``home`` itself and, when it is a package, the public modules directly inside it."""
    path = getattr(importlib.import_module(home), "__path__", None)
    if path is None:
        return [home]
    return [m.name for m in pkgutil.iter_modules(path, f"{home}.") if not m.name.rsplit(".", 1)[1].startswith("_")]


def _where(homes: tuple[str, ...]) -> str:
    entry_point = f"or in a package under the {ENTRY_POINT_GROUP} entry point"
    if not homes:
        return f"in a module imported before the lookup, {entry_point}"
    packages = [h for h in homes if hasattr(importlib.import_module(h), "__path__")]
    if packages:
        return f"in any module of {' or '.join(packages)} (found there without being listed), {entry_point}"
    return (f"in {' or '.join(homes)}, or in a module added to _HOMES in benchmark/registry.py "
            f"(the one list of where each kind is registered), {entry_point}")


def _qualname(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"


registry = Registry()
