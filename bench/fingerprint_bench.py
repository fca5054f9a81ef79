"""What the data fingerprint in every run id costs: the first computation, and each reuse.

A run id covers the content of the files a run reads (:mod:`benchmark.data.fingerprint`); the
content hash is computed once and kept in a sidecar next to the data, keyed by each file's size,
mtime and ctime (:mod:`benchmark.data.content_hash`). Measured here, interleaved
(``bench/interleave.py``: per-round ratios, medians with their spread, and the machine load at
start and end):

* **embedded datasets**: the fingerprints of all five default datasets (generated under a
  temporary directory): *first* (no sidecar: every byte hashed, from the page cache, since the
  generator just wrote the files), *reuse* (a new process: sidecars read, one ``stat`` per file)
  and *in process* (a second run id in the same process, e.g. the next cell of a grid);
* **a large features file** (``--large-gb``, default 1 GB of random bytes): *first, cold* (the
  file evicted from the page cache with ``posix_fadvise``: what a fresh copy of real data
  costs), *first, warm* (hash-bound), and *reuse*. A resume's check re-reads every byte, so it
  costs what *first* costs;
* **a grid's expansion** (``--grid``, e.g. ``experiments/table2.yaml``, what ``msd grid show``
  does before reading the run store) over the generated data, with the data fingerprint against
  without it (stubbed out), to show what the fingerprint adds per cell.

    python bench/fingerprint_bench.py                     # 1 GB file, 5 rounds
    python bench/fingerprint_bench.py --large-gb 4 --dir /big/disk --json out.json
    python bench/fingerprint_bench.py --large-gb 0 --grid experiments/table2.yaml
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from interleave import interleave, print_load, ratio_summary, spread  # noqa: E402

DATASETS = ("hateful_memes", "mmimdb", "visual_entailment", "vqa2", "easy_vqa")


def _configs(data_dir: Path, cache_dir: Path) -> list:
    from benchmark.config.loader import build_config

    return [build_config([f"dataset={name}", "method=teacher", f"env.data_dir={data_dir}",
                          f"env.cache_dir={cache_dir}"]) for name in DATASETS]


def _drop_sidecars(root: Path) -> None:
    for sidecar in root.rglob("*.msd-fingerprint.json"):
        sidecar.unlink()


def _evict(path: Path) -> None:
    """Drop one file's clean pages from the page cache (no other process is affected)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fdatasync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def _timed(fn) -> float:
    tick = time.perf_counter()
    fn()
    return time.perf_counter() - tick


def embedded(root: Path, rounds: int) -> dict:
    from benchmark.data import content_hash
    from benchmark.data.fingerprint import data_fingerprint, read_paths
    from benchmark.data.make import make_dataset

    data_dir, cache_dir = root / "data", root / "cache"
    for name in DATASETS:
        make_dataset(name, data_dir)
    configs = _configs(data_dir, cache_dir)
    paths = [p for c in configs for p in read_paths(c).values()]
    files = sum(1 if p.is_file() else sum(1 for q in p.rglob("*") if q.is_file()) for p in paths)
    size = sum(p.stat().st_size if p.is_file() else sum(q.stat().st_size for q in p.rglob("*") if q.is_file())
               for p in paths)

    def all_fingerprints() -> None:
        for config in configs:
            data_fingerprint(config)

    def first() -> float:
        _drop_sidecars(data_dir)
        content_hash._memo.clear()
        return _timed(all_fingerprints)

    def reuse() -> float:
        content_hash._memo.clear()
        return _timed(all_fingerprints)

    def in_process() -> float:
        return _timed(all_fingerprints)

    times = interleave({"first": first, "reuse": reuse, "in process": in_process}, rounds=rounds)
    return {"datasets": list(DATASETS), "files": files, "bytes": size,
            "seconds": {k: spread(v).to_dict() for k, v in times.items()},
            "first_over_reuse": ratio_summary(times["first"], times["reuse"]).to_dict(),
            "reuse_over_in_process": ratio_summary(times["reuse"], times["in process"]).to_dict()}


