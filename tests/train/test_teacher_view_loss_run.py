"""A teacher trained with ``views.teacher_loss`` runs end to end, and a student distils from it."""

from __future__ import annotations

import json

from benchmark.config.loader import build_config
from benchmark.data.make import make_dataset
from benchmark.train.trainer import run_experiment


def test_a_view_trained_teacher_trains_logs_its_view_losses_and_teaches(tmp_path):
    make_dataset("hateful_memes", tmp_path / "data", size=64, seed=0)
    common = [f"env.data_dir={tmp_path / 'data'}", f"env.save_dir={tmp_path / 'runs'}",
              f"env.cache_dir={tmp_path / 'cache'}", "tracking.wandb.mode=disabled", "training.max_updates=3",
              "training.batch_size=16", "training.log_interval=1", "views.teacher_loss=1.0"]
    teacher = run_experiment(build_config(["dataset=hateful_memes", "method=teacher", *common]),
                             progress=False).summary
    assert teacher["status"] == "completed"
    assert teacher["rules"]["views.teacher_loss"] == 1.0
    logged = [json.loads(line) for line in (tmp_path / "runs" / teacher["run_id"] / "metrics.jsonl").open()]
    assert any("loss/label@image" in r and "loss/label@text" in r for r in logged), logged[:2]

    student = run_experiment(build_config(["dataset=hateful_memes", "method=msd", "distill.weighting=instance",
                                           f"teacher={teacher['run_id']}", *common]), progress=False).summary
    assert student["status"] == "completed" and student["method_details"]["teacher_run"] == teacher["run_id"]
