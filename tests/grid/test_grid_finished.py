"""The finished-grid stamp (benchmark/grid/finished.py): a rerun of a complete grid answers from
it without importing torch, and any change to what it recorded sends the rerun down the full path."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from benchmark.grid import finished

REPO = Path(__file__).resolve().parents[2]
GRID = "name: g\nbase: {model: late_fusion, dataset: hateful_memes}\naxes: {method: [teacher]}\n"


@pytest.fixture
def stamped(tmp_path, monkeypatch):
    """A stamp over one fake complete run and one data file and one data folder."""
    monkeypatch.chdir(tmp_path)
    grid = tmp_path / "g.yaml"
    grid.write_text(GRID)
    run = tmp_path / "runs" / "r1"
    run.mkdir(parents=True)
    for name in ("summary.json", "checkpoint.pt"):
        (run / name).write_text("{}")
    data = tmp_path / "data"
    (data / "features").mkdir(parents=True)
    (data / "train.jsonl").write_text("a\n")
    (data / "features" / "1.npy").write_text("x")
    args = [f"env.save_dir={tmp_path / 'runs'}"]
    key = finished.stamp_key(grid, "smoke", None, args)
    target = finished.write_stamp(key, args, group="g", runs={str(run): ["summary.json", "checkpoint.pt"]},
                                  data_paths=[data / "train.jsonl", data / "features"])
    assert target == tmp_path / "grids" / ".finished" / f"{key}.json"
    return grid, args, run, data


def _check(grid, args):
    return finished.check_stamp(finished.stamp_key(grid, "smoke", None, args), args)


def test_an_unchanged_grid_answers_from_its_stamp(stamped):
    grid, args, _, _ = stamped
    record = _check(grid, args)
    assert record is not None and record["group"] == "g" and len(record["runs"]) == 1
    assert "1 already complete" in finished.report_line(record)


@pytest.mark.parametrize("change", ["summary", "checkpoint", "data_file", "data_new_file", "grid", "scale",
                                    "args", "env"])
def test_any_recorded_change_falls_back_to_the_full_path(stamped, change, monkeypatch):
    grid, args, run, data = stamped
    scale = "smoke"
    if change == "summary":
        (run / "summary.json").write_text('{"status": "failed"}')
    elif change == "checkpoint":
        (run / "checkpoint.pt").unlink()
    elif change == "data_file":
        (data / "train.jsonl").write_text("a\nb\n")
    elif change == "data_new_file":
        (data / "features" / "2.npy").write_text("y")
    elif change == "grid":
        grid.write_text(GRID + "description: other\n")
    elif change == "scale":
        scale = "default"
    elif change == "args":
        args = [*args, "training.max_epochs=2"]
    elif change == "env":
        monkeypatch.setenv("MSD_DATA_DIR", "/elsewhere")
    assert finished.check_stamp(finished.stamp_key(grid, scale, None, args), args) is None


def test_grids_that_read_files_the_key_cannot_see_get_no_key(tmp_path):
    grid = tmp_path / "g.yaml"
    grid.write_text(GRID + "includes: [other.yaml]\n")
    assert finished.stamp_key(grid, "default", None, []) is None
    grid.write_text(GRID)
    assert finished.stamp_key(grid, "default", None, ["config=my.yaml"]) is None
    assert finished.stamp_key(grid, "default", None, []) is not None
    assert finished.stamp_key(tmp_path / "missing.yaml", "default", None, []) is None


def test_a_source_change_changes_the_key(stamped, monkeypatch):
    grid, args, _, _ = stamped
    before = finished.stamp_key(grid, "smoke", None, args)
    monkeypatch.setattr(finished, "source_digest", lambda: "another tree")
    assert finished.stamp_key(grid, "smoke", None, args) != before


@pytest.mark.slow  # default suite under 10 min on 2 cores; `make test-all` runs it
def test_rerunning_a_finished_grid_answers_without_torch(tmp_path, grid_tools):
    """A grid ran once (run_grid wrote its stamp); `msd grid run` again does nothing and never
    imports torch; after its run was deleted, the full path runs and trains it again."""
    from benchmark.grid.runner import run_grid

    grid = grid_tools.tiny_grid(tmp_path / "g.yaml", ["teacher"])
    assert run_grid(grid, extra_args=grid_tools.env_args(tmp_path), workers=1).exit_code == 0
    args = ["grid", "run", str(grid), "--no-progress", *grid_tools.env_args(tmp_path)]
    code = ("import sys\nfrom benchmark.cli import main\ntry:\n    main()\n"
            "finally:\n    print('torch loaded:', 'torch' in sys.modules)\n")
    env = {k: v for k, v in os.environ.items() if k != "MSD_GRID_STAMP_DIR"}

    def rerun() -> subprocess.CompletedProcess:
        out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=os.getcwd(),
                             env=env, timeout=600)
        assert out.returncode == 0, out.stderr
        return out

    out = rerun()
    assert "nothing to do" in out.stdout and "1 already complete" in out.stdout
    assert "torch loaded: False" in out.stdout
    (run,) = (tmp_path / "runs").glob("*-teacher-*")
    shutil.rmtree(run)
    out = rerun()
    assert "nothing to do" not in out.stdout and "1 trained" in out.stdout and (run / "checkpoint.pt").exists()


def test_analyze_all_stamp_follows_its_inputs_and_outputs(tmp_path, monkeypatch):
    """`msd analyze all` skips its work while this stamp is unchanged (analysis/cli.py)."""
    from analysis.cli import _all_stamp

    monkeypatch.setenv("MSD_DATA_DIR", str(tmp_path / "data"))
    store, out = tmp_path / "runs", tmp_path
    (store / "r1").mkdir(parents=True)
    (store / "r1" / "summary.json").write_text("{}")
    (out / "tables").mkdir()
    (out / "tables" / "table2.md").write_text("| a |")
    options = [store, out, tmp_path / "cache", [], "default", "grid", None, 1000, 0, None, None]

    def stamp() -> str:
        return _all_stamp(options, out, tmp_path / "cache", None)

    first = stamp()
    assert stamp() == first
    (out / "grids" / ".finished").mkdir(parents=True)  # the stamp's own folder is not an input
    (out / "grids" / ".finished" / "analyze-all.json").write_text(first)
    assert stamp() == first
    (store / "r1" / "summary.json").write_text('{"status": "completed"}')  # a run changed
    second = stamp()
    assert second != first
    (out / "tables" / "table2.md").unlink()  # an output deleted
    assert stamp() != second
