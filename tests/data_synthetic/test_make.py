"""make_dataset: idempotent skip, regeneration, refusal to overwrite real MMF data, crash safety."""

from __future__ import annotations

import json

import pytest

from benchmark.data.make import MANIFEST, make_dataset
from benchmark.data.synthetic import writers
from benchmark.data.synthetic.visual_entailment import VisualEntailmentGenerator
from benchmark.errors import ConfigError, DataError


def test_second_call_skips_without_writing(tmp_path) -> None:
    first = make_dataset("hateful_memes", tmp_path, size=20, seed=0)
    train = tmp_path / "datasets/hateful_memes/defaults/annotations/train.jsonl"
    stamp = train.stat().st_mtime_ns
    second = make_dataset("hateful_memes", tmp_path, size=20, seed=0)
    assert not first["skipped"] and second["skipped"]
    assert train.stat().st_mtime_ns == stamp
    assert {k: v for k, v in second.items() if k != "skipped"} == {k: v for k, v in first.items() if k != "skipped"}


def test_other_seed_size_or_options_regenerate(tmp_path) -> None:
    make_dataset("visual_entailment", tmp_path, size=20, seed=0)
    assert not make_dataset("visual_entailment", tmp_path, size=20, seed=1)["skipped"]
    assert not make_dataset("visual_entailment", tmp_path, size=24, seed=1)["skipped"]
    changed = make_dataset("visual_entailment", tmp_path, size=24, seed=1, label_noise=0.0)
    assert not changed["skipped"] and changed["options"]["label_noise"] == 0.0
    assert make_dataset("visual_entailment", tmp_path, size=24, seed=1, label_noise=0.0)["skipped"]
    assert not make_dataset("visual_entailment", tmp_path, size=24, seed=1, label_noise=0.0, force=True)["skipped"]
    manifest = json.loads((tmp_path / "datasets/visual_entailment/defaults" / MANIFEST).read_text())
    assert manifest["key"] == {"name": "visual_entailment", "size": 24, "seed": 1, "generator_version": VisualEntailmentGenerator.version,
                               "options": manifest["key"]["options"]}
    assert (tmp_path / "datasets/flickr30k/defaults" / MANIFEST).is_file()


def test_mixture_is_an_option(tmp_path) -> None:
    summary = make_dataset("hateful_memes", tmp_path, size=40, mixture={"both": 1, "image": 0, "text": 0})
    assert summary["mixture"]["target"] == {"both": 1.0, "image": 0.0, "text": 0.0}
    assert summary["mixture"]["realised"]["train"] == {"both": 1.0}
    with pytest.raises(ConfigError, match="unknown component"):
        make_dataset("hateful_memes", tmp_path, size=40, mixture={"audio": 1})
    with pytest.raises(ConfigError, match="Unknown option"):
        make_dataset("hateful_memes", tmp_path, size=40, colour=3)
    with pytest.raises(ConfigError, match="Unknown generator"):
        make_dataset("hateful_meme", tmp_path)


@pytest.mark.parametrize(
    ("name", "real_file"),
    [
        ("hateful_memes", "datasets/hateful_memes/defaults/annotations/train.jsonl"),
        ("vqa2", "datasets/coco/defaults/features/trainval2014.lmdb/data.mdb"),
        ("easy_vqa", "datasets/easy_vqa/defaults/images/0.png"),
    ],
)
def test_refuses_to_overwrite_real_data(tmp_path, name, real_file) -> None:
    real = tmp_path / real_file
    real.parent.mkdir(parents=True)
    real.write_text("real MMF data")
    with pytest.raises(DataError, match="real MMF dataset"):
        make_dataset(name, tmp_path, size=20)
    assert real.read_text() == "real MMF data"
    assert not any(tmp_path.rglob(MANIFEST))


def test_force_overwrites_real_data(tmp_path) -> None:
    real = tmp_path / "datasets/mmimdb/defaults/annotations/train.jsonl"
    real.parent.mkdir(parents=True)
    real.write_text("real")
    make_dataset("mmimdb", tmp_path, size=20, force=True)
    assert real.read_text() != "real"


def test_interrupted_generation_never_looks_complete(tmp_path, monkeypatch) -> None:
    make_dataset("mmimdb", tmp_path, size=20, seed=0)
    root = tmp_path / "datasets/mmimdb/defaults"

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("benchmark.data.synthetic.common.write_lmdb", crash)
    with pytest.raises(OSError, match="disk full"):
        make_dataset("mmimdb", tmp_path, size=20, seed=1)
    assert json.loads((root / MANIFEST).read_text())["state"] == "writing" and not writers.is_built(root)
    assert not list(root.rglob("*.tmp"))
    monkeypatch.undo()
    summary = make_dataset("mmimdb", tmp_path, size=20, seed=1)
    assert not summary["skipped"] and writers.is_built(root, writers.ZOO_VERSIONS["mmimdb"])
