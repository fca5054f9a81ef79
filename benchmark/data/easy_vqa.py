"""Convert the real easy-VQA dataset (PyPI ``easy-vqa``) into a VQA2-style MMF layout.

easy-VQA (Victor Zhou) has real 64x64 PNG images of one coloured shape, 38,575 train and
9,673 test questions ("what color is the shape?", "is there a circle?") and 13 answers. It
is the suite's one real dataset that needs no download: everything comes from the installed
package's ``data/`` folder.

Written under ``<data_dir>/datasets/easy_vqa/defaults/``:

* ``annotations/imdb_{train,val,test}.npy``: object arrays, element 0 the header
  ``{"version": 1, "dataset_type": split, "has_answer": True}``, then one record per
  question ``{image_name, image_id, question_id, question_str, question_tokens,
  all_answers, answers, feature_path}`` with the single answer repeated 10 times (VQA's
  10 annotators agree, so the soft score of the answer is 1);
* ``images/<image_name>.png``: copies of the package's PNGs;
* ``extras/vocabs/answers_easy_vqa.txt``: the 13 answers in the package's order (no
  ``<unk>``; readers prepend it, as MMF's ``VocabDict`` does);
* ``.built.json`` markers (in ``defaults/``, ``annotations/`` and ``images/``).

Identifiers: easy-VQA numbers train and test images from 0 separately, so
``image_id = id`` for train images and ``100000 + id`` for test images, ``image_name =
"easy_vqa_%06d" % image_id`` and ``question_id = image_id * 100 + k`` (``k``: the question's
rank among that image's questions in the package file; at most 21 per image).

Splits. easy-VQA has only train and test. **Validation rule:** the train images whose id is
among the last ``val_fraction`` (default 10 %) of train image ids, i.e. ids 3600-3999, form
``val`` with all their questions; the rest is ``train``. The split is by image, so no image
is in two splits, and it does not depend on the seed.

Size. ``size`` caps the *training* questions (default 3,000, so that the whole easy-VQA
grid fits the 20-minute ``make reproduce-table2`` budget on 2 CPU cores); ``val`` and
``test`` get 25 % of it each, as the synthetic generators do. Whole images are taken in a
seed-shuffled order until the cap (the last image may be cut). ``size=0`` converts every
question (34,687 / 3,888 / 9,673).
"""

from __future__ import annotations

import math
import shutil
from collections import Counter, defaultdict
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from benchmark.data.synthetic.common import (
    SyntheticGenerator,
    Track,
    check_fraction,
    no_track,
    relpaths,
    split_rng,
    split_sizes,
)
from benchmark.data.synthetic.text import mmf_tokenize
from benchmark.data.synthetic.writers import atomic_path, clear_built, mark_built, write_imdb_npy, write_lines
from benchmark.errors import ConfigError, DataError
from benchmark.registry import registry

NAME = "easy_vqa"
SPLITS = ("train", "val", "test")
TEST_ID_OFFSET = 100000
NUM_ANNOTATORS = 10
DEFAULT_TRAIN_QUESTIONS = 3000


def _package() -> Any:
    try:
        import easy_vqa
    except ImportError as err:
        raise DataError("The PyPI package 'easy-vqa' is not installed: `pip install easy-vqa`.") from err
    return easy_vqa


def package_version() -> float:
    """The installed easy-vqa version as a float (``"1.0"`` -> 1.0), stored in ``.built.json``."""
    try:
        return float(metadata.version("easy-vqa"))
    except (metadata.PackageNotFoundError, ValueError):
        return 1.0


def _questions(source: str) -> tuple[list[dict[str, Any]], dict[int, str]]:
    """All questions of the package's ``train`` or ``test`` part, with suite identifiers."""
    pkg = _package()
    texts, answers, image_ids = pkg.get_train_questions() if source == "train" else pkg.get_test_questions()
    paths = pkg.get_train_image_paths() if source == "train" else pkg.get_test_image_paths()
    offset = 0 if source == "train" else TEST_ID_OFFSET
    rank: Counter[int] = Counter()
    rows = []
    for text, answer, original in zip(texts, answers, image_ids, strict=True):
        if int(original) not in paths:
            raise DataError(f"easy-vqa {source} question refers to image {original}, which the package lacks")
        image_id = offset + int(original)
        rows.append(
            {"image_id": image_id, "original_id": int(original), "k": rank[image_id], "question": text, "answer": answer}
        )
        rank[image_id] += 1
    return rows, {offset + k: v for k, v in paths.items()}


def _split_by_image(train_rows: list[dict[str, Any]], val_fraction: float) -> dict[str, list[dict[str, Any]]]:
    ids = sorted({r["image_id"] for r in train_rows})
    n_val = math.ceil(len(ids) * val_fraction)
    val_ids = set(ids[len(ids) - n_val :]) if n_val else set()
    return {
        "train": [r for r in train_rows if r["image_id"] not in val_ids],
        "val": [r for r in train_rows if r["image_id"] in val_ids],
    }


