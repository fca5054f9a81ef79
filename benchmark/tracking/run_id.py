"""Run ids: a hash of the resolved config minus keys that do not change the result, and of
the content of the data the run reads.

The same grid cell always maps to the same directory, so it is never trained twice, and a
re-run after a crash finds its own partial directory to resume from. The data enters as a
fingerprint of its files' content with their paths relative to the dataset's ``data_dir``
(:mod:`benchmark.data.fingerprint`), never as an absolute path: edited data is another run,
while the same data under another directory, machine or spelling of the path is the same run.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

from omegaconf import DictConfig, OmegaConf

# Keys that change where or how fast a run goes, not what it computes.
VOLATILE_KEYS: tuple[str, ...] = (
    "env",
    "config_file",
    "training.num_workers",
    "training.in_memory",
    "training.in_memory_max_mb",
    "training.in_memory_store",
    "training.threads",
    "training.device",
    "training.log_interval",
    "training.distributed",
    "training.distributed_timeout_min",
    "training.find_unused_parameters",
    "training.pin_memory",
    "training.compile",
    "checkpoint.resume",
    "run_type",
    "evaluation.predict",
    "evaluation.cost",
    "tracking",
    "grid",
    "run_name",
    "hpo",
)

# Keys added after runs existed, left out of the hash while they hold the value that computes
# what those runs computed, so adding a key never renames the existing runs. A key that only
# matters through another (amp_dtype without fp16) is left out while that one is off.
NEUTRAL_WHEN: dict[str, Callable[[dict[str, Any]], bool]] = {
    "training.fp16": lambda c: not _get_dotted(c, "training.fp16"),
    "training.amp_dtype": lambda c: not _get_dotted(c, "training.fp16"),
    "training.update_frequency": lambda c: _get_dotted(c, "training.update_frequency") in (None, 1),
    "checkpoint.resume_file": lambda c: _get_dotted(c, "checkpoint.resume_file") is None,
    "scheduler.params.num_warmup_steps": lambda c: _get_dotted(c, "scheduler.params.num_warmup_steps") is None,
    "views.teacher_loss": lambda c: not _get_dotted(c, "views.teacher_loss"),
}


# Keys that moved after runs existed (benchmark.config.loader.MOVED_KEYS): hashed at their old
# place, so a config written either way, and every run trained before the move, keeps its id.
HASHED_AT_OLD_PLACE: dict[str, str] = {"distill.weighting": "weighting"}


def hashable_config(config: DictConfig) -> dict[str, Any]:
    container = OmegaConf.to_container(config, resolve=True)
    assert isinstance(container, dict)
    for new, old in HASHED_AT_OLD_PLACE.items():
        parent, _, leaf = new.rpartition(".")
        node = _get_dotted(container, parent)
        if isinstance(node, dict) and leaf in node:
            container[old] = node.pop(leaf)
    neutral = [key for key, is_neutral in NEUTRAL_WHEN.items() if is_neutral(container)]
    for dotted in (*VOLATILE_KEYS, *neutral):
        _pop_dotted(container, dotted)
    # Only the active model's and dataset's sub-configs matter.
    for section, active in (("model_config", config.get("model")), ("dataset_config", config.get("dataset"))):
        if isinstance(container.get(section), dict):
            container[section] = {k: v for k, v in container[section].items() if k == active}
    # Where the data lives is not what it is: the content enters through compute_run_id.
    active_dataset = (container.get("dataset_config") or {}).get(config.get("dataset"))
    if isinstance(active_dataset, dict):
        active_dataset.pop("data_dir", None)
    return container


def compute_run_id(config: DictConfig) -> str:
    from benchmark.data.fingerprint import data_fingerprint

    identity = {"config": hashable_config(config), "data": data_fingerprint(config).digest}
    payload = json.dumps(identity, sort_keys=True, default=str)
    digest = hashlib.sha256(payload.encode()).hexdigest()[:12]
    return f"{config.dataset}-{config.method}-{digest}"


def _get_dotted(container: dict[str, Any], dotted: str) -> Any:
    node: Any = container
    for part in dotted.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def _pop_dotted(container: dict[str, Any], dotted: str) -> None:
    parts = dotted.split(".")
    node: Any = container
    for part in parts[:-1]:
        node = node.get(part) if isinstance(node, dict) else None
        if node is None:
            return
    if isinstance(node, dict):
        node.pop(parts[-1], None)
