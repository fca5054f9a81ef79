"""The synthetic generators write MMF's exact layout, formats and known-saliency side files."""

from __future__ import annotations

import json
import pickle
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from synth_helpers import SIZE, SYNTHETIC, read_jsonl, read_lmdb, read_npy

from benchmark.data.synthetic.writers import ZOO_VERSIONS
from benchmark.registry import registry

MARKERS = [".built.json", "annotations/.built.json", "features/.built.json"]
LMDB = ["data.mdb", "lock.mdb"]
LAYOUT: dict[str, dict[str, list[str]]] = {
    "hateful_memes": {
        "hateful_memes/defaults": [
            *MARKERS, "msd_synthetic.json",
            *(f"annotations/{s}.jsonl" for s in ("train", "dev_seen", "dev_unseen", "test_seen", "test_unseen")),
            *(f"features/detectron.lmdb/{f}" for f in LMDB),
            "extras/vocabs/vocabulary_100k.txt", "extras/msd_ground_truth.jsonl",
        ],
    },
    "mmimdb": {
        "mmimdb/defaults": [
            *MARKERS, "msd_synthetic.json",
            *(f"annotations/{s}.jsonl" for s in ("train", "dev", "test")),
            *(f"features/features.lmdb/{f}" for f in LMDB),
            "extras/classes_mm_imdb.txt", "extras/vocab_mmimdb.txt", "extras/msd_ground_truth.jsonl",
        ],
    },
    "visual_entailment": {
        "visual_entailment/defaults": [
            *MARKERS, "msd_synthetic.json",
            *(f"annotations/snli_ve_{s}.jsonl" for s in ("train", "dev", "test")),
            "extras/vocabs/vocabulary_100k.txt", "extras/msd_ground_truth.jsonl",
        ],
        "flickr30k/defaults": [*MARKERS, "msd_synthetic.json", *(f"features/detectron.lmdb/{f}" for f in LMDB)],
    },
    "vqa2": {
        "vqa2/defaults": [
            *MARKERS, "msd_synthetic.json",
            *(f"annotations/imdb_{s}.npy" for s in ("train2014", "val2014", "test2015")),
            "extras/vocabs/answers_vqa.txt", "extras/vocabs/vocabulary_100k.txt", "extras/msd_ground_truth.jsonl",
        ],
        "coco/defaults": [
            *MARKERS, "msd_synthetic.json",
            *(f"features/{n}.lmdb/{f}" for n in ("trainval2014", "test2015") for f in LMDB),
        ],
    },
}
ZOO_NAME = {"hateful_memes/defaults": "hateful_memes", "mmimdb/defaults": "mmimdb", "flickr30k/defaults": "flickr30k",
            "visual_entailment/defaults": "visual_entailment", "vqa2/defaults": "vqa2", "coco/defaults": "coco"}


def annotation_files(root: Path, name: str) -> dict[str, list[dict[str, Any]]]:
    """``{relative file: records}`` of a dataset, header skipped for ``.npy``."""
    base = root / "datasets" / f"{name}/defaults"
    out = {}
    for path in sorted((base / "annotations").iterdir()):
        if path.suffix == ".jsonl":
            out[f"annotations/{path.name}"] = read_jsonl(path)
        elif path.suffix == ".npy":
            out[f"annotations/{path.name}"] = read_npy(path)[1:]
    return out


def feature_path(name: str, record: dict[str, Any]) -> str:
    """The feature path MMF derives for a record (dataset classes / features_database)."""
    if name == "hateful_memes":
        return record["img"].split("/")[-1].split(".")[0] + ".npy"
    if name == "mmimdb":
        return ".".join(record["img"].split(".")[:-1]) + ".npy"
    if name == "visual_entailment":
        return record["Flikr30kID"].split(".")[0] + ".npy"
    return record["feature_path"]


def mmf_lookup(keys: list[bytes], path: str) -> bytes:
    """``LMDBFeatureReader._load``: ``str(int(last "_" segment))`` first, then the raw stem."""
    split = path.split(".npy")[0]
    try:
        key = str(int(split.split("_")[-1])).encode()
        if key in keys:
            return key
    except ValueError:
        pass
    assert split.encode() in keys, f"{path} not in LMDB"
    return split.encode()


def lmdb_for(root: Path, name: str, file: str) -> Path:
    if name == "visual_entailment":
        return root / "datasets/flickr30k/defaults/features/detectron.lmdb"
    if name == "vqa2":
        return root / "datasets/coco/defaults/features" / ("test2015.lmdb" if "test2015" in file else "trainval2014.lmdb")
    lmdb_name = "detectron.lmdb" if name == "hateful_memes" else "features.lmdb"
    return root / "datasets" / f"{name}/defaults/features/{lmdb_name}"