def _cap(rows: list[dict[str, Any]], size: int | None, rng: np.random.Generator) -> list[dict[str, Any]]:
    if size is None or size >= len(rows):
        return rows
    by_image: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_image[row["image_id"]].append(row)
    order = sorted(by_image)
    chosen: list[dict[str, Any]] = []
    for i in rng.permutation(len(order)):
        chosen.extend(by_image[order[i]][: size - len(chosen)])
        if len(chosen) >= size:
            break
    return sorted(chosen, key=lambda r: (r["image_id"], r["k"]))


def _split_caps(size: int | None) -> dict[str, int | None]:
    """Questions per split: ``size`` train (None = the default), 25 % for val and test, 0 = all."""
    if size is not None and int(size) == 0:
        return dict.fromkeys(SPLITS)
    if size is not None and int(size) < 0:
        raise ConfigError(f"size caps the training questions and must be >= 0 (0 = every question), got {size!r}")
    train, evaluation = split_sizes(size, DEFAULT_TRAIN_QUESTIONS)
    return {"train": train, "val": evaluation, "test": evaluation}


def _record(row: dict[str, Any]) -> dict[str, Any]:
    image_name = f"easy_vqa_{row['image_id']:06d}"
    answers = [row["answer"]] * NUM_ANNOTATORS
    return {
        "image_name": image_name,
        "image_id": row["image_id"],
        "question_id": row["image_id"] * 100 + row["k"],
        "question_str": row["question"],
        "question_tokens": mmf_tokenize(row["question"]),
        "all_answers": list(answers),
        "answers": list(answers),
        "feature_path": f"{image_name}.npy",
    }


@registry.register_generator(NAME)
class EasyVQAConverter(SyntheticGenerator):
    """Registered as generator ``easy_vqa``: converts the real data (``size`` = question cap)."""

    name = NAME
    version = "1.1.0"  # 1.1: size caps train (default 3,000), val/test 25 % of it; 0 = all
    roots = ("easy_vqa/defaults",)
    defaults: dict[str, Any] = {"val_fraction": 0.1}
    marked_subdirs = ("annotations", "images")  # real images, no feature folder

    @classmethod
    def generate(
        cls, data_dir: Path | str, size: int | None = None, seed: int = 0, track: Track = no_track, **options: Any
    ) -> dict[str, Any]:
        data_dir = Path(data_dir)
        opts = cls.resolve_options(options)
        opts["val_fraction"] = check_fraction(opts["val_fraction"], "val_fraction")
        caps = _split_caps(size)
        root = data_dir / "datasets" / cls.roots[0]
        clear_built(root, cls.marked_subdirs)

        train_rows, train_paths = _questions("train")
        test_rows, test_paths = _questions("test")
        sources = {**train_paths, **test_paths}
        splits = {**_split_by_image(train_rows, opts["val_fraction"]), "test": test_rows}
        splits = {s: _cap(splits[s], caps[s], split_rng(seed, NAME, s)) for s in SPLITS}

        paths, counts, images, answer_shares = [], {}, {}, {}
        for split in SPLITS:
            records = [_record(r) for r in splits[split]]
            header = {"version": 1, "dataset_type": split, "has_answer": True}
            paths.append(write_imdb_npy(root / "annotations" / f"imdb_{split}.npy", header, records))
            counts[split] = len(records)
            images[split] = len({r["image_id"] for r in records})
            answer_shares[split] = {
                k: round(v / max(1, len(records)), 4) for k, v in sorted(Counter(r["answers"][0] for r in records).items())
            }

        used = sorted({r["image_id"] for rows in splits.values() for r in rows})
        image_dir = root / "images"
        image_dir.mkdir(parents=True, exist_ok=True)
        wanted = {f"easy_vqa_{i:06d}.png" for i in used}
        for stale in image_dir.glob("*.png"):
            if stale.name not in wanted:
                stale.unlink()
        for image_id in track(used, len(used), "easy_vqa images"):
            target = image_dir / f"easy_vqa_{image_id:06d}.png"
            with atomic_path(target) as tmp:
                shutil.copyfile(sources[image_id], tmp)
        answers = list(_package().get_answers())
        vocab = write_lines(root / "extras" / "vocabs" / "answers_easy_vqa.txt", answers)
        mark_built(root, package_version(), cls.marked_subdirs)
        return {
            "name": NAME,
            "generator_version": cls.version,
            "seed": seed,
            "size": size,
            "options": opts,
            "source": f"easy-vqa {metadata.version('easy-vqa')} (PyPI), real images and questions",
            "splits": counts,
            "images": images,
            "answers": answer_shares,
            "num_answers": len(answers),
            "val_rule": f"train images with the last {opts['val_fraction']:.0%} of train image ids",
            "paths": {
                "root": str(root.relative_to(data_dir)),
                "annotations": relpaths(data_dir, paths),
                "images": str(image_dir.relative_to(data_dir)),
                "extras": relpaths(data_dir, [vocab]),
            },
        }


generate = EasyVQAConverter.generate
