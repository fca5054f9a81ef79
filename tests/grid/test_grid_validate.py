"""``msd grid run`` validates every cell before any data is made or any cell trains."""

from __future__ import annotations

import pytest

from benchmark.config.validate import ConfigValidationError
from benchmark.grid.runner import run_grid


def test_a_typo_in_a_grid_value_fails_before_any_cell_trains(tmp_path, grid_tools):
    path = grid_tools.tiny_grid(tmp_path / "typo.yaml", ["teacher", "kd", "msd"], name="typo")
    text = path.read_text().replace("- instance", "- instanse")
    assert "instanse" in text
    path.write_text(text)
    with pytest.raises(ConfigValidationError) as info:
        run_grid(path, extra_args=grid_tools.env_args(tmp_path), workers=1)
    message = str(info.value)
    assert message.startswith(f"Grid file {path}: cell hateful_memes/msd-instanse/seed0: distill.weighting: 'instanse'")
    assert "Did you mean 'instance'?" in message
    assert "teacher=" not in message  # the kd and msd cells' teacher is the grid's own teacher cell
    written = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p != path)
    assert written == [], f"files written before validation failed: {written}"


def test_a_bad_base_value_is_reported_once_for_every_cell(tmp_path, grid_tools):
    path = grid_tools.tiny_grid(tmp_path / "lr.yaml", ["teacher", "kd"], name="lr",
                                base={"optimizer.params.lr": -1})
    with pytest.raises(ConfigValidationError) as info:
        run_grid(path, extra_args=grid_tools.env_args(tmp_path), workers=1)
    message = str(info.value)
    assert "cells hateful_memes/teacher/seed0, hateful_memes/kd/seed0: optimizer.params.lr" in message
    assert message.count("optimizer.params.lr (the learning rate)") == 1
    assert not (tmp_path / "runs").exists() and not (tmp_path / "data").exists()


def test_cells_that_run_elsewhere_skip_the_checks_of_this_machines_hardware(tmp_path, grid_tools):
    """A GPU grid submitted to Slurm from a login node without GPUs is not refused there."""
    from benchmark.grid.cells import expand
    from benchmark.grid.dag import build_plan
    from benchmark.grid.runner import validate_cells
    from benchmark.grid.spec import load_grid

    path = grid_tools.tiny_grid(tmp_path / "gpu.yaml", ["teacher", "kd"], name="gpu",
                                base={"training.fp16": True, "training.amp_dtype": "float16"})
    plan = build_plan(expand(load_grid(path), grid_tools.env_args(tmp_path)))
    validate_cells(plan, here=False)
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(ConfigValidationError, match="needs a CUDA GPU"):
            validate_cells(plan, here=True)


def test_msd_grid_run_prints_every_problem_once_without_a_traceback(tmp_path, grid_tools):
    from typer.testing import CliRunner

    from benchmark.cli import app

    path = grid_tools.tiny_grid(tmp_path / "two.yaml", ["teacher", "kd", "msd"], name="two",
                                base={"optimizer.params.lr": "abc"})
    path.write_text(path.read_text().replace("- instance", "- instanse"))
    result = CliRunner().invoke(app, ["grid", "run", str(path), "--no-progress", *grid_tools.env_args(tmp_path)])
    assert isinstance(result.exception, ConfigValidationError)  # main() prints it as one paragraph (exit 2)
    message = str(result.exception)
    assert message.startswith(f"Grid file {path}: 2 problems in its cells:\n- cells hateful_memes/teacher/seed0, ")
    assert "\n- cell hateful_memes/msd-instanse/seed0: distill.weighting: 'instanse'" in message
    assert not (tmp_path / "runs").exists()
