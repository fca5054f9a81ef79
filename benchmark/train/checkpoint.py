"""Checkpoints in the run directory.

``checkpoint.pt`` holds the weights selected by ``checkpoint.rule`` (best on the headline
validation metric by default) plus what is needed to refuse loading it into the wrong
architecture. ``last.pt`` holds the whole training state and exists only while a run is
unfinished; it is what ``checkpoint.resume`` restarts from.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from benchmark.data.info import DatasetInfo
from benchmark.errors import CheckpointError
from benchmark.tracking.atomic import write_atomic
from benchmark.tracking.run_store import RunDir
from benchmark.train.seeding import rng_state, set_rng_state

BEST = "checkpoint.pt"
LAST = "last.pt"


def _save(obj: Any, path) -> None:
    write_atomic(path, lambda tmp: torch.save(obj, tmp))


def save_best(run: RunDir, model: torch.nn.Module, step: int, criteria: str, value: float, info: DatasetInfo) -> None:
    _save(
        {
            "model": model.state_dict(),
            "step": step,
            "criteria": criteria,
            "value": value,
            "model_class": type(model).__name__,
            "num_parameters": sum(p.numel() for p in model.parameters()),
            "dataset_info": info.to_dict(),
        },
        run.file(BEST),
    )


def load_checkpoint(path) -> dict[str, Any]:
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except FileNotFoundError as exc:
        raise CheckpointError(f"Checkpoint {path} does not exist.") from exc
    except Exception as exc:  # torch raises many types for a damaged file
        raise CheckpointError(f"Checkpoint {path} is unreadable ({type(exc).__name__}: {exc}). Delete it and retrain.") from exc


def load_weights_strict(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load weights, refusing any missing, unexpected or mis-shaped tensor with a clear message."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mismatched = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or mismatched:
        details = []
        if missing:
            details.append(f"missing {len(missing)} (e.g. {missing[:3]})")
        if unexpected:
            details.append(f"unexpected {len(unexpected)} (e.g. {unexpected[:3]})")
        if mismatched:
            k = mismatched[0]
            details.append(f"{len(mismatched)} with other shapes (e.g. {k}: {tuple(state[k].shape)} vs {tuple(own[k].shape)})")
        raise CheckpointError(
            f"Checkpoint {source} does not fit the {type(model).__name__} built from this config: "
            + "; ".join(details)
            + ". Use the model, size preset and dataset the checkpoint was trained with."
        )
    model.load_state_dict(state, strict=True)


def load_best_weights(run: RunDir, model: torch.nn.Module) -> dict[str, Any]:
    payload = load_checkpoint(run.file(BEST))
    load_weights_strict(model, payload["model"], str(run.file(BEST)))
    return payload


def save_training_state(run: RunDir, model, optimizer, scheduler, **state: Any) -> None:
    _save(
        {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "rng": rng_state(),
            **state,
        },
        run.file(LAST),
    )


def load_training_state(path: Path, model, optimizer, scheduler, *, strict_file: bool = False) -> dict[str, Any] | None:
    """Restore a training state; None when there is nothing (valid) to resume.

    A run's own torn or foreign ``last.pt`` is deleted so the run starts over rather than
    resume wrongly; a file the user named (``strict_file``) is never deleted, and any problem
    with it is an error.
    """
    if not path.exists():
        if strict_file:
            raise CheckpointError(f"Checkpoint {path} does not exist.")
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
        if strict_file:
            load_weights_strict(model, payload["model"], str(path))
        model.load_state_dict(payload["model"], strict=True)
        optimizer.load_state_dict(payload["optimizer"])
        scheduler.load_state_dict(payload["scheduler"])
        set_rng_state(payload["rng"])
    except CheckpointError:
        raise
    except Exception as exc:
        if strict_file:
            raise CheckpointError(f"Checkpoint {path} is not a training state this run can resume ({exc}).") from exc
        path.unlink(missing_ok=True)
        return None
    return payload


def remove_training_state(run: RunDir) -> None:
    run.file(LAST).unlink(missing_ok=True)
