"""The W&B callback: value conversion, mode precedence, a failing run's files; one W&B run per run id
across attempts, standalone groups, and the teacher -> cache -> student lineage with artifacts that
mean something on another machine (read back from the offline runs' own record logs)."""

from __future__ import annotations

import hashlib
import json
import math
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import wandb
import xxhash
from omegaconf import OmegaConf
from typer.testing import CliRunner

from benchmark.cli import app
from benchmark.config.loader import build_config
from benchmark.data.make import make_dataset
from benchmark.tracking.run_store import RunDir
from benchmark.tracking.wandb_artifacts import resolve_reference
from benchmark.tracking.wandb_logger import (
    WandbLogger,
    log_cache_lineage,
    resolve_mode,
    to_wandb_payload,
    wandb_callbacks,
    wandb_run_id,
)
from benchmark.train.trainer import run_experiment


def test_records_become_wandb_values():
    payload = to_wandb_payload({"type": "val", "trainer/global_step": 3, "val/hateful_memes/roc_auc": 0.5,
                                "weight/image_hist": [1] * 20, "stopped": True, "note": "x", "nan": math.nan})
    assert set(payload) == {"val/hateful_memes/roc_auc", "weight/image_hist", "stopped"}
    hist = payload["weight/image_hist"]
    assert isinstance(hist, wandb.Histogram) and len(hist.bins) == 21 and hist.bins[-1] == 2.0
    assert payload["stopped"] == 1


def test_mode_environment_wins_then_config_then_offline(monkeypatch):
    config = build_config(["tracking.wandb.mode=online"])
    monkeypatch.delenv("WANDB_MODE", raising=False)
    assert resolve_mode(config) == "online" and resolve_mode(None) == "offline"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert resolve_mode(config) == "disabled" and wandb_callbacks(config) == ()
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert wandb_callbacks(build_config(["tracking.wandb.enabled=false"])) == ()
    (logger,) = wandb_callbacks(build_config(["method=teacher"]), name="a/teacher/seed0", group="g")
    assert logger.job_type == "teacher" and logger.group == "g" and logger.init_args["project"] == "msd-benchmark"


def test_a_failed_run_finishes_its_offline_run_with_exit_code_1(tmp_path, grid_tools):
    config = build_config([f"env.save_dir={tmp_path / 'runs'}", "method=student_only"])
    run = RunDir(tmp_path / "runs" / "r1")
    run.path.mkdir(parents=True)
    logger = WandbLogger(name="hateful_memes/student_only/seed0", group="unit", job_type="student", mode="offline")
    logger.on_start(run, config)
    logger.on_log({"trainer/global_step": 1, "type": "train", "loss/total": 0.7}, 1)
    logger.on_finish({"status": "failed", "error": "RuntimeError: boom"})
    (offline,) = grid_tools.offline_runs(tmp_path / "wandb")
    assert offline["exit_code"] == 1 and offline["group"] == "unit" and offline["name"].endswith("seed0")
    assert offline["config"]["method"] == "student_only" and offline["config"]["run_id"] == "r1"
    assert any(row.get("loss/total") == 0.7 and row["trainer/global_step"] == 1 for row in offline["history"])
    assert OmegaConf.select(config, "tracking.wandb.project") == "msd-benchmark"


def test_wandb_sync_lists_offline_runs(tmp_path):
    (tmp_path / "wandb" / "offline-run-20260101_000000-abc").mkdir(parents=True)
    result = CliRunner().invoke(app, ["wandb", "sync", str(tmp_path), "--dry-run"])
    assert result.exit_code == 0 and "offline-run-20260101_000000-abc" in result.output
    empty = CliRunner().invoke(app, ["wandb", "sync", str(tmp_path / "nothing"), "--dry-run"])
    assert empty.exit_code != 0


