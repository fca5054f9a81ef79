"""Shared machinery of the synthetic generators: seeds, split sizes, mixtures, ground truth.

Seeding: the *world* of a dataset (concept prototypes, pair tables, ids) comes from
``(seed, dataset)`` and every split from ``(seed, dataset, split)``, through numpy's
``SeedSequence``. Changing the size therefore changes how many samples are drawn, never
the rules that decide their labels, and regenerating with the same seed gives identical
files.

Mixtures: the share of each evidence type in a split is allocated *exactly* (largest
remainder), then shuffled, so the recorded mixture is the realised one rather than a
sampling accident.
"""

from __future__ import annotations

import math
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import numpy as np

from benchmark.data.synthetic.regions import ConceptSpace, Scene
from benchmark.data.synthetic.writers import (
    MARKED_SUBDIRS,
    feature_record,
    mark_built,
    write_jsonl,
    write_lmdb,
)
from benchmark.errors import ConfigError

T = TypeVar("T")

# track(iterable, total, description) -> iterable; make.py passes a rich progress bar.
Track = Callable[[Iterable[Any], int, str], Iterable[Any]]

DEFAULT_TRAIN = 2000
EVAL_RATIO = 0.25
# [rule] The synthetic generators' default evaluation size relative to train (option
# ``eval_ratio``): larger than the 25 % above, because evaluation is cheap and the seed
# spread of a small test split is mostly its sampling noise (issue 16, criterion (b)).
SYNTHETIC_EVAL_RATIO = 0.5
MIN_EVAL = 20
EVIDENCE = ("image", "text", "both")
GROUND_TRUTH_NAME = "msd_ground_truth.jsonl"


def no_track(iterable: Iterable[T], total: int, description: str) -> Iterator[T]:
    del total, description
    yield from iterable


def _code(text: str) -> int:
    return zlib.crc32(text.encode())


def world_rng(seed: int, dataset: str) -> np.random.Generator:
    """RNG of the rules of a dataset (prototypes, tables): independent of sizes."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), _code(dataset), 0]))


def split_rng(seed: int, dataset: str, split: str) -> np.random.Generator:
    """RNG of one split's samples."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), _code(dataset), 1, _code(split)]))


def split_sizes(size: int | None, default_train: int = DEFAULT_TRAIN, eval_ratio: float = EVAL_RATIO) -> tuple[int, int]:
    """``(train, eval)``: ``size`` sets train, each evaluation split gets ``eval_ratio`` of it (at least 20).

    The synthetic generators pass their ``eval_ratio`` option [rule]: evaluation splits cost
    one forward pass per sample and view, so making them larger is the cheap way to cut the
    metric's sampling noise (issue 16, criterion (b)).
    """
    train = default_train if size is None else int(size)
    if train < 1:
        raise ConfigError(f"size must be a positive number of training samples, got {size!r}")
    ratio = float(eval_ratio)
    if not ratio > 0:
        raise ConfigError(f"eval_ratio must be > 0, got {eval_ratio!r}")
    return train, max(MIN_EVAL, int(math.ceil(train * ratio)))


def resolve_mixture(defaults: Mapping[str, float], given: Mapping[str, float] | None, key: str) -> dict[str, float]:
    """Validate a user mixture over the same keys as ``defaults`` and normalise it to sum 1."""
    mixture = dict(defaults if given is None else given)
    unknown = set(mixture) - set(defaults)
    if unknown:
        raise ConfigError(f"{key}: unknown component(s) {sorted(unknown)}; allowed: {sorted(defaults)}")
    values = {k: float(mixture.get(k, 0.0)) for k in defaults}
    if any(v < 0 for v in values.values()) or sum(values.values()) <= 0:
        raise ConfigError(f"{key}: shares must be >= 0 and not all 0, got {values}")
    total = sum(values.values())
    return {k: v / total for k, v in values.items()}


def check_fraction(value: Any, key: str) -> float:
    value = float(value)
    if not 0.0 <= value <= 1.0:
        raise ConfigError(f"{key} must be in [0, 1], got {value}")
    return value


