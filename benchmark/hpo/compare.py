"""Equal-budget searches for several methods, and the table that shows they were equal.

Why: a comparison of KD and MSD after tuning is only as fair as the tuning. Each method
gets the same number of trials (or the same CPU-seconds), the same sampler, pruner and
objective from its search file, and the table reports what each really used — trials,
pruned trials, CPU time — next to the best value, so an unequal search is visible.

The teacher (and its cache) is shared by all methods and prepared before any trial, so
it is charged to no method. Each comparison gets its own study per method
(``<search name>-fair-t<N>`` / ``-fair-cpu<S>``): exploratory runs of the same search
do not leak into the budget, and re-running the comparison resumes or skips.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from optuna.trial import TrialState

from benchmark.errors import UserError
from benchmark.hpo.spec import Budget, SearchSpec, load_search
from benchmark.hpo.study import SearchReport, run_search
from benchmark.tracking.atomic import write_text_atomic

COLUMNS = ("method", "dataset", "study", "metric", "direction", "budget", "best_value", "best_trial", "trials_used",
           "complete", "pruned", "failed", "cpu_s", "wall_s", "cpu_s_per_trial", "best_params")
TABLE_NAME = "hpo_fairness"


def method_label(fixed: dict[str, Any]) -> str:
    """``KD``, ``MSD-instance``: the row names of the paper's tables."""
    method = str(fixed.get("method"))
    if method == "msd":
        return f"MSD-{fixed.get('distill.weighting', fixed.get('weighting'))}"  # studies made before the move
    return {"kd": "KD", "student_only": "Student", "teacher": "Teacher"}.get(method, method)


def run_comparison(
    files: Sequence[str | Path], *, trials: int | None = None, cpu_s: float | None = None, scale: str | None = None,
    storage: str | None = None, extra_args: Sequence[str] = (), wandb: bool = True, log: Any = print,
) -> pd.DataFrame:
    """Run every search with the same budget; one row per method."""
    if (trials is None) == (cpu_s is None):
        raise UserError("msd hpo compare needs exactly one budget: --trials N or --cpu-seconds S.")
    specs = [load_search(f, scale) for f in files]
    _check_comparable(specs)
    budget = Budget(trials=trials, cpu_s=cpu_s)
    suffix = f"fair-t{trials}" if trials is not None else f"fair-cpu{cpu_s:g}"
    rows = []
    for spec in specs:
        log(f"== {method_label(spec.fixed)}: {spec.path.name}, budget {suffix[5:]}")
        report = run_search(spec, budget=budget, storage=storage, study_name=f"{spec.name}-{suffix}",
                            extra_args=extra_args, wandb=wandb, log=log)
        rows.append(fairness_row(spec, report, suffix[5:]))
    return pd.DataFrame(rows, columns=list(COLUMNS))


def fairness_row(spec: SearchSpec, report: SearchReport, budget: str) -> dict[str, Any]:
    best = report.best()
    finished = [t for t in report.trials if t.state.is_finished()]
    used = report.used
    params = ", ".join(f"{k}={_fmt(v)}" for k, v in (best.params if best else {}).items())
    return {
        "method": method_label(spec.fixed), "dataset": spec.fixed["dataset"], "study": report.study,
        "metric": spec.objectives[0].metric, "direction": spec.objectives[0].direction, "budget": budget,
        "best_value": best.values[0] if best else None, "best_trial": best.number if best else None,
        "trials_used": used, "complete": report.count(TrialState.COMPLETE), "pruned": report.count(TrialState.PRUNED),
        "failed": sum(t.state == TrialState.FAIL for t in finished), "cpu_s": round(report.cpu_s, 1),
        "wall_s": round(report.trial_wall_s, 1), "cpu_s_per_trial": round(report.cpu_s / used, 2) if used else None,
        "best_params": params,
    }


def write_table(frame: pd.DataFrame, out_dir: str | Path = "results/tables") -> tuple[Path, Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    csv_path, md_path = out / f"{TABLE_NAME}.csv", out / f"{TABLE_NAME}.md"
    write_text_atomic(csv_path, frame.to_csv(index=False))
    write_text_atomic(md_path, to_markdown(frame))
    return csv_path, md_path


def to_markdown(frame: pd.DataFrame) -> str:
    """A GitHub table; the best value per dataset in bold, CPU-seconds to 1 decimal."""
    best_rows = set()
    for _, group in frame.dropna(subset=["best_value"]).groupby("dataset"):
        sign = 1 if group["direction"].iloc[0] == "maximize" else -1
        best_rows.add((group["best_value"] * sign).idxmax())
    cols = [c for c in COLUMNS if c not in ("study", "direction")]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for idx, row in frame.iterrows():
        cells = []
        for col in cols:
            value = row[col]
            text = _fmt(value) if col != "best_value" or pd.isna(value) else f"{value:.4f}"
            cells.append(f"**{text}**" if col == "best_value" and idx in best_rows else text)
        lines.append("| " + " | ".join(cells) + " |")
    note = ("\nSame budget per method (trials, or CPU-seconds summed over a method's trials); the shared teacher and "
            "its cache are excluded. `trials_used` counts finished trials (complete, pruned, failed by an error).\n")
    return "\n".join(lines) + "\n" + note


def _check_comparable(specs: list[SearchSpec]) -> None:
    if len(specs) < 2:
        raise UserError("msd hpo compare needs at least two search files (one per method).")
    labels = [(s.fixed["dataset"], method_label(s.fixed)) for s in specs]
    if len(set(labels)) != len(labels):
        raise UserError(f"Two search files tune the same (dataset, method): {labels}.")
    samplers = {(s.sampler.name, s.pruner.name) for s in specs}
    if len(samplers) > 1:
        raise UserError(f"Search files differ in sampler/pruner {sorted(samplers)}: a fair comparison uses the same.")


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
