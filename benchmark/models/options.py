"""Config look-ups shared by the model components.

Component types (fusion, heads, encoders) are registered by name in the suite's registry
so that a new one is a decorated class, not an edit to an if/else chain. A user who
mistypes a type must be told *which config key* is wrong and what the valid values are,
which the bare registry error cannot know; :func:`lookup` adds that.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any

from omegaconf import DictConfig, OmegaConf

from benchmark.errors import ConfigError
from benchmark.registry import registry


def lookup(kind: str, name: Any, key: str) -> Any:
    """The component of ``kind`` registered as ``name``; a ConfigError naming ``key`` if none."""
    known = registry.names(kind)
    if name not in known:
        raise ConfigError(invalid_choice(key, name, known))
    return registry.get(kind, name)


def invalid_choice(key: str, value: Any, valid: Iterable[str]) -> str:
    """One-paragraph message for a config value that is not one of ``valid``."""
    valid = sorted(valid)
    close = difflib.get_close_matches(str(value), valid, n=2)
    hint = f" Did you mean {' or '.join(map(repr, close))}?" if close else ""
    return f"{key}: {value!r} is not a valid value.{hint} Valid values: {', '.join(valid)}."


def node(config: DictConfig | dict | None, name: str) -> DictConfig:
    """A sub-node of ``config`` (an empty one when absent), so optional sections need no guards."""
    if config is None:
        return OmegaConf.create({})
    value = config.get(name) if hasattr(config, "get") else None
    if value is None:
        return OmegaConf.create({})
    return value if isinstance(value, DictConfig) else OmegaConf.create(value)


def positive_int(config: DictConfig, name: str, key: str, default: int | None = None) -> int:
    """An integer option that must be > 0, checked here so a bad size fails at build time."""
    value = config.get(name, default)
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ConfigError(f"{key}.{name}: expected a positive integer, got {value!r}.")
    return value
