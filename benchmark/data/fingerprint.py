"""The data a run reads, as part of its identity: which files, and a fingerprint of their content.

A run id must change when the data changes (an annotation file cut to half its lines trains on
half the data) and must not change when only the data's location does (a trailing slash in
``env.data_dir``, ``~``, a symlink, the same data on another machine). So the run id holds the
paths *as the dataset config writes them* (relative to its ``data_dir``) with the content hash
of each (:mod:`benchmark.data.content_hash`), never the absolute ``data_dir``.

The fingerprint is recorded in the run's summary when it starts. A resume re-reads the data
whatever the sidecars say and refuses to continue over changed files
(:func:`refuse_changed_data`): the only way the run id could stay the same over changed data
is a stale sidecar.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import xxhash
from omegaconf import DictConfig

from benchmark.data.content_hash import content_hash
from benchmark.errors import DataError

SECTIONS = ("annotations", "features", "images")


@dataclass(frozen=True)
class DataFingerprint:
    files: dict[str, str]  # path as the dataset config writes it -> content hash

    @property
    def digest(self) -> str:
        listing = "".join(f"{name}\0{value}\n" for name, value in sorted(self.files.items()))
        return xxhash.xxh3_128_hexdigest(listing.encode())

    def to_dict(self) -> dict[str, Any]:
        return {"digest": self.digest, "files": dict(sorted(self.files.items()))}


def dataset_files(dataset_cfg: DictConfig, splits: Iterable[str]) -> list[Path]:
    """Annotation files and the feature / image folders the config turns on, for ``splits``."""
    root = Path(str(dataset_cfg.data_dir)).expanduser()
    return [root / rel for rel in _split_paths(dataset_cfg, splits)]


def read_paths(config: DictConfig) -> dict[str, Path]:
    """``{path as configured: absolute path}`` of everything a run of ``config`` reads: the
    annotations, features or images of train, val and the evaluated splits, and the
    vocabulary files (answers, classes, a WordPiece vocab) given relative to the data."""
    from benchmark.config.loader import dataset_node

    node = dataset_node(config)
    root = Path(str(node.get("data_dir") or ".")).expanduser()
    splits = ("train", "val", *[str(s) for s in (config.get("evaluation") or {}).get("splits") or ()])
    names = list(_split_paths(node, dict.fromkeys(splits)))
    processors = node.get("processors") or {}
    for processor in ("text_processor", "answer_processor"):
        vocab = ((processors.get(processor) or {}).get("params") or {}).get("vocab_file")
        if vocab and (processor == "answer_processor" or (root / str(vocab)).is_file()):
            names.append(str(vocab))
    out: dict[str, Path] = {}
    for name in names:
        key = os.path.normpath(name).replace(os.sep, "/")
        out.setdefault(key, root / os.path.expanduser(name))
    return out


def data_fingerprint(config: DictConfig, *, verify: bool = False) -> DataFingerprint:
    """The content hashes of :func:`read_paths` (one ``stat`` per file while sidecars are current)."""
    cache_dir = _cache_dir(config)
    return DataFingerprint({name: content_hash(path, cache_dir, verify=verify)
                            for name, path in read_paths(config).items()})


def refuse_changed_data(config: DictConfig, recorded: dict[str, Any] | None, run_id: str) -> None:
    """Before a resume: the data, re-read byte by byte, must be what the run started on."""
    if not recorded or not isinstance(recorded.get("files"), dict):
        return
    current = data_fingerprint(config, verify=True).files
    before = recorded["files"]
    changed = sorted(name for name in {*before, *current} if before.get(name) != current.get(name))
    if not changed:
        return
    shown = ", ".join(changed[:5]) + (f" and {len(changed) - 5} more" if len(changed) > 5 else "")
    raise DataError(
        f"Run {run_id} cannot resume: its data changed since it started ({shown}, under "
        f"{dataset_data_dir(config)}). Its run id stayed the same because a fingerprint sidecar "
        "(.<name>.msd-fingerprint.json next to the data) was stale; the sidecars are now refreshed. "
        "Run the same command again to train a new run on the current data (it gets a new run id), "
        "or restore the original files to resume this one."
    )


def dataset_data_dir(config: DictConfig) -> str:
    from benchmark.config.loader import dataset_node

    return str(dataset_node(config).data_dir)


def _split_paths(dataset_cfg: DictConfig, splits: Iterable[str]) -> dict[str, None]:
    """The configured relative paths, in order, each once."""
    out: dict[str, None] = {}
    for section in SECTIONS:
        if section != "annotations" and not dataset_cfg.get(f"use_{section}", section == "features"):
            continue
        node = dataset_cfg.get(section) or {}
        for split in splits:
            for rel in node.get(split, []) or []:
                out.setdefault(str(rel))
    return out


def _cache_dir(config: DictConfig) -> Path | None:
    env = config.get("env") or {}
    value = env.get("cache_dir")
    return Path(str(value)).expanduser() if value else None
