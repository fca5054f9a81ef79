"""Figures of a study: optimisation history, parameter importances, parallel coordinates,
and the intermediate values that show what the pruner cut.

Why Optuna's matplotlib backend: PNGs need no browser and no plotly, so they are written
on a headless CPU box at the end of every search. If plotly is installed, the same figures
are also written as interactive HTML. For a live view, ``optuna-dashboard`` opens the
study's storage directly (``docs/hpo.md``).
"""

from __future__ import annotations

import importlib.util
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

DEFAULT_DIR = Path("results/figures/hpo")


def _importances(vis: Any) -> Callable[..., Any]:
    def plot(study: optuna.Study, **kw: Any) -> Any:
        # fANOVA with a fixed seed: the same study always gives the same bar chart.
        evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
        return vis.plot_param_importances(study, evaluator=evaluator, **kw)

    return plot


def _plots(vis: Any) -> dict[str, tuple[Callable[..., Any], bool]]:
    """name -> (function, takes target=): the figures the issue asks for, plus pruning curves."""
    return {
        "history": (vis.plot_optimization_history, True),
        "importances": (_importances(vis), True),
        "parallel_coordinate": (vis.plot_parallel_coordinate, True),
        "intermediate_values": (vis.plot_intermediate_values, False),
    }


def metric_name(study: optuna.Study) -> str:
    """The first objective's metric: the study's metric names, else the search's objectives."""
    names = study.metric_names or [o[0] for o in study.user_attrs.get("objectives") or [["Objective Value"]]]
    return str(names[0])


def target_kwargs(study: optuna.Study) -> dict[str, Any]:
    """What the figures that take a target are called with: the first objective of a
    multi-objective study, and always its metric's name (Optuna's optimisation history ignores
    the study's metric names and would say "Objective Value")."""
    if len(study.directions) > 1:
        return {"target": lambda t: t.values[0], "target_name": metric_name(study)}
    return {"target_name": metric_name(study)}


def write_plots(study: optuna.Study, out_dir: str | Path | None = None) -> tuple[list[Path], list[str]]:
    """PNG (and HTML with plotly) per figure under ``<out_dir>/<study>/``; returns (paths, skipped)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as vis

    target_dir = Path(out_dir or DEFAULT_DIR) / study.study_name
    target_dir.mkdir(parents=True, exist_ok=True)
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    metric = metric_name(study)
    kwargs = target_kwargs(study)
    written: list[Path] = []
    skipped: list[str] = []
    for name, (plot, takes_target) in _plots(vis).items():
        if name != "intermediate_values" and len(complete) < 2:
            skipped.append(f"{name}: needs 2 complete trials, the study has {len(complete)}")
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ax = plot(study, **(kwargs if takes_target else {}))
            if name == "intermediate_values" and hasattr(ax, "set_ylabel"):
                ax.set_ylabel(f"{metric} (each evaluation)")
            figure = ax.figure if hasattr(ax, "figure") else ax.flat[0].figure
            figure.set_size_inches(9, 5.5)
            figure.tight_layout()
            path = target_dir / f"{name}.png"
            figure.savefig(path, dpi=110)
            plt.close(figure)
            written.append(path)
        except (ValueError, RuntimeError, ZeroDivisionError) as exc:
            skipped.append(f"{name}: {exc}")
    if importlib.util.find_spec("plotly") is not None:
        written += _html(study, target_dir, kwargs)
    return written, skipped


def _html(study: optuna.Study, target_dir: Path, kwargs: dict[str, Any]) -> list[Path]:
    from optuna import visualization as vis

    out = []
    for name, (plot, takes_target) in _plots(vis).items():
        try:
            figure = plot(study, **(kwargs if takes_target else {}))
        except (ValueError, RuntimeError, ZeroDivisionError):
            continue
        path = target_dir / f"{name}.html"
        figure.write_html(str(path), include_plotlyjs="cdn")
        out.append(path)
    return out
