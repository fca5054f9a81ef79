"""The recipe line under each table: what the numbers are, read from the runs themselves.

Why: a table of means says nothing about whether it came from a one-epoch smoke check on 64
samples or from the full grid. The note is built from the selected runs' resolved configs
(epochs, batch, early stopping, seeds) and their data (split sizes from the generator's
manifest, :func:`analysis.load.split_sizes`), never from constants, so it cannot drift from
what was run.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import pandas as pd

from analysis import spec


def _values(series: Iterable[Any]) -> list[Any]:
    out = []
    for v in series:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            continue
        out.append(int(v) if isinstance(v, float) and v.is_integer() else v)
    return sorted(set(out), key=lambda x: (str(type(x)), x))


def span(series: Iterable[Any]) -> str:
    """``"20"`` for one value, ``"4–20"`` for numbers that differ, ``"?"`` for none."""
    values = _values(series)
    if not values:
        return "?"
    if len(values) == 1:
        return f"{values[0]:,}" if isinstance(values[0], int) else str(values[0])
    if all(isinstance(v, (int, float)) for v in values):
        return f"{min(values):,}–{max(values):,}"
    return "/".join(map(str, values))


def _sizes(runs: pd.DataFrame) -> str:
    if "split_sizes" not in runs:
        return "split sizes unknown"
    parts = []
    for split in ("train", "val", "test"):
        part = span(s.get(split) for s in runs["split_sizes"] if isinstance(s, dict))
        if split == "train" and part != "?":
            hold = _values(runs.get("meta_hold_out", []))
            if len(hold) == 1 and hold[0]:
                part += f" (less {hold[0]:.0%} held out for the meta split)"
        parts.append(f"{split} {part}")
    text = " / ".join(parts) + " samples"
    sides = _values(runs.get("image_size", []))
    if sides:  # pixel data: the resolution is part of the recipe (easy-VQA is read at 32x32)
        text += ", images " + "/".join(f"{side}x{side}" for side in sides)
    return text


def _epochs(runs: pd.DataFrame) -> str:
    text = f"max epochs {span(runs['max_epochs'])}" if "max_epochs" in runs else "epochs unknown"
    if "max_updates" in runs and _values(runs["max_updates"]):
        text += f", max updates {span(runs['max_updates'])}"
    if "batch_size" in runs:
        text += f", batch {span(runs['batch_size'])}"
    if "early_stop" in runs and runs["early_stop"].astype(bool).all():
        text += f", early stopping (patience {span(runs['patience'])})"
    if "epochs_run" in runs and _values(runs["epochs_run"]):
        teachers = runs[runs["method"] == "teacher"]
        students = runs[runs["method"] != "teacher"]
        ran = [f"{who} {span(part['epochs_run'])}" for who, part in (("teachers", teachers), ("students", students))
               if not part.empty and _values(part["epochs_run"])]
        text += "; epochs run: " + ", ".join(ran)
    return text


def recipe_text(runs: pd.DataFrame, origin: str = "") -> str:
    """The recipe of some runs (one dataset's), without the dataset's name."""
    seeds = ", ".join(str(s) for s in _values(runs["seed"]))
    where = f"{origin}; " if origin else ""
    return f"{where}seeds {seeds}; {_epochs(runs)}; {_sizes(runs)}"


def recipe_notes(runs: pd.DataFrame, datasets: Iterable[str], origin: str = "") -> list[str]:
    """One line per distinct recipe, naming the datasets (in column order) that share it."""
    groups: dict[str, list[str]] = {}
    for dataset in datasets:
        part = runs[runs["dataset"] == dataset] if not runs.empty else runs
        if not part.empty:
            groups.setdefault(recipe_text(part, origin), []).append(spec.DATASET_TITLES.get(dataset, dataset))
    return [f"Recipe of {', '.join(names)} (read from the runs' configs and data): {text}."
            for text, names in groups.items()]
