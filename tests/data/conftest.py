"""Tiny MMF data directories written by hand, in exactly MMF's on-disk layout.

Each dataset gets a few samples under ``<root>/datasets/<name>/defaults/{annotations,
features,images,extras}``, ``.built.json`` markers holding the zoo version as the float
OmegaConf parses it to, LMDB feature files with a pickled ``b"keys"`` list, and imdb ``.npy``
annotations with their metadata header. Feature dimension is 16 (not 2048) on purpose, so
the tests prove the dimension is read from the data.
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import lmdb
import numpy as np
import pytest
from omegaconf import DictConfig, OmegaConf
from PIL import Image

import benchmark
from benchmark.data.features import close_lmdb_handles

FEATURE_DIM = 16
CONFIG_ROOT = Path(benchmark.__file__).parent / "config"
MMIMDB_GENRES = [
    "drama", "comedy", "romance", "thriller", "crime", "action", "adventure", "horror",
    "documentary", "mystery", "sci-fi", "fantasy", "family", "biography", "war", "history",
    "music", "animation", "musical", "western", "sport", "short", "film-noir",
]  # fmt: skip
VQA_ANSWERS = ["net", "mesh", "netting", "yes", "no", "2", "red"]
EASY_VQA_ANSWERS = ["circle", "rectangle", "triangle", "red", "green", "blue", "yes", "no"]
ZOO_VERSIONS = {
    "hateful_memes": 1.020201001,
    "mmimdb": 1.020200416,
    "visual_entailment": 1.020200529,
    "vqa2": 1.020200529,
    "flickr30k": 1.020200529,
    "coco": 1.020200504,
    "easy_vqa": 1.0,
}


def feature_record(num_boxes: int, dim: int = FEATURE_DIM, seed: int = 0) -> dict[str, Any]:
    """One MMF detectron feature dict (what each LMDB value unpickles to)."""
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, 50, size=(num_boxes, 2)).astype(np.float32)
    bbox = np.concatenate([xy, xy + 10], axis=1).astype(np.float32)
    return {
        "features": rng.standard_normal((num_boxes, dim)).astype(np.float32),
        "bbox": bbox,
        "num_boxes": num_boxes,
        "image_height": 480,
        "image_width": 640,
        "objects": np.arange(num_boxes),
        "cls_prob": None,
        "feature_path": f"{seed}",
    }


def write_lmdb(path: Path, records: dict[str, dict[str, Any]], keys: list[bytes] | None = None) -> Path:
    """An LMDB folder as MMF's lmdb_conversion writes it: pickled dicts plus ``b"keys"``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    env = lmdb.open(str(path), map_size=1 << 26)
    with env.begin(write=True) as txn:
        for key, record in records.items():
            txn.put(key.encode(), pickle.dumps(record))
        txn.put(b"keys", pickle.dumps(keys if keys is not None else [k.encode() for k in records]))
    env.close()
    return path


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def write_imdb(path: Path, records: list[dict[str, Any]], dataset_type: str) -> Path:
    """An imdb object array whose element 0 is MMF's metadata header (no image_id)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    header = {"version": 1, "dataset_type": dataset_type, "has_answer": True}
    np.save(path, np.array([header, *records], dtype=object), allow_pickle=True)
    return path


def mark_built(variant_dir: Path, version: float) -> None:
    for folder in (variant_dir, variant_dir / "features", variant_dir / "annotations"):
        folder.mkdir(parents=True, exist_ok=True)
        (folder / ".built.json").write_text(json.dumps({"created_at": "2024-01-01", "version": version}))


def _hateful_memes(root: Path) -> None:
    base = root / "datasets/hateful_memes/defaults"
    mark_built(base, ZOO_VERSIONS["hateful_memes"])
    texts = ["its their character not their color", "look how happy they are", "you are what you eat"]

    def records(ids: list[int], labelled: bool = True) -> list[dict[str, Any]]:
        out = []
        for i in ids:
            record = {"id": i, "img": f"img/{i:05d}.png", "text": texts[i % 3]}
            if labelled:
                record["label"] = i % 2
            out.append(record)
        return out

    write_jsonl(base / "annotations/train.jsonl", records(list(range(1001, 1011))))
    write_jsonl(base / "annotations/dev_unseen.jsonl", records([2001, 2002, 2003, 2004]))
    write_jsonl(base / "annotations/dev_seen.jsonl", records([3001, 3002]))
    write_jsonl(base / "annotations/test_unseen.jsonl", records([4001, 4002, 4003], labelled=False))
    ids = [*range(1001, 1011), 2001, 2002, 2003, 2004, 3001, 3002, 4001, 4002, 4003]
    # Keys as MMF's extractor writes them for "img/01001.png": str(int(...)) = "1001".
    write_lmdb(base / "features/detectron.lmdb", {str(i): feature_record(3 + i % 5, seed=i) for i in ids})


def _mmimdb(root: Path) -> None:
    base = root / "datasets/mmimdb/defaults"
    mark_built(base, ZOO_VERSIONS["mmimdb"])
    (base / "extras").mkdir(parents=True, exist_ok=True)
    (base / "extras/classes_mm_imdb.txt").write_text("\n".join(MMIMDB_GENRES) + "\n")
    plots = ["A stationary camera looks at a large anvil.", "Three men hammer on an anvil."]
    genre_sets = [["Short", "Drama"], ["Comedy"], ["Sci-Fi", "Talk-Show"], ["Film-Noir", "Crime", "Drama"]]

    def records(start: int, count: int) -> list[dict[str, Any]]:
        out = []
        for i in range(start, start + count):
            plot: Any = plots if i % 2 else plots[0]
            out.append({"id": f"{i:07d}", "img": f"{i:07d}.jpeg", "genres": genre_sets[i % 4], "plot": plot})
        return out

    write_jsonl(base / "annotations/train.jsonl", records(8, 8))
    write_jsonl(base / "annotations/dev.jsonl", records(100, 4))
    write_jsonl(base / "annotations/test.jsonl", records(200, 4))
    ids = [*range(8, 16), *range(100, 104), *range(200, 204)]
    # Raw-stem keys ("0000008"): lookup tries "8" first, then falls back to the stem.
    write_lmdb(base / "features/features.lmdb", {f"{i:07d}": feature_record(4, seed=i) for i in ids})


def _visual_entailment(root: Path) -> None:
    base = root / "datasets/visual_entailment/defaults"
    mark_built(base, ZOO_VERSIONS["visual_entailment"])
    mark_built(root / "datasets/flickr30k/defaults", ZOO_VERSIONS["flickr30k"])
    labels = ["entailment", "neutral", "contradiction"]

    def records(images: list[int]) -> list[dict[str, Any]]:
        return [
            {
                "Flikr30kID": f"{img}.jpg",
                "sentence1": "Two young children in blue jerseys.",
                "sentence2": f"Two kids at a ballgame number {k}.",
                "gold_label": labels[k % 3],
                "pairID": f"{img}.jpg#{k}r1n",
                "captionID": f"{img}.jpg#{k}",
            }
            for k, img in enumerate(images)
        ]

    write_jsonl(base / "annotations/snli_ve_train.jsonl", records([2248275918 + i for i in range(9)]))
    write_jsonl(base / "annotations/snli_ve_dev.jsonl", records([3000000000, 3000000001, 3000000002]))
    write_jsonl(base / "annotations/snli_ve_test.jsonl", records([4000000000, 4000000001]))
    ids = [*(2248275918 + i for i in range(9)), 3000000000, 3000000001, 3000000002, 4000000000, 4000000001]
    write_lmdb(
        root / "datasets/flickr30k/defaults/features/detectron.lmdb",
        {str(i): feature_record(5, seed=i % 1000) for i in ids},
    )


VQA_TRAIN_ANSWERS = [
    ["net"] * 7 + ["mesh"] * 3,
    ["net", "net", "net", "netting", "net", "net", "mesh", "net", "net", "net"],
    ["yes"] * 10,
    ["no"] * 5 + ["unknown thing"] * 5,
]


def _vqa2(root: Path) -> None:
    base = root / "datasets/vqa2/defaults"
    mark_built(base, ZOO_VERSIONS["vqa2"])
    mark_built(root / "datasets/coco/defaults", ZOO_VERSIONS["coco"])
    (base / "extras/vocabs").mkdir(parents=True, exist_ok=True)
    (base / "extras/vocabs/answers_vqa.txt").write_text("<unk>\n" + "\n".join(VQA_ANSWERS) + "\n")

    def records(split: str, image_ids: list[int], answered: bool = True) -> list[dict[str, Any]]:
        out = []
        for k, image_id in enumerate(image_ids):
            name = f"COCO_{split}_{image_id:012d}"
            record: dict[str, Any] = {
                "image_name": name,
                "image_id": image_id,
                "question_id": image_id * 1000 + k,
                "feature_path": f"{name}.npy",
            }
            if k % 2:
                record["question"] = "What color is the net?"
            else:
                record["question_str"] = "What is this photo taken looking through?"
                record["question_tokens"] = ["what", "is", "this", "photo", "taken", "looking", "through"]
            if answered:
                answers = VQA_TRAIN_ANSWERS[k % len(VQA_TRAIN_ANSWERS)]
                record["all_answers"] = list(answers)  # back-filled into "answers" by the reader
            out.append(record)
        return out

    train_ids = [458752 + i for i in range(8)]
    val_ids = [42, 73, 74, 75]
    write_imdb(base / "annotations/imdb_train2014.npy", records("train2014", train_ids), "train2014")
    write_imdb(base / "annotations/imdb_val2014.npy", records("val2014", val_ids), "val2014")
    # Keys are the integer image ids, as in MMF's COCO trainval2014.lmdb.
    write_lmdb(
        root / "datasets/coco/defaults/features/trainval2014.lmdb",
        {str(i): feature_record(6, seed=i % 997) for i in [*train_ids, *val_ids]},
    )


def _easy_vqa(root: Path) -> None:
    base = root / "datasets/easy_vqa/defaults"
    mark_built(base, ZOO_VERSIONS["easy_vqa"])
    (base / "extras/vocabs").mkdir(parents=True, exist_ok=True)
    (base / "extras/vocabs/answers_easy_vqa.txt").write_text("\n".join(EASY_VQA_ANSWERS) + "\n")
    images = base / "images"
    images.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (64, 64), (255, 0, 0)).save(images / "train_0.png")
    Image.new("L", (64, 64), 128).save(images / "train_1.png")  # grayscale -> 3 channels
    Image.new("RGBA", (64, 64), (0, 0, 255, 255)).save(images / "test_0.png")

    def records(names: list[str], answers: list[str]) -> list[dict[str, Any]]:
        return [
            {
                "image_name": name,
                "image_id": k,
                "question_id": k,
                "question_str": "What shape is in the image?",
                "answers": [answer] * 10,
            }
            for k, (name, answer) in enumerate(zip(names, answers, strict=True))
        ]

    write_imdb(
        base / "annotations/imdb_train.npy",
        records(["train_0", "train_1"] * 2, ["circle", "red"] * 2),
        "train",
    )
    write_imdb(base / "annotations/imdb_val.npy", records(["train_1"], ["blue"]), "val")
    write_imdb(base / "annotations/imdb_test.npy", records(["test_0"], ["yes"]), "test")


def write_mmf_root(root: Path) -> Path:
    for writer in (_hateful_memes, _mmimdb, _visual_entailment, _vqa2, _easy_vqa):
        writer(root)
    return root


@pytest.fixture(scope="session")
def mmf_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A read-only MMF data dir with all datasets; tests that corrupt data use their own."""
    return write_mmf_root(tmp_path_factory.mktemp("mmf_data"))


