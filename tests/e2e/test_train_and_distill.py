"""Teacher, label-only student, KD and MSD runs end to end on tiny synthetic data."""

import json

import numpy as np
import pytest
import torch

from benchmark.distill.cache_store import HASHES
from benchmark.errors import CheckpointError, ConfigError
from benchmark.train.trainer import TrainingDivergedError, run_experiment

DS = "dataset=hateful_memes"


@pytest.fixture
def teacher(make_config):
    return run_experiment(make_config(DS, "method=teacher"), progress=False)


def test_teacher_run_writes_a_complete_run_directory(teacher):
    run = teacher.run_dir
    assert run.is_complete() and not teacher.skipped
    summary = run.read_summary()
    assert summary["status"] == "completed" and summary["model_params"] > 0
    for split in ("val", "test"):
        for suffix in ("", "@image", "@text"):
            assert f"{split}/hateful_memes/roc_auc{suffix}" in summary["metrics"]
    assert summary["rules"]["views.removal"] == "drop"
    assert summary["checkpoint_rule"] == "best" and summary["best_step"] > 0
    preds = run.read_predictions()
    assert set(preds["view"]) == {"multi", "image", "text"} and set(preds["split"]) == {"val", "test"}
    assert len(preds["logits"].iloc[0]) == 2
    records = run.read_metrics()
    assert any(r["type"] == "val" for r in records) and records[-1]["type"] == "final"
    assert not run.file("last.pt").exists()  # training state removed once complete


def test_same_config_is_skipped(teacher, make_config):
    again = run_experiment(make_config(DS, "method=teacher"), progress=False)
    assert again.skipped and again.run_id == teacher.run_id


def test_kd_and_msd_students_read_the_shared_cache(teacher, make_config, tmp_path):
    kd = run_experiment(make_config(DS, "method=kd", f"teacher={teacher.run_id}"), progress=False)
    assert kd.run_dir.is_complete()
    caches = list((tmp_path / "cache" / "teacher").iterdir())
    assert len(caches) == 1
    built = (caches[0] / "meta.json").stat().st_mtime_ns
    msd = run_experiment(
        make_config(DS, "method=msd", "weighting=instance", f"teacher={teacher.run_id}"), progress=False
    )
    assert (caches[0] / "meta.json").stat().st_mtime_ns == built  # reused, not rebuilt
    details = msd.summary["method_details"]
    assert details["teacher_cache"] == str(caches[0]) and details["weighting_scheme"]["views"] == ["image", "text"]
    vals = [r for r in msd.run_dir.read_metrics() if r["type"] == "val"]
    assert "weight/image_mean" in vals[0] and len(vals[0]["weight/image_hist"]) == 20
    assert abs(vals[0]["weight/image_mean"] + vals[0]["weight/text_mean"] - 2.0) < 1e-4
    cache_meta = json.loads((caches[0] / "meta.json").read_text())
    assert cache_meta["teacher_recheck"]  # the teacher's val metric was re-checked
    rho = teacher.run_dir.read_summary()["saliency_vs_ground_truth"]
    assert set(rho) == {"train", "val"} and set(rho["val"]) == {"divergence", "loss", "shapley"}
    assert all(-1.0 <= v <= 1.0 for v in rho["val"].values())


def test_learned_weights_move_away_from_uniform(teacher, make_config):
    run = run_experiment(
        make_config(DS, "method=msd", "weighting=learned", f"teacher={teacher.run_id}"), progress=False
    )
    vals = [r for r in run.run_dir.read_metrics() if r["type"] == "val"]
    stds = [r["weight/image_std"] for r in vals]
    means = [r["weight/image_mean"] for r in vals]
    assert max(stds) > 0 or any(abs(m - 1.0) > 1e-4 for m in means)
    assert any("meta/loss" in r for r in run.run_dir.read_metrics() if r["type"] == "train")


def test_live_teacher_matches_cached_teacher(teacher, make_config):
    cached = run_experiment(make_config(DS, "method=kd", f"teacher={teacher.run_id}", "training.max_epochs=1"),
                            progress=False)
    live = run_experiment(make_config(DS, "method=kd", f"teacher={teacher.run_id}", "training.max_epochs=1",
                                      "distill.teacher_source=live"), progress=False)
    a = cached.summary["metrics"]["val/hateful_memes/roc_auc"]
    b = live.summary["metrics"]["val/hateful_memes/roc_auc"]
    assert abs(a - b) < 0.02  # fp16 cache vs fp32 live: tiny differences only


