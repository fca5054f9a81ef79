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

* ``both`` (default 50 %): ``color`` (20 %: "what color is the dog?"), ``count`` (15 %:
  "how many dogs are there?"), ``exist`` (15 %: "is there a cat in the picture?", yes for
  half): the question picks the object, the image gives the attribute;
* ``text`` (25 %): ``prior`` questions about things never shown whose answer is world
  knowledge, as VQA's language priors ("what color is the grass?" -> green; "is the snow
  white?" -> yes / "is the snow red?" -> no, half each);
* ``image`` (25 %): ``object`` questions with a fixed wording ("what is in the picture?")
  asked about single-object images: the answer is whatever the image shows.

Ground-truth reliance (option ``reliance``, [rule]). ``information`` (default, version 2):
the question still tells *which kind* of answer is wanted, so a categorical "image decides"
overstated the image for ``object`` questions and said nothing about how much each modality
resolves (version 1's truth, ``categorical``, gave the teacher's saliency a Spearman of
0.12). The reliance is the two-player Shapley share of the answer's information:
``image_reliance = 1/2 + (H(A | text) - H(A | image)) / (2 H(A))`` (clipped to [0, 1]),
with ``H(A | text)`` the entropy of the answer given the question alone (object 12 answers,
colour 8, count 4, exist 2, prior 1), ``H(A | image)`` that of the answer given the image
alone (over the question types and objects that could be asked about it, each question
taken independently) and ``H(A)`` the population's answer entropy, all in bits and from
the generator's own distributions (``information_reliance``).

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
    DEFAULT_TRAIN,
    IMAGE_DEFAULTS,
    RELIANCE,
    SYNTHETIC_EVAL_RATIO,
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
RELIANCE_RULES = ("information", "categorical")


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


def _entropy(dist: dict[str, float]) -> float:
    p = np.asarray([v for v in dist.values() if v > 0], dtype=float)
    p = p / p.sum()
    return float(-(p * np.log2(p)).sum())


def _mix(parts: list[tuple[float, dict[str, float]]]) -> dict[str, float]:
    out: dict[str, float] = {}
    for weight, dist in parts:
        for answer, p in dist.items():
            out[answer] = out.get(answer, 0.0) + weight * p
    return out


def _uniform(answers: list[str] | tuple[str, ...]) -> dict[str, float]:
    return _mix([(1.0 / len(answers), {a: 1.0}) for a in answers])


def _prior_answers() -> dict[str, float]:
    """P(answer | prior question), marginal over things: half colour questions, half yes/no."""
    return _mix([(0.5, _uniform(list(T.THING_COLORS.values()))), (0.5, _uniform(["yes", "no"]))])


TEXT_ENTROPY = {"object": math.log2(len(OBJECTS)), "color": math.log2(len(COLORS)), "count": math.log2(len(COUNTS)),
                "exist": 1.0, "prior": 0.0}
"""H(A | question) in bits: the question fixes the answer type (and for prior questions the answer)."""


def answer_entropy(question_types: dict[str, float]) -> float:
    """H(A) in bits of the population's clean answers under the question-type mixture."""
    given_type = {"object": _uniform(OBJECTS), "color": _uniform(COLORS), "count": _uniform(COUNTS),
                  "exist": _uniform(["yes", "no"]), "prior": _prior_answers()}
    return _entropy(_mix([(question_types[q], given_type[q]) for q in given_type]))


def image_entropy(objects: dict[str, tuple[str, int]], question_types: dict[str, float], objects_per_image: list[int]) -> float:
    """H(A | image) in bits: the answer to a question drawn for this image, not knowing which.

    ``P(type | image)`` ∝ ``question_types[type] * P(n objects | type)`` (object questions
    are asked of single-object images only, the others of 1..max objects uniformly); the
    asked object is uniform over those shown; each question is taken on its own.
    """
    low, high = objects_per_image
    n = len(objects)
    span = high - low + 1
    p_n = {q: (1.0 if n == 1 else 0.0) if q == "object" else (1.0 / span if low <= n <= high else 0.0)
           for q in question_types}
    shown = list(objects)
    given_type = {
        "object": _uniform(shown),
        "color": _mix([(1.0 / n, {objects[o][0]: 1.0}) for o in shown]),
        "count": _mix([(1.0 / n, {str(objects[o][1]): 1.0}) for o in shown]),
        "exist": _uniform(["yes", "no"]),
        "prior": _prior_answers(),
    }
    weights = {q: question_types[q] * p_n[q] for q in question_types}
    total = sum(weights.values())
    return _entropy(_mix([(w / total, given_type[q]) for q, w in weights.items() if w > 0]))


def information_reliance(qtype: str, objects: dict[str, tuple[str, int]], opts: dict[str, Any], h_answer: float) -> float:
    """``image_reliance`` = 1/2 + (H(A|text) - H(A|image)) / (2 H(A)), clipped to [0, 1] (module docstring)."""
    h_image = image_entropy(objects, opts["question_types"], opts["objects_per_image"])
    return float(min(1.0, max(0.0, 0.5 + (TEXT_ENTROPY[qtype] - h_image) / (2.0 * h_answer))))


def _annotators(rng: np.random.Generator, answer: str, error: float) -> list[str]:
    pool = [a for a in ALTERNATIVES[_answer_type(answer)] if a != answer]
    return [answer if rng.random() >= error else _pick(rng, pool) for _ in range(10)]


@registry.register_generator(NAME)
class VQA2Generator(SyntheticGenerator):
    """Registered as generator ``vqa2``; see the module docstring for the mechanism."""

    name = NAME
    version = "2.0.0"
    roots = ("vqa2/defaults", "coco/defaults")
    defaults: dict[str, Any] = {
        "question_types": {"color": 0.2, "count": 0.15, "exist": 0.15, "prior": 0.25, "object": 0.25},
        "reliance": "information",
        "eval_ratio": SYNTHETIC_EVAL_RATIO,
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
        if opts["reliance"] not in RELIANCE_RULES:
            raise ConfigError(f"reliance must be one of {RELIANCE_RULES}, got {opts['reliance']!r}")
        T.verify_vocabulary()
        root, coco = (data_dir / "datasets" / r for r in cls.roots)
        clear_built(root)
        clear_built(coco)
        world = _World(seed, opts)
        h_answer = answer_entropy(opts["question_types"])
        n_train, n_eval = split_sizes(size, DEFAULT_TRAIN, opts["eval_ratio"])
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
                    if opts["reliance"] == "information":
                        image_rel = information_reliance(qtype, image["objects"], opts, h_answer)
                        text_rel = 1.0 - image_rel
                    else:
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
