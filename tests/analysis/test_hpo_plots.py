"""HPO figures: parameter names shortened but never cut, the metric named, nothing outside the image."""

from __future__ import annotations

import optuna
import pytest

from benchmark.hpo.plots import _full_name, short_name, tidy, write_plots

PARAMS = ["distill.alpha", "distill.temperature", "distill.weighting_params.temperature", "optimizer.params.lr"]


def test_short_names_are_the_shortest_unambiguous_suffix():
    assert short_name("optimizer.params.lr", PARAMS) == "lr"
    assert short_name("distill.alpha", PARAMS) == "alpha"
    assert short_name("distill.temperature", PARAMS) == "distill.temperature"  # "temperature" is ambiguous
    assert short_name("distill.weighting_params.temperature", PARAMS) == "weighting_params.temperature"
    assert _full_name("distill.weighting...", PARAMS) == "distill.weighting_params.temperature"  # Optuna's cut
    assert _full_name("distill...", PARAMS) is None  # ambiguous: left as it is


@pytest.fixture(scope="module")
def study() -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name="plots", direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    study.set_metric_names(["val/hateful_memes/roc_auc"])

    def objective(trial: optuna.Trial) -> float:
        values = [trial.suggest_float(p, 0.1, 1.0) for p in PARAMS]
        for step in range(1, 4):
            trial.report(sum(values) / step, step)
        return -abs(values[0] - 0.5) - 0.1 * values[2]

    study.optimize(objective, n_trials=14)
    return study


def test_parallel_coordinate_labels_are_short_full_and_name_the_metric(study):
    from optuna.visualization import matplotlib as vis

    ax = vis.plot_parallel_coordinate(study, target_name="Objective Value")
    tidy(ax.figure, PARAMS, "val/hateful_memes/roc_auc")
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert labels == ["val/hateful_memes/roc_auc", "alpha", "distill.temperature", "weighting_params.temperature", "lr"]
    assert not any("..." in label for label in labels)
    assert all(t.get_rotation() == 25 and t.get_ha() == "right" for t in ax.get_xticklabels())


def test_every_figure_is_written_with_all_its_text_inside(study, tmp_path):
    from PIL import Image

    written, skipped = write_plots(study, tmp_path)
    assert skipped == [] and {p.name for p in written if p.suffix == ".png"} == {
        "history.png", "importances.png", "parallel_coordinate.png", "intermediate_values.png"}
    for path in written:
        if path.suffix == ".png":
            image = Image.open(path).convert("L")
            width, height = image.size
            # A tight bounding box leaves a white margin: no text touches the left or bottom edge.
            left = [image.getpixel((0, y)) for y in range(height)]
            bottom = [image.getpixel((x, height - 1)) for x in range(width)]
            assert min(left) > 200 and min(bottom) > 200, path.name
