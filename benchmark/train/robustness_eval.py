"""Robustness curves of finished runs (``msd robustness <grid.yaml>``; docs/robustness.md).

For each run, the checkpoint is scored once clean and once per non-zero level of every
perturbation of the spec (``benchmark/config/robustness.yaml``), with the data and model
built once (:func:`~benchmark.train.rescore.score_checkpoint_variants`). Level 0 *is* the
clean score (a level-0 perturbation returns the batch unchanged, tested). The curves go to
``<run>/eval/robustness_<split>_<spec hash>/{metrics.json,predictions.parquet}``, never into
the run's own files; a run whose directory for this spec exists is skipped, so a re-run of
a finished grid scores nothing. The analysis (``analysis/robustness.py``) reads those files.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from benchmark.tracking.run_store import RunDir
from benchmark.train.perturb import RobustnessSpec, loader_transform, perturbation_context
from benchmark.train.rescore import (
    EVAL_DIR,
    METRICS_FILE,
    compare_with_summary,
    publish_eval,
    run_config,
    score_checkpoint_variants,
)

CLEAN = "clean"


@dataclass
class RobustnessOutcome:
    run_id: str
    status: str  # "computed" | "skipped"
    seconds: float
    path: str


def level_key(name: str, level: float) -> str:
    return f"{name}@{level:g}"


def robustness_path(run: RunDir, spec: RobustnessSpec) -> Path:
    return run.file(EVAL_DIR) / spec.eval_name


def run_robustness(run: RunDir, spec: RobustnessSpec, *, force: bool = False) -> RobustnessOutcome:
    """Score one completed run's checkpoint along every curve of ``spec`` and publish it."""
    from benchmark.train.checkpoint import BEST

    started = time.perf_counter()
    target = robustness_path(run, spec)
    if (target / METRICS_FILE).exists() and not force:
        return RobustnessOutcome(run.run_id, "skipped", 0.0, str(target))
    _, config = run_config(run, [])
    transforms: dict[str, Any] = {CLEAN: None}
    contexts: dict[str, dict[str, Any]] = {}
    for name in spec.perturbations:
        for level in spec.levels(name):
            perturbation = spec.build(name, level)
            if not perturbation.is_identity:
                transforms[level_key(name, level)] = loader_transform(perturbation, spec.seed, config)
        contexts[name] = perturbation_context(spec.build(name, spec.levels(name)[-1]), config).notes
    scored = score_checkpoint_variants(config, run.file(BEST), [spec.split], list(spec.views), transforms)
    clean = scored[CLEAN]
    curves, frames = {}, []
    for name in spec.perturbations:
        levels = spec.levels(name)
        per_level = [clean if level == 0 else scored[level_key(name, level)] for level in levels]
        curves[name] = {"levels": levels, "options": spec.options(name), "metrics": [s.metrics for s in per_level]}
    for key, result in scored.items():
        name, _, level = key.partition("@")
        frames.append(result.predictions.assign(perturbation=name, level=float(level) if level else 0.0))
    comparison = compare_with_summary(clean.metrics, run.read_summary() or {})
    record = {
        "run_id": run.run_id,
        "name": spec.eval_name,
        "spec": spec.scored_part(),
        "split": spec.split,
        "views": list(spec.views),
        "seed": spec.seed,
        "checkpoint": str(run.file(BEST)),
        "checkpoint_step": clean.checkpoint_step,
        "clean": clean.metrics,
        "curves": curves,
        "context": contexts,
        "summary_comparison": comparison.to_dict(),
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    publish_eval(target, record, pd.concat(frames, ignore_index=True))
    return RobustnessOutcome(run.run_id, "computed", time.perf_counter() - started, str(target))


def robustness_grid(cells: Sequence[Any], spec: RobustnessSpec, *, force: bool = False,
                    announce: Callable[[str], None] = print) -> dict[str, int]:
    """:func:`run_robustness` for every complete run among grid ``cells`` (teachers, label-only
    students, KD and every MSD variant), one progress line each; incomplete runs are listed."""
    from benchmark.grid.status import DONE, run_status

    counts = {"computed": 0, "skipped": 0, "not complete": 0}
    total = len(cells)
    for i, cell in enumerate(cells, 1):
        status, _ = run_status(cell)
        prefix = f"[{i}/{total}] {cell.name} ({cell.run_id})"
        if status != DONE:
            counts["not complete"] += 1
            announce(f"{prefix}: run is {status}, not scored (train it with `msd grid run` first)")
            continue
        outcome = run_robustness(RunDir(Path(str(cell.config.env.save_dir)) / cell.run_id), spec, force=force)
        counts[outcome.status] += 1
        detail = "already computed" if outcome.status == "skipped" else f"computed in {outcome.seconds:.1f} s"
        announce(f"{prefix}: {detail}")
    return counts