# -- one W&B run per run id, lineage and artifacts (issue 13) ----------------------------------
@pytest.fixture(scope="module")
def lineage(tmp_path_factory, grid_tools, interrupt_after_update):
    """A teacher interrupted at update 3 and resumed, then a KD student, all standalone with
    W&B offline; the teacher's checkpoint is a reference (``upload_max_mb=0``), the student's
    is uploaded."""
    root = tmp_path_factory.mktemp("lineage")
    make_dataset("hateful_memes", root / "data", size=64, seed=0)
    base = [*grid_tools.env_args(root), "dataset=hateful_memes", "training.batch_size=16", "training.threads=1",
            "training.log_interval=1", "training.evaluation_interval=2", "distill.cache_spot_check=1"]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WANDB_MODE", "offline")
        mp.setenv("WANDB_DIR", str(root / "wandb"))
        mp.setenv("WANDB_SILENT", "true")
        teacher_config = build_config([*base, "method=teacher", "training.max_updates=6", "tracking.wandb.upload_max_mb=0"])
        with pytest.raises(KeyboardInterrupt):
            run_experiment(teacher_config, progress=False, callbacks=(*wandb_callbacks(teacher_config), interrupt_after_update(3)))
        teacher = run_experiment(teacher_config, progress=False, callbacks=wandb_callbacks(teacher_config))
        student_config = build_config([*base, "method=kd", f"teacher={teacher.run_id}", "training.max_updates=4"])
        student = run_experiment(student_config, progress=False, callbacks=wandb_callbacks(student_config))
    assert teacher.summary["status"] == "completed" and teacher.summary["resumed_from_step"] == 2
    assert student.summary["status"] == "completed"
    return SimpleNamespace(root=root, teacher=teacher, student=student, runs=grid_tools.offline_runs(root / "wandb"))


def test_wandb_ids_are_the_run_ids_where_wandb_allows_them():
    assert wandb_run_id("hateful_memes-msd-0123456789ab") == "hateful_memes-msd-0123456789ab"
    odd = wandb_run_id("Data/Set-kd-0123456789ab")
    assert re.fullmatch(r"[a-z0-9_-]+", odd) and odd != wandb_run_id("data/set-kd-0123456789ab")
    assert len(wandb_run_id("x" * 200)) <= 64 and wandb_run_id("x" * 200) != wandb_run_id("x" * 201)


def test_an_interrupted_and_resumed_run_is_one_wandb_run_whose_steps_go_on(lineage):
    run_id = lineage.teacher.run_id
    attempts = [r for r in lineage.runs if r["config"].get("run_id") == run_id]
    assert len(attempts) == 2  # offline: one directory per attempt ...
    assert {r["id"] for r in attempts} == {wandb_run_id(run_id)}  # ... under one W&B id, merged by `wandb sync`
    first, second = sorted(attempts, key=lambda r: r["dir"].name)
    assert first["exit_code"] == 1 and second["exit_code"] == 0
    steps = [row["_step"] for r in (first, second) for row in r["history"]]
    assert steps == sorted(steps) and len(set(steps)) == len(steps) and steps[0] == 0
    assert second["history"][0]["_step"] > first["history"][-1]["_step"]  # not restarted at 0
    updates = [row["trainer/global_step"] for row in second["history"] if "trainer/global_step" in row]
    assert updates[0] == 3 and max(updates) == 6  # resumed from the checkpoint at update 2
    state = json.loads(lineage.teacher.run_dir.file("wandb.json").read_text())
    assert state["id"] == wandb_run_id(run_id) and [a["attempt"] for a in state["attempts"]] == [1, 2]
    assert state["next_step"] == second["history"][-1]["_step"] + 1


def test_standalone_runs_have_a_group_and_a_job_type(lineage):
    jobs = {r["config"].get("run_id") or r["id"]: (r["group"], r["job_type"]) for r in lineage.runs}
    assert jobs[lineage.teacher.run_id] == ("standalone/hateful_memes", "teacher")
    assert jobs[lineage.student.run_id] == ("standalone/hateful_memes", "student")
    (cache_run,) = [r for r in lineage.runs if r["job_type"] == "cache"]
    assert cache_run["group"] == "standalone/hateful_memes" and cache_run["exit_code"] == 0


def test_lineage_runs_teacher_to_cache_to_student_by_digest(lineage):
    by_run = {r["config"].get("run_id"): r for r in lineage.runs if r["job_type"] != "cache"}
    teacher, student = by_run[lineage.teacher.run_id], by_run[lineage.student.run_id]
    (cache_run,) = [r for r in lineage.runs if r["job_type"] == "cache"]
    cache_dir = Path(lineage.student.summary["method_details"]["teacher_cache"])

    (model,) = [a for a in teacher["artifacts"] if a["name"] == f"checkpoint-{lineage.teacher.run_id}"]
    assert model["type"] == "model" and not model["used"]
    (cache_uses,) = [a for a in cache_run["artifacts"] if a["used"]]
    assert cache_uses["name"] == model["name"] and cache_uses["digest"] == model["digest"]  # cache uses the teacher
    (cache_art,) = [a for a in cache_run["artifacts"] if not a["used"]]
    assert cache_art["name"] == f"teacher-cache-{cache_dir.name}" and cache_art["type"] == "teacher-cache"
    (student_uses,) = [a for a in student["artifacts"] if a["used"]]
    assert student_uses["name"] == cache_art["name"] and student_uses["digest"] == cache_art["digest"]
    assert cache_run["id"] == f"cache-{cache_dir.name}"


