"""`msd eval`: a finished run re-scored from its checkpoint reproduces what training reported.

The tolerance is zero: the re-score loads the very weights training evaluated last, builds
the same evaluation batches and runs the same kernels with the same thread count on the same
machine, so any difference is a bug (a different batch, preprocessing or view rule), not noise.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from benchmark.cli import app, main
from benchmark.config.loader import build_config
from benchmark.errors import CheckpointError, ConfigError, DataError, UserError
from benchmark.train.rescore import EVAL_DIR, parse_eval_args, rescore
from benchmark.train.trainer import run_experiment

RUN_FILES = ("summary.json", "metrics.jsonl", "predictions.parquet", "config.yaml", "checkpoint.pt")


@pytest.fixture(scope="module")
def store(tiny_data, tmp_path_factory):
    """A teacher, a KD student distilled from it and a bfloat16-autocast teacher (its scores
    differ from fp32 ones, so only the same autocast reproduces them), trained once."""
    root = tmp_path_factory.mktemp("eval_store")
    args = [f"env.data_dir={tiny_data}", f"env.save_dir={root / 'runs'}", f"env.cache_dir={root / 'cache'}",
            "training.max_epochs=1", "training.batch_size=32", "training.threads=1", "dataset=hateful_memes"]
    teacher = run_experiment(build_config([*args, "method=teacher"]), progress=False)
    kd = run_experiment(build_config([*args, "method=kd", f"teacher={teacher.run_id}"]), progress=False)
    bf16 = run_experiment(build_config([*args, "method=teacher", "training.fp16=true", "training.amp_dtype=bfloat16"]),
                          progress=False)
    return SimpleNamespace(save_dir=root / "runs", data=tiny_data, teacher=teacher.run_dir, kd=kd.run_dir,
                           bf16=bf16.run_dir)


def _files(run) -> dict[str, bytes]:
    return {name: run.file(name).read_bytes() for name in RUN_FILES}


def _tree(path: Path) -> set[str]:
    return {str(p.relative_to(path)) for p in path.rglob("*")}


@pytest.mark.parametrize("role", ["teacher", "kd", "bf16"])
def test_eval_reproduces_the_summary_and_the_predictions(store, role):
    run = getattr(store, role)
    before = _files(run)
    result = CliRunner().invoke(app, ["eval", run.run_id, "--save-dir", str(store.save_dir), "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)

    summary = run.read_summary()["metrics"]
    assert set(out["metrics"]) == set(summary)  # val and test, every metric, all three views
    assert any(k.startswith("test/") and k.endswith("@text") for k in out["metrics"])
    assert out["metrics"] == summary  # exactly: same weights, batches and kernels
    assert out["summary_comparison"] == {"compared": len(summary), "max_abs_diff": 0.0,
                                         "worst_key": out["summary_comparison"]["worst_key"]}
    target = Path(out["path"])
    assert target == run.file(EVAL_DIR) / "val-test_multi-image-text"
    pd.testing.assert_frame_equal(pd.read_parquet(target / "predictions.parquet"), run.read_predictions())
    written = json.loads((target / "metrics.json").read_text())
    assert written["metrics"] == summary and written["checkpoint_step"] == run.read_summary()["best_step"]
    assert _files(run) == before  # the run's own record is never rewritten


def test_a_view_subset_on_one_split_by_id_prefix(store):
    prefix = store.teacher.run_id[: len("hateful_memes-teacher-") + 6]
    result = CliRunner().invoke(app, ["eval", prefix, "split=test", "views=image,text",
                                      "--save-dir", str(store.save_dir)])
    assert result.exit_code == 0, result.output
    assert "max |diff|" in result.stdout and "wrote" in result.stdout

    target = store.teacher.file(EVAL_DIR) / "test_image-text"
    record = json.loads((target / "metrics.json").read_text())
    summary = store.teacher.read_summary()["metrics"]
    assert record["splits"] == ["test"] and record["views"] == ["image", "text"]
    assert set(record["metrics"]) == {k for k in summary if k.startswith("test/") and "@" in k}
    assert all(record["metrics"][k] == summary[k] for k in record["metrics"])
    own = store.teacher.read_predictions()
    expected = own[(own["split"] == "test") & own["view"].isin(["image", "text"])].reset_index(drop=True)
    pd.testing.assert_frame_equal(pd.read_parquet(target / "predictions.parquet"), expected)


def test_other_data_dir_is_compared_only_when_its_content_is_the_same(store, tmp_path):
    moved = tmp_path / "moved"
    shutil.copytree(store.data / "datasets" / "hateful_memes", moved / "datasets" / "hateful_memes")
    result = rescore(str(store.teacher.path), save_dir=store.save_dir, data_dir=moved, splits=["val"])
    assert result.name.startswith("val_multi-image-text_") and result.path.parent == store.teacher.file(EVAL_DIR)
    record = json.loads((result.path / "metrics.json").read_text())
    assert record["data_dir"] == str(moved.resolve())
    summary = store.teacher.read_summary()["metrics"]
    assert result.metrics == {k: v for k, v in summary.items() if k.startswith("val/")}  # same bytes, moved
    assert result.comparison is not None and result.comparison.max_abs_diff == 0.0  # the same data: compared
    val = moved / "datasets" / "hateful_memes" / "defaults" / "annotations" / "dev_unseen.jsonl"
    val.write_text("".join(val.read_text().splitlines(keepends=True)[:-4]))
    edited = rescore(str(store.teacher.path), save_dir=store.save_dir, data_dir=moved, splits=["val"])
    assert edited.comparison is None  # other content: the summary is not the reference


def test_another_checkpoint_file_via_resume_file(store, tmp_path):
    copy = tmp_path / "elsewhere.pt"
    shutil.copy(store.kd.file("checkpoint.pt"), copy)
    result = rescore(store.kd.run_id, save_dir=store.save_dir, splits=["val"], views=["multi"],
                     overrides=[f"checkpoint.resume_file={copy}"])
    assert result.checkpoint == copy.resolve() and result.comparison is None
    assert result.metrics == {k: v for k, v in store.kd.read_summary()["metrics"].items()
                              if k.startswith("val/") and "@" not in k}


def test_eval_arguments_are_split_from_overrides():
    args = parse_eval_args(["split=val", "split=test,train", "views=[multi,image]", "data_dir=/d", "training.device=cpu"])
    assert args.splits == ["val", "test", "train"] and args.views == ["multi", "image"]
    assert args.data_dir == "/d" and args.overrides == ["training.device=cpu"]
    with pytest.raises(ConfigError, match="key=value"):
        parse_eval_args(["test"])


def _copy_run(run, dest: Path, *, status: str | None = None, drop: str | None = None) -> Path:
    shutil.copytree(run.path, dest, ignore=shutil.ignore_patterns(EVAL_DIR))
    if status:
        summary = json.loads((dest / "summary.json").read_text())
        (dest / "summary.json").write_text(json.dumps({**summary, "status": status}))
    if drop:
        (dest / drop).unlink()
    return dest


BAD_INPUTS = {
    "unknown run": (UserError, "No run", lambda s, t: dict(run_ref="hateful_memes-teacher-ffffff")),
    "ambiguous prefix": (UserError, "ambiguous", lambda s, t: dict(run_ref="hateful_memes-")),
    "not complete": (CheckpointError, "not complete",
                     lambda s, t: dict(run_ref=str(_copy_run(s.teacher, t / "r", status="running")))),
    "no checkpoint": (CheckpointError, "no checkpoint.pt",
                      lambda s, t: dict(run_ref=str(_copy_run(s.teacher, t / "r", drop="checkpoint.pt")))),
    "unknown split": (ConfigError, "Unknown split 'dev'", lambda s, t: dict(splits=["dev"])),
    "unknown view": (ConfigError, "Unknown view 'audio'", lambda s, t: dict(views=["audio"])),
    "unknown key": (ConfigError, "training.batch_sise", lambda s, t: dict(overrides=["training.batch_sise=8"])),
    "model changed": (ConfigError, "cannot change", lambda s, t: dict(overrides=["model=mmbt"])),
    "empty data dir": (DataError, "does not exist", lambda s, t: dict(data_dir=t)),
    "other label names": (DataError, "label_names",
                          lambda s, t: dict(overrides=["dataset_config.hateful_memes.label_names=['a','b']"])),
    "student checkpoint into teacher": (CheckpointError, "does not fit",
                                        lambda s, t: dict(checkpoint=s.kd.file("checkpoint.pt"))),
    "not a checkpoint": (CheckpointError, "unreadable", lambda s, t: dict(checkpoint=_junk(t / "x.pt"))),
    "no weights": (CheckpointError, "no model weights", lambda s, t: dict(checkpoint=_saved(t / "w.pt", {"step": 1}))),
}


def _junk(path: Path) -> Path:
    path.write_bytes(b"not a torch file")
    return path


def _saved(path: Path, obj) -> Path:
    torch.save(obj, path)
    return path


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_one_clear_error_and_writes_nothing(store, tmp_path, case):
    error, message, make = BAD_INPUTS[case]
    kwargs = {"run_ref": store.teacher.run_id, **make(store, tmp_path)}
    runs_before = {run: _tree(run) for run in (store.teacher.path, store.kd.path)}
    with pytest.raises(error, match=message):
        rescore(save_dir=store.save_dir, **kwargs)
    assert {run: _tree(run) for run in runs_before} == runs_before
    if (tmp_path / "r").exists():
        assert not (tmp_path / "r" / EVAL_DIR).exists()


def test_cli_prints_a_user_error_without_traceback(store, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["msd", "eval", "no-such-run", "--save-dir", str(store.save_dir)])
    monkeypatch.delenv("MSD_DEBUG", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "No run 'no-such-run'" in err and "Traceback" not in err


def test_a_run_is_rescored_with_its_own_presets_when_todays_changed(store, monkeypatch):
    """Today's size presets may gain keys (a new fusion type for the teacher); a stored run
    keeps the architecture it was trained with, so its checkpoint still loads and scores the same."""
    import benchmark.train.rescore as rescore_module

    real_load_config = rescore_module.load_config

    def todays_config(args):
        config = real_load_config(args)
        config.model_config.late_fusion.presets.teacher.fusion.type = "bilinear"
        config.model_config.late_fusion.presets.teacher.extra_key_of_today = 1
        return config

    monkeypatch.setattr(rescore_module, "load_config", todays_config)
    saved = store.teacher.read_config()
    stored, config = rescore_module.run_config(store.teacher, [])
    assert stored.model_config.late_fusion.presets == saved.model_config.late_fusion.presets
    assert config.model_config.late_fusion.presets == saved.model_config.late_fusion.presets
    result = CliRunner().invoke(app, ["eval", store.teacher.run_id, "--save-dir", str(store.save_dir), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["summary_comparison"]["max_abs_diff"] == 0.0
