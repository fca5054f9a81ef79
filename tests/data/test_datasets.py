"""The registered datasets on hand-written MMF data dirs: samples, info, splits, errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmark.data.annotations import load_annotations
from benchmark.data.build import build_dataloader, build_dataset, meta_split_indices
from benchmark.data.datasets import HatefulMemesDataset
from benchmark.data.features import close_lmdb_handles
from benchmark.data.info import DatasetInfo
from benchmark.errors import ConfigError, DataError
from benchmark.registry import registry

CONTRACT_KEYS = {
    "input_ids",
    "input_mask",
    "segment_ids",
    "targets",
    "id",
    "sample_index",
    "dataset_name",
    "dataset_type",
}
FEATURE_DATASETS = {"hateful_memes": 2, "mmimdb": 24, "visual_entailment": 3, "vqa2": 8}


def test_all_datasets_registered() -> None:
    names = set(registry.list_datasets())
    assert {"hateful_memes", "mmimdb", "visual_entailment", "vqa2", "easy_vqa"} <= names
    assert registry.get_dataset("hateful_memes") is HatefulMemesDataset


@pytest.mark.parametrize("name", sorted(FEATURE_DATASETS))
def test_feature_dataset_samples_follow_contract(mmf_root: Path, config_for, name: str) -> None:
    dataset = build_dataset(
        config_for(mmf_root, name, {"dataset_config": {name: {"max_features": 8}}}), "val"
    )
    info = dataset.info
    assert isinstance(info, DatasetInfo)
    assert (info.name, info.modality, info.feature_dim, info.max_features) == (name, "features", 16, 8)
    assert info.num_labels == FEATURE_DATASETS[name] == len(info.label_names)
    assert info.vocab_size == 30522 and info.max_seq_length > 2
    sample = dataset[0]
    assert set(sample) == CONTRACT_KEYS | {"image_feature_0", "image_info_0"}
    assert sample["image_feature_0"].shape == (8, 16) and sample["image_feature_0"].dtype == torch.float32
    real = int(sample["image_info_0"]["max_features"])
    assert 0 < real <= 8 and float(sample["image_feature_0"][real:].abs().sum()) == 0.0
    assert sample["image_info_0"]["bbox"].shape == (8, 4)
    assert sample["input_ids"].shape == (info.max_seq_length,) and sample["input_ids"][0] == 101
    assert (sample["dataset_name"], sample["dataset_type"]) == (name, "val")
    assert sample["sample_index"].dtype == torch.long and int(sample["sample_index"]) == 0
    if info.task == "single_label":
        assert sample["targets"].dtype == torch.long and sample["targets"].shape == ()
    else:
        assert sample["targets"].dtype == torch.float32 and sample["targets"].shape == (info.num_labels,)


def test_hateful_memes_records(mmf_root: Path, config_for) -> None:
    train = build_dataset(
        config_for(mmf_root, "hateful_memes", {"data": {"meta_split": {"fraction": 0.0}}}), "train"
    )
    assert len(train) == 10
    sample = train[3]
    assert sample["id"] == 1004 and int(sample["targets"]) == 0  # id 1004 -> label 1004 % 2
    assert int(sample["image_info_0"]["max_features"]) == 3 + 1004 % 5
    test = build_dataset(config_for(mmf_root, "hateful_memes"), "test")
    assert not test.has_targets and not test.info.extra["has_targets"]
    assert int(test[0]["targets"]) == -1  # test_unseen has no labels


def test_mmimdb_multi_hot_and_plot(mmf_root: Path, config_for) -> None:
    dataset = build_dataset(config_for(mmf_root, "mmimdb"), "val")
    assert dataset.info.label_names[0] == "<unk>" and dataset.info.task == "multi_label"
    by_id = {dataset[i]["id"]: dataset[i] for i in range(len(dataset))}
    drama, short, scifi = (dataset.info.label_names.index(g) for g in ("drama", "short", "sci-fi"))
    assert torch.nonzero(by_id["0000100"]["targets"]).flatten().tolist() == sorted([drama, short])
    talk_show = by_id["0000102"]["targets"]  # ["Sci-Fi", "Talk-Show"]: unknown genre -> <unk>, zeroed
    assert torch.nonzero(talk_show).flatten().tolist() == [scifi] and talk_show[0] == 0
    assert dataset.entries[1].text == "A stationary camera looks at a large anvil."  # plot list -> plot[0]


def test_visual_entailment_label_map(mmf_root: Path, config_for) -> None:
    dataset = build_dataset(config_for(mmf_root, "visual_entailment"), "val")
    assert [int(dataset[i]["targets"]) for i in range(3)] == [0, 1, 2]
    assert dataset[0]["id"] == "3000000000.jpg#0r1n"
    assert dataset.entries[0].feature_key == "3000000000"


def test_vqa2_soft_scores_and_val_as_test(mmf_root: Path, config_for, writers) -> None:
    config = config_for(mmf_root, "vqa2", {"data": {"meta_split": {"fraction": 0.0}}})
    train = build_dataset(config, "train")
    names = train.info.label_names
    assert names[0] == "<unk>" and train.info.num_labels == 8
    first = train[0]["targets"]
    assert first[names.index("net")] == pytest.approx(1.0) and first[names.index("mesh")] == pytest.approx(
        0.9
    )
    second = train[1]["targets"]  # 8 net, 1 netting, 1 mesh
    assert second[names.index("netting")] == pytest.approx(0.3) and second[
        names.index("mesh")
    ] == pytest.approx(0.3)
    fourth = train[3]["targets"]  # 5 x "no", 5 x an answer outside the vocab
    assert fourth[names.index("no")] == pytest.approx(1.0) and fourth.sum() == pytest.approx(1.0)
    assert train[0]["id"] == 458752000
    assert train.entries[1].text == "What color is the net?"  # "question" when no question_str
    val, test = build_dataset(config, "val"), build_dataset(config, "test")
    assert val.annotation_files == test.annotation_files and val.annotation_files[0].endswith(
        "imdb_val2014.npy"
    )


def test_easy_vqa_pixels(mmf_root: Path, config_for) -> None:
    dataset = build_dataset(
        config_for(mmf_root, "easy_vqa", {"data": {"meta_split": {"fraction": 0.0}}}), "train"
    )
    info = dataset.info
    # The default reads the 64x64 PNGs at 32x32 (datasets/easy_vqa.yaml, image_size).
    assert (info.modality, info.image_size, info.feature_dim, info.task) == ("pixels", 32, 0, "soft_score")
    assert info.num_labels == 9  # 8 answers + <unk>
    for i in range(2):  # an RGB and a grayscale PNG
        sample = dataset[i]
        assert set(sample) == CONTRACT_KEYS | {"image"}
        assert sample["image"].shape == (3, 32, 32) and sample["image"].dtype == torch.float32
    assert dataset[0]["targets"][info.label_names.index("circle")] == 1.0
    assert build_dataset(config_for(mmf_root, "easy_vqa"), "test")[0]["image"].shape == (3, 32, 32)  # RGBA


def test_easy_vqa_native_size_reads_without_resizing(mmf_root: Path, config_for) -> None:
    """image_size: 64 is the PNGs' own size: pixels pass through unresized, unlike the default."""
    from PIL import Image, ImageDraw

    picture = Image.new("RGB", (64, 64), (0, 0, 0))
    ImageDraw.Draw(picture).rectangle((8, 8, 39, 39), fill=(255, 255, 255))  # a shape off-centre
    picture.save(mmf_root / "datasets" / "easy_vqa" / "defaults" / "images" / "test_0.png")
    native = build_dataset(config_for(mmf_root, "easy_vqa", {"dataset_config": {"easy_vqa": {"image_size": 64}}}), "test")
    small = build_dataset(config_for(mmf_root, "easy_vqa"), "test")
    big, little = native[0]["image"], small[0]["image"]
    assert native.info.image_size == 64 and big.shape == (3, 64, 64)
    # The 32x32 image is a smoothed 2x2 downsampling of the native one, not a crop of it.
    pooled = torch.nn.functional.avg_pool2d(big.unsqueeze(0), 2).squeeze(0)
    assert (pooled - little).abs().mean() < 0.1 < (big[:, :32, :32] - little).abs().mean()


