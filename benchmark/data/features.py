"""Region-feature readers for MMF's LMDB and ``.npy`` layouts, plus zero-padding.

MMF keys features by a ``feature_path`` such as ``COCO_train2014_000000458752.npy`` but
stores them in LMDB under either the integer id (``b"458752"``) or the raw stem, so lookup
tries the integer form first and falls back to the stem, exactly like MMF.

LMDB handles are shared per file and per process: lmdb >= 2 refuses to open the same
environment twice in one process (train/val/test usually share one ``detectron.lmdb``), and
an environment must not be used across ``fork`` (DataLoader workers), so a worker that
inherits its parent's handle closes that copy and opens its own.
"""

from __future__ import annotations

import contextlib
import os
import pickle
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmark.errors import DataError

_UNPICKLE_ERRORS = (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, ImportError)


def candidate_keys(feature_path: str) -> list[str]:
    """Keys MMF would try for ``feature_path``: ``str(int(last '_' segment))``, then the stem."""
    stem = feature_path[: -len(".npy")] if feature_path.endswith(".npy") else feature_path
    keys: list[str] = []
    with contextlib.suppress(ValueError):
        keys.append(str(int(stem.split("_")[-1])))
    if stem not in keys:
        keys.append(stem)
    return keys


class FeatureReader(ABC):
    """Reads the raw feature record (``features`` [N, D] plus box info) for one key."""

    path: str

    @abstractmethod
    def resolve(self, key: str) -> str | None:
        """The stored key that ``key`` maps to, or None when it is not there."""

    @abstractmethod
    def read(self, key: str) -> dict[str, Any]:
        """The record for ``key`` as a dict holding at least ``features``."""

    def missing_key_error(self, key: str) -> DataError:
        return DataError(
            f"Feature key {key!r} (tried {', '.join(map(repr, candidate_keys(key)))}) is not in "
            f"the region features at {self.path}. The annotation and feature files do not belong "
            f"together: check the dataset's `features` paths in the config, or regenerate the "
            f"features for these annotations."
        )


# -- LMDB ---------------------------------------------------------------------------------


@dataclass
class _LMDBHandle:
    pid: int
    env: Any
    keys: frozenset[bytes] = field(default_factory=frozenset)


_LMDB_HANDLES: dict[str, _LMDBHandle] = {}


def _lmdb_handle(path: str) -> _LMDBHandle:
    """The process's one open environment for ``path`` (opened on first use)."""
    import lmdb

    handle = _LMDB_HANDLES.get(path)
    if handle is not None and handle.pid == os.getpid():
        return handle
    if handle is not None:
        # Inherited through fork: this copy must not be used here, and lmdb would refuse a
        # second open while it is registered, so close the child's copy (the parent's stays).
        with contextlib.suppress(lmdb.Error):
            handle.env.close()
        del _LMDB_HANDLES[path]
    try:
        env = lmdb.open(
            path,
            subdir=os.path.isdir(path),
            readonly=True,
            lock=False,
            readahead=False,
            meminit=False,
        )
        with env.begin(write=False) as txn:
            raw_keys = txn.get(b"keys")
    except lmdb.Error as exc:
        raise DataError(
            f"LMDB feature file {path} cannot be opened ({exc}). It is truncated, corrupt or "
            f"not an LMDB database; regenerate it (`msd data make`) or re-extract the features."
        ) from exc
    if raw_keys is None:
        env.close()
        raise DataError(
            f"LMDB feature file {path} has no b'keys' entry. MMF's layout stores the pickled "
            f"list of feature keys under b'keys'; convert the features with MMF's "
            f"tools/scripts/features/lmdb_conversion.py or regenerate them."
        )
    try:
        key_list = pickle.loads(raw_keys)
        keys = frozenset(k.encode() if isinstance(k, str) else bytes(k) for k in key_list)
    except _UNPICKLE_ERRORS as exc:
        env.close()
        raise DataError(
            f"LMDB feature file {path}: the b'keys' entry cannot be unpickled as a list of keys "
            f"({exc}). The file is corrupt; regenerate it."
        ) from exc
    handle = _LMDBHandle(pid=os.getpid(), env=env, keys=keys)
    _LMDB_HANDLES[path] = handle
    return handle


def close_lmdb_handles() -> None:
    """Close every LMDB environment this process opened (tests, or before deleting files)."""
    for path, handle in list(_LMDB_HANDLES.items()):
        if handle.pid == os.getpid():
            handle.env.close()
        del _LMDB_HANDLES[path]