def allocate(rng: np.random.Generator, n: int, mixture: Mapping[str, float]) -> list[str]:
    """Exactly ``round(n * share)`` items per key (largest remainder), in random order.

    Shares are normalised, so ``{"a": 1, "b": 1}`` splits ``n`` evenly.
    """
    keys = list(mixture)
    total = float(sum(mixture.values()))
    raw = [n * mixture[k] / total for k in keys]
    counts = [int(math.floor(r)) for r in raw]
    order = sorted(range(len(keys)), key=lambda i: (counts[i] - raw[i], i))
    for i in order[: n - sum(counts)]:
        counts[i] += 1
    items = [k for k, c in zip(keys, counts, strict=True) for _ in range(c)]
    return [items[i] for i in rng.permutation(len(items))]


def unique_ints(rng: np.random.Generator, n: int, low: int, high: int) -> list[int]:
    """``n`` distinct integers in ``[low, high)`` in random order."""
    if high - low < n:
        raise ConfigError(f"cannot draw {n} distinct ids from [{low}, {high}); use a smaller size")
    return [int(x) + low for x in rng.choice(high - low, size=n, replace=False)]


def shares(labels: Iterable[str]) -> dict[str, float]:
    counts = Counter(labels)
    total = sum(counts.values()) or 1
    return {k: round(v / total, 4) for k, v in sorted(counts.items())}


def truth_record(
    *,
    file: str,
    split: str,
    index: int,
    ident: Any,
    decides: str,
    image_reliance: float,
    text_reliance: float,
    sample_type: str,
    concepts: Mapping[str, Any],
    label: Any,
    clean_label: Any,
    **extra: Any,
) -> dict[str, Any]:
    """One line of ``msd_ground_truth.jsonl``; join on ``(file, index)`` or on ``id``."""
    if decides not in EVIDENCE:
        raise ValueError(f"decides must be one of {EVIDENCE}, got {decides!r}")
    return {
        "file": file,
        "split": split,
        "index": int(index),
        "id": ident,
        "decides": decides,
        "image_reliance": round(float(image_reliance), 4),
        "text_reliance": round(float(text_reliance), 4),
        "type": sample_type,
        "concepts": dict(concepts),
        "label": label,
        "clean_label": clean_label,
        "label_noise": label != clean_label,
        **extra,
    }


RELIANCE = {"image": (1.0, 0.0), "text": (0.0, 1.0), "both": (0.5, 0.5)}


def conjunctions(first: Sequence[str], second: Sequence[str], bound: Sequence[int]) -> list[tuple[str, str]]:
    """Pair ``first[i]`` with ``second[σ(i)]``, σ fixing exactly the indices in ``bound``.

    The other indices are rotated by one place (a derangement of them), so they pair
    mismatched parts. Why: a *bound* part pair (a shape drawn in its own colour, one region
    showing ``proto(a) + proto(b)``) is evidence that only a model which looks at regions one
    at a time can see. Every pairing uses the same parts, so the mean over regions (what a
    student without region layers computes) is the same whichever pairs are bound: a real
    capacity gap between teacher and student, as real teachers have. Exactly one unbound
    index cannot be deranged, so that is refused.
    """
    if len(first) != len(second):
        raise ValueError(f"conjunctions need as many first as second parts, got {len(first)} and {len(second)}")
    fixed = set(int(i) for i in bound)
    if not fixed <= set(range(len(first))):
        raise ValueError(f"bound indices {sorted(fixed)} outside 0..{len(first) - 1}")
    rest = [i for i in range(len(first)) if i not in fixed]
    if len(rest) == 1:
        raise ValueError("one unbound part cannot be paired with another part's partner")
    partner = {i: i for i in fixed}
    partner.update({i: rest[(k + 1) % len(rest)] for k, i in enumerate(rest)})
    return [(str(first[i]), str(second[partner[i]])) for i in range(len(first))]

# Region-feature options shared by the four synthetic generators (see regions.py).
IMAGE_DEFAULTS: dict[str, Any] = {"feature_dim": 64, "num_regions": 16, "region_noise": 0.12, "concept_regions": [2, 4]}


