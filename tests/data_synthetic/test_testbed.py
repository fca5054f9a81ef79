"""The version-2 mechanisms behind the testbed criteria (docs/calibration.md, issue 16).

Hand-checked properties: bound part pairs (the teacher-student capacity gap) keep the
region mean label-free, labels follow the stated binding rule, VQA2's information-based
reliance equals hand-computed entropies, and both modalities dominate >= 20 % of test.
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
from synth_helpers import SYNTHETIC, read_jsonl

from benchmark.data.synthetic import hateful_memes, mmimdb, visual_entailment, vqa2
from benchmark.data.synthetic.common import conjunctions, split_sizes
from benchmark.data.synthetic.regions import ConceptSpace
from benchmark.errors import ConfigError

TEST_SPLIT = {"hateful_memes": "test_unseen", "mmimdb": "test", "visual_entailment": "test", "vqa2": "val2014"}


def test_conjunctions_fix_bound_indices_and_derange_the_rest() -> None:
    assert conjunctions(["a", "b"], ["x", "y"], [0, 1]) == [("a", "x"), ("b", "y")]
    assert conjunctions(["a", "b"], ["x", "y"], []) == [("a", "y"), ("b", "x")]
    # index 1 bound; 0 and 2 rotate among themselves
    assert conjunctions(["a", "b", "c"], ["x", "y", "z"], [1]) == [("a", "z"), ("b", "y"), ("c", "x")]
    with pytest.raises(ValueError, match="one unbound"):
        conjunctions(["a", "b", "c"], ["x", "y", "z"], [0, 1])
    with pytest.raises(ValueError, match="as many"):
        conjunctions(["a"], ["x", "y"], [])


def test_bound_and_swapped_pairs_have_the_same_region_mean() -> None:
    """What a mean-pooling student sees is identical for both pairings (no noise, same clutter)."""
    space = ConceptSpace(np.random.default_rng(0), ["s0", "s1", "c0", "c1"], dim=8, num_regions=10, noise=0.0)
    bound = space.render(np.random.default_rng(5), [(p, 3) for p in conjunctions(["s0", "s1"], ["c0", "c1"], [0, 1])])
    swapped = space.render(np.random.default_rng(5), [(p, 3) for p in conjunctions(["s0", "s1"], ["c0", "c1"], [])])
    np.testing.assert_allclose(bound.features.mean(0), swapped.features.mean(0), atol=1e-6)
    assert not np.allclose(np.sort(bound.features, 0), np.sort(swapped.features, 0))  # regions differ


def test_split_sizes_eval_ratio() -> None:
    assert split_sizes(None) == (2000, 500)
    assert split_sizes(400, eval_ratio=0.5) == (400, 200)
    assert split_sizes(8, eval_ratio=0.5) == (8, 20)  # the minimum
    with pytest.raises(ConfigError, match="eval_ratio"):
        split_sizes(100, eval_ratio=0)


def test_hateful_memes_image_label_is_the_binding(synth) -> None:
    root, _ = synth
    truth = read_jsonl(root / "datasets/hateful_memes/defaults/extras/msd_ground_truth.jsonl")
    rows = [r for r in truth if r["decides"] == "image"]
    assert rows
    for row in rows:
        pairs = [p.split("+") for p in row["concepts"]["image"]]
        matched = [a.rsplit("_", 1)[1] == b.rsplit("_", 1)[1] for a, b in pairs]
        assert len(pairs) == 2 and all(matched) == bool(row["clean_label"]) and any(matched) == all(matched)
        # the same two shapes and colours whatever the label
        shapes = sorted(a.rsplit("_", 1)[1] for a, _ in pairs)
        colours = sorted(b.rsplit("_", 1)[1] for _, b in pairs)
        assert shapes == colours


def test_binding_options_are_checked(tmp_path) -> None:
    with pytest.raises(ConfigError, match="binding_parts"):
        hateful_memes.generate(tmp_path, size=20, seed=0, binding_parts=1)
    with pytest.raises(ConfigError, match="scene_variants"):
        visual_entailment.generate(tmp_path, size=20, seed=0, scene_variants=0)


def test_hateful_memes_without_binding_is_version_one(tmp_path) -> None:
    hateful_memes.generate(tmp_path, size=40, seed=0, image_binding=False)
    truth = read_jsonl(tmp_path / "datasets/hateful_memes/defaults/extras/msd_ground_truth.jsonl")
    image = [r for r in truth if r["decides"] == "image"]
    assert image and all(r["concepts"]["image"][0].split("_symbol_")[0] in ("hateful", "benign") for r in image)


def _pair_genres(pair: str) -> tuple[str, str]:
    """``poster_shape_sci-fi+poster_colour_drama`` -> ``("sci-fi", "drama")``."""
    shape, colour = pair.split("+")
    return shape.removeprefix("poster_shape_"), colour.removeprefix("poster_colour_")


@pytest.mark.parametrize("decoys", [2, 3])
def test_mmimdb_bound_posters_show_the_image_genres_among_decoys(tmp_path, decoys) -> None:
    # version 3's default is bound posters with 2 decoys
    mmimdb.generate(tmp_path, size=60, seed=0, **({} if decoys == 2 else {"poster_decoys": decoys}))
    truth = read_jsonl(tmp_path / "datasets/mmimdb/defaults/extras/msd_ground_truth.jsonl")
    assert len(truth) > 60
    for row in truth:
        shown = {g for g, e in row["concepts"]["genre_evidence"].items() if e == "image"}
        pairs = [_pair_genres(c) for c in row["concepts"]["image"] if c.startswith("poster_shape_")]
        bound = {a for a, b in pairs if a == b}
        unbound = {a for a, b in pairs if a != b}
        # the image genres drawn bound, the decoys drawn unbound, none of them the movie's
        assert bound == shown and len(unbound) == decoys
        assert not unbound & set(row["clean_label"])
        # every shape and colour once: the parts' mean cannot tell which pairs are bound
        assert sorted(a for a, _ in pairs) == sorted(b for _, b in pairs)
        assert not any(c.startswith("poster_") and c.removeprefix("poster_") in mmimdb.GENRES
                       for c in row["concepts"]["image"])


def test_mmimdb_without_binding_keeps_one_style_region_per_image_genre(tmp_path) -> None:
    mmimdb.generate(tmp_path, size=60, seed=0, poster_binding=False)  # version 2's posters
    truth = read_jsonl(tmp_path / "datasets/mmimdb/defaults/extras/msd_ground_truth.jsonl")
    for row in truth:
        shown = {g for g, e in row["concepts"]["genre_evidence"].items() if e == "image"}
        assert {c.removeprefix("poster_") for c in row["concepts"]["image"]} >= shown
        assert not any("+" in c for c in row["concepts"]["image"])


@pytest.mark.parametrize("decoys", [1, 0, True, 2.5, "2", 11])
def test_mmimdb_poster_decoys_are_checked(tmp_path, decoys) -> None:
    # 11 decoys and 4 shown pairs would not fit in 16 regions beside the tone and another region
    with pytest.raises(ConfigError, match="poster_decoys: an integer from 2 .* to 10 "):
        mmimdb.generate(tmp_path, size=20, seed=0, poster_binding=True, poster_decoys=decoys)


def test_mmimdb_most_decoys_fit_in_the_image(tmp_path) -> None:
    mmimdb.generate(tmp_path, size=40, seed=0, poster_binding=True, poster_decoys=10)
    with pytest.raises(ConfigError, match="to 14 "):  # more regions, more room
        mmimdb.generate(tmp_path, size=40, seed=0, poster_binding=True, poster_decoys=15, num_regions=20)


def test_mmimdb_bound_posters_need_enough_visible_genres_for_the_decoys(tmp_path) -> None:
    few = list(mmimdb.GENRES[:5])
    with pytest.raises(ConfigError, match="poster_binding needs at least 6 visible_genres for 2 decoys"):
        mmimdb.generate(tmp_path, size=20, seed=0, poster_binding=True, visible_genres=few)
    mmimdb.generate(tmp_path, size=20, seed=0, poster_binding=False, visible_genres=few)  # no decoys drawn
    mmimdb.generate(tmp_path / "six", size=20, seed=0, poster_binding=True, visible_genres=list(mmimdb.GENRES[:6]))


def test_visual_entailment_scene_label_is_the_bound_layout(synth) -> None:
    root, _ = synth
    truth = read_jsonl(root / "datasets/visual_entailment/defaults/extras/msd_ground_truth.jsonl")
    rows = [r for r in truth if r["decides"] == "image"]
    assert rows
    for row in rows:  # "crowd_scene_layout_2+crowd_scene_light_2"
        pairs = [p.split("+") for p in row["concepts"]["image"]]
        bound = [a.split("_layout_")[0] for a, b in pairs if a.replace("_layout_", "_light_") == b]
        assert len(pairs) == 3 and len(bound) == 1
        assert visual_entailment.SCENES[bound[0]] == row["clean_label"]
        # one layout of each scene kind, and the lights of exactly those layouts
        assert sorted(a.split("_layout_")[0] for a, _ in pairs) == sorted(visual_entailment.SCENES)
        assert sorted(a.replace("_layout_", "_light_") for a, _ in pairs) == sorted(b for _, b in pairs)


def _entropy(p: list[float]) -> float:
    return -sum(x * math.log2(x) for x in p if x > 0)


def test_vqa2_information_reliance_by_hand() -> None:
    """Colour and prior questions only, one red dog shown (hand-computed entropies)."""
    types = {"color": 0.5, "prior": 0.5, "count": 0.0, "exist": 0.0, "object": 0.0}
    objects = {"dog": ("red", 1)}
    # P(A | image): colour question -> red; prior question -> half a thing's colour (7 things,
    # one each: green blue white yellow red black brown), half yes/no.
    p_image = [0.5 + 0.5 * 0.5 / 7] + [0.5 * 0.5 / 7] * 6 + [0.125, 0.125]
    assert sum(p_image) == pytest.approx(1.0)
    assert vqa2.image_entropy(objects, types, [1, 1]) == pytest.approx(_entropy(p_image))
    # H(A): half uniform over 8 colours, half prior answers; 'pink' only from colour questions
    things = {"green", "blue", "white", "yellow", "red", "black", "brown"}
    p_all = [0.5 / 8 + (0.25 / 7 if c in things else 0.0) for c in vqa2.COLORS] + [0.125, 0.125]
    h_all = vqa2.answer_entropy(types)
    assert h_all == pytest.approx(_entropy(p_all))
    opts = {"question_types": types, "objects_per_image": [1, 1]}
    expected = 0.5 + (3.0 - _entropy(p_image)) / (2 * h_all)  # H(A | colour question) = log2 8
    assert vqa2.information_reliance("color", objects, opts, h_all) == pytest.approx(expected)
    assert vqa2.information_reliance("prior", objects, opts, h_all) == pytest.approx(0.5 - _entropy(p_image) / (2 * h_all))


def test_vqa2_reliance_orders_question_types(synth) -> None:
    """The question's own uncertainty orders the types: object > colour > count > exist > prior."""
    root, _ = synth
    truth = read_jsonl(root / "datasets/vqa2/defaults/extras/msd_ground_truth.jsonl")
    single = {}
    for row in truth:
        if len(row["concepts"]["image"]) == 1:
            single.setdefault(row["type"], set()).add(row["image_reliance"])
            assert row["image_reliance"] + row["text_reliance"] == pytest.approx(1.0, abs=1e-3)
    order = ["object", "color", "count", "exist", "prior"]
    lows = [min(single[t]) for t in order]
    highs = [max(single[t]) for t in order]
    assert all(lo > hi for lo, hi in zip(lows[:-1], highs[1:], strict=True))


