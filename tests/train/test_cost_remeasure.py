"""``msd cost remeasure`` (benchmark/train/cost_remeasure.py): the interleaving order with a fake
measurer, pooling of timed passes by hand, the options' errors, and end to end on two tiny
runs of one architecture trained in a temporary store (the files written next to the runs,
summary.json untouched, skipping and --force, a missing checkpoint, a grid with no finished run,
an unknown grid file)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml
from typer.testing import CliRunner

from benchmark.cli import app
from benchmark.errors import CheckpointError, ConfigError
from benchmark.grid.spec import GridError
from benchmark.train.cost_remeasure import (
    REMEASURED_FILE,
    RemeasureError,
    RemeasureSettings,
    Target,
    architecture,
    interleave,
    pooled_latency,
    remeasure_grid,
    remeasure_settings,
    round_orders,
)


# -- the order -------------------------------------------------------------------------------------
def test_every_round_visits_every_run_once_in_a_seeded_order_that_changes():
    names = ["a", "b", "c", "d"]
    orders = round_orders(names, rounds=6, seed=3)
    assert len(orders) == 6 and all(sorted(order) == names for order in orders)
    assert all(orders[i] != orders[i + 1] for i in range(5))  # never the same order twice in a row
    assert len({tuple(o) for o in orders}) > 1
    assert round_orders(names, rounds=6, seed=3) == orders  # seeded
    assert round_orders(names, rounds=6, seed=4) != orders


def test_two_runs_alternate_which_goes_first():
    orders = round_orders(["a", "b"], rounds=4, seed=0)
    assert [o[0] for o in orders] in (["a", "b", "a", "b"], ["b", "a", "b", "a"])


def test_one_run_is_measured_every_round():
    assert round_orders(["a"], rounds=3, seed=0) == [["a"], ["a"], ["a"]]


def test_interleave_calls_the_measurer_in_the_round_orders_and_keeps_each_runs_passes():
    calls = []
    clock = iter(range(1, 100))

    def fake_block(name):  # a fake measurer: records who it measured, returns two "passes" per batch size
        calls.append(name)
        tick = next(clock)
        return {1: [tick, tick + 0.5], 64: [10 * tick]}

    rounds = []
    measured = interleave(["a", "b", "c"], rounds=3, seed=7, block=fake_block,
                          on_round=lambda i, order, s: rounds.append((i, list(order))))
    assert calls == [name for order in measured.orders for name in order]
    assert rounds == list(enumerate(measured.orders))
    for name in "abc":
        ticks = [i * 3 + order.index(name) + 1 for i, order in enumerate(measured.orders)]
        assert measured.times[name][1] == [x for t in ticks for x in (t, t + 0.5)]
        assert measured.times[name][64] == [10 * t for t in ticks]
        assert measured.positions(name) == [order.index(name) for order in measured.orders]


# -- pooling ---------------------------------------------------------------------------------------
def test_pooled_latency_by_hand():
    # five passes of a batch of 2 pooled over rounds: 1, 2, 3, 4, 10 ms. Median 3 ms; inclusive
    # quartiles at positions 1 and 3 of the sorted passes: 2 and 4 ms, IQR 2 ms; per sample halved.
    settings = RemeasureSettings(rounds=5, repeats=1, warmup=2, batch_sizes=(2,))
    record = pooled_latency([0.004, 0.001, 0.010, 0.003, 0.002], 2, settings)
    assert record["median_ms"] == pytest.approx(3.0) and record["q25_ms"] == pytest.approx(2.0)
    assert record["q75_ms"] == pytest.approx(4.0) and record["iqr_ms"] == pytest.approx(2.0)
    assert record["per_sample_ms"] == pytest.approx(1.5) and record["per_sample_iqr_ms"] == pytest.approx(1.0)
    assert (record["passes"], record["repeats"], record["rounds"], record["repeats_per_round"]) == (5, 5, 5, 1)


def test_passes_of_all_rounds_are_pooled_not_averaged_per_round():
    # round 1 gave 1 and 4 ms, round 2 gave 2 and 3 ms: the pooled median is 2.5 ms (a median of
    # the per-round medians would also be 2.5, but the quartiles come from all four passes:
    # inclusive positions 0.75 and 2.25 of [1, 2, 3, 4] -> 1.75 and 3.25 ms).
    blocks = iter([{1: [0.001, 0.004]}, {1: [0.002, 0.003]}])
    measured = interleave(["only"], rounds=2, seed=0, block=lambda name: next(blocks))
    record = pooled_latency(measured.times["only"][1], 1, RemeasureSettings(rounds=2, repeats=2, batch_sizes=(1,)))
    assert record["median_ms"] == pytest.approx(2.5)
    assert (record["q25_ms"], record["q75_ms"]) == (pytest.approx(1.75), pytest.approx(3.25))
    assert record["passes"] == 4


# -- options ---------------------------------------------------------------------------------------
def test_settings_parse_batch_sizes():
    assert remeasure_settings(3, 2, 0, "1, 64,1", 5) == RemeasureSettings(3, 2, 0, (1, 64), 5)


@pytest.mark.parametrize("kwargs, match", [
    ({"rounds": 0}, r"--rounds must be an integer >= 1 \(interleaved rounds"),
    ({"repeats": 0}, r"--repeats must be an integer >= 1"),
    ({"repeats": 2.5}, r"--repeats must be an integer >= 1"),
    ({"warmup": -1}, r"--warmup must be an integer >= 0"),
    ({"batch_sizes": "1,x"}, r"--batch-sizes must be comma-separated integers"),
    ({"batch_sizes": ""}, r"--batch-sizes must be comma-separated integers"),
    ({"batch_sizes": "0,64"}, r"--batch-sizes must be an integer >= 1 \(a batch size\), got 0"),
])
def test_bad_options_name_the_option(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        remeasure_settings(**kwargs)


def test_interleave_refuses_no_runs_and_no_rounds():
    with pytest.raises(ValueError, match="at least one run"):
        interleave([], rounds=1, seed=0, block=lambda n: {})
    with pytest.raises(ValueError, match="rounds must be >= 1"):
        round_orders(["a"], rounds=0, seed=0)


# -- end to end ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """Two one-epoch label-only late-fusion students (seeds 0 and 1: one architecture) on 64
    samples, trained in this process as `msd grid run` would."""
    from benchmark.data.make import make_dataset
    from benchmark.grid.cells import expand
    from benchmark.grid.spec import load_grid
    from benchmark.train.trainer import run_experiment

    root = tmp_path_factory.mktemp("remeasure")
    path = root / "tiny.yaml"
    path.write_text(yaml.safe_dump({
        "name": "tiny", "base": {"model": "late_fusion", "method": "student_only", "training.max_epochs": 1,
                                 "training.batch_size": 32, "training.threads": 1, "evaluation.cost.repeats": 1},
        "axes": {"dataset": ["hateful_memes"], "seed": [0, 1]}, "data": {"size": 64}}, sort_keys=False))
    env = [f"env.data_dir={root / 'data'}", f"env.save_dir={root / 'runs'}", f"env.cache_dir={root / 'cache'}"]
    make_dataset("hateful_memes", str(expand(load_grid(path), env).cells[0].config.env.data_dir), size=64, seed=0)
    cells = expand(load_grid(path), env).cells  # run ids hold the data's fingerprint: expanded once it exists
    runs = [run_experiment(cell.config, progress=False).run_dir for cell in cells]
    return SimpleNamespace(root=root, path=path, env=env, cells=cells, runs=runs)


def _remeasure(store, *args, env=None):
    return CliRunner().invoke(app, ["cost", "remeasure", str(store.path), "--rounds", "2", "--repeats", "1",
                                    "--warmup", "1", *args, *(env or store.env)])


def test_remeasure_writes_a_record_next_to_each_run_and_leaves_the_summary_alone(store):
    summaries = {run.run_id: run.file("summary.json").read_bytes() for run in store.runs}
    result = _remeasure(store)
    assert result.exit_code == 0, result.output
    assert "2 measured, 0 skipped" in result.output
    assert result.output.count("round ") >= 2 and "round 2/2" in result.output  # one progress line per round
    for run in store.runs:
        assert run.file("summary.json").read_bytes() == summaries[run.run_id]
        record = json.loads(run.file(REMEASURED_FILE).read_text())
        assert record["run_id"] == run.run_id and record["split"] == "test" and record["view"] == "multi"
        assert record["interleave"]["rounds"] == 2 and record["interleave"]["runs"] == 2
        assert sorted(record["interleave"]["run_ids"]) == sorted(r.run_id for r in store.runs)
        assert sorted(record["interleave"]["positions"]) == [0, 1]  # two runs alternate: first once, second once
        for size in ("1", "64"):
            latency = record["cpu"]["latency"][size]
            assert latency["passes"] == 2 and latency["repeats_per_round"] == 1 and latency["median_ms"] > 0
            assert record["cpu"]["peak_memory_bytes"][size] > 0
        assert record["cpu"]["threads"] == 1
        summary_cost = json.loads(summaries[run.run_id])["cost"]
        assert record["architecture"]["matches_summary"] is True  # the rebuilt model is the trained one
        assert (record["params"], record["flops_per_sample"]) == (summary_cost["params"], summary_cost["flops_per_sample"])
        assert record["cpu"]["peak_memory_bytes"] == summary_cost["cpu"]["peak_memory_bytes"]  # not load-dependent
        assert len(record["load_average"]["start"]) == 3 and record["machine"]["torch"]


def test_measured_runs_are_skipped_unless_forced_and_the_analysis_reads_the_records(store):
    from analysis.efficiency import grid_runs

    settings = RemeasureSettings(rounds=1, repeats=1, warmup=0, batch_sizes=(1, 64))
    if not all(run.file(REMEASURED_FILE).exists() for run in store.runs):  # the test above writes them
        remeasure_grid(store.cells, settings, announce=lambda m: None)
    said = []
    again = remeasure_grid(store.cells, settings, announce=said.append)
    assert again.measured == [] and sorted(again.skipped) == sorted(r.run_id for r in store.runs)
    assert sum("already re-measured, skipped" in line for line in said) == 2
    forced = remeasure_grid(store.cells, settings, force=True, announce=lambda m: None)
    assert sorted(forced.measured) == sorted(r.run_id for r in store.runs) and forced.skipped == []
    assert all(json.loads(path.read_text())["interleave"]["rounds"] == 1 for path in forced.paths)
    runs = grid_runs(store.path, "default", store.root / "runs", store.env).set_index("run_id")
    for run in store.runs:
        record = json.loads(run.file(REMEASURED_FILE).read_text())
        assert runs.loc[run.run_id, "lat_source"] == "remeasured"
        assert runs.loc[run.run_id, "lat1_ms"] == pytest.approx(record["cpu"]["latency"]["1"]["per_sample_ms"])


def _cells_in(store, save_dir: Path) -> list:
    """The store's grid cells with their run store moved to ``save_dir`` (no second expansion)."""
    from omegaconf import OmegaConf

    cells = []
    for cell in store.cells:
        config = OmegaConf.merge(cell.config, {"env": {"save_dir": str(save_dir)}})
        cells.append(SimpleNamespace(name=cell.name, run_id=cell.run_id, config=config))
    return cells