def test_sample_index_spans_concatenated_files(mmf_root: Path, config_for) -> None:
    files = [
        "hateful_memes/defaults/annotations/dev_unseen.jsonl",
        "hateful_memes/defaults/annotations/dev_seen.jsonl",
    ]
    config = config_for(
        mmf_root, "hateful_memes", {"dataset_config": {"hateful_memes": {"annotations": {"val": files}}}}
    )
    dataset = build_dataset(config, "val")
    assert [int(dataset[i]["sample_index"]) for i in range(len(dataset))] == list(range(6))
    assert dataset[5]["id"] == 3002 and dataset.entries[5].where.endswith("dev_seen.jsonl, line 2")


def test_npy_feature_folder(mmf_root: Path, tmp_path: Path, config_for, writers) -> None:
    folder = tmp_path / "npy_features"
    folder.mkdir()
    for i in (2001, 2002, 2003, 2004):
        record = writers.feature_record(2, seed=i)
        np.save(folder / f"{i}.npy", record["features"])
        np.save(
            folder / f"{i}_info.npy",
            {"bbox": record["bbox"], "num_boxes": 2, "image_height": 9, "image_width": 9},
        )
    config = config_for(
        mmf_root, "hateful_memes", {"dataset_config": {"hateful_memes": {"features": {"val": [str(folder)]}}}}
    )
    sample = build_dataset(config, "val")[0]
    assert int(sample["image_info_0"]["max_features"]) == 2 and sample["image_feature_0"].shape == (100, 16)


