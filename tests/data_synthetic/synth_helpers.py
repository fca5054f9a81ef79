"""Helpers shared by the synthetic-data tests (plain lmdb/pickle/json readers)."""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import lmdb
import numpy as np

SYNTHETIC = ("hateful_memes", "mmimdb", "visual_entailment", "vqa2")
SIZE = 60


def read_lmdb(path: Path) -> tuple[list[bytes], dict[bytes, bytes]]:
    """Plain ``lmdb`` + ``pickle``, as MMF's LMDBFeatureReader reads it: (keys index, raw values)."""
    env = lmdb.open(str(path), subdir=path.is_dir(), readonly=True, lock=False, readahead=False)
    try:
        with env.begin(write=False) as txn:
            keys = pickle.loads(txn.get(b"keys"))
            values = {k: bytes(v) for k, v in txn.cursor()}
    finally:
        env.close()
    return keys, values


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def read_npy(path: Path) -> list[Any]:
    return list(np.load(path, allow_pickle=True))
