"""Synthetic Hateful Memes in MMF's exact layout, dominated by benign-confounder cases.

Files (``<data_dir>/datasets/hateful_memes/defaults/``): ``annotations/{train,dev_seen,
dev_unseen,test_seen,test_unseen}.jsonl`` with ``{"id", "img": "img/<id>.png", "label",
"text"}``; ``features/detectron.lmdb`` keyed by ``str(id)``; ``extras/vocabs/
vocabulary_100k.txt`` (the template vocabulary, for MMF's default ``vocab`` processor);
``extras/msd_ground_truth.jsonl`` (never read by training); ``.built.json`` markers. No
images are written: the suite reads region features, and fake pixels would mislead.

Mechanism (the label ``hateful`` of each meme is decided by):

* ``both`` (default 40 %): benign confounders, as in the real challenge set, where the
  same caption is mean or harmless depending on the picture ("look how many people love
  you" over a crowd or over an empty desert). Each of 8 "ambiguous" image concepts has a
  hidden binary visual attribute ``a`` (1 for four of them; with ``attribute_strength`` >
  0, default 1.0 since version 2, the four share a feature direction, as a coarse visual
  property would: at 0 the calibrated teacher did not learn these memes at all, its
  saliency was ~0 for the image on them), and the
  caption is either praising (``b = 1``: "look how many people love my {t}") or plain
  (``b = 0``: "this is what my {t} looks like"), ``t`` a filler noun. The meme is hateful
  iff ``a != b`` (the picture contradicts the caption). Given only the image, or only the
  text, P(hateful) = 1/2 exactly. Samples come in contrastive pairs that share the *same*
  image (identical features under two ids) or the *same* caption, with opposite labels.
* ``image`` (default 40 % since version 2.1, 30 % before): the image shows two symbols, each a shape drawn in a colour
  (one region = ``proto(shape) + proto(colour)``). A hateful symbol is shape ``k`` in colour
  ``k`` (``binding_parts`` = 8 such pairs; with 4 the student, whose per-region LayerNorm
  is a weak non-linearity, learned most of them too, docs/calibration.md); a hateful meme shows shapes ``i, j`` in their own colours, a benign
  one shows the same shapes in each other's colours (``conjunctions`` in common.py). The
  parts are the same either way, so only a model that reads regions one at a time (the
  teacher's region transformer) can tell them apart; the mean over regions (the student)
  cannot. With ``image_binding: false`` the symbol is a single concept instead (version 1).
  The text is a neutral caption drawn independently of the label.
* ``text`` (default 20 % since version 2.1, 30 % before): the text insults or praises a group (``"those {group} are so
  {adj}"``, the adjective decides); the image is an everyday scene drawn independently of
  the label.

For ``image`` and ``text`` samples P(hateful) = ``positive_rate`` (default 0.4, close to the
real train split's 36 %); ``label_noise`` (default 5 %) of labels are flipped after the fact.

Why 40/40/20 (version 2.1): the bound symbols are what the student cannot read, and AUROC
hides its failure on them while they are few; with 30 % of them the label-only student came
within 2.5 points of the teacher (criterion (a) of docs/calibration.md failed). The extra
bound-symbol memes are taken from the text memes, so the 40 % of combination memes (an XOR
the student learns late) stay. ``mixture={"both": 0.4, "image": 0.3, "text": 0.3}`` gives
version 2.0's data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
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

NAME = "hateful_memes"
SPLITS = ("train", "dev_seen", "dev_unseen", "test_seen", "test_unseen")
N_DECISIVE = 4  # hateful and benign symbol concepts, each
N_NEUTRAL = 8
N_PAIR = 8


@dataclass
class _Meme:
    scene: Scene
    text: str
    label: int
    kind: str  # image | text | both
    concepts: dict[str, list[str]]
    extra: dict[str, Any] = field(default_factory=dict)


class _World:
    """The rules of one seed: concept prototypes and the images' hidden attribute."""

    def __init__(self, seed: int, opts: dict[str, Any]) -> None:
        rng = world_rng(seed, NAME)
        self.hateful = [f"hateful_symbol_{k}" for k in range(N_DECISIVE)]
        self.benign = [f"benign_symbol_{k}" for k in range(N_DECISIVE)]
        self.neutral = [f"everyday_scene_{k}" for k in range(N_NEUTRAL)]
        self.ambiguous = [f"ambiguous_image_{k}" for k in range(N_PAIR)]
        # Parts of the bound symbols: hateful iff shape k is drawn in colour k.
        parts = int(opts["binding_parts"])
        self.shapes = [f"symbol_shape_{k}" for k in range(parts)]
        self.colours = [f"symbol_colour_{k}" for k in range(parts)]
        names = self.hateful + self.benign + self.neutral + self.ambiguous + self.shapes + self.colours
        self.space = concept_space(rng, names, opts)
        # Hidden binary attribute a of the ambiguous images, 1 for exactly half of them, so
        # P(hateful | image) = P(hateful | caption) = 1/2 for the combination memes.
        self.image_attr = dict(zip(self.ambiguous, (rng.permutation(N_PAIR) < N_PAIR // 2).tolist(), strict=True))
        if opts["attribute_strength"] > 0:
            self.space.share_attribute(rng, self.image_attr, float(opts["attribute_strength"]))

    def scene(self, rng: np.random.Generator, concept: str) -> Scene:
        return self.space.render(rng, [((concept,), self.space.regions(rng))])

    def label(self, concept: str, praise: int) -> int:
        """Hateful iff the picture contradicts the caption: ``a(image) != b(caption)``."""
        return int(self.image_attr[concept] != praise)


def _pick(rng: np.random.Generator, pool: list[str] | tuple[str, ...]) -> str:
    return str(pool[int(rng.integers(len(pool)))])


def _pair_text(rng: np.random.Generator, praise: int, word: str) -> str:
    return T.render(_pick(rng, T.TEMPLATES["hm_praise" if praise else "hm_plain"]), pair=word)


def _image_decided(world: _World, rng: np.random.Generator, positive_rate: float, binding: bool) -> _Meme:
    label = int(rng.random() < positive_rate)
    caption = T.render(
        _pick(rng, T.TEMPLATES["hm_neutral"]), verb=_pick(rng, T.POOLS["hm_verb"]), time=_pick(rng, T.POOLS["hm_time"])
    )
    if not binding:
        concept = _pick(rng, world.hateful if label else world.benign)
        return _Meme(world.scene(rng, concept), caption, label, "image", {"image": [concept], "text": []})
    i, j = (int(k) for k in rng.choice(len(world.shapes), 2, replace=False))
    pairs = conjunctions([world.shapes[i], world.shapes[j]], [world.colours[i], world.colours[j]], [0, 1] if label else [])
    regions = world.space.regions(rng)  # the same for both symbols: the parts' mean cannot tell the pairings apart
    scene = world.space.render(rng, [(pair, regions) for pair in pairs])
    return _Meme(scene, caption, label, "image", {"image": [f"{a}+{b}" for a, b in pairs], "text": []})


def _text_decided(world: _World, rng: np.random.Generator, positive_rate: float) -> _Meme:
    label = int(rng.random() < positive_rate)
    adj = _pick(rng, T.POOLS["hm_negative"] if label else T.POOLS["hm_positive"])
    text = T.render(_pick(rng, T.TEMPLATES["hm_text"]), group=_pick(rng, T.POOLS["hm_group"]), adj=adj)
    concept = _pick(rng, world.neutral)
    return _Meme(world.scene(rng, concept), text, label, "text", {"image": [concept], "text": [adj]})


def _combo(world: _World, scene: Scene, concept: str, caption: str, praise: int, word: str, extra: dict) -> _Meme:
    concepts = {"image": [concept], "text": ["praise" if praise else "plain", word]}
    return _Meme(scene, caption, world.label(concept, praise), "both", concepts, extra)


def _confounders(world: _World, rng: np.random.Generator, n: int, split: str) -> list[_Meme]:
    """``n`` combination memes, in same-image or same-text pairs with opposite labels."""
    memes: list[_Meme] = []
    group = 0
    while len(memes) < n:
        word = _pick(rng, T.POOLS["hm_pair"])
        if n - len(memes) == 1:  # odd count: one unpaired meme
            concept, praise = _pick(rng, world.ambiguous), int(rng.integers(2))
            caption = _pair_text(rng, praise, word)
            memes.append(_combo(world, world.scene(rng, concept), concept, caption, praise, word, {}))
            break
        tag = f"{split}/{group}"
        if rng.random() < 0.5:  # same image, a praising and a plain caption
            concept = _pick(rng, world.ambiguous)
            scene = world.scene(rng, concept)
            extra = {"confounder_group": tag, "confounder_kind": "same_image"}
            for praise in (1, 0):
                word = _pick(rng, T.POOLS["hm_pair"])
                memes.append(_combo(world, scene, concept, _pair_text(rng, praise, word), praise, word, extra))
        else:  # same caption, one image of each attribute
            praise = int(rng.integers(2))
            caption = _pair_text(rng, praise, word)
            extra = {"confounder_group": tag, "confounder_kind": "same_text"}
            for attr in (1, 0):
                concept = _pick(rng, [c for c in world.ambiguous if world.image_attr[c] == attr])
                memes.append(_combo(world, world.scene(rng, concept), concept, caption, praise, word, extra))
        group += 1
    return [memes[k] for k in rng.permutation(len(memes))]


def _split(world: _World, rng: np.random.Generator, n: int, split: str, opts: dict[str, Any]) -> list[_Meme]:
    kinds = allocate(rng, n, opts["mixture"])
    combos = iter(_confounders(world, rng, kinds.count("both"), split))
    memes = []
    for kind in kinds:
        if kind == "both":
            memes.append(next(combos))
        elif kind == "image":
            memes.append(_image_decided(world, rng, opts["positive_rate"], bool(opts["image_binding"])))
        else:
            memes.append(_text_decided(world, rng, opts["positive_rate"]))
    return memes


@registry.register_generator(NAME)
class HatefulMemesGenerator(SyntheticGenerator):
    """Registered as generator ``hateful_memes``; see the module docstring for the mechanism."""

    name = NAME
    version = "2.1.0"
    roots = ("hateful_memes/defaults",)
    defaults: dict[str, Any] = {
        "mixture": {"both": 0.4, "image": 0.4, "text": 0.2},
        "positive_rate": 0.4,
        "label_noise": 0.05,
        "attribute_strength": 1.0,
        "image_binding": True,
        "binding_parts": 8,
        "eval_ratio": SYNTHETIC_EVAL_RATIO,
        **IMAGE_DEFAULTS,
    }

    @classmethod
    def generate(
        cls, data_dir: Path | str, size: int | None = None, seed: int = 0, track: Track = no_track, **options: Any
    ) -> dict[str, Any]:
        data_dir = Path(data_dir)
        opts = cls.resolve_options(options)
        opts["mixture"] = resolve_mixture(cls.defaults["mixture"], opts["mixture"], "mixture")
        opts["positive_rate"] = check_fraction(opts["positive_rate"], "positive_rate")
        opts["label_noise"] = check_fraction(opts["label_noise"], "label_noise")
        if int(opts["binding_parts"]) < 2:
            raise ConfigError(f"binding_parts must be >= 2 (two symbols per image), got {opts['binding_parts']!r}")
        T.verify_vocabulary()
        root = data_dir / "datasets" / cls.roots[0]
        clear_built(root)

        world = _World(seed, opts)
        n_train, n_eval = split_sizes(size, DEFAULT_TRAIN, opts["eval_ratio"])
        counts = {s: (n_train if s == "train" else n_eval) for s in SPLITS}
        ids = iter(unique_ints(split_rng(seed, NAME, "ids"), sum(counts.values()), 10000, 100000))
        scenes: list[tuple[str, Scene, int]] = []
        truth: list[dict[str, Any]] = []
        paths: list[Path] = []
        realised, positives, noisy = {}, {}, {}
        for split in SPLITS:
            rng = split_rng(seed, NAME, split)
            memes = _split(world, rng, counts[split], split, opts)
            records = []
            for index, meme in enumerate(memes):
                ident = next(ids)
                label = 1 - meme.label if rng.random() < opts["label_noise"] else meme.label
                records.append({"id": ident, "img": f"img/{ident}.png", "label": label, "text": meme.text})
                scenes.append((str(ident), meme.scene, ident))
                image_rel, text_rel = RELIANCE[meme.kind]
                truth.append(
                    truth_record(
                        file=f"annotations/{split}.jsonl", split=split, index=index, ident=ident,
                        decides=meme.kind, image_reliance=image_rel, text_reliance=text_rel,
                        sample_type={"both": "confounder", "image": "image_symbol", "text": "text_attack"}[meme.kind],
                        concepts=meme.concepts, label=label, clean_label=meme.label, **meme.extra,
                    )
                )
            paths.append(write_jsonl(root / "annotations" / f"{split}.jsonl", records))
            realised[split] = shares(m.kind for m in memes)
            positives[split] = round(float(np.mean([r["label"] for r in records])), 4)
            noisy[split] = round(float(np.mean([t["label_noise"] for t in truth if t["split"] == split])), 4)

        features = write_scene_lmdb(root / "features" / "detectron.lmdb", scenes, world.space, track, "hateful_memes features")
        vocab = write_lines(root / "extras" / "vocabs" / "vocabulary_100k.txt", T.template_vocabulary())
        stats = {
            "splits": counts,
            "mixture": {"target": opts["mixture"], "realised": realised},
            "positive_rate": positives,
            "label_noise_rate": noisy,
        }
        files = {"annotations": paths, "features": [features], "extras": [vocab]}
        return cls.finish(data_dir, root, seed=seed, size=size, options=opts, stats=stats, truth=truth, files=files,
                          built=[(root, ZOO_VERSIONS[NAME])])


generate = HatefulMemesGenerator.generate
