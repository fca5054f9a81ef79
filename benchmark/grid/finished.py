"""A finished grid's stamp: ``msd grid run`` on a grid with nothing left to do answers in a second.

Why: finding out that every cell of a grid is complete means expanding the grid, and that
imports torch and the registries and resolves every cell's config (8 to 15 s of a 2-core
machine, against a goal of 5 s for "nothing to do"). The answer depends only on the inputs of
the expansion and on the run store, so the runner writes them down when a grid ends with
every cell complete, and the next ``msd grid run`` compares them before importing anything
heavy.

The stamp's key covers everything a cell's run id is computed from: the grid file's bytes,
the scale, ``--only``, the extra ``key=value`` arguments, the ``MSD_*`` environment (the only
variables the config reads), the working directory (relative paths), and the bytes of every
``.py`` and ``.yaml`` file of the ``benchmark`` package (any code or default change, even an
unrelated one, falls back to the full path: conservative, never stale). Inside the stamp:
the ``stat`` (size, mtime, ctime) of every data file the cells read (a run id holds the
data's content) and, per run, the ``stat`` of its ``summary.json`` and the files a
complete run must hold. Any difference means "not sure": the full path runs and decides.

Grids that read files the key cannot see (``base.includes``, a ``config=`` file, a
``user_dir`` of plugins) never take the fast path.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import xxhash
import yaml

STAMP_VERSION = 1
_FILE_ARGS = ("config=", "user_dir=", "env.user_dir=")
StatKey = tuple[int, int, int]


def stamp_dir(extra_args: Iterable[str] = ()) -> Path:
    """Where stamps live: next to the grids' state, ``<save_dir>/../grids/.finished``, with the
    run store as the command line or ``MSD_SAVE_DIR`` name it (a grid file that moves
    ``env.save_dir`` itself only puts its stamps elsewhere; the key decides). Removing a
    results folder removes its stamps. ``MSD_GRID_STAMP_DIR`` overrides."""
    override = os.environ.get("MSD_GRID_STAMP_DIR")
    if override:
        return Path(override)
    save_dir = next((a.split("=", 1)[1] for a in reversed(list(extra_args)) if a.startswith("env.save_dir=")),
                    None) or os.environ.get("MSD_SAVE_DIR") or "results/runs"
    return Path(save_dir).expanduser().absolute().parent / "grids" / ".finished"


def stamp_key(path: str | Path, scale: str, only: str | None, extra_args: Iterable[str]) -> str | None:
    """The key of a grid invocation, or None when its inputs include files the key cannot see."""
    grid_file = Path(path).expanduser()
    try:
        raw_bytes = grid_file.read_bytes()
        raw = yaml.safe_load(raw_bytes) or {}
    except (OSError, yaml.YAMLError):
        return None  # the full path reports the problem
    args = [str(a) for a in extra_args]
    if not isinstance(raw, dict) or _reads_other_files(raw) or any(a.startswith(_FILE_ARGS) for a in args):
        return None
    h = xxhash.xxh3_128()
    for part in (f"v{STAMP_VERSION}", str(grid_file.resolve()), scale, only or "", "\0".join(args), os.getcwd(),
                 sys.executable, "\0".join(f"{k}={v}" for k, v in sorted(os.environ.items())
                                           if k.startswith("MSD_") and k not in _IGNORED_ENV)):
        h.update(part.encode())
        h.update(b"\x00")
    h.update(raw_bytes)
    h.update(source_digest().encode())
    return h.hexdigest()


_IGNORED_ENV = ("MSD_DEBUG", "MSD_GRID_PROFILE_DIR", "MSD_GRID_STAMP_DIR")


def source_digest(root: Path | None = None, suffixes: tuple[str, ...] = (".py", ".yaml")) -> str:
    """xxh3 of every source file under ``root`` (default: the ``benchmark`` package, ~150 files, a few ms)."""
    root = root or Path(__file__).resolve().parents[1]
    h = xxhash.xxh3_128()
    for file in sorted(p for p in root.rglob("*") if p.suffix in suffixes and "__pycache__" not in p.parts):
        h.update(str(file.relative_to(root)).encode())
        h.update(file.read_bytes())
    return h.hexdigest()


def tree_digest(paths: Iterable[str | Path], *, exclude: Iterable[str | Path] = ()) -> str:
    """xxh3 of the ``stat`` of every file under ``paths`` (missing paths count as missing),
    leaving out the files under ``exclude``: what changed since, without reading a byte."""
    skip = tuple(str(Path(p).absolute()) + os.sep for p in exclude)
    stats = {p: s for p, s in file_stats([Path(p).absolute() for p in paths]).items()
             if not (p + os.sep).startswith(skip)}
    return xxhash.xxh3_128_hexdigest(json.dumps(sorted(stats.items())).encode())


def _reads_other_files(raw: dict[str, Any]) -> bool:
    """True when the grid names files whose content the key would not cover."""
    def walk(node: Any) -> bool:
        if isinstance(node, dict):
            return any(k in ("includes", "config", "user_dir") or walk(v) for k, v in node.items())
        if isinstance(node, list):
            return any(walk(v) for v in node)
        return False

    return walk(raw)


def file_stats(paths: Iterable[str | Path]) -> dict[str, StatKey | None]:
    """``{path: (size, mtime_ns, ctime_ns)}`` of each file, every file inside a folder, None if missing.

    The same key as :mod:`benchmark.data.content_hash` trusts its sidecars with: no user tool
    sets ``ctime``, so an edited file never keeps its key."""
    out: dict[str, StatKey | None] = {}
    for path in paths:
        path = Path(path)
        if path.is_dir():
            for folder, _, names in os.walk(path):
                for name in names:
                    full = os.path.join(folder, name)
                    out[full] = _stat(full)
        else:
            out[str(path)] = _stat(path)
    return out


def _stat(path: str | Path) -> StatKey | None:
    try:
        s = os.stat(path)
    except OSError:
        return None
    return (s.st_size, s.st_mtime_ns, s.st_ctime_ns)


def write_stamp(key: str | None, extra_args: Iterable[str], *, group: str, runs: dict[str, list[str]],
                data_paths: Iterable[str | Path]) -> Path | None:
    """Record a grid that just ended with every cell complete. ``runs``: run dir -> the files it
    must hold. Never fatal: a stamp only saves time."""
    if key is None:
        return None
    paths = sorted({str(p) for p in data_paths})
    record = {
        "version": STAMP_VERSION,
        "group": group,
        "runs": {run: {"summary": list(_stat(Path(run) / "summary.json") or ()),
                       "files": sorted(files)} for run, files in runs.items()},
        "data_paths": paths,
        "data": _data_stats(paths),
    }
    target = stamp_dir(extra_args) / f"{key}.json"
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(record))
        os.replace(tmp, target)
    except OSError:
        return None
    return target


def check_stamp(key: str | None, extra_args: Iterable[str] = ()) -> dict[str, Any] | None:
    """The stamp of ``key`` when everything it recorded is unchanged; None means: run the full path."""
    if key is None:
        return None
    target = stamp_dir(extra_args) / f"{key}.json"
    try:
        record = json.loads(target.read_text())
    except (OSError, ValueError):
        return None
    if record.get("version") != STAMP_VERSION or not record.get("runs"):
        return None
    for run, entry in record["runs"].items():
        summary = _stat(Path(run) / "summary.json")
        if summary is None or list(summary) != entry.get("summary"):
            return None
        if not all(os.path.exists(os.path.join(run, name)) for name in entry.get("files", ())):
            return None
    paths = record.get("data_paths") or []
    if _data_stats(paths) != record.get("data"):
        return None
    return record


def _data_stats(paths: Iterable[str]) -> dict[str, list[int] | None]:
    """The stats of the data paths, a folder as every file inside it (a new file shows)."""
    return {p: list(s) if s else None for p, s in file_stats(paths).items()}


def report_line(record: dict[str, Any]) -> str:
    """What ``msd grid run`` prints when the stamp answered."""
    return (f"grid {record.get('group')}: nothing to do · {len(record['runs'])} already complete (skipped) · "
            "0 failed · 0 blocked (inputs, code, data and run store unchanged since the grid last completed)")
