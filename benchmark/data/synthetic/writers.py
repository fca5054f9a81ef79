"""Writers for MMF's on-disk formats (docs/mmf_formats.md).

Everything the synthetic generators and the easy-VQA converter put on disk goes through
this module, so that the formats are defined once:

* ``.jsonl`` annotations (Hateful Memes, MM-IMDb, SNLI-VE);
* ``.npy`` object arrays whose element 0 is a metadata header (VQA2-style imdb files);
* LMDB region features in MMF's ``LMDBFeatureReader`` layout: ``b"keys"`` holds a pickled
  list of byte keys, every other key a pickled dict ``{features, bbox, num_boxes,
  image_height, image_width, objects, cls_prob, feature_path, image_id}``;
* ``.built.json`` markers holding MMF's zoo version *as the float OmegaConf parses*, so MMF
  does not try to download the zoo resources over a synthetic directory.

Every file is written atomically (a temporary sibling, then ``os.replace``), so a crash never
leaves a truncated file under its final name. Markers are written by the caller last.

Pickles are made *portable*: numpy arrays are reduced to ``numpy.ndarray(shape, dtype,
buffer)`` and numpy scalars to Python numbers, instead of numpy's own reduction, which in
numpy 2 refers to ``numpy._core`` and cannot be loaded by the numpy 1.x that MMF installs.
"""

from __future__ import annotations

import datetime
import io
import json
import os
import pickle
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from benchmark.tracking.atomic import atomic_path, default_mode

# MMF's mmf/configs/zoo/datasets.yaml (main branch) spells versions like "1.0_2020_10_01".
# OmegaConf's YAML 1.1 float rule drops the underscores, so MMF compares against a float.
ZOO_VERSION_STRINGS: dict[str, str] = {
    "hateful_memes": "1.0_2020_10_01",
    "mmimdb": "1.0_2020_04_16",
    "visual_entailment": "1.0_2020_05_29",
    "vqa2": "1.0_2020_05_29",
    "flickr30k": "1.0_2020_05_29",
    "coco": "1.0_2020_05_04",
}

PICKLE_PROTOCOL = 3  # the protocol np.save uses; loadable by every Python 3 MMF supports


def yaml11_float(version: str) -> float:
    """Parse a zoo version the way OmegaConf's YAML 1.1 resolver does (``_`` is ignored)."""
    return float(version.replace("_", ""))


ZOO_VERSIONS: dict[str, float] = {name: yaml11_float(v) for name, v in ZOO_VERSION_STRINGS.items()}


# -- atomic files ----------------------------------------------------------------------------
def write_text(path: Path | str, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_lines(path: Path | str, lines: Iterable[str]) -> Path:
    """One item per line, as MMF's ``load_str_list`` reads vocab and class files."""
    return write_text(path, "".join(f"{line}\n" for line in lines))


def write_json(path: Path | str, obj: Any) -> Path:
    return write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def write_jsonl(path: Path | str, records: Iterable[Mapping[str, Any]]) -> Path:
    """MMF ``.jsonl`` annotations: one compact JSON object per line."""
    return write_text(path, "".join(json.dumps(dict(r), ensure_ascii=False) + "\n" for r in records))


# -- portable pickles --------------------------------------------------------------------------
def _rebuild_array(obj: np.ndarray) -> tuple[Any, tuple[Any, ...]]:
    if obj.dtype.hasobject:
        if obj.ndim != 1:
            raise ValueError("only 1-d object arrays can be pickled portably")
        return np.array, (list(obj), object)
    contiguous = np.ascontiguousarray(obj)
    return np.ndarray, (contiguous.shape, contiguous.dtype.str, bytearray(contiguous.tobytes()))


class _PortablePickler(pickle.Pickler):
    """Pickler whose output names only ``numpy.ndarray``/``numpy.array`` and builtins."""

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, np.ndarray):
            return _rebuild_array(obj)
        if isinstance(obj, np.bool_):
            return bool, (bool(obj),)
        if isinstance(obj, np.integer):
            return int, (int(obj),)
        if isinstance(obj, np.floating):
            return float, (float(obj),)
        return NotImplemented


def portable_dumps(obj: Any) -> bytes:
    buffer = io.BytesIO()
    _PortablePickler(buffer, protocol=PICKLE_PROTOCOL).dump(obj)
    return buffer.getvalue()


# -- VQA2-style .npy imdb ----------------------------------------------------------------------
def write_imdb_npy(path: Path | str, header: Mapping[str, Any], records: Iterable[Mapping[str, Any]]) -> Path:
    """Object ndarray ``[header, record, ...]`` in ``.npy`` format, loadable with ``allow_pickle``.

    The header has no ``image_id``, which is how MMF's ``AnnotationDatabase`` recognises and
    skips it. The array is pickled portably (see module docstring).
    """
    items: list[Any] = [dict(header), *(dict(r) for r in records)]
    array = np.empty(len(items), dtype=object)
    array[:] = items
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.lib.format.write_array_header_1_0(fh, np.lib.format.header_data_from_array_1_0(array))
        _PortablePickler(fh, protocol=PICKLE_PROTOCOL).dump(array)
    return Path(path)