def test_a_completed_run_without_its_checkpoint_is_an_error(store, tmp_path):
    shutil.copytree(store.root / "runs", tmp_path / "runs")
    (tmp_path / "runs" / store.runs[1].run_id / "checkpoint.pt").unlink()
    with pytest.raises(CheckpointError, match=r"1 completed run\(s\) have no checkpoint.pt") as error:
        remeasure_grid(_cells_in(store, tmp_path / "runs"), RemeasureSettings(rounds=1, repeats=1))
    assert store.runs[1].run_id in str(error.value) and "--only" in str(error.value)


def test_a_grid_without_finished_runs_is_an_error(store, tmp_path):
    with pytest.raises(RemeasureError, match=r"No finished run among the 2 cell\(s\).*run is todo.*msd grid run"):
        remeasure_grid(_cells_in(store, tmp_path / "empty"), RemeasureSettings(rounds=1, repeats=1))


def test_an_unknown_grid_file_and_bad_options_fail_before_any_work(store, tmp_path):
    missing = CliRunner().invoke(app, ["cost", "remeasure", str(tmp_path / "nope.yaml")])
    assert isinstance(missing.exception, GridError) and "does not exist" in str(missing.exception)
    bad = _remeasure(store, "--rounds", "0")
    assert isinstance(bad.exception, ConfigError) and "--rounds must be an integer >= 1" in str(bad.exception)
    scale = _remeasure(store, "--scale", "nosuch")
    assert isinstance(scale.exception, GridError) and "no scale 'nosuch'" in str(scale.exception)


