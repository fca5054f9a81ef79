"""MMF format writers: zoo float versions, atomic files, LMDB layout, portable pickles."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
from omegaconf import OmegaConf
from synth_helpers import read_lmdb

from benchmark.data.synthetic import writers as W


def test_zoo_versions_are_the_floats_omegaconf_parses() -> None:
    assert W.ZOO_VERSIONS == {
        "hateful_memes": 1.020201001, "mmimdb": 1.020200416, "visual_entailment": 1.020200529,
        "vqa2": 1.020200529, "flickr30k": 1.020200529, "coco": 1.020200504,
    }
    for name, text in W.ZOO_VERSION_STRINGS.items():
        parsed = OmegaConf.create(f"version: {text}").version  # what MMF compares against
        assert isinstance(parsed, float) and parsed == W.ZOO_VERSIONS[name]


def test_markers_written_last_and_cleared(tmp_path) -> None:
    variant = tmp_path / "x" / "defaults"
    assert not W.is_built(variant)
    W.mark_built(variant, 1.020200529)
    assert W.is_built(variant, 1.020200529) and not W.is_built(variant, 1.0)
    marker = json.loads((variant / "features" / ".built.json").read_text())
    assert marker["version"] == 1.020200529 and "created_at" in marker
    W.clear_built(variant)
    assert not any(variant.rglob(".built.json"))


def test_atomic_write_leaves_nothing_on_failure(tmp_path) -> None:
    target = tmp_path / "a.jsonl"
    W.write_jsonl(target, [{"a": 1}])
    with pytest.raises(RuntimeError), W.atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash")
    assert target.read_text() == '{"a": 1}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["a.jsonl"]


def test_imdb_npy_has_header_and_is_loadable(tmp_path) -> None:
    path = W.write_imdb_npy(tmp_path / "imdb.npy", {"version": 1, "has_answer": True},
                            [{"image_id": 1, "question_id": np.int64(7), "answers": ["a"] * 10}])
    array = np.load(path, allow_pickle=True)
    assert array.dtype == object and array.shape == (2,)
    assert array[0] == {"version": 1, "has_answer": True}
    assert array[1]["question_id"] == 7 and type(array[1]["question_id"]) is int
    assert b"numpy._core" not in path.read_bytes()


def test_lmdb_layout_and_atomic_replace(tmp_path) -> None:
    path = tmp_path / "features.lmdb"
    record = W.feature_record(np.ones((3, 4)), np.zeros((3, 4)), 480, 640, np.arange(3), "5", 5)
    W.write_lmdb(path, [("5", record), ("COCO_val2014_000000000007", record)], approx_bytes=1000)
    keys, values = read_lmdb(path)
    assert keys == [b"5", b"COCO_val2014_000000000007"]
    item = pickle.loads(values[b"5"])
    assert item["features"].dtype == np.float32 and item["features"].shape == (3, 4)
    assert item["num_boxes"] == 3 and item["cls_prob"] is None and item["image_id"] == 5
    W.write_lmdb(path, [("9", record)], approx_bytes=1000)
    assert read_lmdb(path)[0] == [b"9"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["features.lmdb"]
    with pytest.raises(ValueError, match="duplicate"):
        W.write_lmdb(path, [("1", record), ("1", record)], approx_bytes=1000)
    assert read_lmdb(path)[0] == [b"9"]  # the failed write left the old database in place