class LMDBFeatureReader(FeatureReader):
    """MMF's ``detectron.lmdb`` / ``features.lmdb``: pickled dicts under byte keys.

    Holds only the path, so a dataset that holds it pickles cheaply to spawned workers; the
    environment is opened lazily in whichever process reads.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.path.realpath(os.fspath(path))
        if not os.path.exists(self.path):
            raise DataError(
                f"LMDB feature file {self.path} does not exist. Check the dataset's `features` "
                f"paths and `data_dir`, or run `msd data make` for the synthetic default data."
            )

    def resolve(self, key: str) -> str | None:
        keys = _lmdb_handle(self.path).keys
        for candidate in candidate_keys(key):
            if candidate.encode() in keys:
                return candidate
        return None

    def read(self, key: str) -> dict[str, Any]:
        stored = self.resolve(key)
        if stored is None:
            raise self.missing_key_error(key)
        import lmdb

        try:
            with _lmdb_handle(self.path).env.begin(write=False) as txn:
                raw = txn.get(stored.encode())
        except lmdb.Error as exc:
            raise DataError(
                f"LMDB feature file {self.path} failed while reading key {stored!r} ({exc}). "
                f"The file is corrupt or truncated; regenerate it."
            ) from exc
        if raw is None:
            raise DataError(
                f"LMDB feature file {self.path} lists key {stored!r} in b'keys' but holds no "
                f"value for it. The file is incomplete; regenerate it."
            )
        try:
            record = pickle.loads(raw)
        except _UNPICKLE_ERRORS as exc:
            raise DataError(
                f"LMDB feature file {self.path}: the value of key {stored!r} cannot be "
                f"unpickled ({exc}). The file is corrupt; regenerate it."
            ) from exc
        if not isinstance(record, dict) or "features" not in record:
            raise DataError(
                f"LMDB feature file {self.path}: key {stored!r} holds a {type(record).__name__} "
                f"without 'features'. MMF stores a dict with features [N, D], bbox, num_boxes, "
                f"image_height and image_width per image."
            )
        return record


# -- .npy directory -----------------------------------------------------------------------


class NpyFeatureReader(FeatureReader):
    """A folder of ``<key>.npy`` ([N, D]) with optional ``<key>_info.npy`` dicts."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.path.realpath(os.fspath(path))
        if not os.path.isdir(self.path):
            raise DataError(
                f"Feature folder {self.path} does not exist. Check the dataset's `features` "
                f"paths and `data_dir` in the config."
            )

    def resolve(self, key: str) -> str | None:
        stem = key[: -len(".npy")] if key.endswith(".npy") else key
        for candidate in [stem, *candidate_keys(key)]:
            if os.path.isfile(os.path.join(self.path, f"{candidate}.npy")):
                return candidate
        return None

    def read(self, key: str) -> dict[str, Any]:
        stored = self.resolve(key)
        if stored is None:
            raise self.missing_key_error(key)
        feature_file = os.path.join(self.path, f"{stored}.npy")
        features = _load_npy(feature_file)
        if features.dtype == object and features.shape == ():
            content = features.item()  # MMF's variant: a dict with "features" inside
            if not isinstance(content, dict) or "features" not in content:
                raise DataError(
                    f"Feature file {feature_file} holds neither an array nor a dict with 'features'."
                )
            record = dict(content)
        else:
            record = {"features": features}
        info_file = os.path.join(self.path, f"{stored}_info.npy")
        if os.path.isfile(info_file):
            info = _load_npy(info_file)
            info = info.item() if info.dtype == object and info.shape == () else info
            if not isinstance(info, dict):
                raise DataError(
                    f"Feature info file {info_file} must be np.save of a dict (image_id, bbox, "
                    f"num_boxes, image_height, image_width, ...), found {type(info).__name__}."
                )
            record = {**info, **record}
        return record


def _load_npy(path: str) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=True)
    except (ValueError, OSError, EOFError, pickle.UnpicklingError) as exc:
        raise DataError(
            f"Feature file {path} cannot be read ({exc}); it is truncated or corrupt. Regenerate it."
        ) from exc


def open_feature_reader(path: str | os.PathLike[str]) -> FeatureReader:
    """LMDB for ``*.lmdb`` paths (file or folder, as in MMF), else a folder of ``.npy`` files."""
    if Path(path).name.endswith(".lmdb"):
        return LMDBFeatureReader(path)
    return NpyFeatureReader(path)


# -- padding ------------------------------------------------------------------------------


def pad_features(
    record: dict[str, Any],
    max_features: int,
    expected_dim: int | None = None,
    source: str = "",
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``image_feature_0`` [max_features, D] and ``image_info_0`` with the real box count.

    Models mask padded rows with ``max_features`` (number of real boxes, after truncation),
    so the count must never exceed the padded length. ``expected_dim`` catches feature files
    mixed from two extractors, which would otherwise fail deep inside a model.
    """
    features = np.asarray(record["features"])
    where = f" ({source})" if source else ""
    if features.ndim != 2:
        raise DataError(
            f"Region features{where} have shape {tuple(features.shape)}; expected a 2-D array "
            f"[num_boxes, feature_dim]. Grid or batched features must be converted first."
        )
    num_boxes, dim = features.shape
    if expected_dim is not None and dim != expected_dim:
        raise DataError(
            f"Region features{where} have dimension {dim}, but the first record of this "
            f"dataset has {expected_dim}. All records must come from the same feature extractor; "
            f"regenerate the inconsistent features."
        )
    real = min(num_boxes, max_features)
    padded = np.zeros((max_features, dim), dtype=np.float32)
    padded[:real] = features[:real]

    bbox = np.zeros((max_features, 4), dtype=np.float32)
    raw_bbox = record.get("bbox")
    if raw_bbox is not None:
        raw_bbox = np.asarray(raw_bbox, dtype=np.float32)
        if raw_bbox.ndim != 2 or raw_bbox.shape[1] != 4:
            raise DataError(
                f"Region boxes{where} have shape {tuple(raw_bbox.shape)}; expected [num_boxes, 4] "
                f"(x1, y1, x2, y2). Regenerate the features."
            )
        count = min(real, raw_bbox.shape[0])
        bbox[:count] = raw_bbox[:count]
    info = {
        "max_features": torch.tensor(real, dtype=torch.long),
        "bbox": torch.from_numpy(bbox),
        "image_height": torch.tensor(int(record.get("image_height") or 0), dtype=torch.long),
        "image_width": torch.tensor(int(record.get("image_width") or 0), dtype=torch.long),
    }
    return torch.from_numpy(padded), info
