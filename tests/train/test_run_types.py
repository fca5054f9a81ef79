"""MMF's run types and ``checkpoint.resume_file`` on tiny runs."""

from __future__ import annotations

import json

import pytest
import torch

from benchmark.config.loader import build_config
from benchmark.data.make import make_dataset
from benchmark.errors import CheckpointError, ConfigError
from benchmark.train.run_types import parse_run_type
from benchmark.train.trainer import run_experiment


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("rt-data")
    make_dataset("hateful_memes", root, size=96, seed=0)
    return root


@pytest.fixture
def config(data_dir, tmp_path):
    def _make(*extra: str):
        return build_config(["dataset=hateful_memes", "method=teacher", f"env.data_dir={data_dir}",
                             f"env.save_dir={tmp_path / 'runs'}", f"env.cache_dir={tmp_path / 'cache'}",
                             "tracking.wandb.mode=disabled", "training.max_updates=3", "training.batch_size=32", *extra])
    return _make


@pytest.mark.parametrize(
    ("run_type", "train", "splits", "predict"),
    [("train_val_test", True, ("val", "test"), False), ("train", True, (), False), ("train_test", True, ("test",), False),
     ("val", False, ("val",), False), ("val_test", False, ("val", "test"), False), ("predict", False, ("val", "test"), True)],
)
def test_run_types_parse_as_mmf_names_them(run_type, train, splits, predict):
    parsed = parse_run_type(build_config([f"run_type={run_type}"]))
    assert (parsed.train, parsed.splits, parsed.predict) == (train, splits, predict)


@pytest.mark.parametrize("bad", ["tset", "train_train", "predict_val", "inference"])
def test_unknown_run_types_are_refused(bad):
    with pytest.raises(ConfigError, match="not a run type"):
        parse_run_type(build_config([f"run_type={bad}"]))


def test_run_types_score_only_the_configured_splits():
    assert parse_run_type(build_config(["evaluation.splits=['val']"])).splits == ("val",)  # HPO's setting
    with pytest.raises(ConfigError, match="scores no split"):
        parse_run_type(build_config(["evaluation.splits=['val']", "run_type=test"]))


def test_train_only_scores_nothing_at_the_end_and_test_scores_it_later(config):
    trained = run_experiment(config("run_type=train_val"), progress=False)
    assert trained.summary["headline"].keys() == {"val"}
    assert not any(k.startswith("test/") for k in trained.summary["metrics"])
    assert trained.run_id == run_experiment(config(), progress=False).run_id  # run_type is not part of the id
    scored = run_experiment(config("run_type=test"), progress=False)
    assert scored.summary["status"] == "scored"
    record = json.loads((scored.run_dir.path / "eval").glob("*/metrics.json").__next__().read_text())
    assert record["splits"] == ["test"] and "test/hateful_memes/roc_auc" in record["metrics"]
    assert (trained.run_dir.read_summary() or {})["metrics"] == trained.summary["metrics"]  # the run is untouched


def test_scoring_an_untrained_config_says_how_to_get_a_checkpoint(config):
    with pytest.raises(ConfigError, match="has not been trained"):
        run_experiment(config("run_type=predict"), progress=False)


def test_resume_file_scores_a_foreign_checkpoint_and_starts_training_from_one(config, tmp_path):
    source = run_experiment(config(), progress=False)
    checkpoint = source.run_dir.file("checkpoint.pt")
    scored = run_experiment(config("training.seed=7", "run_type=test", f"checkpoint.resume_file={checkpoint}"),
                            progress=False)
    assert scored.summary["metrics"]["test/hateful_memes/roc_auc"] == pytest.approx(
        source.summary["metrics"]["test/hateful_memes/roc_auc"], abs=1e-6)

    started = run_experiment(config("training.seed=7", "training.max_updates=1", "optimizer.params.lr=1e-9",
                                    f"checkpoint.resume_file={checkpoint}"), progress=False)
    assert started.run_id != source.run_id and started.summary["initialised_from"] == str(checkpoint)
    weights = torch.load(started.run_dir.file("checkpoint.pt"), weights_only=False)["model"]
    original = torch.load(checkpoint, weights_only=False)["model"]
    assert max(float((weights[k] - original[k]).abs().max()) for k in weights) < 1e-6  # lr ~ 0: still the source


def test_a_resume_file_of_another_architecture_fails_clearly(config, tmp_path):
    other = run_experiment(config("method=student_only"), progress=False)  # student preset: other shapes
    with pytest.raises(CheckpointError, match="does not fit"):
        run_experiment(config(f"checkpoint.resume_file={other.run_dir.file('checkpoint.pt')}"), progress=False)


def test_scoring_under_a_multi_process_launcher_is_refused(config, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match="without torchrun"):
        run_experiment(config("run_type=test"), progress=False)
