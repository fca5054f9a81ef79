"""``msd grid plan``: updates by the trainer's rule, hours from step times, and clear errors.

The exact test feeds step times from a file, so every hour in it is computed by hand; the
smoke test measures on this CPU (one timed step per probe) and only checks that the plan is
complete, writes nothing, and reads back the step times it saved.
"""

from __future__ import annotations

import json
import sys
import time

import pytest
from typer.testing import CliRunner

from benchmark.cli import app, main
from benchmark.grid.plan import build_cost_plan, count_updates
from benchmark.grid.plan_data import PlanError
from benchmark.grid.spec import GridError


def test_updates_follow_the_trainer_rule_by_hand():
    # 1000 samples, batch 32: 31 full batches + one of 8 = 32 batches per epoch
    assert count_updates(1000, 32, 1, 3, None) == 96
    assert count_updates(1000, 32, 4, 3, None) == 24  # ceil(32 / 4) = 8 updates per epoch
    assert count_updates(1000, 32, 3, 3, None) == 33  # ceil(32 / 3) = 11: the epoch's last update takes 2 batches
    assert count_updates(1000, 32, 3, 3, 20) == 20  # max_updates stops earlier
    assert count_updates(1000, 32, 3, 3, 500) == 33  # ... and never later
    assert count_updates(1000, 32, 1, None, 500) == 500
    # with 16 DDP ranks the last batch of 8 cannot be shared: 31 batches per epoch
    assert count_updates(1000, 32, 1, 1, None, world_size=16) == 31
    with pytest.raises(PlanError, match="never stop"):
        count_updates(1000, 32, 1, None, None)


def _step_times_file(path, seconds: dict[str, float], optimizer: float):
    """Entries for every probe a late-fusion teacher + KD grid can ask for (any dataset)."""
    entries = []
    for kind, s in seconds.items():
        for size in ("teacher", "student"):
            for batch in (16, 32):
                entries.append({"kind": kind, "model": "late_fusion", "size": size, "dataset": "*",
                                "batch_size": batch, "precision": "fp32", "seconds": s,
                                "optimizer_seconds": optimizer if kind.startswith("train:") else 0.0})
    path.write_text(json.dumps({"format": "msd-step-times/1", "device": "test GPU", "measurements": entries}))
    return path


def test_hours_from_a_step_times_file_match_a_hand_computation(tmp_path, grid_tools):
    grid = grid_tools.tiny_grid(tmp_path / "g.yaml", ["teacher", "kd"], base={
        "training.batch_size": 16, "training.update_frequency": 2, "training.max_epochs": 3,
        "training.max_updates": 5})
    times = _step_times_file(tmp_path / "times.json", {"train:label": 0.5, "train:kd": 0.5,
                                                       "forward:multi": 0.2, "forward:multi+image+text": 0.3}, 0.1)
    plan = build_cost_plan(grid, extra_args=grid_tools.env_args(tmp_path), step_times=times)
    rows = {r.name: r for r in plan.rows}
    assert set(rows) == {"hateful_memes/teacher/seed0", "hateful_memes/kd/seed0", "cache hateful_memes/teacher/seed0"}
    assert plan.device == "test GPU" and not any(r.estimated_elsewhere for r in plan.rows)
    kd = rows["hateful_memes/kd/seed0"]
    # data.size 64 -> 64 train records, 6 held out (meta split 0.1) -> 58; 32 val and 32 test (eval_ratio 0.5)
    assert (kd.samples, plan.datasets["hateful_memes"]["records"]) == (58, {"train": 64, "val": 32, "test": 32})
    # ceil(58 / 16) = 4 batches per epoch, ceil(4 / 2) = 2 updates per epoch, 3 epochs = 6, capped at 5
    assert kd.updates == 5
    # an update: 2 x (0.5 - 0.1) forward/backward + 0.1 optimizer = 0.9 s
    assert kd.update_s == pytest.approx(0.9)
    assert kd.train_h * 3600 == pytest.approx(5 * 0.9)
    # validation every 2 updates -> ceil(5 / 2) = 3 passes of 1 batch (32 val / 32) at 0.2 s,
    # then val and test on every view, 1 batch each at 0.3 s
    assert kd.eval_h * 3600 == pytest.approx(3 * 0.2 + 2 * 0.3)
    cache = rows["cache hateful_memes/teacher/seed0"]
    assert (cache.samples, cache.updates) == (128, 4)  # 64 + 32 + 32 records in batches of 32
    assert cache.train_h * 3600 == pytest.approx(4 * 0.3)
    totals = plan.totals()
    assert totals["all"].hours == pytest.approx(sum(r.hours for r in plan.rows))
    assert totals["student"].updates == 5 and totals["cache"].cells == 1
    assert totals["all"].gpu_h == 0  # gpus: 0 cells
    assert any("early stopping" in line and "upper bounds" in line for line in plan.assumptions)