def test_registry_discovers_every_generator() -> None:
    assert set(registry.list_generators()) >= {*SYNTHETIC, "easy_vqa"}


@pytest.mark.parametrize("name", SYNTHETIC)
def test_layout_matches_mmf(synth, name) -> None:
    root, _ = synth
    for variant, expected in LAYOUT[name].items():
        base = root / "datasets" / variant
        found = sorted(str(p.relative_to(base)) for p in base.rglob("*") if p.is_file())
        assert found == sorted(expected), variant


@pytest.mark.parametrize("name", SYNTHETIC)
def test_built_markers_hold_zoo_float_versions(synth, name) -> None:
    root, _ = synth
    for variant in LAYOUT[name]:
        for marker in MARKERS:
            data = json.loads((root / "datasets" / variant / marker).read_text())
            assert isinstance(data["version"], float)
            assert data["version"] == ZOO_VERSIONS[ZOO_NAME[variant]]
            assert set(data) == {"created_at", "version"}


@pytest.mark.parametrize("name", SYNTHETIC)
def test_lmdb_readable_with_plain_lmdb_and_pickle(synth, name) -> None:
    root, summary = synth
    dim, regions = summary[name]["options"]["feature_dim"], summary[name]["options"]["num_regions"]
    for file, records in annotation_files(root, name).items():
        keys, values = read_lmdb(lmdb_for(root, name, file))
        assert all(isinstance(k, bytes) for k in keys) and len(set(keys)) == len(keys)
        assert set(values) == {*keys, b"keys"}
        for record in records:
            key = mmf_lookup(keys, feature_path(name, record))
            item = pickle.loads(values[key])
            assert set(item) == {"features", "bbox", "num_boxes", "image_height", "image_width", "objects",
                                 "cls_prob", "feature_path", "image_id"}
            assert item["features"].dtype == np.float32 and item["features"].shape == (regions, dim)
            assert item["features"].flags.writeable
            assert item["bbox"].dtype == np.float32 and item["bbox"].shape == (regions, 4)
            assert item["num_boxes"] == regions and item["cls_prob"] is None
            assert item["objects"].shape == (regions,)
            x1, y1, x2, y2 = item["bbox"].T
            assert (x1 >= 0).all() and (x2 <= item["image_width"]).all() and (y2 <= item["image_height"]).all()
            assert (x2 > x1).all() and (y2 > y1).all()
            assert item["feature_path"] == key.decode()


def test_pickles_are_numpy_version_portable(synth) -> None:
    root, _ = synth
    keys, values = read_lmdb(root / "datasets/hateful_memes/defaults/features/detectron.lmdb")
    raw = values[keys[0]] + (root / "datasets/vqa2/defaults/annotations/imdb_val2014.npy").read_bytes()
    assert b"numpy._core" not in raw and b"numpy.core" not in raw


def test_hateful_memes_records(synth) -> None:
    root, summary = synth
    files = annotation_files(root, "hateful_memes")
    ids = [r["id"] for records in files.values() for r in records]
    assert len(ids) == len(set(ids)) == sum(summary["hateful_memes"]["splits"].values())
    for records in files.values():
        for r in records:
            assert list(r) == ["id", "img", "label", "text"]
            assert isinstance(r["id"], int) and r["img"] == f"img/{r['id']}.png" and r["label"] in (0, 1)
    assert len(files["annotations/train.jsonl"]) == SIZE


def test_mmimdb_records_and_class_file(synth) -> None:
    root, _ = synth
    classes = (root / "datasets/mmimdb/defaults/extras/classes_mm_imdb.txt").read_text().split("\n")
    assert classes[:-1] == [
        "drama", "comedy", "romance", "thriller", "crime", "action", "adventure", "horror", "documentary",
        "mystery", "sci-fi", "fantasy", "family", "biography", "war", "history", "music", "animation",
        "musical", "western", "sport", "short", "film-noir",
    ] and classes[-1] == ""
    for records in annotation_files(root, "mmimdb").values():
        for r in records:
            assert list(r) == ["id", "img", "genres", "plot"]
            assert len(r["id"]) == 7 and r["id"].isdigit() and r["img"] == f"{r['id']}.jpeg"
            assert r["genres"] and all(g.lower() in classes and g != g.lower() for g in r["genres"])
            assert isinstance(r["plot"], list) and len(r["plot"]) == 2