def test_teacher_of_another_architecture_is_refused(teacher, make_config):
    config = make_config(DS, "method=kd", f"teacher={teacher.run_id}")
    # the stored teacher config says late_fusion; pretend the checkpoint came from another size
    ckpt_path = teacher.run_dir.file("checkpoint.pt")
    payload = torch.load(ckpt_path, weights_only=False)
    key = next(iter(payload["model"]))
    payload["model"][key] = torch.zeros(3, 3)
    torch.save(payload, ckpt_path)
    with pytest.raises(CheckpointError, match="does not fit"):
        run_experiment(config, progress=False)


def test_missing_teacher_reference_is_a_config_error(make_config):
    with pytest.raises(ConfigError, match="teacher="):
        run_experiment(make_config(DS, "method=kd"), progress=False)


def test_truncated_cache_is_detected_and_rebuilt(teacher, make_config, tmp_path, capsys):
    run_experiment(make_config(DS, "method=kd", f"teacher={teacher.run_id}", "training.max_epochs=1"),
                   progress=False)
    cache_dir = next((tmp_path / "cache" / "teacher").iterdir())
    logits = cache_dir / "train.logits.npy"
    logits.write_bytes(logits.read_bytes()[:-100])
    run = run_experiment(make_config(DS, "method=kd", f"teacher={teacher.run_id}", "training.max_epochs=1",
                                     "training.seed=5"), progress=False)
    assert run.run_dir.is_complete()
    assert "rebuilding" in capsys.readouterr().err
    assert np.load(logits, mmap_mode="r").shape[0] > 0


def test_tampered_cache_values_fail_the_spot_check(teacher, make_config, tmp_path, capsys):
    run_experiment(make_config(DS, "method=kd", f"teacher={teacher.run_id}", "training.max_epochs=1"),
                   progress=False)
    cache_dir = next((tmp_path / "cache" / "teacher").iterdir())
    arr = np.load(cache_dir / "train.logits.npy", mmap_mode="r+")
    arr[:] = 7.0
    arr.flush()
    del arr
    # re-sign the tampered file so the checksums pass and only the live teacher can tell
    meta = json.loads((cache_dir / "meta.json").read_text())
    spec = meta["arrays"]["train"]["logits"]
    data = (cache_dir / spec["file"]).read_bytes()[spec["offset"]:]
    step = spec["chunk_rows"] * len(data) // spec["shape"][0]
    spec["checksums"] = [HASHES[spec["hash"]](data[i:i + step]) for i in range(0, len(data), step)]
    (cache_dir / "meta.json").write_text(json.dumps(meta))
    run_experiment(make_config(DS, "method=kd", f"teacher={teacher.run_id}", "training.max_epochs=1",
                               "training.seed=6"), progress=False)
    assert "differs from the live teacher" in capsys.readouterr().err


class _StopAt:
    """Simulates a kill: interrupts the run once it has logged past a step."""

    def __init__(self, step):
        self.step = step

    def on_start(self, run, config):
        pass

    def on_log(self, record, step):
        if step >= self.step and record.get("type") == "train":
            raise KeyboardInterrupt

    def on_finish(self, summary):
        pass


def test_interrupted_run_resumes_to_the_same_result(make_config, tmp_path):
    args = (DS, "method=student_only", "training.max_epochs=3", "training.log_interval=1")
    reference = run_experiment(make_config(*args, save_dir=tmp_path / "ref"), progress=False)
    config = make_config(*args, save_dir=tmp_path / "resumed")
    with pytest.raises(KeyboardInterrupt):
        run_experiment(config, progress=False, callbacks=(_StopAt(7),))
    from benchmark.tracking.run_store import RunStore

    run = RunStore(tmp_path / "resumed").run(reference.run_id)
    assert run.status == "interrupted" and run.file("last.pt").exists()
    resumed = run_experiment(config, progress=False)
    assert resumed.summary["resumed_from_step"] > 0
    assert resumed.summary["metrics"] == pytest.approx(reference.summary["metrics"])
    steps = [r["trainer/global_step"] for r in run.read_metrics() if r["type"] == "val"]
    assert steps == sorted(set(steps))  # no duplicated evaluation records after the resume


def test_nan_loss_marks_the_run_failed(make_config):
    config = make_config(DS, "method=student_only", "optimizer.params.lr=1e30", "training.clip_grad_norm=null")
    with pytest.raises(TrainingDivergedError, match="Loss became"):
        run_experiment(config, progress=False)
    from benchmark.tracking.run_id import compute_run_id
    from benchmark.tracking.run_store import RunStore

    run = RunStore(config.env.save_dir).run(compute_run_id(config))
    summary = run.read_summary()
    assert summary["status"] == "failed" and summary["error"]
    assert run.file("error.log").exists()
