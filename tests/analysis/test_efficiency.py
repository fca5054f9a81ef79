"""analysis/efficiency.py: the Pareto frontier and the distillation-cost arithmetic by hand,
points and tables from a hand-made grid frame (missing cells marked), and the smoke grid end
to end (slow)."""

from __future__ import annotations

import json
import math
import os
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis.efficiency import (
    build_distillation_cost,
    build_efficiency,
    build_efficiency_outputs,
    distillation_costs,
    pareto_front,
    per_student_cost,
    points,
    run_figures,
)
from analysis.render import to_markdown

REPO = Path(__file__).resolve().parents[2]


# -- arithmetic by hand ----------------------------------------------------------------------------
def test_pareto_front_by_hand():
    # (cost, value): a=(1, 0.5) b=(2, 0.7) c=(3, 0.6) dominated by b, d=(2, 0.4) dominated by a and b,
    # e=(4, 0.9), f=(nan, 1.0) has no cost and is never on the frontier
    cost = [1, 2, 3, 2, 4, math.nan]
    value = [0.5, 0.7, 0.6, 0.4, 0.9, 1.0]
    assert pareto_front(cost, value).tolist() == [True, True, False, False, True, False]


def test_ties_keep_both_equal_points_and_drop_a_weakly_dominated_one():
    assert pareto_front([1, 1, 1], [0.5, 0.5, 0.4]).tolist() == [True, True, False]


def test_per_student_cost_by_hand():
    # teacher 100 s, cache 20 s, student 10 s: shared by 4 students 120/4 + 10 = 40 s; alone 130 s
    assert per_student_cost(100.0, 20.0, 10.0, 4) == pytest.approx(40.0)
    assert per_student_cost(100.0, 20.0, 10.0, 1) == pytest.approx(130.0)
    with pytest.raises(ValueError, match="k .* must be >= 1"):
        per_student_cost(100.0, 20.0, 10.0, 0)


# -- a hand-made grid --------------------------------------------------------------------------------
def _summary(metric: float, flops: float, lat1: float, train_s: float, cache: str | None = None) -> dict:
    record = lambda ms, size: {"per_sample_ms": ms, "per_sample_iqr_ms": ms / 10, "repeats": 5,  # noqa: E731
                               "batch_size": size}
    return {"status": "completed", "headline": {"test": metric}, "headline_metric": "roc_auc",
            "model_params": 1000, "train_time_s": train_s, "device": "cpu",
            "method_details": {"teacher_cache": cache},
            "cost": {"params": 1000, "flops_per_sample": flops,
                     "cpu": {"latency": {"1": record(lat1, 1), "64": record(lat1 / 8, 64)},
                             "peak_memory_bytes": {"1": 2**20, "64": 3 * 2**20}}}}


@pytest.fixture
def grid_frame(tmp_path):
    """late_fusion on one dataset: teacher T (30 s), its cache (6 s), KD and MSD students of
    two seeds (4 s each) and a label-only student; the MSD seed-1 cell has no run."""
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "meta.json").write_text(json.dumps({"build": {"time_s": 6.0, "device": "cpu"}}))
    rows = []

    def add(method, seed, summary, teacher="teacher-0"):
        row = {"cell": f"{method}{seed}", "run_id": f"{method}-{seed}", "dataset": "hateful_memes",
               "family": "late_fusion", "size": "teacher" if method == "teacher" else "student", "method": method,
               "weighting": "instance" if method == "msd" else None,
               "row": {"teacher": "Teacher", "student_only": "Student (no KD)", "kd": "KD", "msd": "MSD-instance"}[method],
               "seed": seed, "teacher_run": teacher if method in ("kd", "msd") else None,
               "completed": summary is not None}
        if summary is not None:
            row.update(run_figures(summary))
        rows.append(row)

    add("teacher", 0, _summary(0.70, 9e6, 6.0, 30.0))
    add("student_only", 0, _summary(0.60, 2e5, 0.8, 3.0))
    add("kd", 0, _summary(0.64, 2e5, 0.8, 4.0, str(cache)))
    add("kd", 1, _summary(0.66, 2e5, 1.0, 4.0, str(cache)))
    add("msd", 0, _summary(0.65, 2e5, 0.9, 4.0, str(cache)))
    add("msd", 1, None)
    return pd.DataFrame(rows)


def test_points_average_seeds_and_keep_missing_cells(grid_frame):
    pts = points(grid_frame).set_index("method")
    assert list(pts.index) == ["student_only", "kd", "msd", "teacher"]  # sizes small to large, the teacher last
    assert pts.loc["kd", "metric"] == pytest.approx(0.65) and pts.loc["kd", "metric_sd"] == pytest.approx(np.std([0.64, 0.66], ddof=1))
    assert pts.loc["kd", "lat1_ms"] == pytest.approx(0.9)  # median over seeds
    assert pts.loc["kd", "delta_teacher"] == pytest.approx(-0.05)
    assert (pts.loc["msd", "n"], pts.loc["msd", "expected"]) == (1, 2)
    assert pts.loc["kd", "mem64_mb"] == pytest.approx(3.0)


