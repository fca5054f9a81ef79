"""Synthetic VQA v2 in MMF's exact layout: answers from question type plus image content.

Files (``<data_dir>/datasets/``): ``vqa2/defaults/annotations/imdb_{train2014,val2014,
test2015}.npy`` (object arrays, element 0 a header, records as docs/mmf_formats.md §4; test2015
has no answers, as in MMF); ``coco/defaults/features/{trainval2014,test2015}.lmdb`` keyed by
``str(image_id)`` (MMF's reader derives it from ``COCO_train2014_000000458752``);
``vqa2/defaults/extras/vocabs/{answers_vqa.txt,vocabulary_100k.txt}``;
``vqa2/defaults/extras/msd_ground_truth.jsonl`` (answers for every split, test included);
``.built.json`` markers in ``vqa2/defaults`` and ``coco/defaults``.

Mechanism. An image shows ``objects_per_image`` (default 1-2) objects of 12 kinds, each with
a colour (8) and a count (1-4 regions, each region ``proto(object) + proto(colour) +
noise``); with two objects, "what color is the dog?" needs the colour bound to the dog. Each image gets
``questions_per_image`` (default 3) questions whose types follow ``question_types``:

* ``both`` (default 70 %): ``color`` (30 %: "what color is the dog?"), ``count`` (20 %:
  "how many dogs are there?"), ``exist`` (20 %: "is there a cat in the picture?", yes for
  half): the question picks the object, the image gives the attribute;
* ``text`` (15 %): ``prior`` questions about things never shown whose answer is world
  knowledge, as VQA's language priors ("what color is the grass?" -> green; "is the snow
  white?" -> yes / "is the snow red?" -> no, half each);
* ``image`` (15 %): ``object`` questions with a fixed wording ("what is in the picture?")
  asked about single-object images: the answer is whatever the image shows.

Every question has 10 annotator answers: each annotator gives the true answer with
probability ``1 - annotator_error`` (default 0.9) and otherwise a plausible wrong answer of
the same type, so targets are soft VQA scores; ``label_noise`` (default 2 %) of questions
have a wrong consensus answer.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from benchmark.data.synthetic import text as T
from benchmark.data.synthetic.common import (
    IMAGE_DEFAULTS,
    RELIANCE,
    SyntheticGenerator,
    Track,
    allocate,
    check_fraction,
    concept_space,
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
from benchmark.data.synthetic.writers import (
    ZOO_VERSIONS,
    clear_built,
    write_imdb_npy,
    write_lines,
)
from benchmark.errors import ConfigError
from benchmark.registry import registry

NAME = "vqa2"
SPLITS = {"train2014": "train2014", "val2014": "val2014", "test2015": "test2015"}  # split -> COCO image set
FEATURES = {"train2014": "trainval2014.lmdb", "val2014": "trainval2014.lmdb", "test2015": "test2015.lmdb"}
DECIDES = {"color": "both", "count": "both", "exist": "both", "prior": "text", "object": "image"}
OBJECTS, COLORS, COUNTS = T.POOLS["vqa_object"], T.POOLS["vqa_color"], T.POOLS["vqa_count"]
ANSWERS: tuple[str, ...] = ("yes", "no", *COUNTS, *COLORS, *OBJECTS)
ALTERNATIVES = {"yesno": ("yes", "no"), "count": COUNTS, "color": COLORS, "object": OBJECTS}


def _pick(rng: np.random.Generator, pool: tuple[str, ...] | list[str]) -> str:
    return str(pool[int(rng.integers(len(pool)))])


def _answer_type(answer: str) -> str:
    return next(kind for kind, pool in ALTERNATIVES.items() if answer in pool)


class _World:
    def __init__(self, seed: int, opts: dict[str, Any]) -> None:
        rng = world_rng(seed, NAME)
        self.space = concept_space(rng, [*OBJECTS, *COLORS], opts)


def _question(rng: np.random.Generator, qtype: str, objects: dict[str, tuple[str, int]]) -> tuple[str, str, list[str]]:
    """``(question, answer, decisive text words)`` for one question about an image's ``objects``."""
    if qtype == "object":
        (obj,) = objects
        return T.render(_pick(rng, T.TEMPLATES["vqa_object"])), obj, []
    if qtype == "prior":
        thing = _pick(rng, tuple(T.THING_COLORS))
        if rng.random() < 0.5:
            return T.render(T.TEMPLATES["vqa_prior_color"][0], thing=thing), T.THING_COLORS[thing], [thing]
        truth = rng.random() < 0.5
        color = T.THING_COLORS[thing] if truth else _pick(rng, [c for c in COLORS if c != T.THING_COLORS[thing]])
        return T.render(T.TEMPLATES["vqa_prior_yesno"][0], thing=thing, color=color), "yes" if truth else "no", [thing, color]
    if qtype == "exist":
        present = rng.random() < 0.5
        obj = _pick(rng, list(objects)) if present else _pick(rng, [o for o in OBJECTS if o not in objects])
        return T.render(_pick(rng, T.TEMPLATES["vqa_exist"]), obj=obj), "yes" if present else "no", [obj]
    obj = _pick(rng, list(objects))
    color, count = objects[obj]
    if qtype == "color":
        return T.render(_pick(rng, T.TEMPLATES["vqa_color"]), obj=obj), color, [obj]
    return T.render(_pick(rng, T.TEMPLATES["vqa_count"]), objs=T.PLURALS[obj]), str(count), [obj]


