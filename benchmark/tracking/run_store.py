"""The local run store (docs/architecture.md §4.5): one directory per run.

``<save_dir>/<run_id>/`` holds ``config.yaml``, ``summary.json``, ``metrics.jsonl``,
``predictions.parquet``, ``checkpoint.pt`` (best weights) and, while the run is going,
``last.pt`` (the full training state, for resuming) and ``heartbeat.json`` (who trains it).
``summary.json`` carries a ``status`` (``benchmark.tracking.run_status``); a ``running`` run
whose process is gone reads as ``interrupted``. Only a ``completed`` run with all its files
is complete. ``analysis`` reads only this store.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
from omegaconf import DictConfig, OmegaConf

from benchmark.tracking.atomic import write_atomic, write_json_atomic, write_text_atomic
from benchmark.tracking.liveness import read_heartbeat
from benchmark.tracking.run_status import COMPLETED, true_status

REQUIRED_FILES = ("config.yaml", "summary.json", "metrics.jsonl", "predictions.parquet", "checkpoint.pt")


class RunDir:
    """Reads and writes one run's files, always atomically."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @property
    def run_id(self) -> str:
        return self.path.name

    def file(self, name: str) -> Path:
        return self.path / name

    # -- writing --------------------------------------------------------------------------
    def write_config(self, config: DictConfig) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        write_text_atomic(self.file("config.yaml"), OmegaConf.to_yaml(config, resolve=True))

    def write_summary(self, summary: dict[str, Any]) -> None:
        write_json_atomic(self.file("summary.json"), summary)

    def update_summary(self, **fields: Any) -> dict[str, Any]:
        summary = self.read_summary() or {}
        summary.update(fields)
        self.write_summary(summary)
        return summary

    def append_metrics(self, record: dict[str, Any]) -> None:
        """Append one evaluation/training record; a line is written whole or not at all."""
        line = json.dumps(record, sort_keys=True, default=float) + "\n"
        with open(self.file("metrics.jsonl"), "a") as handle:
            handle.write(line)
            handle.flush()

    def truncate_metrics(self, after_step: int) -> None:
        """On resume, drop records logged after the checkpoint we restart from, and the final
        evaluation of an attempt killed before it completed (the resumed attempt redoes it)."""
        kept = [r for r in self.read_metrics()
                if int(r.get("trainer/global_step", 0)) <= after_step and r.get("type") != "final"]
        write_text_atomic(self.file("metrics.jsonl"), "".join(json.dumps(r, sort_keys=True) + "\n" for r in kept))

    def write_predictions(self, frame: pd.DataFrame) -> None:
        write_atomic(self.file("predictions.parquet"), lambda tmp: frame.to_parquet(tmp, index=False))

    # -- reading --------------------------------------------------------------------------
    def read_summary(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.file("summary.json").read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def read_config(self) -> DictConfig:
        """The stored config; one written before a key moved (``weighting``) reads in today's layout."""
        from benchmark.config.loader import upgrade_stored_config

        return upgrade_stored_config(OmegaConf.load(self.file("config.yaml")))  # type: ignore[arg-type]

    def read_metrics(self) -> list[dict[str, Any]]:
        path = self.file("metrics.jsonl")
        if not path.exists():
            return []
        records = []
        for line in path.read_text().splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a torn last line from a kill; the records before it are whole
        return records

    def read_predictions(self) -> pd.DataFrame:
        return pd.read_parquet(self.file("predictions.parquet"))

    def read_heartbeat(self) -> dict[str, Any] | None:
        return read_heartbeat(self.path)

    @property
    def status(self) -> str:
        """The true status: a ``running`` summary whose process is dead reads ``interrupted``."""
        return true_status(self.read_summary(), self.path)

    def progress(self) -> tuple[int | None, int | None, int | None]:
        """(epochs started, updates done, updates planned): from the summary once the run has
        ended, from its heartbeat while it runs or after it was killed."""
        summary = self.read_summary() or {}
        beat = self.read_heartbeat() or {}
        updates = summary.get("updates", beat.get("step"))
        epochs = summary.get("epochs_started", beat.get("epochs_started"))
        return epochs, updates, summary.get("total_updates", beat.get("total_updates"))

    def is_complete(self) -> bool:
        summary = self.read_summary() or {}
        return summary.get("status") == COMPLETED and all(self.file(name).exists() for name in REQUIRED_FILES)


class RunStore:
    """All runs under ``env.save_dir``."""

    def __init__(self, save_dir: str | Path) -> None:
        self.root = Path(save_dir)

    def run(self, run_id: str) -> RunDir:
        return RunDir(self.root / run_id)

    def __iter__(self) -> Iterator[RunDir]:
        if not self.root.exists():
            return iter(())
        return iter(RunDir(p) for p in sorted(self.root.iterdir()) if p.is_dir() and not p.name.startswith("."))

    def find(self, ref: str) -> RunDir:
        """A run by id, by unique id prefix, or by path."""
        path = Path(ref).expanduser()
        if path.is_dir() and (path / "config.yaml").exists():
            return RunDir(path)
        matches = [run for run in self if run.run_id == ref] or [run for run in self if run.run_id.startswith(ref)]
        if len(matches) == 1:
            return matches[0]
        from benchmark.errors import UserError

        if not matches:
            raise UserError(f"No run {ref!r} under {self.root} (give a run id, a unique prefix, or a run directory).")
        raise UserError(f"Run reference {ref!r} is ambiguous: {', '.join(r.run_id for r in matches[:5])}")

    def index(self) -> pd.DataFrame:
        """One row per run: identity, status, and the final metrics (flattened)."""
        rows = []
        for run in self:
            summary = run.read_summary()
            if summary is None:
                continue
            row = {k: v for k, v in summary.items() if not isinstance(v, (dict, list))}
            row["run_id"] = run.run_id
            row["status"] = true_status(summary, run.path)
            row["complete"] = run.is_complete()
            row.update({k: v for k, v in (summary.get("metrics") or {}).items()})
            rows.append(row)
        return pd.DataFrame(rows)

    def rebuild_index(self, path: str | Path | None = None) -> Path:
        """Write ``runs.parquet`` next to the store; never edited by hand."""
        target = Path(path) if path else self.root.parent / "runs.parquet"
        frame = self.index()
        write_atomic(target, lambda tmp: frame.to_parquet(tmp, index=False))
        return target