def test_visual_entailment_records(synth) -> None:
    root, _ = synth
    for records in annotation_files(root, "visual_entailment").values():
        for r in records:
            assert list(r) == ["Flikr30kID", "sentence1", "sentence2", "gold_label", "pairID", "captionID"]
            assert r["Flikr30kID"].endswith(".jpg") and r["Flikr30kID"][:-4].isdigit()
            assert r["gold_label"] in ("entailment", "neutral", "contradiction")
            assert r["pairID"].startswith(r["captionID"] + "r") and r["pairID"][-1] == r["gold_label"][0]
            assert r["captionID"].startswith(r["Flikr30kID"] + "#")


def test_vqa2_npy_header_records_and_answers(synth) -> None:
    root, _ = synth
    base = root / "datasets/vqa2/defaults"
    answers = (base / "extras/vocabs/answers_vqa.txt").read_text().split()
    assert "<unk>" not in answers and {"yes", "no", "2", "red", "dog"} <= set(answers)
    for split in ("train2014", "val2014", "test2015"):
        array = np.load(base / f"annotations/imdb_{split}.npy", allow_pickle=True)
        assert array.dtype == object and array.ndim == 1
        assert array[0] == {"version": 1, "dataset_type": split, "has_answer": split != "test2015"}
        for r in array[1:]:
            name = f"COCO_{split}_{r['image_id']:012d}"
            assert r["image_name"] == name and r["feature_path"] == f"{name}.npy"
            assert r["question_id"] // 1000 == r["image_id"] and r["question_id"] < 2**31
            assert r["question_tokens"] == r["question_str"].lower().rstrip("?").split()
            if split == "test2015":
                assert "answers" not in r and "all_answers" not in r
            else:
                assert len(r["answers"]) == 10 and r["answers"] == r["all_answers"]
                assert set(r["answers"]) <= set(answers)


@pytest.mark.parametrize("name", SYNTHETIC)
def test_ground_truth_joins_every_sample(synth, name) -> None:
    root, summary = synth
    truth = read_jsonl(root / summary[name]["paths"]["ground_truth"])
    files = annotation_files(root, name)
    assert len(truth) == sum(len(r) for r in files.values())
    for row in truth:
        record = files[row["file"]][row["index"]]
        ident = {"hateful_memes": "id", "mmimdb": "id", "visual_entailment": "pairID", "vqa2": "question_id"}[name]
        assert row["id"] == record[ident]
        assert row["decides"] in ("image", "text", "both")
        assert 0 <= row["image_reliance"] <= 1 and row["image_reliance"] + row["text_reliance"] == pytest.approx(1)
        assert row["label_noise"] == (row["label"] != row["clean_label"])
        label = {"hateful_memes": "label", "visual_entailment": "gold_label"}.get(name)
        if label:
            assert row["label"] == record[label]
        elif name == "mmimdb":
            assert row["label"] == [g.lower() for g in record["genres"]]
        elif "answers" in record:  # 10 annotators, each right with probability 0.9
            assert record["answers"] == row["answers"]


@pytest.mark.parametrize("name", SYNTHETIC)
def test_mixture_is_recorded_and_realised(synth, name) -> None:
    root, summary = synth
    mixture = summary[name]["mixture"]
    truth = read_jsonl(root / summary[name]["paths"]["ground_truth"])
    by_split = defaultdict(list)
    for row in truth:
        by_split[row["split"]].append(row["decides"])
    for split, kinds in by_split.items():
        realised = {k: v / len(kinds) for k, v in Counter(kinds).items()}
        assert realised == pytest.approx(mixture["realised"][split], abs=1e-3)
    manifest = json.loads((root / "datasets" / f"{name}/defaults/msd_synthetic.json").read_text())
    assert manifest["summary"]["mixture"]["target"] == mixture["target"]
    if name != "mmimdb":  # mmimdb's mixture is per genre label; its per-sample mix is graded
        train = by_split["train" if name != "vqa2" else "train2014"]
        for kind, share in mixture["target"].items():
            assert train.count(kind) == pytest.approx(share * len(train), abs=1.0)


def test_label_noise_is_present_but_small(synth) -> None:
    root, summary = synth
    for name in SYNTHETIC:
        rates = summary[name]["label_noise_rate"].values()
        assert all(r < 0.2 for r in rates)
    truth = read_jsonl(root / "datasets/hateful_memes/defaults/extras/msd_ground_truth.jsonl")
    assert 0 < sum(r["label_noise"] for r in truth) < 0.2 * len(truth)
