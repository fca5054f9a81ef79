"""The real easy-VQA data converted to the VQA2 imdb layout."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from benchmark.data.easy_vqa import TEST_ID_OFFSET
from benchmark.data.make import make_dataset
from benchmark.errors import ConfigError

SPLITS = ("train", "val", "test")


@pytest.fixture(scope="module")
def capped(tmp_path_factory):
    root = tmp_path_factory.mktemp("easy_vqa")
    return root, make_dataset("easy_vqa", root, size=160, seed=0)


def records(root, split):
    array = np.load(root / f"datasets/easy_vqa/defaults/annotations/imdb_{split}.npy", allow_pickle=True)
    assert array[0] == {"version": 1, "dataset_type": split, "has_answer": True}
    return list(array[1:])


def test_capped_conversion_counts_and_records(capped) -> None:
    root, summary = capped
    base = root / "datasets/easy_vqa/defaults"
    answers = (base / "extras/vocabs/answers_easy_vqa.txt").read_text().split()
    assert len(answers) == 13 and "<unk>" not in answers and {"yes", "no", "circle", "teal"} <= set(answers)
    caps = {"train": 160, "val": 40, "test": 40}  # size caps train; val and test get 25 % of it
    assert summary["splits"] == caps
    seen: dict[str, set[int]] = {}
    for split in SPLITS:
        rows = records(root, split)
        assert len(rows) == caps[split] and len({r["question_id"] for r in rows}) == caps[split]
        seen[split] = {r["image_id"] for r in rows}
        for r in rows:
            assert set(r) == {"image_name", "image_id", "question_id", "question_str", "question_tokens",
                              "all_answers", "answers", "feature_path"}
            assert r["answers"] == r["all_answers"] == [r["answers"][0]] * 10 and r["answers"][0] in answers
            assert r["image_name"] == f"easy_vqa_{r['image_id']:06d}" and r["feature_path"] == r["image_name"] + ".npy"
            assert r["question_id"] // 100 == r["image_id"]
            with Image.open(base / "images" / f"{r['image_name']}.png") as image:
                assert image.size == (64, 64)
    assert not (seen["train"] & seen["val"] or seen["train"] & seen["test"] or seen["val"] & seen["test"])
    assert min(seen["val"]) >= 3600 and max(seen["train"]) < 3600 and min(seen["test"]) >= TEST_ID_OFFSET
    pngs = {p.stem for p in (base / "images").glob("*.png")}
    assert pngs == {f"easy_vqa_{i:06d}" for ids in seen.values() for i in ids}
    assert (base / ".built.json").is_file() and (base / "annotations/.built.json").is_file()


def test_a_second_make_of_the_same_data_writes_nothing(tmp_path) -> None:
    """easy-VQA marks its images folder, not a feature folder: the up-to-date check must look
    for the markers this converter writes, or every `make data` rewrites the data."""
    assert make_dataset("easy_vqa", tmp_path, size=40, seed=0)["skipped"] is False
    assert make_dataset("easy_vqa", tmp_path, size=40, seed=0)["skipped"] is True
    assert make_dataset("easy_vqa", tmp_path, size=48, seed=0)["skipped"] is False  # another size: rewritten


@pytest.mark.slow  # default suite under 10 min on 2 cores; `make test-all` runs it
def test_full_conversion_keeps_every_question(tmp_path) -> None:
    summary = make_dataset("easy_vqa", tmp_path, size=0)
    assert summary["splits"] == {"train": 34687, "val": 3888, "test": 9673}  # 38,575 train questions in all
    assert summary["images"] == {"train": 3600, "val": 400, "test": 1000}


def test_default_size_is_the_documented_cap(tmp_path) -> None:
    summary = make_dataset("easy_vqa", tmp_path)
    assert summary["splits"] == {"train": 3000, "val": 750, "test": 750}


def test_negative_size_is_refused(tmp_path) -> None:
    with pytest.raises(ConfigError, match="0 = every question"):
        make_dataset("easy_vqa", tmp_path, size=-5)