def test_gpu_hours_multiply_the_hours_by_the_gpus_of_a_task(tmp_path, grid_tools):
    grid = grid_tools.tiny_grid(tmp_path / "g.yaml", ["teacher"], resources={"gpus": 2})
    times = _step_times_file(tmp_path / "times.json", {"train:label": 0.5, "forward:multi": 0.2,
                                                       "forward:multi+image+text": 0.3}, 0.0)
    (row,) = build_cost_plan(grid, extra_args=grid_tools.env_args(tmp_path), step_times=times).rows
    assert row.gpus == 2 and row.gpu_hours == pytest.approx(2 * row.hours)
    # batch 32 over 2 GPUs is timed at 16 per device; 58 samples -> 2 global batches -> 2 updates
    assert row.updates == 2 and row.train_h * 3600 == pytest.approx(2 * 0.5)


def test_probes_missing_from_the_file_are_measured_here_and_marked(tmp_path, grid_tools):
    grid = grid_tools.tiny_grid(tmp_path / "g.yaml", ["teacher"])
    times = _step_times_file(tmp_path / "times.json", {"train:label": 0.5}, 0.0)
    plan = build_cost_plan(grid, extra_args=grid_tools.env_args(tmp_path), step_times=times, warmup=0, repeats=1)
    (row,) = plan.rows
    assert row.estimated_elsewhere and row.step_source == str(times)  # training from the file, evaluation not
    assert plan.device.startswith("test GPU; rows marked * partly on cpu")  # where the mixed-in figures come from
    assert any("missing from that file" in line and "forward:multi" in line for line in plan.assumptions)


def test_plan_of_the_smoke_grid_is_quick_writes_nothing_and_reads_back_its_step_times(tmp_path, grid_tools):
    data = tmp_path / "data"
    saved, plan_json = tmp_path / "times.json", tmp_path / "plan.json"
    started = time.perf_counter()
    result = CliRunner().invoke(app, ["grid", "plan", str(grid_tools.smoke), "--steps", "1",
                                      "--save-step-times", str(saved), "--json", str(plan_json),
                                      f"env.data_dir={data}"])
    assert result.exit_code == 0, result.output
    assert time.perf_counter() - started < 120  # seconds when idle; generous for a loaded 2-core machine
    for name in ("hateful_memes/teacher/seed0", "hateful_memes/msd-instance/seed0", "cache hateful_memes/teacher/seed0",
                 "Totals", "Assumptions", "generated"):
        assert name in result.output
    assert not data.exists()  # the generated data went to a temporary directory
    first = json.loads(plan_json.read_text())
    assert len(first["rows"]) == 5 and first["totals"]["all"]["updates"] == 8  # 4 cells x ceil(58 / 32)

    again = CliRunner().invoke(app, ["grid", "plan", str(grid_tools.smoke), "--step-times", str(saved),
                                     "--json", str(plan_json), f"env.data_dir={data}"])
    assert again.exit_code == 0, again.output
    assert "timing" not in again.output and f"read from {saved}" in again.output
    second = json.loads(plan_json.read_text())
    assert [r["update_s"] for r in second["rows"]] == [r["update_s"] for r in first["rows"]]


@pytest.mark.parametrize("case", ["missing grid", "unknown scale", "unreadable step times", "not json",
                                  "wrong schema", "float16 on a cpu"])
def test_bad_input_is_one_clear_error(tmp_path, grid_tools, monkeypatch, capsys, case):
    grid, extra = str(grid_tools.smoke), []
    bad = tmp_path / "times.json"
    expected = {"missing grid": "does not exist", "unknown scale": "has no scale 'huge'",
                "unreadable step times": "cannot be read", "not json": "is not JSON",
                "wrong schema": "'measurements' list", "float16 on a cpu": "--save-step-times FILE"}[case]
    if case == "missing grid":
        grid = str(tmp_path / "nope.yaml")
    elif case == "unknown scale":
        extra = ["--scale", "huge"]
    elif case == "unreadable step times":
        extra = ["--step-times", str(tmp_path / "absent.json")]
    elif case == "not json":
        bad.write_text("{not json")
        extra = ["--step-times", str(bad)]
    elif case == "wrong schema":
        bad.write_text(json.dumps({"device": "x", "times": []}))
        extra = ["--step-times", str(bad)]
    else:
        extra = ["--device", "cpu", "training.fp16=true", "training.amp_dtype=float16"]
    monkeypatch.setattr(sys, "argv", ["msd", "grid", "plan", grid, *extra, f"env.data_dir={tmp_path / 'data'}"])
    with pytest.raises(SystemExit) as exit_info:
        main()
    err = " ".join(capsys.readouterr().err.split())  # rich wraps the paragraph to the terminal width
    assert exit_info.value.code == 2
    assert expected in err and "Traceback" not in err and err.count("error:") == 1


def test_errors_are_grid_errors():
    assert issubclass(PlanError, GridError)
