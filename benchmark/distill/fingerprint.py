"""Content fingerprints of the inputs a teacher cache depends on.

A cache is valid only for the exact teacher checkpoint, dataset files, preprocessing and
view rule it was built from; any change gives a new key and so a new cache. Small files are
hashed by content; large ones (real LMDBs of many GB) by name, size and modification time,
which is what changes when such a file is rewritten.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from benchmark.data.fingerprint import dataset_files

__all__ = ["dataset_files", "digest", "file_fingerprint", "path_fingerprint", "preprocessing_payload", "sha256_file"]

CONTENT_HASH_LIMIT = 64 * 1024 * 1024


def file_fingerprint(path: Path) -> list[Any]:
    stat = path.stat()
    if stat.st_size <= CONTENT_HASH_LIMIT:
        return [path.name, stat.st_size, sha256_file(path)]
    return [path.name, stat.st_size, stat.st_mtime_ns]


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def path_fingerprint(path: Path) -> list[Any]:
    if path.is_file():
        return file_fingerprint(path)
    if path.is_dir():
        entries = sorted(p for p in path.rglob("*") if p.is_file())
        if len(entries) > 2000:  # image folders: names and sizes are enough
            return [path.name, len(entries), hashlib.sha256(
                "".join(f"{p.name}:{p.stat().st_size};" for p in entries).encode()).hexdigest()]
        return [path.name, [file_fingerprint(p) for p in entries]]
    return [path.name, "missing"]


def digest(payload: Any) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def preprocessing_payload(dataset_cfg: DictConfig) -> dict:
    """The dataset config minus paths: how samples are turned into tensors."""
    node = OmegaConf.to_container(dataset_cfg, resolve=True)
    assert isinstance(node, dict)
    for key in ("data_dir", "annotations", "features", "images", "ground_truth"):
        node.pop(key, None)
    return node