@pytest.fixture
def fresh_root(tmp_path: Path) -> Path:
    """A private copy of the MMF data dir that a test may damage."""
    return write_mmf_root(tmp_path / "mmf_data")


def make_config(data_dir: Path, dataset: str, overrides: dict[str, Any] | None = None) -> DictConfig:
    """The resolved-run-config shape: defaults < datasets/<name>.yaml < overrides."""
    config = OmegaConf.merge(
        OmegaConf.load(CONFIG_ROOT / "defaults.yaml"),
        OmegaConf.load(CONFIG_ROOT / "datasets" / f"{dataset}.yaml"),
        {"dataset": dataset, "env": {"data_dir": str(data_dir)}},
        overrides or {},
    )
    assert isinstance(config, DictConfig)
    return config


@pytest.fixture
def config_for() -> Callable[..., DictConfig]:
    return make_config


@pytest.fixture(autouse=True)
def _close_lmdb() -> Any:
    """Each test starts without open LMDB handles, so a damaged copy is really reopened."""
    yield
    close_lmdb_handles()


@pytest.fixture
def writers() -> SimpleNamespace:
    """The file writers above, for tests that build their own (often broken) files."""
    return SimpleNamespace(
        feature_record=feature_record,
        write_lmdb=write_lmdb,
        write_jsonl=write_jsonl,
        write_imdb=write_imdb,
        feature_dim=FEATURE_DIM,
        vqa_train_answers=VQA_TRAIN_ANSWERS,
        mmimdb_genres=MMIMDB_GENRES,
    )