def large(root: Path, gigabytes: float, rounds: int) -> dict:
    from benchmark.data import content_hash

    path = root / "large" / "features.npy"
    path.parent.mkdir(parents=True, exist_ok=True)
    block = os.urandom(64 << 20)
    total = int(gigabytes * (1 << 30))
    with open(path, "wb") as handle:
        written = 0
        while written < total:
            chunk = block[: min(len(block), total - written)]
            handle.write(chunk)
            written += len(chunk)

    def first_cold() -> float:
        content_hash.sidecar_path(path).unlink(missing_ok=True)
        content_hash._memo.clear()
        _evict(path)
        return _timed(lambda: content_hash.content_hash(path, root / "cache"))

    def first_warm() -> float:
        content_hash.sidecar_path(path).unlink(missing_ok=True)
        content_hash._memo.clear()
        return _timed(lambda: content_hash.content_hash(path, root / "cache"))

    def reuse() -> float:
        content_hash._memo.clear()
        return _timed(lambda: content_hash.content_hash(path, root / "cache"))

    times = interleave({"first, cold": first_cold, "first, warm": first_warm, "reuse": reuse}, rounds=rounds)
    gb = total / 1e9
    return {"bytes": total, "seconds": {k: spread(v).to_dict() for k, v in times.items()},
            "gb_per_s": {k: spread([gb / t for t in v]).to_dict() for k, v in times.items() if k != "reuse"},
            "cold_over_warm": ratio_summary(times["first, cold"], times["first, warm"]).to_dict()}


def grid_expansion(root: Path, grid: Path, rounds: int) -> dict:
    import benchmark.data.fingerprint as fingerprint
    from benchmark.grid.cells import expand
    from benchmark.grid.spec import load_grid

    real = fingerprint.data_fingerprint
    args = [f"env.data_dir={root / 'data'}", f"env.cache_dir={root / 'cache'}", f"env.save_dir={root / 'runs'}"]
    cells = len(expand(load_grid(grid), args).cells)

    def variant(stub: bool):
        def run() -> float:
            fingerprint.data_fingerprint = (lambda config, **_: fingerprint.DataFingerprint({})) if stub else real
            try:
                return _timed(lambda: expand(load_grid(grid), args))
            finally:
                fingerprint.data_fingerprint = real
        return run

    times = interleave({"with fingerprint": variant(False), "without": variant(True)}, rounds=rounds)
    return {"grid": str(grid), "cells": cells, "seconds": {k: spread(v).to_dict() for k, v in times.items()},
            "with_over_without": ratio_summary(times["with fingerprint"], times["without"]).to_dict()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--large-gb", type=float, default=1.0, help="size of the large file; 0 skips it")
    parser.add_argument("--dir", type=Path, default=None, help="where to write (default: a temporary directory)")
    parser.add_argument("--grid", type=Path, default=None, help="also time this grid's expansion")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    start = print_load("start")
    root = Path(tempfile.mkdtemp(prefix="fingerprint-bench-", dir=args.dir))
    try:
        out = {"embedded": embedded(root, args.rounds)}
        if args.large_gb > 0:
            out["large"] = large(root, args.large_gb, args.rounds)
        if args.grid:
            out["grid"] = grid_expansion(root, args.grid, args.rounds)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    end = print_load("end")
    out["load"] = {"start": start.to_dict(), "end": end.to_dict()}
    e = out["embedded"]
    print(f"embedded datasets ({len(e['datasets'])}, {e['files']} files, {e['bytes'] / 1e6:.1f} MB), seconds for all five:")
    for name, s in e["seconds"].items():
        print(f"  {name:>12}: {spread_text(s, 1e3)} ms")
    print(f"  first / reuse: {spread_text(e['first_over_reuse'])}; reuse / in process: {spread_text(e['reuse_over_in_process'])}")
    if "large" in out:
        g = out["large"]
        print(f"large file ({g['bytes'] / 2**30:.2f} GiB):")
        for name, s in g["seconds"].items():
            rate = f"  ({spread_text(g['gb_per_s'][name])} GB/s)" if name in g["gb_per_s"] else ""
            print(f"  {name:>12}: {spread_text(s, 1e3)} ms{rate}")
        print(f"  cold / warm: {spread_text(g['cold_over_warm'])}")
    if "grid" in out:
        g = out["grid"]
        print(f"expanding {g['grid']} ({g['cells']} cells), seconds:")
        for name, s in g["seconds"].items():
            print(f"  {name:>16}: {spread_text(s)}")
        print(f"  with / without: {spread_text(g['with_over_without'])}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")


def spread_text(s: dict, scale: float = 1.0) -> str:
    f = lambda x: f"{x * scale:.3g}"  # noqa: E731
    return f"{f(s['median'])} (IQR {f(s['q1'])}-{f(s['q3'])}, range {f(s['min'])}-{f(s['max'])}, n={s['n']})"


if __name__ == "__main__":
    main()
