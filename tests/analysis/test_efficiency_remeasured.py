"""analysis/efficiency.py with re-measured costs (``msd cost remeasure`` -> ``cost_remeasured.json``):
a run's re-measured latency and memory are preferred over its end-of-run figures, the table's
note says where the latencies came from, a mixed table marks the end-of-run points, and the
Pareto figure's latency axis says so too."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from analysis.efficiency import (
    END_OF_RUN_MARK,
    build_efficiency,
    latency_axis_label,
    latency_note,
    pareto_figure,
    points,
    run_figures,
)
from analysis.render import to_latex, to_markdown
from benchmark.train.cost_remeasure import REMEASURED_FILE, read_remeasured


def _latency(ms: float, size: int) -> dict:
    return {"per_sample_ms": ms, "per_sample_iqr_ms": ms / 10, "repeats": 5, "batch_size": size}


def _summary(metric: float, lat1: float) -> dict:
    return {"status": "completed", "headline": {"test": metric}, "headline_metric": "roc_auc", "model_params": 1000,
            "train_time_s": 3.0, "device": "cpu",
            "cost": {"params": 1000, "flops_per_sample": 2e5,
                     "cpu": {"latency": {"1": _latency(lat1, 1), "64": _latency(lat1 / 8, 64)},
                             "peak_memory_bytes": {"1": 2**20, "64": 3 * 2**20}}}}


def _remeasured(lat1: float, load_start: float, load_end: float, day: str = "2026-12-02") -> dict:
    return {"run_id": "x", "params": 1000, "flops_per_sample": 2e5,
            "cpu": {"threads": 1, "latency": {"1": {**_latency(lat1, 1), "repeats": 35},
                                               "64": {**_latency(lat1 / 4, 64), "repeats": 35}},
                    "peak_memory_bytes": {"1": 2**20, "64": 5 * 2**20}},
            "interleave": {"rounds": 7, "repeats": 5}, "load_average": {"start": [load_start, 0.5, 0.4],
                                                                         "end": [load_end, 0.5, 0.4]},
            "machine": {"cpu": "Test CPU"}, "started_at": f"{day}T09:59:00+00:00", "created_at": f"{day}T10:00:00+00:00"}


def test_run_figures_prefer_the_remeasured_latency_and_memory():
    summary = _summary(0.6, lat1=5.0)
    before = run_figures(summary)
    assert (before["lat1_ms"], before["lat64_ms"], before["mem64_mb"]) == (5.0, 5.0 / 8, 3.0)
    assert before["lat_source"] == "end of run" and before["remeasured_at"] is None
    after = run_figures(summary, _remeasured(1.0, 0.1, 0.3))
    assert (after["lat1_ms"], after["lat1_iqr_ms"], after["lat64_ms"], after["mem64_mb"]) == (1.0, 0.1, 0.25, 5.0)
    assert after["repeats"] == 35 and after["lat_source"] == "remeasured"
    assert (after["remeasure_load_start"], after["remeasure_load_end"], after["remeasure_rounds"]) == (0.1, 0.3, 7)
    assert (after["params"], after["flops"], after["metric"]) == (1000, 2e5, 0.6)  # the architecture's, the run's


def test_a_record_without_latencies_is_not_used():
    broken = {"cpu": {"latency": {}}, "error": "RuntimeError: out of memory"}
    assert run_figures(_summary(0.6, 5.0), broken)["lat1_ms"] == 5.0


def _frame(remeasured: dict[int, dict | None]) -> pd.DataFrame:
    """Two seeds of a KD student and one label-only student (seed 0) of one family."""
    rows = []
    for method, seed, lat in (("kd", 0, 4.0), ("kd", 1, 6.0), ("student_only", 0, 8.0)):
        key = len(rows)
        row = {"cell": f"{method}{seed}", "run_id": f"{method}-{seed}", "dataset": "hateful_memes",
               "family": "late_fusion", "size": "student", "method": method, "weighting": None,
               "row": {"kd": "KD", "student_only": "Student (no KD)"}[method], "seed": seed, "teacher_run": None,
               "completed": True}
        row.update(run_figures(_summary(0.6, lat), remeasured.get(key)))
        rows.append(row)
    return pd.DataFrame(rows)


def test_the_note_says_the_latencies_are_from_the_end_of_training_when_nothing_was_remeasured():
    runs = _frame({})
    note = latency_note(runs)
    assert note.startswith("Latency and memory measured at the end of each run, while other runs trained beside it.")
    assert "`msd cost remeasure <grid.yaml>`" in note
    md = to_markdown(build_efficiency(points(runs), runs))
    assert END_OF_RUN_MARK not in md and note in md


def test_the_note_counts_dates_and_loads_of_the_remeasured_runs():
    runs = _frame({0: _remeasured(1.0, 0.10, 0.30), 1: _remeasured(1.2, 0.20, 0.30), 2: _remeasured(2.0, 0.15, 0.30)})
    note = latency_note(runs)
    assert note == ("Latency and memory of 3 of 3 completed runs re-measured after training (`msd cost remeasure`: "
                    "the runs interleaved, 7 rounds, one thread; 2026-12-02, Test CPU; 1-min load average 0.10-0.20 "
                    "at start, 0.30 at end).")
    pts = points(runs).set_index("method")
    assert pts.loc["kd", "lat1_ms"] == pytest.approx(1.1)  # the median over seeds of the re-measured figures
    assert (pts["lat_source"] == "remeasured").all()
    md = to_markdown(build_efficiency(points(runs), runs))
    assert END_OF_RUN_MARK not in md and note in md


def test_a_mixed_table_marks_the_points_with_an_end_of_run_latency():
    # KD seed 0 re-measured, seed 1 not (a mixed point); the label-only student re-measured
    runs = _frame({0: _remeasured(1.0, 0.10, 0.30, day="2026-12-01"), 2: _remeasured(2.0, 0.15, 0.30)})
    note = latency_note(runs)
    assert note.startswith("Latency and memory of 2 of 3 completed runs re-measured after training")
    assert "2026-12-01 to 2026-12-02" in note
    assert "the runs interleaved in 2 separate commands, which share no load, 7 rounds" in note
    assert f"the other 1 measured at the end of training, beside the grid's other runs ({END_OF_RUN_MARK}" in note
    pts = points(runs).set_index("method")
    assert (pts.loc["kd", "lat_source"], pts.loc["student_only", "lat_source"]) == ("mixed", "remeasured")
    table = build_efficiency(points(runs), runs)
    lines = to_markdown(table).splitlines()
    kd = next(line for line in lines if "| KD |" in line)
    student = next(line for line in lines if "Student (no KD)" in line)
    assert kd.count(END_OF_RUN_MARK) == 2 and END_OF_RUN_MARK not in student  # both latency columns
    assert r"$^\P$" in to_latex(table)


def test_the_pareto_figure_uses_the_remeasured_latencies_and_says_so():
    assert latency_axis_label(points(_frame({}))) == "CPU latency per sample, batch 1 (ms, log)"
    mixed = points(_frame({0: _remeasured(1.0, 0.1, 0.3), 2: _remeasured(2.0, 0.1, 0.3)}))
    assert latency_axis_label(mixed).endswith("1 of 2 points re-measured")
    every = points(_frame({i: _remeasured(1.0, 0.1, 0.3) for i in range(3)}))
    assert latency_axis_label(every).endswith("re-measured, interleaved")
    fig = pareto_figure(every)
    try:
        latency_axis = fig.axes[0]
        assert latency_axis.get_xlabel() == latency_axis_label(every)
        xs = sorted(x for collection in latency_axis.collections for x, _ in collection.get_offsets())
        assert 1.0 in xs and 8.0 not in xs  # the label-only student at its re-measured 1.0 ms, not its 8.0
    finally:
        import matplotlib.pyplot as plt

        plt.close(fig)
    assert (build_efficiency(every).records["lat_source"] == "remeasured").all()  # the CSV's column


def test_read_remeasured_ignores_a_missing_or_unreadable_file(tmp_path):
    assert read_remeasured(tmp_path) is None
    (tmp_path / REMEASURED_FILE).write_text("{not json")
    assert read_remeasured(tmp_path) is None
    (tmp_path / REMEASURED_FILE).write_text(json.dumps(_remeasured(1.0, 0.1, 0.2)))
    assert read_remeasured(tmp_path)["cpu"]["threads"] == 1