# -- meta split ---------------------------------------------------------------------------


def test_meta_and_train_disjoint_and_deterministic(mmf_root: Path, config_for) -> None:
    config = config_for(mmf_root, "vqa2", {"data": {"meta_split": {"fraction": 0.25, "seed": 7}}})
    meta, train = build_dataset(config, "meta"), build_dataset(config, "train")
    meta_idx, train_idx = set(meta.sample_indices), set(train.sample_indices)
    assert len(meta_idx) == 2 and not meta_idx & train_idx and meta_idx | train_idx == set(range(8))
    assert build_dataset(config, "meta").sample_indices == meta.sample_indices
    assert meta_split_indices(8, 0.25, 7) == sorted(meta_idx)
    assert meta_split_indices(8, 0.01, 7) and len(meta_split_indices(8, 0.01, 7)) == 1  # never empty
    with pytest.raises(DataError, match="too few to hold out"):
        meta_split_indices(1, 0.5, 0)
    records = load_annotations(mmf_root / "datasets/vqa2/defaults/annotations/imdb_train2014.npy")
    for dataset in (meta, train):  # sample_index indexes the full train annotation list
        sample = dataset[0]
        assert sample["id"] == records[int(sample["sample_index"])]["question_id"]
        assert sample["dataset_type"] == "train" and dataset.split in ("meta", "train")


def test_hold_out_learned_only(mmf_root: Path, config_for) -> None:
    def train_size(weighting: str) -> int:
        overrides = {
            "distill": {"weighting": weighting},
            "data": {"meta_split": {"fraction": 0.2, "hold_out": "learned_only"}},
        }
        return len(build_dataset(config_for(mmf_root, "hateful_memes", overrides), "train"))

    assert train_size("instance") == 10 and train_size("learned") == 8
    with pytest.raises(ConfigError, match="hold_out"):
        build_dataset(
            config_for(mmf_root, "hateful_memes", {"data": {"meta_split": {"hold_out": "x"}}}), "train"
        )
    with pytest.raises(ConfigError, match="fraction is 0"):
        build_dataset(
            config_for(mmf_root, "hateful_memes", {"data": {"meta_split": {"fraction": 0.0}}}), "meta"
        )


# -- batching -----------------------------------------------------------------------------


@pytest.mark.parametrize("num_workers", [0, 2])
def test_dataloader_collates_nested_info_and_string_ids(mmf_root: Path, config_for, num_workers: int) -> None:
    dataset = build_dataset(config_for(mmf_root, "mmimdb"), "train")
    dataset[0]  # the LMDB is open in the parent before workers fork
    loader = build_dataloader(dataset, batch_size=4, shuffle=True, seed=3, num_workers=num_workers)
    batch = next(iter(loader))
    boxes = int(batch["image_info_0"]["max_features"].max())  # collate cuts the shared padding
    assert boxes < 100 and batch["image_feature_0"].shape == (4, boxes, 16)
    assert batch["image_info_0"]["max_features"].shape == (4,) and batch["image_info_0"]["bbox"].shape == (
        4,
        boxes,
        4,
    )
    assert isinstance(batch["id"], list) and all(isinstance(i, str) for i in batch["id"])
    assert batch["targets"].shape == (4, 24) and batch["sample_index"].dtype == torch.long
    assert batch["dataset_name"] == ["mmimdb"] * 4
    again = next(iter(build_dataloader(dataset, batch_size=4, shuffle=True, seed=3)))
    assert torch.equal(again["sample_index"], batch["sample_index"])


def test_int_ids_collate_to_tensor(mmf_root: Path, config_for) -> None:
    batch = next(
        iter(build_dataloader(build_dataset(config_for(mmf_root, "hateful_memes"), "val"), batch_size=2))
    )
    assert batch["id"].tolist() == [2001, 2002] and batch["targets"].dtype == torch.long


# -- errors -------------------------------------------------------------------------------


