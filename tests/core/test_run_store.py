import json
from pathlib import Path

import pandas as pd
import pytest
from omegaconf import OmegaConf

from benchmark.tracking.atomic import atomic_path, write_json_atomic
from benchmark.tracking.run_id import compute_run_id
from benchmark.tracking.run_store import REQUIRED_FILES, RunStore


def _config(**over):
    base = {"dataset": "hateful_memes", "method": "kd", "model": "late_fusion", "training": {"seed": 0, "threads": 2},
            "env": {"save_dir": "/a"}, "model_config": {"late_fusion": {"h": 1}, "visual_bert": {"h": 2}},
            "dataset_config": {"hateful_memes": {"x": 1}}}
    cfg = OmegaConf.create(base)
    for k, v in over.items():
        OmegaConf.update(cfg, k, v, force_add=True)
    return cfg


def test_run_id_ignores_volatile_keys_and_inactive_components():
    a = compute_run_id(_config())
    assert a == compute_run_id(_config(**{"env.save_dir": "/elsewhere", "training.threads": 1}))
    assert a == compute_run_id(_config(**{"model_config.visual_bert.h": 99}))
    assert a != compute_run_id(_config(**{"training.seed": 1}))
    assert a.startswith("hateful_memes-kd-")


def test_atomic_write_leaves_old_file_on_failure(tmp_path: Path):
    target = tmp_path / "f.json"
    write_json_atomic(target, {"a": 1})
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash")
    assert json.loads(target.read_text()) == {"a": 1}
    assert list(tmp_path.iterdir()) == [target]


def test_completeness_needs_status_and_every_file(tmp_path: Path):
    store = RunStore(tmp_path)
    run = store.run("r1")
    run.write_config(OmegaConf.create({"a": 1}))
    run.write_summary({"status": "completed"})
    assert not run.is_complete()
    for name in REQUIRED_FILES:
        if not run.file(name).exists():
            run.file(name).write_text("x")
    assert run.is_complete()
    run.update_summary(status="failed")
    assert not run.is_complete()


def test_metrics_jsonl_survives_a_torn_line_and_truncates_on_resume(tmp_path: Path):
    run = RunStore(tmp_path).run("r")
    run.path.mkdir()
    for step in (10, 20, 30):
        run.append_metrics({"trainer/global_step": step, "v": step})
    with open(run.file("metrics.jsonl"), "a") as f:
        f.write('{"trainer/glo')  # killed mid-write
    assert [r["v"] for r in run.read_metrics()] == [10, 20, 30]
    run.truncate_metrics(20)
    assert [r["v"] for r in run.read_metrics()] == [10, 20]


def test_index_is_rebuilt_from_run_directories(tmp_path: Path):
    store = RunStore(tmp_path / "runs")
    for i, status in enumerate(["completed", "failed"]):
        run = store.run(f"r{i}")
        run.path.mkdir(parents=True)
        run.write_summary({"status": status, "dataset": "d", "metrics": {"val/d/accuracy": 0.5 + i}})
    path = store.rebuild_index()
    frame = pd.read_parquet(path)
    assert sorted(frame["run_id"]) == ["r0", "r1"]
    assert set(frame["status"]) == {"completed", "failed"}
    assert frame.set_index("run_id").loc["r1", "val/d/accuracy"] == 1.5


def test_find_by_prefix_and_ambiguity(tmp_path: Path):
    from benchmark.errors import UserError

    store = RunStore(tmp_path)
    for name in ("abc1", "abc2", "xyz"):
        store.run(name).path.mkdir()
    assert store.find("xy").run_id == "xyz"
    with pytest.raises(UserError, match="ambiguous"):
        store.find("abc")
    with pytest.raises(UserError, match="No run"):
        store.find("nope")
