"""A search's result as something to run: a ``key=value`` line, a YAML, a tuned grid.

Why three forms: the line is what a person pastes after ``msd run``; the YAML records the
winning trial with its value, run id and the study it came from; the tuned grid
(``experiments/table2_tuned.yaml``) re-trains every tuned (dataset, method, weighting) over
all seeds, because a best trial on one seed is a selected maximum, not a result to report.

The tuned grid uses the grid runner's own format (``benchmark/grid/spec.py``): one
``include`` entry per tuned cell fixes dataset, method, weighting and the tuned values, and
is crossed with the ``seed`` axis; teachers are added by the grid runner (the same default
teacher per dataset and seed as Table 2, so they are shared, not retrained).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import yaml
from optuna.trial import FrozenTrial, TrialState

from benchmark.errors import UserError
from benchmark.hpo.space import LABELS
from benchmark.tracking.atomic import write_text_atomic

SIGNIFICANT = 4  # digits kept in a tuned grid: tuning noise is far above the 4th digit


@dataclass
class BestConfig:
    study: str
    storage: str
    trial: int
    values: list[float]
    objectives: list[list[str]]
    run_id: str | None
    args: list[str]
    params: dict[str, Any]
    identity: dict[str, Any]  # dataset, model, method, weighting, seed
    pareto_size: int = 1

    def line(self) -> str:
        """Shell-quoted where needed (``evaluation.splits='[val]'``), ready to paste after ``msd run``."""
        return " ".join(shlex.quote(a) for a in self.args)

    def to_dict(self) -> dict[str, Any]:
        return {
            "study": self.study, "storage": self.storage, "trial": self.trial,
            "objectives": [{"metric": m, "direction": d, "value": v} for (m, d), v in zip(self.objectives, self.values)],
            "run_id": self.run_id, **self.identity, "overrides": self.params, "args": self.args,
            "command": "msd run " + self.line(),
        }


def best_config(study: optuna.Study, storage: str) -> BestConfig:
    """The best complete trial (multi-objective: the Pareto trial best on the first objective)."""
    attrs = study.user_attrs
    objectives = attrs.get("objectives") or [["value", study.directions[0].name.lower()]]
    complete = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    if not complete:
        raise UserError(f"Study {study.study_name!r} has no complete trial yet: nothing to report.")
    if len(study.directions) > 1:
        front = study.best_trials
        sign = 1 if study.directions[0].name.lower() == "maximize" else -1
        trial, size = max(front, key=lambda t: sign * t.values[0]), len(front)
    else:
        trial, size = study.best_trial, 1
    args = _trial_args(trial, attrs)
    return BestConfig(
        study=study.study_name, storage=storage, trial=trial.number, values=list(trial.values),
        objectives=[list(o) for o in objectives], run_id=trial.user_attrs.get("run_id"), args=args,
        params=dict(trial.params),
        identity={**{k: attrs.get(k) for k in ("dataset", "model", "method", "seed")},
                  # a study made before the key moved stored `weighting`
                  "weighting": attrs.get("distill.weighting", attrs.get("weighting"))}, pareto_size=size,
    )


def write_best(best: BestConfig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    header = f"# Best trial of study {best.study}: reproduce with\n#   {best.to_dict()['command']}\n"
    write_text_atomic(path, header + yaml.safe_dump(best.to_dict(), sort_keys=False))
    return path


def tuned_grid(bests: list[BestConfig], seeds: list[int], name: str = "table2_tuned") -> dict[str, Any]:
    """A grid file (the grid runner's format) whose cells use each study's best values."""
    seen: dict[tuple, str] = {}
    include = []
    for best in bests:
        ident = best.identity
        cell_key = (ident.get("dataset"), ident.get("model"), ident.get("method"), ident.get("weighting"))
        if cell_key in seen:
            raise UserError(f"Studies {seen[cell_key]} and {best.study} both tune {cell_key}; pass only one of them.")
        seen[cell_key] = best.study
        entry: dict[str, Any] = {"dataset": ident["dataset"], "model": ident["model"], "method": ident["method"]}
        if ident.get("method") == "msd":
            entry["distill.weighting"] = ident["weighting"]
        entry.update({k: _rounded(v) for k, v in best.params.items() if k not in entry})
        include.append(entry)
    used = sorted({k for e in include for k in e if k in LABELS})
    datasets = list(dict.fromkeys(str(e["dataset"]) for e in include))
    models = list(dict.fromkeys(str(e["model"]) for e in include))
    # The product of the axes is the Teacher row (one teacher per dataset, model and seed,
    # the same runs as Table 2's); each include entry is one tuned row, crossed with seeds.
    axes: dict[str, Any] = {"dataset": datasets, "method": ["teacher"], "seed": list(seeds)}
    base: dict[str, Any] = {"model": models[0]}
    if len(models) > 1:
        axes = {"dataset": datasets, "model": models, "method": ["teacher"], "seed": list(seeds)}
        base = {}
    return {
        "name": name,
        "description": "Table 2 cells re-trained with tuned hyper-parameters, from studies: "
                       + ", ".join(f"{b.study} (trial {b.trial}, {b.objectives[0][0]} = {b.values[0]:.4f})" for b in bests),
        **({"base": base} if base else {}),
        "axes": axes,
        "include": include,
        "labels": {k: LABELS[k] for k in used},
    }


def write_tuned_grid(grid: dict[str, Any], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    header = (
        "# Generated by `msd hpo grid` from the best trial of each study (do not edit by hand; re-generate).\n"
        f"#   msd grid run {path}          # every tuned cell over all seeds (teachers shared with Table 2)\n"
        "# Only the searched keys are taken from a study; everything else is the Table 2 default.\n"
    )
    write_text_atomic(path, header + yaml.safe_dump(grid, sort_keys=False, width=200))
    return path


def _trial_args(trial: FrozenTrial, attrs: dict[str, Any]) -> list[str]:
    """The trial's own reproducible arguments (stored by the objective), else base + params."""
    stored = trial.user_attrs.get("args")
    if stored:
        return list(stored)
    from benchmark.hpo.spec import to_arg

    return [*attrs.get("base_args", []), *(to_arg(k, v) for k, v in trial.params.items())]


def _rounded(value: Any) -> Any:
    if isinstance(value, float):
        return float(f"{value:.{SIGNIFICANT}g}")
    return value
