"""Synthetic SNLI-VE (visual entailment) in MMF's exact layout, dominated by combinations.

Files: ``<data_dir>/datasets/visual_entailment/defaults/annotations/snli_ve_{train,dev,test}
.jsonl`` with ``{"Flikr30kID": "NNNN.jpg", "sentence1", "sentence2", "gold_label", "pairID",
"captionID"}`` (MMF reads only ``Flikr30kID``, ``sentence2`` and ``gold_label``: the image is
the premise); features in ``<data_dir>/datasets/flickr30k/defaults/features/detectron.lmdb``
keyed by the numeric stem; ``visual_entailment/defaults/extras/{vocabs/vocabulary_100k.txt,
msd_ground_truth.jsonl}``; ``.built.json`` markers in both variant folders.

``sentence1`` is, as in the real data, a caption of the image (it names what the image
shows). It is written for format fidelity only: a model that reads it sees image content
through text, which is why MMF and this suite read ``sentence2`` only.

Mechanism. An ordinary image shows one concept from each of ``visible_groups`` (default 2)
of four groups (person, animal, object, place; ``concepts_per_group`` = 3 words each, chosen
per seed; concepts of a group share a feature direction of strength ``group_strength`` =
0.5, as a detector's features cluster by category). Every image gets
``hypotheses_per_image`` (default 3) hypotheses, as SNLI writers wrote three per caption.

* ``both`` (default 40 %): the hypothesis names a concept ``x`` of group ``g``:
  entailment if ``g`` is shown and ``x`` is the shown concept, contradiction if ``g`` is
  shown with another concept, neutral if ``g`` is not shown (cannot be verified). The three
  labels are cycled over an image's hypotheses, so the image alone says nothing, and
  ``(g, x)`` is label-independent, so the hypothesis alone says nothing either.
* ``text`` (default 30 %): hypothesis-only artifacts, as found in SNLI (Gururangan et al., 2018):
  negation (``nobody``, ``no``, ``not``) means contradiction, purpose and superlative
  (``favorite``, ``competition``, ``first``) neutral, generic wording (``something``)
  entailment, whatever the image shows.
* ``image`` (default 30 %): scene-level images with generic hypotheses about people drawn
  independently of the label. A scene is three layouts each lit in one of three lights (one
  region = ``proto(layout) + proto(light)``), one of ``scene_variants`` (3) layouts per
  scene kind; the layout shown in *its own* light decides (empty street: contradiction;
  crowd: entailment; unclear photo: neutral) and the other two swap lights (``conjunctions``
  in common.py). The parts shown do not depend on the label, so the mean over regions (the
  student) says nothing about it (with one variant, as first tried, there were only three
  distinct scenes and a student memorised them in one seed of three); a model that
  reads regions one at a time (the teacher's region transformer) can. With
  ``image_binding: false`` a scene is one concept per label instead (version 1).

``label_noise`` (default 5 %) of gold labels are replaced by another label.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from benchmark.data.synthetic import text as T
from benchmark.data.synthetic.common import (
    DEFAULT_TRAIN,
    IMAGE_DEFAULTS,
    RELIANCE,
    SYNTHETIC_EVAL_RATIO,
    SyntheticGenerator,
    Track,
    allocate,
    check_fraction,
    concept_space,
    conjunctions,
    no_track,
    resolve_mixture,
    shares,
    split_rng,
    split_sizes,
    truth_record,
    unique_ints,
    world_rng,
    write_scene_lmdb,
)
from benchmark.data.synthetic.regions import Scene
from benchmark.data.synthetic.writers import ZOO_VERSIONS, clear_built, write_jsonl, write_lines
from benchmark.errors import ConfigError
from benchmark.registry import registry

NAME = "visual_entailment"
SPLITS = ("train", "dev", "test")
LABELS = ("entailment", "neutral", "contradiction")
GROUPS = ("person", "animal", "object", "place")
SCENES = {"empty_scene": "contradiction", "crowd_scene": "entailment", "unclear_scene": "neutral"}


def layout(name: str, variant: int) -> str:
    """Bound scenes: a layout of scene ``name`` lit in *its own* light decides SCENES[name]."""
    return f"{name}_layout_{variant}"


def light(name: str, variant: int) -> str:
    return f"{name}_light_{variant}"


def _pick(rng: np.random.Generator, pool: tuple[str, ...] | list[str]) -> str:
    return str(pool[int(rng.integers(len(pool)))])


def _concept(group: str, word: str) -> str:
    return f"{group}:{word}"


def _caption(shown: dict[str, str]) -> str:
    subjects = [f"a {shown[g]}" for g in ("person", "animal") if g in shown]
    if subjects:
        caption = " and ".join(subjects) + (f" with a {shown['object']}" if "object" in shown else "")
    else:
        caption = f"a {shown['object']}" if "object" in shown else "a photo"
    return caption + (f" at the {shown['place']}" if "place" in shown else "")


class _World:
    def __init__(self, seed: int, opts: dict[str, Any]) -> None:
        rng = world_rng(seed, NAME)
        size = int(opts["concepts_per_group"])
        # A seed-chosen subset of each group's words (all six when concepts_per_group = 6).
        self.pools = {g: tuple(sorted(rng.choice(T.POOLS[f"ve_{g}"], size, replace=False))) for g in GROUPS}
        variants = range(int(opts["scene_variants"]))
        bound = [f(n, v) for n in SCENES for v in variants for f in (layout, light)]
        concepts = [_concept(g, w) for g in GROUPS for w in self.pools[g]] + list(SCENES) + bound
        self.space = concept_space(rng, concepts, opts)
        # Concepts of one group (animals, places, ...) look alike: a shared feature direction.
        if opts["group_strength"] > 0:
            for group in GROUPS:
                members = {_concept(group, w): 1 for w in self.pools[group]}
                self.space.share_attribute(rng, members, float(opts["group_strength"]))


def _ordinary_image(
    world: _World, rng: np.random.Generator, kinds: list[str], artifact_labels: Iterator[str], opts: dict[str, Any]
) -> dict:
    groups = [GROUPS[i] for i in sorted(rng.choice(len(GROUPS), opts["visible_groups"], replace=False))]
    shown = {g: _pick(rng, world.pools[g]) for g in groups}
    scene = world.space.render(rng, [((_concept(g, w),), world.space.regions(rng)) for g, w in shown.items()])
    hidden = [g for g in GROUPS if g not in shown]
    cycle = [LABELS[i] for i in rng.permutation(len(LABELS))]
    hyps = []
    for kind in kinds:
        if kind == "both":
            label = cycle[sum(h["kind"] == "both" for h in hyps) % len(LABELS)]
            group = _pick(rng, hidden if label == "neutral" else groups)
            if label == "contradiction":
                word = _pick(rng, [w for w in world.pools[group] if w != shown[group]])
            else:
                word = shown[group] if label == "entailment" else _pick(rng, world.pools[group])
            text = T.render(_pick(rng, T.TEMPLATES[f"ve_{group}"]), x=word)
            words = [word]
        else:  # hypothesis-only artifact
            label = next(artifact_labels)
            group = _pick(rng, GROUPS)
            word = _pick(rng, world.pools[group])
            template = _pick(rng, T.TEMPLATES[f"ve_{label}"])
            text = T.render(template, x=word)
            words = [w for w in T.words_of(template) if w in {"nobody", "no", "not", "favorite", "competition", "first", "something"}]
            words += [word] if "{x}" in template else []
        hyps.append({"kind": kind, "label": label, "text": text, "words": words})
    image_concepts = [_concept(g, w) for g, w in shown.items()]
    return {"scene": scene, "caption": _caption(shown), "hyps": hyps, "image_concepts": image_concepts}


def _scene_image(world: _World, rng: np.random.Generator, name: str, n: int, binding: bool, variants: int) -> dict:
    if binding:  # one variant of each scene's layout and light; only the label's pair is bound
        chosen = {s: int(rng.integers(variants)) for s in SCENES}
        layouts = [layout(s, v) for s, v in chosen.items()]
        lights = [light(s, v) for s, v in chosen.items()]
        pairs = conjunctions(layouts, lights, [list(SCENES).index(name)])
        regions = world.space.regions(rng)  # the same for every pair: the parts' mean is label-free
        scene = world.space.render(rng, [(pair, regions) for pair in pairs])
        image_concepts = [f"{a}+{b}" for a, b in pairs]
    else:
        scene = world.space.render(rng, [((name,), world.space.regions(rng))])
        image_concepts = [name]
    caption = T.TEMPLATES["ve_scene_caption"][list(SCENES).index(name)]
    hyps = [
        {"kind": "image", "label": SCENES[name], "text": T.render(_pick(rng, T.TEMPLATES["ve_generic"])), "words": []}
        for _ in range(n)
    ]
    return {"scene": scene, "caption": caption, "hyps": hyps, "image_concepts": image_concepts}


def _images(world: _World, rng: np.random.Generator, n: int, opts: dict[str, Any]) -> list[dict]:
    per = opts["hypotheses_per_image"]
    kinds = allocate(rng, n, opts["mixture"])
    n_image = kinds.count("image")
    # Labels of image- and text-decided samples are allocated exactly, so they stay balanced.
    uniform = {name: 1.0 for name in SCENES}
    names = allocate(rng, math.ceil(n_image / per), uniform)
    binding = bool(opts["image_binding"])
    variants = int(opts["scene_variants"])
    images = [_scene_image(world, rng, names[k // per], min(per, n_image - k), binding, variants)
              for k in range(0, n_image, per)]
    artifact_labels = iter(allocate(rng, kinds.count("text"), {label: 1.0 for label in LABELS}))
    rest = [k for k in kinds if k != "image"]
    images += [_ordinary_image(world, rng, rest[k : k + per], artifact_labels, opts) for k in range(0, len(rest), per)]
    return [images[i] for i in rng.permutation(len(images))]


@registry.register_generator(NAME)
class VisualEntailmentGenerator(SyntheticGenerator):
    """Registered as generator ``visual_entailment``; see the module docstring."""

    name = NAME
    version = "2.0.0"
    roots = ("visual_entailment/defaults", "flickr30k/defaults")
    defaults: dict[str, Any] = {
        "mixture": {"both": 0.4, "text": 0.3, "image": 0.3},
        "image_binding": True,
        "scene_variants": 3,
        "eval_ratio": SYNTHETIC_EVAL_RATIO,
        "hypotheses_per_image": 3,
        "visible_groups": 2,
        "concepts_per_group": 3,
        "group_strength": 0.5,
        "label_noise": 0.05,
        **IMAGE_DEFAULTS,
    }

    @classmethod
    def generate(
        cls, data_dir: Path | str, size: int | None = None, seed: int = 0, track: Track = no_track, **options: Any
    ) -> dict[str, Any]:
        data_dir = Path(data_dir)
        opts = cls.resolve_options(options)
        opts["mixture"] = resolve_mixture(cls.defaults["mixture"], opts["mixture"], "mixture")
        opts["label_noise"] = check_fraction(opts["label_noise"], "label_noise")
        if int(opts["hypotheses_per_image"]) < 1 or not 1 <= int(opts["visible_groups"]) < len(GROUPS):
            raise ConfigError("hypotheses_per_image must be >= 1 and visible_groups in 1..3")
        if int(opts["scene_variants"]) < 1:
            raise ConfigError("scene_variants must be >= 1")
        if not 2 <= int(opts["concepts_per_group"]) <= min(len(T.POOLS[f"ve_{g}"]) for g in GROUPS):
            raise ConfigError("concepts_per_group must be in 2..6")
        opts["hypotheses_per_image"], opts["visible_groups"] = int(opts["hypotheses_per_image"]), int(opts["visible_groups"])
        T.verify_vocabulary()
        root, flickr = (data_dir / "datasets" / r for r in cls.roots)
        clear_built(root)
        clear_built(flickr)
        world = _World(seed, opts)
        n_train, n_eval = split_sizes(size, DEFAULT_TRAIN, opts["eval_ratio"])
        counts = {s: (n_train if s == "train" else n_eval) for s in SPLITS}
        max_images = sum(math.ceil(c / opts["hypotheses_per_image"]) + 2 for c in counts.values())
        flickr_ids = iter(unique_ints(split_rng(seed, NAME, "ids"), max_images, 10**6, 10**10))
        scenes: list[tuple[str, Scene, int]] = []
        truth: list[dict[str, Any]] = []
        paths: list[Path] = []
        realised, label_shares, noisy, n_images = {}, {}, {}, {}
        for split in SPLITS:
            rng = split_rng(seed, NAME, split)
            records = []
            images = _images(world, rng, counts[split], opts)
            n_images[split] = len(images)
            for image in images:
                fid = next(flickr_ids)
                image_name = f"{fid}.jpg"
                scenes.append((str(fid), image["scene"], fid))
                caption_id = f"{image_name}#{int(rng.integers(5))}"
                for j, hyp in enumerate(image["hyps"], start=1):
                    clean = hyp["label"]
                    label = _pick(rng, [x for x in LABELS if x != clean]) if rng.random() < opts["label_noise"] else clean
                    pair_id = f"{caption_id}r{j}{label[0]}"
                    index = len(records)
                    records.append(
                        {"Flikr30kID": image_name, "sentence1": image["caption"], "sentence2": hyp["text"],
                         "gold_label": label, "pairID": pair_id, "captionID": caption_id}
                    )
                    image_rel, text_rel = RELIANCE[hyp["kind"]]
                    truth.append(
                        truth_record(
                            file=f"annotations/snli_ve_{split}.jsonl", split=split, index=index, ident=pair_id,
                            decides=hyp["kind"], image_reliance=image_rel, text_reliance=text_rel,
                            sample_type={"both": "compare", "text": "hypothesis_artifact", "image": "scene"}[hyp["kind"]],
                            concepts={"image": image["image_concepts"], "text": hyp["words"]},
                            label=label, clean_label=clean, Flikr30kID=image_name,
                        )
                    )
            paths.append(write_jsonl(root / "annotations" / f"snli_ve_{split}.jsonl", records))
            split_truth = truth[-len(records):]
            realised[split] = shares(t["decides"] for t in split_truth)
            label_shares[split] = shares(r["gold_label"] for r in records)
            noisy[split] = round(float(np.mean([t["label_noise"] for t in split_truth])), 4)

        features = write_scene_lmdb(flickr / "features" / "detectron.lmdb", scenes, world.space, track, "flickr30k features")
        vocab = write_lines(root / "extras" / "vocabs" / "vocabulary_100k.txt", T.template_vocabulary())
        stats = {
            "splits": counts,
            "images": n_images,
            "mixture": {"target": opts["mixture"], "realised": realised},
            "labels": label_shares,
            "label_noise_rate": noisy,
        }
        files = {"annotations": paths, "features": [features], "extras": [vocab]}
        return cls.finish(data_dir, root, seed=seed, size=size, options=opts, stats=stats, truth=truth, files=files,
                          built=[(flickr, ZOO_VERSIONS["flickr30k"]), (root, ZOO_VERSIONS[NAME])])


generate = VisualEntailmentGenerator.generate
