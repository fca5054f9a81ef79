"""The teacher cache on a real (tiny, barely trained) teacher: damage found and rebuilt, opening
read-only, one build among concurrent builders, no half-built cache, streamed metric re-check."""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import benchmark.distill.cache as cache_mod
from benchmark.cli import app
from benchmark.config.loader import build_config
from benchmark.data.build import build_dataset
from benchmark.data.make import make_dataset
from benchmark.distill.cache import (
    CACHE_VERSION,
    CorruptCacheError,
    MetricRecheck,
    build_cache,
    cache_key,
    get_teacher_cache,
    open_cache,
)
from benchmark.distill.teacher import load_teacher
from benchmark.errors import CheckpointError, UserError
from benchmark.train.metrics import compute_metrics
from benchmark.train.trainer import run_experiment

N_TRAIN = 2000
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """2,000 training memes, a small teacher trained for a few updates (its cache is what matters),
    and its cache built once, which tests copy (the key does not depend on where the cache is)."""
    root = tmp_path_factory.mktemp("teacher_cache")
    make_dataset("hateful_memes", root / "data", size=N_TRAIN, seed=0)
    env = [f"env.data_dir={root / 'data'}", f"env.save_dir={root / 'runs'}", "dataset=hateful_memes",
           "training.batch_size=64", "training.threads=1"]
    small = ["model_size=student", "model_config.late_fusion.presets.student.text_encoder.num_layers=0"]
    teacher = run_experiment(build_config([*env, *small, f"env.cache_dir={root / 'unused'}", "method=teacher",
                                           "training.max_updates=4"]), progress=False)
    world = SimpleNamespace(root=root, env=env, teacher_run=teacher.run_id)
    world.pristine = _open(world, root / "pristine").path
    return world


def _setup(world, cache_dir: Path):
    config = build_config([*world.env, f"env.cache_dir={cache_dir}", "method=kd", f"teacher={world.teacher_run}"])
    info = build_dataset(cache_mod.full_split_config(config), "val").info
    return config, load_teacher(config, info, CPU)


def _open(world, cache_dir: Path, **kwargs):
    config, teacher = _setup(world, cache_dir)
    return get_teacher_cache(config, teacher, CPU, spot_check_samples=1, **kwargs)


@pytest.fixture
def built(world, tmp_path):
    path = tmp_path / "cache" / "teacher" / world.pristine.name
    shutil.copytree(world.pristine, path)
    cache = _open(world, tmp_path / "cache")
    assert cache.path == path
    return SimpleNamespace(cache=cache, dir=tmp_path / "cache", path=path, world=world)


def _zero_row(path: Path, row: int) -> None:
    array = np.load(path, mmap_mode="r+")
    array[row] = 0
    array.flush()
    del array


def _rebuilt(built, capsys) -> tuple[str, object]:
    before = (built.path / "meta.json").stat().st_mtime_ns
    cache = _open(built.world, built.dir)
    assert (built.path / "meta.json").stat().st_mtime_ns != before
    return capsys.readouterr().err, cache


def test_one_zeroed_row_of_two_thousand_is_detected_and_the_cache_rebuilt(built, capsys):
    original = built.cache.logits("train", torch.tensor([1234]))["multi"].clone()
    assert built.cache.meta["shapes"]["train"]["logits"][0] == N_TRAIN and original.abs().sum() > 0
    _zero_row(built.path / "train.logits.npy", 1234)
    err, cache = _rebuilt(built, capsys)
    assert "rebuilding" in err and "train.logits: chunk 0" in err and "checksum" in err
    assert torch.equal(cache.logits("train", torch.tensor([1234]))["multi"], original)


def test_a_truncated_chunk_is_rebuilt(built, capsys):
    path = built.path / "val.saliency.npy"
    path.write_bytes(path.read_bytes()[:-100])
    err, cache = _rebuilt(built, capsys)
    assert "truncated" in err and "rebuilding" in err
    cache.verify_all()


def test_a_meta_without_checksums_from_the_old_format_is_rebuilt(built, capsys):
    meta = json.loads((built.path / "meta.json").read_text())
    del meta["arrays"], meta["version"]
    meta["inputs"]["version"] = 1
    (built.path / "meta.json").write_text(json.dumps(meta))
    err, cache = _rebuilt(built, capsys)
    assert "format version 1, without per-chunk checksums" in err
    assert cache.meta["version"] == CACHE_VERSION and all(
        spec["checksums"] for kinds in cache.meta["arrays"].values() for spec in kinds.values())


def test_an_old_format_cache_of_the_same_teacher_is_named_when_a_new_one_is_built(world, tmp_path, capsys):
    old = tmp_path / "cache" / "teacher" / "0123456789abcdefabcd"
    old.mkdir(parents=True)
    (old / "meta.json").write_text(json.dumps({"key": old.name, "inputs": {
        "version": 1, "teacher_run": world.teacher_run, "dataset": "hateful_memes"}}))
    _open(world, tmp_path / "cache")
    assert f"{old} was written by an older cache format" in capsys.readouterr().err


