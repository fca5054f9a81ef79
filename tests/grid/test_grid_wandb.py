"""The W&B callback on its own: value conversion, mode precedence, a failing run's files."""

from __future__ import annotations

import math

import wandb
from omegaconf import OmegaConf
from typer.testing import CliRunner

from benchmark.cli import app
from benchmark.config.loader import build_config
from benchmark.tracking.run_store import RunDir
from benchmark.tracking.wandb_logger import WandbLogger, resolve_mode, to_wandb_payload, wandb_callbacks


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
