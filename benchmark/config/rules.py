"""The config keys that hold this suite's reconstructed [rule]s (docs/assumptions.md).

Every run's summary reports their values, and a test checks that each one is documented in
``docs/assumptions.md`` and exists in the default config, so a user who has the paper can
find and change each assumption in one line.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

RULE_KEYS: tuple[str, ...] = (
    "views.removal",
    "views.teacher_loss",
    "distill.alpha",
    "distill.temperature",
    "distill.saliency",
    "distill.class_reduction",
    "distill.weighting_params.temperature",
    "distill.weighting_params.parameterisation",
    "distill.weighting_params.meta_lr",
    "distill.weighting_params.inner_lr",
    "distill.weighting_params.every",
    "data.meta_split.fraction",
    "data.meta_split.hold_out",
    "checkpoint.rule",
)

# Rules that live in the active dataset's node (key relative to dataset_config.<name>).
DATASET_RULE_KEYS: tuple[str, ...] = ("annotations.val", "annotations.test")


def rule_values(config: DictConfig) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for key in RULE_KEYS:
        values[key] = _plain(OmegaConf.select(config, key, default=None))
    dataset_node = config.dataset_config.get(config.dataset)
    for key in DATASET_RULE_KEYS:
        full = f"dataset_config.{config.dataset}.{key}"
        values[full] = _plain(OmegaConf.select(dataset_node, key, default=None)) if dataset_node else None
    return values


def _plain(value: Any) -> Any:
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
