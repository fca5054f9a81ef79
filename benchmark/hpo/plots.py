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


def short_name(param: str, params: list[str]) -> str:
    """The shortest dotted suffix of ``param`` that no other parameter shares
    (``distill.weighting_params.temperature`` -> ``weighting_params.temperature`` when
    ``distill.temperature`` is also searched; ``optimizer.params.lr`` -> ``lr``)."""
    parts = param.split(".")
    for k in range(1, len(parts) + 1):
        suffix = ".".join(parts[-k:])
        if not any(o != param and (o == suffix or o.endswith("." + suffix)) for o in params):
            return suffix
    return param


def _full_name(label: str, params: list[str]) -> str | None:
    """The parameter an Optuna tick label names; Optuna cuts long names to ``abc...``."""
    if label in params:
        return label
    stem = label.rstrip(".").removesuffix("...")
    hits = [p for p in params if label.endswith("...") and p.startswith(stem)]
    return hits[0] if len(hits) == 1 else None


def tidy(figure: Any, params: list[str], metric: str) -> None:
    """Readable labels on Optuna's matplotlib figures: parameter names shortened but never cut,
    "Objective Value" named by the metric, slanted x labels anchored at their tick, and tick
    labels drawn over the parallel-coordinate lines on a white box so they stay legible."""
    for ax in figure.axes:
        for getter, setter in ((ax.get_xticklabels, ax.set_xticklabels), (ax.get_yticklabels, ax.set_yticklabels)):
            labels = getter()
            texts = [t.get_text() for t in labels]
            renamed = []
            for text in texts:
                full = _full_name(text, params)
                renamed.append(metric if text == "Objective Value" else short_name(full, params) if full else text)
            if renamed != texts and all(texts):
                setter(renamed)
        if ax.get_ylabel() == "Objective Value":
            ax.set_ylabel(metric)
        if ax.get_xlabel() == "Objective Value":
            ax.set_xlabel(metric)
        legend = ax.get_legend()
        if legend is not None:
            for text in legend.get_texts():
                if text.get_text() == "Objective Value":
                    text.set_text(metric)
            if len(legend.get_texts()) > 12:  # one entry per trial: two columns, outside the axes
                handles, labels = ax.get_legend_handles_labels()
                ax.legend(handles, labels, ncol=2, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
        slanted = [t for t in ax.get_xticklabels() if t.get_text() and not t.get_text().replace(".", "").isdigit()]
        if len(slanted) > 3:
            for text in slanted:
                text.set_rotation(25)
                text.set_horizontalalignment("right")
                text.set_rotation_mode("anchor")
        for text in ax.get_yticklabels():
            text.set_bbox({"facecolor": "white", "alpha": 0.8, "edgecolor": "none", "pad": 0.6})


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
            figure.set_size_inches(10, 5.5)
            tidy(figure, list(study.best_trial.params) if complete else [], metric)
            figure.tight_layout()
            path = target_dir / f"{name}.png"
            figure.savefig(path, dpi=110, bbox_inches="tight")  # nothing cut at the edges
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