def _image(world: _World, rng: np.random.Generator, qtypes: list[str], opts: dict[str, Any]) -> dict[str, Any]:
    low, high = opts["objects_per_image"]
    n_objects = 1 if "object" in qtypes else int(rng.integers(low, high + 1))
    names = [OBJECTS[i] for i in rng.choice(len(OBJECTS), n_objects, replace=False)]
    objects = {o: (_pick(rng, COLORS), int(rng.integers(1, len(COUNTS) + 1))) for o in names}
    scene = world.space.render(rng, [((o, c), k) for o, (c, k) in objects.items()])
    questions = [(qtype, *_question(rng, qtype, objects)) for qtype in qtypes]
    return {"scene": scene, "objects": objects, "questions": questions}


def _annotators(rng: np.random.Generator, answer: str, error: float) -> list[str]:
    pool = [a for a in ALTERNATIVES[_answer_type(answer)] if a != answer]
    return [answer if rng.random() >= error else _pick(rng, pool) for _ in range(10)]


@registry.register_generator(NAME)
class VQA2Generator(SyntheticGenerator):
    """Registered as generator ``vqa2``; see the module docstring for the mechanism."""

    name = NAME
    version = "1.1.0"
    roots = ("vqa2/defaults", "coco/defaults")
    defaults: dict[str, Any] = {
        "question_types": {"color": 0.3, "count": 0.2, "exist": 0.2, "prior": 0.15, "object": 0.15},
        "questions_per_image": 3,
        "objects_per_image": [1, 2],
        "annotator_error": 0.1,
        "label_noise": 0.02,
        **IMAGE_DEFAULTS,
    }

    @classmethod
    def generate(
        cls, data_dir: Path | str, size: int | None = None, seed: int = 0, track: Track = no_track, **options: Any
    ) -> dict[str, Any]:
        data_dir = Path(data_dir)
        opts = cls.resolve_options(options)
        opts["question_types"] = resolve_mixture(cls.defaults["question_types"], opts["question_types"], "question_types")
        opts["annotator_error"] = check_fraction(opts["annotator_error"], "annotator_error")
        opts["label_noise"] = check_fraction(opts["label_noise"], "label_noise")
        opts["questions_per_image"] = max(1, int(opts["questions_per_image"]))
        low, high = (int(x) for x in opts["objects_per_image"])
        if not 1 <= low <= high <= len(OBJECTS) - 1 or high * len(COUNTS) > int(opts["num_regions"]):
            raise ConfigError(
                f"objects_per_image {opts['objects_per_image']}: need 1 <= min <= max < {len(OBJECTS)} and "
                f"max * {len(COUNTS)} <= num_regions, so that every count fits in the image"
            )
        opts["objects_per_image"] = [low, high]
        T.verify_vocabulary()
        root, coco = (data_dir / "datasets" / r for r in cls.roots)
        clear_built(root)
        clear_built(coco)
        world = _World(seed, opts)
        n_train, n_eval = split_sizes(size)
        counts = {s: (n_train if s == "train2014" else n_eval) for s in SPLITS}
        per = opts["questions_per_image"]
        image_ids = iter(unique_ints(split_rng(seed, NAME, "ids"), sum(math.ceil(c / per) for c in counts.values()), 1, 582000))
        scenes: dict[str, list[tuple[str, Scene, int]]] = {name: [] for name in set(FEATURES.values())}
        truth: list[dict[str, Any]] = []
        paths: list[Path] = []
        realised, type_shares, noisy = {}, {}, {}
        for split, coco_set in SPLITS.items():
            rng = split_rng(seed, NAME, split)
            qtypes = allocate(rng, counts[split], opts["question_types"])
            records: list[dict[str, Any]] = []
            for start in range(0, len(qtypes), per):
                image = _image(world, rng, qtypes[start : start + per], opts)
                image_id = next(image_ids)
                image_name = f"COCO_{coco_set}_{image_id:012d}"
                scenes[FEATURES[split]].append((str(image_id), image["scene"], image_id))
                for k, (qtype, question, clean, words) in enumerate(image["questions"]):
                    answer = clean
                    if rng.random() < opts["label_noise"]:
                        answer = _pick(rng, [a for a in ALTERNATIVES[_answer_type(clean)] if a != clean])
                    answers = _annotators(rng, answer, opts["annotator_error"])
                    record = {
                        "image_name": image_name, "image_id": image_id, "question_id": image_id * 1000 + k,
                        "feature_path": f"{image_name}.npy", "question_str": question,
                        "question_tokens": T.mmf_tokenize(question),
                    }
                    if split != "test2015":
                        record.update(all_answers=list(answers), answers=list(answers))
                    index = len(records)
                    records.append(record)
                    image_rel, text_rel = RELIANCE[DECIDES[qtype]]
                    truth.append(
                        truth_record(
                            file=f"annotations/imdb_{split}.npy", split=split, index=index,
                            ident=record["question_id"], decides=DECIDES[qtype], image_reliance=image_rel,
                            text_reliance=text_rel, sample_type=qtype,
                            concepts={
                                "image": [f"{c} {o} x{n}" for o, (c, n) in image["objects"].items()],
                                "text": words,
                            },
                            label=answer, clean_label=clean, question_id=record["question_id"],
                            answers=list(answers),
                        )
                    )
            header = {"version": 1, "dataset_type": split, "has_answer": split != "test2015"}
            paths.append(write_imdb_npy(root / "annotations" / f"imdb_{split}.npy", header, records))
            split_truth = truth[-len(records):]
            realised[split] = shares(t["decides"] for t in split_truth)
            type_shares[split] = shares(t["type"] for t in split_truth)
            noisy[split] = round(float(np.mean([t["label_noise"] for t in split_truth])), 4)

        features = [
            write_scene_lmdb(coco / "features" / name, items, world.space, track, f"coco {name}") for name, items in sorted(scenes.items())
        ]
        extras = [
            write_lines(root / "extras" / "vocabs" / "answers_vqa.txt", ANSWERS),
            write_lines(root / "extras" / "vocabs" / "vocabulary_100k.txt", T.template_vocabulary()),
        ]
        stats = {
            "splits": counts,
            "mixture": {
                "target": {e: sum(v for q, v in opts["question_types"].items() if DECIDES[q] == e) for e in RELIANCE},
                "question_types": opts["question_types"],
                "realised": realised,
                "realised_question_types": type_shares,
            },
            "num_answers": len(ANSWERS),
            "label_noise_rate": noisy,
        }
        files = {"annotations": paths, "features": features, "extras": extras}
        return cls.finish(data_dir, root, seed=seed, size=size, options=opts, stats=stats, truth=truth, files=files,
                          built=[(coco, ZOO_VERSIONS["coco"]), (root, ZOO_VERSIONS[NAME])])


generate = VQA2Generator.generate