def test_missing_split_file_says_what_to_do(tmp_path: Path, config_for) -> None:
    with pytest.raises(DataError) as error:
        build_dataset(config_for(tmp_path, "hateful_memes"), "val")
    message = str(error.value)
    assert "dev_unseen.jsonl" in message and "dataset_config.hateful_memes.annotations.val[0]" in message
    assert "msd data make --dataset hateful_memes" in message and "env.data_dir=" in message


def test_empty_split(fresh_root: Path, config_for) -> None:
    (fresh_root / "datasets/hateful_memes/defaults/annotations/dev_unseen.jsonl").write_text("\n")
    with pytest.raises(DataError, match="'val' split of hateful_memes is empty"):
        build_dataset(config_for(fresh_root, "hateful_memes"), "val")


@pytest.mark.parametrize(
    "name, file, field, value",
    [
        ("hateful_memes", "hateful_memes/defaults/annotations/dev_unseen.jsonl", "label", 2),
        (
            "visual_entailment",
            "visual_entailment/defaults/annotations/snli_ve_dev.jsonl",
            "gold_label",
            "maybe",
        ),
    ],
)
def test_label_outside_label_set(
    fresh_root: Path, config_for, name: str, file: str, field: str, value
) -> None:
    path = fresh_root / "datasets" / file
    lines = path.read_text().splitlines()
    record = json.loads(lines[1])
    record[field] = value
    lines[1] = json.dumps(record)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=rf"{path.name}, line 2: label {value!r} is outside"):
        build_dataset(config_for(fresh_root, name), "val")


def test_train_record_without_label(fresh_root: Path, config_for, writers) -> None:
    path = fresh_root / "datasets/hateful_memes/defaults/annotations/train.jsonl"
    writers.write_jsonl(path, [{"id": 1001, "img": "img/01001.png", "text": "x"}])
    with pytest.raises(DataError, match="train.jsonl, line 1: a training record without a label"):
        build_dataset(
            config_for(fresh_root, "hateful_memes", {"data": {"meta_split": {"fraction": 0.0}}}), "train"
        )


def test_feature_key_not_found(fresh_root: Path, config_for, writers) -> None:
    path = fresh_root / "datasets/hateful_memes/defaults/annotations/dev_unseen.jsonl"
    writers.write_jsonl(path, [{"id": 9999, "img": "img/09999.png", "text": "x", "label": 1}])
    with pytest.raises(
        DataError, match=r"dev_unseen.jsonl, line 1: its feature key '09999' is not in .*detectron.lmdb"
    ):
        build_dataset(config_for(fresh_root, "hateful_memes"), "val")


def test_corrupt_lmdb(fresh_root: Path, config_for) -> None:
    lmdb_dir = fresh_root / "datasets/flickr30k/defaults/features/detectron.lmdb"
    data = lmdb_dir / "data.mdb"
    data.write_bytes(data.read_bytes()[:64])  # truncated
    with pytest.raises(DataError, match="detectron.lmdb"):
        build_dataset(config_for(fresh_root, "visual_entailment"), "val")


def test_inconsistent_or_bad_feature_shapes(fresh_root: Path, config_for, writers) -> None:
    features = fresh_root / "datasets/hateful_memes/defaults/features/detectron.lmdb"
    records = {str(i): writers.feature_record(3, seed=i) for i in (2001, 2002, 2003, 2004)}
    records["2002"] = writers.feature_record(3, dim=8)
    writers.write_lmdb(features, records)
    dataset = build_dataset(config_for(fresh_root, "hateful_memes"), "val")
    with pytest.raises(DataError, match="dimension 8, but the first record of this dataset has 16"):
        dataset[1]

    close_lmdb_handles()  # before rewriting: lmdb allows one open environment per file
    records["2001"] = {"features": np.zeros((2, 3, 16), np.float32)}
    writers.write_lmdb(features, records)
    with pytest.raises(DataError, match="expected a 2-D array"):
        build_dataset(config_for(fresh_root, "hateful_memes"), "val")


def test_vocab_size_disagrees_with_num_labels(mmf_root: Path, config_for) -> None:
    config = config_for(mmf_root, "vqa2", {"dataset_config": {"vqa2": {"num_labels": 3129}}})
    with pytest.raises(DataError, match="num_labels is 3129, but .*answers_vqa.txt gives 8"):
        build_dataset(config, "val")


def test_unknown_split_and_dataset(mmf_root: Path, config_for) -> None:
    with pytest.raises(ConfigError, match="split must be one of"):
        build_dataset(config_for(mmf_root, "hateful_memes"), "dev")
    config = config_for(mmf_root, "hateful_memes")
    config.dataset = "nope"
    with pytest.raises(ConfigError, match="dataset_config.nope"):
        build_dataset(config, "val")
