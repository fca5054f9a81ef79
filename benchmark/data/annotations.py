"""MMF annotation files (``.jsonl``, ``.json``, ``.npy`` imdb) read into plain record dicts.

The rules mirror MMF's ``AnnotationDatabase`` so that an existing MMF data directory reads
unchanged: an imdb ``.npy`` whose element 0 has no ``image_id`` starts with a metadata header
that is not a sample, and old VQA imdbs carry their answers under ``valid_answers`` or
``all_answers`` instead of ``answers``. Every record also gets a human-readable location
(file and line or element) so that a bad label can be reported where a user can find it.
"""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from benchmark.errors import DataError

ANNOTATION_SUFFIXES = (".jsonl", ".json", ".npy")


def load_annotations(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Records of one MMF annotation file, header skipped and ``answers`` back-filled."""
    records, _ = read_annotations(path)
    return records


def read_annotations(path: str | os.PathLike[str]) -> tuple[list[dict[str, Any]], list[str]]:
    """Records plus, for each, where it came from (``file, line N`` / ``file, element N``).

    The locations exist only for error messages: a label outside the label set is reported
    by line so it can be fixed in an editor.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(
            f"Annotation file {path} does not exist. Check the dataset's `annotations` paths "
            f"and `data_dir` in the config."
        )
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        records, where = _read_jsonl(path)
    elif suffix == ".json":
        records, where = _read_json(path)
    elif suffix == ".npy":
        records, where = _read_npy(path)
    else:
        raise DataError(
            f"Annotation file {path} has an unknown format {suffix!r}. MMF annotation files "
            f"are .jsonl (one JSON object per line), .json ({{'metadata':..., 'data':[...]}}) "
            f"or .npy (an imdb object array)."
        )
    for record in records:
        _backfill_answers(record)
    return records, where


def _read_jsonl(path: Path) -> tuple[list[dict[str, Any]], list[str]]:
    records: list[dict[str, Any]] = []
    where: list[str] = []
    with open(path, encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue  # a trailing newline or blank line is not a sample
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(
                    f"Annotation file {path}, line {line_no} is not valid JSON ({exc.msg}). "
                    f"A .jsonl annotation file holds one JSON object per line; fix or remove "
                    f"that line, or regenerate the file."
                ) from exc
            _require_dict(record, path, f"line {line_no}")
            records.append(record)
            where.append(f"{path}, line {line_no}")
    return records, where


def _read_json(path: Path) -> tuple[list[dict[str, Any]], list[str]]:
    try:
        with open(path, encoding="utf-8") as handle:
            content = json.load(handle)
    except json.JSONDecodeError as exc:
        raise DataError(
            f"Annotation file {path} is not valid JSON ({exc.msg} at line {exc.lineno}). "
            f"Regenerate it or fix it by hand."
        ) from exc
    if isinstance(content, dict) and "data" in content:
        data = content["data"]
    elif isinstance(content, list):
        data = content
    else:
        raise DataError(
            f"Annotation file {path} has no 'data' list. An MMF .json annotation file is "
            f'{{"metadata": {{...}}, "data": [ {{record}}, ... ]}}.'
        )
    for index, record in enumerate(data):
        _require_dict(record, path, f"element {index} of 'data'")
    return list(data), [f"{path}, element {i} of 'data'" for i in range(len(data))]


def _read_npy(path: Path) -> tuple[list[dict[str, Any]], list[str]]:
    try:
        array = np.load(path, allow_pickle=True)
    except (ValueError, OSError, EOFError, pickle.UnpicklingError) as exc:
        raise DataError(
            f"Annotation file {path} cannot be read as a NumPy imdb ({exc}). The file is "
            f"truncated or not an .npy object array; regenerate or re-download it."
        ) from exc
    if isinstance(array, np.ndarray) and array.shape == () and array.dtype == object:
        array = array.item()  # np.save of a dict: {"metadata":..., "data": [...]}
    if isinstance(array, dict):
        data = list(array.get("data", []))
        start = 0
    else:
        data = list(np.asarray(array, dtype=object).reshape(-1))
        # MMF's imdb convention: a leading element without image_id is a metadata header.
        start = 1 if data and isinstance(data[0], dict) and "image_id" not in data[0] else 0
    records = data[start:]
    for index, record in enumerate(records, start=start):
        _require_dict(record, path, f"element {index}")
    return records, [f"{path}, element {i}" for i in range(start, start + len(records))]


def _require_dict(record: Any, path: Path, location: str) -> None:
    if not isinstance(record, dict):
        raise DataError(
            f"Annotation file {path}, {location} is a {type(record).__name__}, not a record "
            f"(a JSON object / dict). Every annotation entry must be one sample."
        )


def _backfill_answers(record: dict[str, Any]) -> None:
    """Old VQA imdbs keep answers under other names; MMF prefers ``valid_answers``."""
    if "answers" not in record:
        if "valid_answers" in record:
            record["answers"] = record["valid_answers"]
        elif "all_answers" in record:
            record["answers"] = record["all_answers"]
    answers = record.get("answers")
    if isinstance(answers, np.ndarray):
        record["answers"] = answers = answers.tolist()
    if isinstance(answers, list) and answers and answers[-1] == "<copy>":
        record["answers"] = answers[:-1]  # VizWiz soft-copy marker, dropped as in MMF