def test_only_measures_the_named_cells_without_their_teachers(tmp_path):
    from benchmark.grid.cells import expand
    from benchmark.grid.spec import load_grid

    path = tmp_path / "kd.yaml"
    path.write_text(yaml.safe_dump({"name": "kd", "base": {"model": "late_fusion"},
                                    "axes": {"dataset": ["hateful_memes"], "method": ["teacher", "kd"], "seed": [0]}}))
    grid = expand(load_grid(path), [f"env.data_dir={tmp_path / 'data'}", f"env.save_dir={tmp_path / 'runs'}"])
    assert [c.name for c in grid.select("*/kd/*", with_teachers=False)] == ["hateful_memes/kd/seed0"]
    assert len(grid.select("*/kd/*")) == 2  # training it needs its teacher: the default adds it


# -- the architecture (last: the FLOP counter's first use is slow; the runs above paid for it) --------
class _Linear(torch.nn.Module):
    """A model with the suite's ``forward_views`` whose FLOPs are known: 2 x 3 x 4 = 24 per sample."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(3, 4, bias=False)

    def forward_views(self, batch, views):
        return {view: self.fc(batch["x"]) for view in views}


@pytest.mark.parametrize("stored, same", [({"params": 12, "flops_per_sample": 24}, True),
                                          ({"params": 12, "flops_per_sample": 48}, False), ({}, None)])
def test_params_and_flops_are_recounted_and_compared_with_the_summary(stored, same):
    target = Target("cell", None, _Linear(), "test", {}, {"x": torch.ones(1, 3)}, stored)
    figures = architecture(target)
    assert (figures["params"], figures["flops_per_sample"]) == (12, 24)
    assert figures["architecture"]["matches_summary"] is same
