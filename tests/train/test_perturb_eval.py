"""End to end: a tiny grid (teacher + KD) trained, then `msd eval perturb=…`, `msd robustness`
and the robustness table and figure from what it stored."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from benchmark.cli import app
from benchmark.data.make import make_dataset
from benchmark.errors import ConfigError
from benchmark.grid.cells import expand
from benchmark.grid.spec import load_grid
from benchmark.train.perturb import load_spec
from benchmark.train.trainer import run_experiment

RUN_FILES = ("summary.json", "metrics.jsonl", "predictions.parquet", "config.yaml", "checkpoint.pt")
SMALL = ["--set", "perturbations.image_noise.levels=[0, 1, 2]", "--set", "perturbations.text_dropout.levels=[0, 0.5]"]


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    root = tmp_path_factory.mktemp("robust")
    path = root / "tiny.yaml"
    path.write_text(yaml.safe_dump({
        "name": "tiny", "base": {"model": "late_fusion", "training.max_epochs": 1, "training.batch_size": 32,
                                 "distill.cache_spot_check": 1, "training.threads": 1},
        "axes": {"dataset": ["hateful_memes"], "method": {"values": ["teacher", "kd"]}, "seed": [0]},
        "data": {"size": 64}}, sort_keys=False))
    env = [f"env.data_dir={root / 'data'}", f"env.save_dir={root / 'runs'}", f"env.cache_dir={root / 'cache'}"]
    # The grid's own cells, trained in this process (what `msd grid run` does, without its
    # scheduler's start-up cost): `msd robustness` then finds them by their run ids.
    data_dir = expand(load_grid(path), env).cells[0].config.env.data_dir
    make_dataset("hateful_memes", str(data_dir), size=64, seed=0)
    cells = expand(load_grid(path), env).cells  # run ids hold the data's fingerprint: expanded once it exists
    runs = {}
    for cell in cells:  # the teacher first
        runs[cell.values["method"]] = run_experiment(cell.config, progress=False).run_dir  # no W&B callbacks
    return SimpleNamespace(root=root, path=path, env=env, save_dir=root / "runs", teacher=runs["teacher"], kd=runs["kd"])


def _eval(grid, *args):
    return CliRunner().invoke(app, ["eval", grid.teacher.run_id, "--save-dir", str(grid.save_dir), "--json",
                                    "split=test", "views=multi", *args])


def _files(run) -> dict[str, bytes]:
    return {name: run.file(name).read_bytes() for name in RUN_FILES}


def test_eval_at_level_zero_reproduces_the_summary_exactly(grid):
    result = _eval(grid, "perturb=image_noise:0")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["name"] == "test_multi_image_noise-0_seed0"
    assert out["summary_comparison"]["max_abs_diff"] == 0.0 and out["summary_comparison"]["compared"] > 0
    record = json.loads((Path(out["path"]) / "metrics.json").read_text())
    assert record["perturbation"] == {"name": "image_noise", "level": 0.0, "modality": "image",
                                      "std": "per_dimension", "seed": 0}


def test_eval_perturbed_is_seeded_and_leaves_the_run_alone(grid):
    before = _files(grid.teacher)
    clean = grid.teacher.read_predictions()
    clean = clean[(clean["split"] == "test") & (clean["view"] == "multi")].reset_index(drop=True)
    frames = []
    for _ in range(2):
        result = _eval(grid, "perturb=image_noise:2", "perturb_seed=3")
        assert result.exit_code == 0, result.output
        out = json.loads(result.stdout)
        assert out["summary_comparison"] is None and out["name"].endswith("image_noise-2_seed3")
        frames.append(pd.read_parquet(Path(out["path"]) / "predictions.parquet"))
    pd.testing.assert_frame_equal(frames[0], frames[1])  # same seed, same perturbed inputs, same outputs
    assert not all((a == b).all() for a, b in zip(frames[0]["logits"], clean["logits"]))  # but not the clean ones
    other = json.loads(_eval(grid, "perturb=image_noise:2", "perturb_seed=4").stdout)
    assert not pd.read_parquet(Path(other["path"]) / "predictions.parquet").equals(frames[0])
    dropped = _eval(grid, "perturb=text_dropout:0.5")
    assert dropped.exit_code == 0, dropped.output
    assert _files(grid.teacher) == before


@pytest.mark.parametrize("arg, match", [("perturb=image_noise:-1", "sigma -1.0 is out of range"),
                                        ("perturb=blur:1", "Unknown perturbation 'blur'"),
                                        ("perturb=text_dropout", "expected <name>:<level>"),
                                        ("perturb_seed=x", "perturb_seed='x' is not an integer")])
def test_eval_bad_perturbation(grid, arg, match):
    result = _eval(grid, arg)
    assert result.exit_code != 0 and isinstance(result.exception, ConfigError)
    assert match in str(result.exception)


def test_robustness_over_the_grid_then_the_table(grid):
    before = {r.run_id: _files(r) for r in (grid.teacher, grid.kd)}
    command = ["robustness", str(grid.path), *SMALL, *grid.env]
    first = CliRunner().invoke(app, command)
    assert first.exit_code == 0, first.output
    assert first.output.count("computed in") == 2 and "2 computed, 0 skipped" in first.output
    second = CliRunner().invoke(app, command)
    assert second.exit_code == 0 and "0 computed, 2 skipped" in second.output
    assert second.output.count("already computed") == 2
    spec = load_spec(overrides=[s for s in SMALL if s != "--set"])
    for run in (grid.teacher, grid.kd):
        record = json.loads((run.file("eval") / spec.eval_name / "metrics.json").read_text())
        assert record["summary_comparison"]["max_abs_diff"] == 0.0  # clean = the run's own test metrics
        curve = record["curves"]["image_noise"]
        assert curve["levels"] == [0.0, 1.0, 2.0] and curve["metrics"][0] == record["clean"]
        assert record["curves"]["text_dropout"]["metrics"][0] == record["clean"]
        assert record["context"]["image_noise"]["std_reduce"] == "per_dimension"
        predictions = pd.read_parquet(run.file("eval") / spec.eval_name / "predictions.parquet")
        assert set(zip(predictions["perturbation"], predictions["level"])) == {
            ("clean", 0.0), ("image_noise", 1.0), ("image_noise", 2.0), ("text_dropout", 0.5)}
        assert _files(run) == before[run.run_id]

    from analysis.load import load_runs
    from analysis.robustness import build_outputs
    from analysis.tables import Context

    runs = load_runs(grid.save_dir)
    runs = runs[runs["completed"]]
    table, figure = build_outputs(Context(runs, runs, expected_seeds=1), grid.root / "out", spec)
    cells = table.records[table.records["part"] == "audc"].set_index(["row", "perturbation"])
    for row in ("Teacher", "KD"):
        for name in ("image_noise", "text_dropout"):
            assert cells.loc[(row, name)]["n"] == 1
    assert isinstance(figure, list) and (grid.root / "out" / "figures" / "robustness.png").exists()
    assert "## Hateful Memes (AUROC)" in (grid.root / "out" / "tables" / "robustness.md").read_text()
