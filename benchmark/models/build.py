"""Building a model from a run config: model name + size preset + view rule.

A run config names ``model`` (a registered family) and ``model_size`` (a preset in
``model_config.<model>.presets``; ``auto`` = ``teacher`` for the teacher run, ``student``
otherwise). The model receives ``model_config.<model>`` with the preset merged in and
``views.removal`` copied to ``removal`` (docs/dev/contracts.md), plus ``name`` and ``size``
so that the model can report what it is.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf
from torch import nn

from benchmark.config.loader import size_preset
from benchmark.data.info import DatasetInfo
from benchmark.errors import ConfigError
from benchmark.models.base import MultimodalModel
from benchmark.models.options import invalid_choice
from benchmark.registry import registry

ROLES = ("auto", "teacher", "student")


def resolve_size(config: DictConfig, role: str = "auto") -> str:
    """The preset name: ``model_size`` unless ``auto``, then by role (or by ``method``)."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, got {role!r}")
    size = config.get("model_size", "auto") or "auto"
    if size != "auto" or role == "auto":
        return size_preset(config)
    return role


def model_config(config: DictConfig, role: str = "auto") -> DictConfig:
    """``model_config.<model>`` with the preset merged in, ``removal``, ``name`` and ``size`` set."""
    name = config.get("model")
    all_models = config.get("model_config") or {}
    if name not in all_models:
        known = registry.names("model")
        if name not in known:
            raise ConfigError(invalid_choice("model", name, known))
        raise ConfigError(
            f"model_config.{name}: missing. Include the model's defaults (benchmark/config/models/{name}.yaml) "
            f"in the run config, or pass model={name} so that the loader merges it."
        )
    resolved = OmegaConf.to_container(all_models[name], resolve=True)
    presets = resolved.pop("presets", None) or {}
    size = resolve_size(config, role)
    if size not in presets:
        raise ConfigError(
            invalid_choice(f"model_size (presets of model_config.{name})", size, ["auto", *presets])
        )
    merged = OmegaConf.merge(OmegaConf.create(resolved), OmegaConf.create(presets[size] or {}))
    views = config.get("views") or {}
    merged.removal = views.get("removal", "drop") or "drop"
    merged.name = name
    merged.size = size
    return merged


def build_model(config: DictConfig, info: DatasetInfo, role: str = "auto") -> MultimodalModel:
    """The model of a run config, for the dataset described by ``info``.

    ``role`` only matters when ``model_size`` is ``auto``: a student run building its
    teacher from the *teacher's* run config gets the teacher preset either way.
    """
    name = config.get("model")
    known = registry.names("model")
    if name not in known:
        raise ConfigError(invalid_choice("model", name, known))
    cls = registry.get_model(name)
    return cls(model_config(config, role), info)


def describe_model(model: MultimodalModel) -> dict[str, Any]:
    """What a run summary and Table 2 report about a model (parameter counts included)."""
    cfg = model.config
    tables = [m.weight for m in model.modules() if isinstance(m, nn.Embedding) and m.weight.requires_grad]
    return {
        "class": f"{type(model).__module__}.{type(model).__qualname__}",
        "name": cfg.get("name"),
        "size": cfg.get("size"),
        "removal": cfg.get("removal", "drop"),
        "parameters": model.num_parameters(),
        "parameters_total": sum(p.numel() for p in model.parameters()),
        # the 30,522-row vocabulary dominates small models; compute scales with the rest
        "parameters_embedding": sum(t.numel() for t in tables),
    }