def test_vqa2_categorical_reliance_is_version_one(tmp_path) -> None:
    vqa2.generate(tmp_path, size=30, seed=0, reliance="categorical")
    truth = read_jsonl(tmp_path / "datasets/vqa2/defaults/extras/msd_ground_truth.jsonl")
    assert {(r["image_reliance"], r["text_reliance"]) for r in truth} <= {(1.0, 0.0), (0.0, 1.0), (0.5, 0.5)}
    with pytest.raises(ConfigError, match="reliance"):
        vqa2.generate(tmp_path, size=30, seed=0, reliance="vibes")


@pytest.mark.parametrize("name", SYNTHETIC)
def test_both_modalities_dominate_a_fifth_of_test(tmp_path, name) -> None:
    """Criterion (d) at a test size where shares are stable (400 test samples)."""
    from benchmark.data.make import make_dataset

    summary = make_dataset(name, tmp_path, size=800, seed=0)
    truth = read_jsonl(tmp_path / summary["paths"]["ground_truth"])
    diffs = [r["image_reliance"] - r["text_reliance"] for r in truth if r["split"] == TEST_SPLIT[name]]
    counts = Counter("image" if d > 0 else "text" if d < 0 else "even" for d in diffs)
    assert len(diffs) == 400
    assert counts["image"] >= 0.2 * len(diffs) and counts["text"] >= 0.2 * len(diffs)


def test_hateful_memes_mixture_of_version_2_1_and_the_way_back(tmp_path) -> None:
    """40/40/20 since 2.1 (docs/calibration.md, round 8); 40/30/30 gives version 2.0's mixture."""
    from benchmark.data.make import make_dataset

    new = make_dataset("hateful_memes", tmp_path / "new", size=200, seed=0)
    assert new["generator_version"] == "2.1.0"
    assert new["mixture"]["realised"]["train"] == {"both": 0.4, "image": 0.4, "text": 0.2}
    old = make_dataset("hateful_memes", tmp_path / "old", size=200, seed=0, mixture={"both": 0.4, "image": 0.3, "text": 0.3})
    assert old["mixture"]["realised"]["train"] == {"both": 0.4, "image": 0.3, "text": 0.3}
