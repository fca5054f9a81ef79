"""Determinism and the documented mechanisms: what decides each label is what the truth says."""

from __future__ import annotations

import pickle
from collections import defaultdict

import numpy as np
from synth_helpers import SYNTHETIC, read_jsonl, read_lmdb

from benchmark.data.synthetic import hateful_memes, mmimdb, visual_entailment, vqa2

MODULES = {"hateful_memes": hateful_memes, "mmimdb": mmimdb, "visual_entailment": visual_entailment, "vqa2": vqa2}


def _contents(root):
    """Every data file's bytes; LMDBs by logical content (keys and pickled values)."""
    out = {}
    for path in sorted((root / "datasets").rglob("*")):
        rel = str(path.relative_to(root))
        if path.is_dir() and path.suffix == ".lmdb":
            out[rel] = read_lmdb(path)
        elif path.is_file() and ".lmdb" not in rel and path.name not in (".built.json", "msd_synthetic.json"):
            out[rel] = path.read_bytes()
    return out


def test_same_seed_same_files_other_seed_different(tmp_path) -> None:
    for name in SYNTHETIC:
        MODULES[name].generate(tmp_path / "a", size=24, seed=3)
        MODULES[name].generate(tmp_path / "b", size=24, seed=3)
        MODULES[name].generate(tmp_path / "c", size=24, seed=4)
    a, b, c = (_contents(tmp_path / d) for d in "abc")
    assert a == b
    assert a.keys() == c.keys()
    annotations = [k for k in a if "/annotations/" in k]
    assert annotations and all(a[k] != c[k] for k in annotations)


def test_size_scales_train_and_eval_splits(tmp_path) -> None:
    summary = vqa2.generate(tmp_path, size=400, seed=0)  # eval_ratio 0.5 by default: 200 each
    assert summary["splits"] == {"train2014": 400, "val2014": 200, "test2015": 200}
    assert vqa2.generate(tmp_path, size=400, seed=0, eval_ratio=0.25)["splits"]["val2014"] == 100
    assert hateful_memes.generate(tmp_path, size=8, seed=0)["splits"]["dev_unseen"] == 20  # minimum


def test_hateful_memes_confounders_flip_with_partner(synth) -> None:
    root, _ = synth
    base = root / "datasets/hateful_memes/defaults"
    truth = read_jsonl(base / "extras/msd_ground_truth.jsonl")
    keys, values = read_lmdb(base / "features/detectron.lmdb")
    groups = defaultdict(list)
    for row in truth:
        if "confounder_group" in row:
            groups[row["confounder_group"]].append(row)
    assert groups
    for pair in groups.values():
        assert len(pair) == 2 and {r["clean_label"] for r in pair} == {0, 1}
        if pair[0]["confounder_kind"] == "same_image":  # the very same picture under two ids
            f0, f1 = (pickle.loads(values[str(r["id"]).encode()])["features"] for r in pair)
            assert np.array_equal(f0, f1) and pair[0]["concepts"]["image"] == pair[1]["concepts"]["image"]
        else:
            assert pair[0]["concepts"]["text"] == pair[1]["concepts"]["text"]


def test_hateful_memes_combination_is_uninformative_per_modality() -> None:
    world = hateful_memes._World(0, hateful_memes.HatefulMemesGenerator.resolve_options({}))
    for concept in world.ambiguous:  # each image: hateful with one caption kind, benign with the other
        assert {world.label(concept, 0), world.label(concept, 1)} == {0, 1}
    for praise in (0, 1):  # each caption kind: hateful with exactly half of the images
        assert sum(world.label(c, praise) for c in world.ambiguous) == len(world.ambiguous) // 2


def test_visual_entailment_labels_cycle_within_an_image(synth) -> None:
    root, _ = synth
    truth = read_jsonl(root / "datasets/visual_entailment/defaults/extras/msd_ground_truth.jsonl")
    per_image = defaultdict(list)
    for row in truth:
        if row["decides"] == "both":
            per_image[(row["split"], row["Flikr30kID"])].append(row["clean_label"])
    # the labels are cycled over an image's combination hypotheses: never one twice per image
    assert any(len(labels) >= 2 for labels in per_image.values())
    assert all(len(set(labels)) == len(labels) for labels in per_image.values())


def test_vqa2_answers_follow_the_image(synth) -> None:
    root, _ = synth
    truth = read_jsonl(root / "datasets/vqa2/defaults/extras/msd_ground_truth.jsonl")
    for row in truth:
        shown = {o.split()[1]: o.split() for o in row["concepts"]["image"]}  # "red dog x3"
        if row["type"] == "color":
            assert shown[row["concepts"]["text"][0]][0] == row["clean_label"]
        elif row["type"] == "count":
            assert "x" + row["clean_label"] == shown[row["concepts"]["text"][0]][2]
        elif row["type"] == "exist":
            assert (row["concepts"]["text"][0] in shown) == (row["clean_label"] == "yes")
        elif row["type"] == "object":
            assert list(shown) == [row["clean_label"]] and row["decides"] == "image"
        else:
            assert row["decides"] == "text"


def test_mmimdb_reliance_is_graded_from_genre_evidence(synth) -> None:
    root, _ = synth
    truth = read_jsonl(root / "datasets/mmimdb/defaults/extras/msd_ground_truth.jsonl")
    weight = {"image": 1.0, "text": 0.0, "both": 0.5}
    for row in truth:
        evidence = row["concepts"]["genre_evidence"]
        assert set(evidence) == set(row["clean_label"])
        assert row["image_reliance"] == round(float(np.mean([weight[e] for e in evidence.values()])), 4)
        assert list(evidence.values()).count("both") <= 1