def test_lazy_reads_refuse_a_damaged_chunk_and_say_how_to_rebuild(built):
    config, teacher = _setup(built.world, built.dir)
    key, inputs = cache_key(config, teacher)
    with cache_mod.build_lock(config, key):  # 100 rows per logits chunk: 20 chunks for train
        build_cache(config, teacher, key, inputs, built.path, CPU, chunk_bytes=1200)
    _zero_row(built.path / "train.logits.npy", 1500)
    with pytest.raises(CorruptCacheError):  # small caches are checked whole when opened
        open_cache(built.path, key)
    lazy = open_cache(built.path, key, verify="lazy")  # what a VQA2-size cache gets
    assert lazy.logits("train", torch.tensor([0, 1999]))["multi"].shape == (2, 2)
    with pytest.raises(CorruptCacheError, match=rf"rows 1,500-1,599.*msd cache build --rebuild "
                                                rf"teacher={built.world.teacher_run} dataset=hateful_memes"):
        lazy.logits("train", torch.tensor([3, 1550]))


def _tree(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in sorted(root.rglob("*"))}


def test_opening_writes_nothing(built):
    teacher_dir = built.world.root / "runs"
    before_cache, before_runs = _tree(built.dir), _tree(teacher_dir)
    cache = _open(built.world, built.dir)
    cache.logits("train", torch.arange(0, N_TRAIN, 7))
    cache.population_saliency("train", np.arange(N_TRAIN), "divergence")
    assert _tree(built.dir) == before_cache and _tree(teacher_dir) == before_runs


def test_a_failed_build_leaves_nothing_visible(world, tmp_path, monkeypatch):
    def fail(*args, **kwargs):
        raise CheckpointError("the teacher's val metric does not match")

    monkeypatch.setattr(cache_mod, "_recheck_teacher_metric", fail)  # after every split is written
    with pytest.raises(CheckpointError):
        _open(world, tmp_path / "cache")
    assert list((tmp_path / "cache" / "teacher").iterdir()) == []


def _build_in_child(world, cache_dir, log, start):
    calls = cache_mod.build_cache

    def counted(*args, **kwargs):
        with open(log, "a") as handle:
            handle.write(f"{os.getpid()}\n")
        return calls(*args, **kwargs)

    cache_mod.build_cache = counted
    start.wait()
    print(_open(world, cache_dir).path)


def test_concurrent_builders_build_once(world, tmp_path):
    context = multiprocessing.get_context("fork")
    log, start = tmp_path / "builds.log", context.Event()
    children = [context.Process(target=_build_in_child, args=(world, tmp_path / "cache", log, start))
                for _ in range(2)]
    for child in children:
        child.start()
    start.set()
    for child in children:
        child.join(120)
    assert [child.exitcode for child in children] == [0, 0]
    assert len(log.read_text().split()) == 1
    assert [p.name.startswith(".") for p in (tmp_path / "cache" / "teacher").iterdir()] == [False]


def test_msd_cache_verify(built):
    args = ["cache", "verify", f"teacher={built.world.teacher_run}", *built.world.env[:2],
            f"env.cache_dir={built.dir}"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "every checksum matches" in result.output and "6 chunks" in result.output
    _zero_row(built.path / "test.saliency.npy", 3)
    result = CliRunner().invoke(app, ["cache", "verify", "--path", str(built.path)])
    assert isinstance(result.exception, CorruptCacheError) and isinstance(result.exception, UserError)
    assert "test.saliency: chunk 0" in str(result.exception)
    result = CliRunner().invoke(app, ["cache", "verify", "--path", str(built.dir)])
    assert isinstance(result.exception, UserError) and "not a teacher cache" in str(result.exception)


@pytest.mark.parametrize("metric,task,make_targets", [
    ("vqa_accuracy", "multi_label", lambda g, n: torch.rand(n, 50, generator=g) * (torch.rand(n, 50, generator=g) > 0.9)),
    ("accuracy", "single_label", lambda g, n: torch.randint(0, 50, (n,), generator=g)),
    ("roc_auc", "single_label", lambda g, n: torch.randint(0, 50, (n,), generator=g)),
])
def test_the_streamed_recheck_equals_the_metric_on_all_samples(metric, task, make_targets):
    g = torch.Generator().manual_seed(0)
    logits, targets = torch.randn(1000, 50, generator=g), make_targets(g, 1000)
    recheck = MetricRecheck([metric], task, prefix="val/x")
    for start in range(0, 1000, 96):
        recheck.add(logits[start:start + 96], targets[start:start + 96])
    whole = compute_metrics([metric], logits, targets, task, prefix="val/x")
    assert recheck.result().keys() == whole.keys()
    assert recheck.result()[f"val/x/{metric}"] == pytest.approx(whole[f"val/x/{metric}"], abs=1e-9)
    assert (recheck.kept == []) == (metric in cache_mod.STREAMED_METRICS)