# -- LMDB region features ------------------------------------------------------------------------
def feature_record(
    features: np.ndarray,
    bbox: np.ndarray,
    image_height: int,
    image_width: int,
    objects: np.ndarray,
    feature_path: str,
    image_id: int | str,
) -> dict[str, Any]:
    """The per-image dict MMF's feature extraction scripts store (``cls_prob`` is absent: None)."""
    features = np.asarray(features, dtype=np.float32)
    return {
        "features": features,
        "bbox": np.asarray(bbox, dtype=np.float32),
        "num_boxes": int(features.shape[0]),
        "image_height": int(image_height),
        "image_width": int(image_width),
        "objects": np.asarray(objects, dtype=np.int64),
        "cls_prob": None,
        "feature_path": feature_path,
        "image_id": image_id,
    }


def write_lmdb(path: Path | str, items: Iterable[tuple[str, Mapping[str, Any]]], approx_bytes: int) -> Path:
    """Write an LMDB feature database in MMF's layout, replacing ``path`` atomically.

    ``items`` yields ``(key, record)``; the key order is kept in ``b"keys"``. The database
    is built in a temporary sibling directory and swapped in only when complete.
    """
    import lmdb

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    default_mode(tmp_dir, directory=True)
    try:
        map_size = max(64 << 20, 4 * int(approx_bytes))
        env = lmdb.open(str(tmp_dir), map_size=map_size, subdir=True, meminit=True, map_async=False)
        keys: list[bytes] = []
        try:
            txn = env.begin(write=True)
            for n, (key, record) in enumerate(items, start=1):
                key_bytes = str(key).encode()
                if not txn.put(key_bytes, portable_dumps(dict(record)), overwrite=False):
                    raise ValueError(f"duplicate LMDB key {key!r} in {path}")
                keys.append(key_bytes)
                if n % 2000 == 0:
                    txn.commit()
                    txn = env.begin(write=True)
            txn.put(b"keys", portable_dumps(keys))
            txn.commit()
            env.sync(True)
        finally:
            env.close()
        _replace_dir(tmp_dir, path)
    finally:
        if tmp_dir.exists():
            shutil.rmtree(tmp_dir)
    return path


def _replace_dir(src: Path, dst: Path) -> None:
    """Move directory ``src`` onto ``dst``; an existing ``dst`` is moved aside first, then deleted."""
    if dst.exists() or dst.is_symlink():
        trash = dst.with_name(f".{dst.name}.old-{os.getpid()}")
        if trash.exists():
            shutil.rmtree(trash)
        os.replace(dst, trash)
        os.replace(src, dst)
        if trash.is_dir():
            shutil.rmtree(trash)
        else:
            trash.unlink()
    else:
        os.replace(src, dst)


# -- .built.json markers -----------------------------------------------------------------------
BUILT_MARKER = ".built.json"


def built_marker(version: float) -> dict[str, Any]:
    """Same fields as ``mmf.utils.download.mark_done``."""
    return {"created_at": str(datetime.datetime.today()), "version": version}


MARKED_SUBDIRS = ("features", "annotations")


def marker_dirs(variant_dir: Path | str, subdirs: tuple[str, ...] = MARKED_SUBDIRS) -> list[Path]:
    """``<variant>/`` plus its ``features/`` and ``annotations/`` folders.

    MMF's builder checks a marker per zoo resource attribute (``features``, ``annotations``,
    ``images`` when used) and one in the variant folder (``extras``). ``flickr30k`` and
    ``coco`` list annotation resources too, so their ``annotations/`` is marked even though
    the synthetic data puts no file there: otherwise MMF would try to download them.
    """
    variant_dir = Path(variant_dir)
    return [variant_dir] + [variant_dir / sub for sub in subdirs]


def mark_built(variant_dir: Path | str, version: float, subdirs: tuple[str, ...] = MARKED_SUBDIRS) -> list[Path]:
    """Write ``.built.json`` in every marker dir of ``variant_dir``; call after all data is written."""
    written = []
    for folder in marker_dirs(variant_dir, subdirs):
        folder.mkdir(parents=True, exist_ok=True)
        written.append(write_json(folder / BUILT_MARKER, built_marker(version)))
    return written


def clear_built(variant_dir: Path | str, subdirs: tuple[str, ...] = MARKED_SUBDIRS + ("images",)) -> None:
    """Remove the markers before rewriting, so an interrupted rewrite never looks complete."""
    for folder in marker_dirs(variant_dir, subdirs):
        marker = folder / BUILT_MARKER
        if marker.exists():
            marker.unlink()


def is_built(
    variant_dir: Path | str, version: float | None = None, subdirs: tuple[str, ...] = MARKED_SUBDIRS
) -> bool:
    """True when every marker dir holds a marker (with ``version``, if given), as MMF checks."""
    for folder in marker_dirs(variant_dir, subdirs):
        marker = folder / BUILT_MARKER
        if not marker.is_file():
            return False
        if version is not None:
            try:
                found = json.loads(marker.read_text(encoding="utf-8")).get("version")
            except (OSError, json.JSONDecodeError):
                return False
            if found != version:
                return False
    return True