def concept_space(rng: np.random.Generator, concepts: Sequence[str], opts: Mapping[str, Any]) -> ConceptSpace:
    """A :class:`ConceptSpace` from the generator options, validated."""
    low, high = (int(x) for x in opts["concept_regions"])
    dim, regions, noise = int(opts["feature_dim"]), int(opts["num_regions"]), float(opts["region_noise"])
    if not 1 <= low <= high <= regions or dim < 1 or noise < 0:
        raise ConfigError(
            f"image options: need 1 <= concept_regions[0] <= concept_regions[1] <= num_regions, "
            f"feature_dim >= 1 and region_noise >= 0; got {dict(opts)}"
        )
    return ConceptSpace(rng, concepts, dim=dim, num_regions=regions, noise=noise, concept_regions=(low, high))


class SyntheticGenerator:
    """Base of the registered generators.

    ``roots`` are the ``<data_dir>/datasets/<name>/<variant>`` folders a generator writes
    (VQA2 also writes ``coco/defaults``, SNLI-VE ``flickr30k/defaults``); ``make_dataset``
    guards and marks all of them. ``defaults`` are the generator options (mixtures etc.),
    each overridable as a keyword of the subclass's ``generate(data_dir, size=None, seed=0,
    track=no_track, **options) -> dict`` classmethod, which writes everything (markers last)
    and returns the summary that ``make_dataset`` stores in the manifest.
    """

    name: ClassVar[str]
    version: ClassVar[str]
    roots: ClassVar[tuple[str, ...]]
    defaults: ClassVar[dict[str, Any]]
    marked_subdirs: ClassVar[tuple[str, ...]] = MARKED_SUBDIRS
    """The folders of a root that get MMF's ``.built.json`` (besides the root): what
    ``make_dataset`` checks before it calls the data up to date."""

    @classmethod
    def root_dirs(cls, data_dir: Path | str) -> list[Path]:
        return [Path(data_dir) / "datasets" / root for root in cls.roots]

    @classmethod
    def resolve_options(cls, options: Mapping[str, Any]) -> dict[str, Any]:
        unknown = set(options) - set(cls.defaults)
        if unknown:
            raise ConfigError(
                f"Unknown option(s) {sorted(unknown)} for generator {cls.name!r}; known: {sorted(cls.defaults)}"
            )
        return {**cls.defaults, **options}

    @classmethod
    def finish(
        cls,
        data_dir: Path,
        root: Path,
        *,
        seed: int,
        size: int | None,
        options: Mapping[str, Any],
        stats: Mapping[str, Any],
        truth: Sequence[Mapping[str, Any]],
        files: Mapping[str, Sequence[Path]],
        built: Sequence[tuple[Path, str]],
    ) -> dict[str, Any]:
        """Write the ground-truth side file, then the ``.built.json`` markers, and return the summary.

        The markers come last so that an interrupted generation is never taken for a built
        dataset. ``files`` are the written annotation/feature/extra paths (summary: relative
        to ``data_dir``); ``stats`` the generator's own figures (split counts, mixtures, ...).
        """
        truth_path = write_jsonl(root / "extras" / GROUND_TRUTH_NAME, truth)
        for folder, version in built:
            mark_built(folder, version)
        paths: dict[str, Any] = {"root": str(root.relative_to(data_dir))}
        paths.update({kind: relpaths(data_dir, list(written)) for kind, written in files.items()})
        paths["ground_truth"] = str(truth_path.relative_to(data_dir))
        return {"name": cls.name, "generator_version": cls.version, "seed": seed, "size": size,
                "options": dict(options), **stats, "paths": paths}


def relpaths(data_dir: Path, paths: Sequence[Path]) -> list[str]:
    return [str(Path(p).relative_to(data_dir)) for p in paths]


def write_scene_lmdb(
    path: Path, scenes: Sequence[tuple[str, Scene, int | str]], space: ConceptSpace, track: Track, description: str
) -> Path:
    """Write ``(key, Scene, image_id)`` triples as MMF LMDB features; ``feature_path`` = key."""
    objects = space.detect(np.stack([scene.features for _, scene, _ in scenes])) if scenes else []

    def items() -> Iterator[tuple[str, dict[str, Any]]]:
        for (key, scene, image_id), classes in track(zip(scenes, objects, strict=True), len(scenes), description):
            yield key, feature_record(scene.features, scene.bbox, scene.height, scene.width, classes, key, image_id)

    per_item = sum(s.features.nbytes + s.bbox.nbytes + 8 * len(s.features) + 512 for _, s, _ in scenes)
    return write_lmdb(path, items(), approx_bytes=per_item)
