"""``msd_wandb`` with the fake ``mmf``: the suite's W&B conventions, and a run that always finishes."""

from __future__ import annotations

from types import SimpleNamespace

import torch
from omegaconf import OmegaConf


class Meter:
    def __init__(self, values: dict[str, float]) -> None:
        self.values = values

    def get_scalar_dict(self) -> dict[str, float]:
        return dict(self.values)


def test_logs_mmf_keys_and_msd_terms_then_finishes(fake_mmf, tmp_path, monkeypatch, offline_runs):
    from benchmark.mmf_plugin import register

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_DIR", raising=False)
    classes = register()
    loss = classes["loss"](weighting="uniform")
    loss.objective.last_terms = {"loss/kd": 0.25, "weight/image_mean": 1.0}
    model = torch.nn.Sequential(loss)
    optimizer = torch.optim.SGD(torch.nn.Linear(1, 1).parameters(), lr=0.1)
    trainer = SimpleNamespace(num_updates=0, model=model, optimizer=optimizer)
    config = OmegaConf.create({"training": {}, "env": {"save_dir": str(tmp_path / "save")},
                               "datasets": "hateful_memes", "model": "msd_student"})
    callback = classes["callback"](config, trainer)
    trainer.num_updates = 2
    callback.on_update_end(should_log=False, meter=Meter({"train/hateful_memes/msd_kd": 9.0}))
    callback.on_update_end(should_log=True, meter=Meter({"train/hateful_memes/msd_kd": 0.5, "train/total_loss": 0.5}))
    trainer.num_updates = 4
    callback.on_validation_end(meter=Meter({"val/hateful_memes/roc_auc": 0.75}))
    callback.on_test_end(meter=Meter({"val/hateful_memes/roc_auc": 0.8}))
    callback.teardown()
    callback.teardown()  # idempotent, as is the atexit hook

    (run,) = offline_runs(tmp_path / "save")
    assert run["project"] == "msd-benchmark" and run["exit_code"] == 0 and run["job_type"] == "student"
    rows = run["history"]
    assert any(r.get("train/hateful_memes/msd_kd") == 0.5 and r.get("loss/kd") == 0.25
               and r.get("train/learning_rate") == 0.1 and r["trainer/global_step"] == 2 for r in rows)
    assert any(r.get("val/hateful_memes/roc_auc") == 0.75 and r["trainer/global_step"] == 4 for r in rows)
    assert not any(r.get("train/hateful_memes/msd_kd") == 9.0 for r in rows)


def test_an_unfinished_run_is_closed_as_failed(fake_mmf, tmp_path, monkeypatch, offline_runs):
    from benchmark.mmf_plugin import register

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_DIR", raising=False)
    callback_cls = register()["callback"]
    trainer = SimpleNamespace(num_updates=1, model=torch.nn.Linear(1, 1), optimizer=None)
    config = OmegaConf.create({"training": {}, "env": {"save_dir": str(tmp_path / "save")}})
    callback = callback_cls(config, trainer)
    callback.on_validation_end(meter=Meter({"val/hateful_memes/roc_auc": 0.5}))
    callback._finish("failed")  # what the atexit hook does when MMF never reached teardown
    (run,) = offline_runs(tmp_path / "save")
    assert run["exit_code"] == 1
