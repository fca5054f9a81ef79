"""Content hashes of data files and folders, computed once and kept in a sidecar next to them.

Why a sidecar: a run id covers the content of every file the run reads (a truncated annotation
file must not count as the same run), but re-reading gigabytes of features each time a run id
is computed (every ``msd run``, every cell of ``msd grid show``) would make the suite unusable.
So each data path gets a small JSON file next to it, ``.<name>.msd-fingerprint.json``, holding
the xxh3-128 hash of each file with the ``stat`` it was computed from (size, mtime_ns,
ctime_ns). While a file's ``stat`` is unchanged its hash is reused, so a reuse costs one
``stat`` per file. ``ctime`` is part of the key because no user tool can set it: a file edited
with its mtime put back (``touch -r``, ``rsync -t``) still gets a new hash. A copy of the data
to another machine keeps names and content, hence the run ids, and is hashed once there.

When the data folder is read-only (a shared MMF data directory) the sidecar goes under
``<env.cache_dir>/data-fingerprints/`` instead, named after the data path.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import xxhash

SIDECAR_VERSION = 1
ALGORITHM = "xxh3_128"
MISSING = "missing"
IGNORED_NAMES = frozenset({"lock.mdb"})
"""Files inside a data folder that hold no data: LMDB's reader lock table changes whenever a
reader opens the database with locking on."""

_BLOCK = 8 << 20
StatKey = tuple[int, int, int]  # size, mtime_ns, ctime_ns
_memo: dict[tuple[str, str, StatKey], str] = {}  # (data path, file, stat) -> hash, this process


def content_hash(path: Path, cache_dir: Path | None = None, *, verify: bool = False) -> str:
    """The hash of a file's bytes, or of a folder's files (relative names and contents).

    ``verify`` re-reads every byte whatever the sidecar says, and rewrites the sidecar: the
    check before a resume, which must not trust a sidecar that could be stale.
    """
    real = Path(os.path.realpath(path))
    if not real.exists():
        return MISSING
    stats = _stat_files(real)
    hashes: dict[str, str] = {}
    if not verify:
        hashes = {rel: _memo[(str(real), rel, key)] for rel, key in stats.items() if (str(real), rel, key) in _memo}
    if len(hashes) < len(stats):
        sidecars = [] if verify else _read_sidecars(real, cache_dir)
        fresh = False
        for rel, key in stats.items():
            if rel in hashes:
                continue
            known = next((h for files in sidecars if (h := _entry_hash(files.get(rel), key))), None)
            if known is None:
                known = hash_file(real / rel if rel else real)
                fresh = True
            hashes[rel] = known
        if fresh:
            _write_sidecar(real, cache_dir, {rel: [*stats[rel], hashes[rel]] for rel in stats})
        for rel, key in stats.items():
            _memo[(str(real), rel, key)] = hashes[rel]
    if real.is_file():
        return hashes[""]
    listing = "".join(f"{rel}\0{hashes[rel]}\n" for rel in sorted(hashes))
    return xxhash.xxh3_128_hexdigest(listing.encode())


def hash_file(path: Path) -> str:
    digest = xxhash.xxh3_128()
    buffer = bytearray(_BLOCK)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as handle:
        while True:
            read = handle.readinto(buffer)
            if not read:
                break
            digest.update(view[:read])
    return digest.hexdigest()


def sidecar_path(real: Path) -> Path:
    return real.parent / f".{real.name}.msd-fingerprint.json"


def cache_sidecar_path(real: Path, cache_dir: Path) -> Path:
    tag = xxhash.xxh3_64_hexdigest(str(real).encode())
    return cache_dir / "data-fingerprints" / f"{real.name}-{tag}.json"


def _stat_files(real: Path) -> dict[str, StatKey]:
    """``{relative name: stat key}`` of the file itself (name ``""``) or of a folder's files."""
    if real.is_file():
        return {"": _stat_key(real.stat())}
    out: dict[str, StatKey] = {}
    for folder, dirs, files in os.walk(real, followlinks=True):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        base = os.path.relpath(folder, real)
        for name in files:
            if name.startswith(".") or name in IGNORED_NAMES:
                continue
            full = os.path.join(folder, name)
            rel = name if base == "." else f"{base}/{name}".replace(os.sep, "/")
            out[rel] = _stat_key(os.stat(full))
    return out


def _stat_key(stat: os.stat_result) -> StatKey:
    return (stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)


def _entry_hash(entry: Any, key: StatKey) -> str | None:
    if isinstance(entry, list) and len(entry) == 4 and tuple(entry[:3]) == key:
        return str(entry[3])
    return None


def _read_sidecars(real: Path, cache_dir: Path | None) -> list[dict[str, Any]]:
    """The file tables of the sidecar next to the data and of the one under the cache dir."""
    candidates = [sidecar_path(real)]
    if cache_dir is not None:
        candidates.append(cache_sidecar_path(real, cache_dir))
    tables = []
    for candidate in candidates:
        try:
            payload = json.loads(candidate.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(payload, dict) and payload.get("version") == SIDECAR_VERSION and payload.get("algorithm") == ALGORITHM:
            tables.append(dict(payload.get("files") or {}))
    return tables


def _write_sidecar(real: Path, cache_dir: Path | None, files: dict[str, list[Any]]) -> None:
    """Next to the data, else under the cache dir; never fatal: a sidecar only saves time."""
    payload = {"version": SIDECAR_VERSION, "algorithm": ALGORITHM, "path": real.name, "files": files}
    targets = [sidecar_path(real)]
    if cache_dir is not None:
        targets.append(cache_sidecar_path(real, cache_dir))
    for target in targets:
        try:
            _atomic_write(target, json.dumps(payload, separators=(",", ":")))
            return
        except OSError:
            continue


def _atomic_write(target: Path, text: str) -> None:
    """Complete or absent: concurrent writers of one sidecar each rename a whole file."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