def test_artifacts_upload_small_files_and_name_large_ones_with_their_checksum(lineage):
    by_run = {r["config"].get("run_id"): r for r in lineage.runs if r["job_type"] != "cache"}
    teacher, student = by_run[lineage.teacher.run_id], by_run[lineage.student.run_id]
    (cache_run,) = [r for r in lineage.runs if r["job_type"] == "cache"]
    every = [e for r in lineage.runs for a in r["artifacts"] for e in a["entries"].values()]
    assert every and not any(e["ref"].startswith("file://") for e in every)

    (model,) = [a for a in teacher["artifacts"] if a["type"] == "model"]
    checkpoint = lineage.teacher.run_dir.file("checkpoint.pt")
    ref = model["entries"]["checkpoint.pt"]  # over upload_max_mb=0: a reference with its sha256
    assert ref["ref"] == f"msd://runs/{lineage.teacher.run_id}/checkpoint.pt" and not ref["local_path"]
    assert ref["digest"] == ref["extra"]["sha256"] == hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    for small in ("config.yaml", "summary.json"):  # uploaded from a copy inside the offline run's directory
        local = Path(model["entries"][small]["local_path"])
        assert local.is_relative_to(teacher["dir"]) and local.exists()
    assert json.loads(Path(model["entries"]["summary.json"]["local_path"]).read_text())["metrics"]

    (student_model,) = [a for a in student["artifacts"] if a["type"] == "model"]
    uploaded = student_model["entries"]["checkpoint.pt"]  # under 50 MB: uploaded
    assert not uploaded["ref"] and Path(uploaded["local_path"]).read_bytes() == \
        lineage.student.run_dir.file("checkpoint.pt").read_bytes()

    (cache_art,) = [a for a in cache_run["artifacts"] if a["type"] == "teacher-cache" and not a["used"]]
    cache_dir = Path(lineage.student.summary["method_details"]["teacher_cache"])
    meta = json.loads(Path(cache_art["entries"]["meta.json"]["local_path"]).read_text())
    assert meta == json.loads((cache_dir / "meta.json").read_text())  # with every chunk checksum
    arrays = {k: v for k, v in cache_art["entries"].items() if k.endswith(".npy")}
    assert set(arrays) == {f"{s}.{k}.npy" for s in ("train", "val", "test") for k in ("logits", "saliency")}
    for name, entry in arrays.items():
        split, kind, _ = name.split(".")
        checksums = meta["arrays"][split][kind]["checksums"]
        assert entry["ref"] == f"msd://cache/teacher/{cache_dir.name}/{name}"
        assert entry["digest"] == xxhash.xxh3_128_hexdigest("\n".join(checksums).encode())
        assert entry["extra"]["chunks"] == len(checksums) and entry["size"] == (cache_dir / name).stat().st_size
    assert resolve_reference(arrays["val.logits.npy"]["ref"], "unused", cache_dir.parent.parent) == \
        cache_dir / "val.logits.npy"


def test_a_cache_is_logged_once_per_wandb_directory(lineage, grid_tools, monkeypatch):
    monkeypatch.setenv("WANDB_DIR", str(lineage.root / "wandb"))
    config = build_config([*grid_tools.env_args(lineage.root), "dataset=hateful_memes", "method=kd",
                           f"teacher={lineage.teacher.run_id}"])
    cache_dir = Path(lineage.student.summary["method_details"]["teacher_cache"])
    assert log_cache_lineage(config, cache_dir) is None  # the student already logged it there
    assert len([p for p in (lineage.root / "wandb" / "wandb").glob(f"offline-run-*-cache-{cache_dir.name}")]) == 1



def test_analysis_links_each_run_id_to_its_own_wandb_run(lineage):
    from analysis.wandb_links import find_wandb_runs

    found = find_wandb_runs([lineage.root / "wandb"])
    for result in (lineage.teacher, lineage.student):  # not the cache run, whose artifacts name the teacher
        assert found[result.run_id].wandb_id == wandb_run_id(result.run_id) and found[result.run_id].offline


def test_wandb_sync_uploads_producers_before_their_users(lineage):
    result = CliRunner().invoke(app, ["wandb", "sync", str(lineage.root / "wandb"), "--dry-run"])
    assert result.exit_code == 0, result.output
    order = [line.strip() for line in result.output.splitlines()]
    teachers, caches, others = (order.index(h) for h in ("teachers:", "teacher caches:", "other runs:"))
    assert teachers < caches < others
    assert all(lineage.teacher.run_id in line for line in order[teachers + 1:caches])
    assert order[caches + 1:others] and all("-cache-" in line for line in order[caches + 1:others])
    assert any(lineage.student.run_id in line for line in order[others + 1:])