def test_efficiency_table_shows_every_figure_and_marks_a_cell_without_runs(grid_frame):
    frame = grid_frame[~(grid_frame["method"] == "msd")]
    frame = pd.concat([frame, grid_frame[grid_frame["run_id"] == "msd-1"]])  # only the missing MSD run
    md = to_markdown(build_efficiency(points(frame)))
    kd = next(line for line in md.splitlines() if "| KD |" in line)
    assert "65.00 ± 1.41 (2)" in kd and "0.200" in kd and "0.900 [0.090]" in kd and "-5.00" in kd
    assert "—‡" in next(line for line in md.splitlines() if "MSD-instance" in line)
    assert "Hateful Memes AUROC" in md


def test_distillation_cost_rows_by_hand(grid_frame):
    costs = distillation_costs(grid_frame).set_index("run_id")
    # three completed distilling students share the teacher and its cache: k = 3
    assert set(costs.index) == {"kd-0", "kd-1", "msd-0"} and (costs["k"] == 3).all()
    assert costs.loc["kd-0", "per_student_shared_s"] == pytest.approx((30 + 6) / 3 + 4)
    assert costs.loc["kd-0", "per_student_alone_s"] == pytest.approx(30 + 6 + 4)
    md = to_markdown(build_distillation_cost(distillation_costs(grid_frame)))
    assert "| late\\_fusion | student | KD | 30.00 | 6.00 | 3 | 4.00 | 16.00 | 40.00 | 25 % |" in md


def test_a_cache_built_before_its_time_was_recorded_shows_as_missing(grid_frame, tmp_path):
    (tmp_path / "cache" / "meta.json").write_text("{}")
    costs = distillation_costs(grid_frame)
    assert costs["cache_s"].isna().all() and costs["per_student_shared_s"].isna().all()


def test_outputs_are_written_and_the_manifest_keeps_other_figures(grid_frame, tmp_path):
    out = tmp_path / "results"
    (out / "figures").mkdir(parents=True)
    (out / "figures" / "figures.json").write_text(json.dumps({"table2_bars": {"files": ["x.png"], "reason": None}}))
    result = build_efficiency_outputs(grid_frame, out)
    assert result["figure"]["reason"] is None
    for rel in ("tables/efficiency.md", "tables/efficiency.csv", "tables/efficiency.tex", "tables/distillation_cost.md",
                "figures/efficiency_pareto.png", "figures/efficiency_pareto.pdf"):
        assert (out / rel).stat().st_size > 0, rel
    manifest = json.loads((out / "figures" / "figures.json").read_text())
    assert set(manifest) == {"table2_bars", "efficiency_pareto"}


def test_no_completed_run_writes_tables_of_missing_cells_and_says_why_no_figure(grid_frame, tmp_path):
    empty = grid_frame.assign(completed=False)[["cell", "run_id", "dataset", "family", "size", "method", "weighting",
                                                 "row", "seed", "teacher_run", "completed"]]
    (tmp_path / "figures").mkdir()
    (tmp_path / "figures" / "efficiency_pareto.png").write_bytes(b"an earlier figure")
    result = build_efficiency_outputs(empty, tmp_path)
    assert result["figure"]["reason"] == "no completed run of the efficiency grid"
    assert not (tmp_path / "figures" / "efficiency_pareto.png").exists()
    assert "—‡" in (tmp_path / "tables" / "efficiency.md").read_text()


# -- the smoke grid end to end -----------------------------------------------------------------------
@pytest.mark.slow
def test_the_smoke_grid_gives_every_cell_its_cost_and_the_outputs(tmp_path):
    env = {**os.environ, "MSD_DATA_DIR": str(tmp_path / "data"), "MSD_SAVE_DIR": str(tmp_path / "runs"),
           "MSD_CACHE_DIR": str(tmp_path / "cache"), "WANDB_MODE": "disabled"}
    msd = [str(REPO / ".venv" / "bin" / "msd")] if (REPO / ".venv" / "bin" / "msd").exists() else ["msd"]
    run = subprocess.run([*msd, "grid", "run", "experiments/efficiency.yaml", "--scale", "smoke"], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    done = subprocess.run([*msd, "analyze", "efficiency", "--scale", "smoke", "--out", str(tmp_path / "results")],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    csv = pd.read_csv(tmp_path / "results" / "tables" / "efficiency.csv")
    assert len(csv) == 14 and (csv["n"] == 1).all(), done.stderr[-2000:]  # 2 teachers + 2 families x 2 sizes x 3 methods
    assert (csv["flops"] > 0).all() and (csv["lat1_ms"] > 0).all() and (csv["mem64_mb"] > 0).all()
    teacher = csv[csv["method"] == "teacher"].set_index("family")["flops"]
    tiny = csv[csv["size"] == "tiny"].groupby("family")["flops"].max()
    assert (tiny < teacher.loc[tiny.index]).all()
    cost = pd.read_csv(tmp_path / "results" / "tables" / "distillation_cost.csv")
    assert len(cost) == 8 and (cost["k"] == 4).all() and (cost["cache_s"] > 0).all()
    assert (tmp_path / "results" / "figures" / "efficiency_pareto.png").stat().st_size > 0
