"""The teacher cache's machinery at VQA2 size: build time and memory, disk, open, reads, verification.

A stand-in teacher (seeded random logits on three views, sparse VQA soft-score targets) feeds
the real writer (:func:`benchmark.distill.cache.write_split`: fp16 logits, every registered
saliency definition, the streamed val re-check, chunked writes with checksums), so what is
measured is the cache, not a model. The build runs in a fresh subprocess, whose peak resident
memory (``ru_maxrss``) is the figure to hold under 2 GB; its resident memory right after the
imports is printed beside it.

Then, in this process:

* **open**: ``open_cache`` with lazy verification against full verification, interleaved, from a
  cold page cache (a full verification reads every byte: what ``msd cache verify`` costs);
* **disk or hash**: a cold sequential read of the first GB by chunk, without hashing and with
  each hash, interleaved;
* **random batches** of 32 train rows, the read a KD/MSD student makes per step: cold (the
  files evicted from the page cache with ``posix_fadvise`` and a freshly opened cache) with
  lazy verification against no verification, interleaved; then warm (the same rows again);
* **hash functions**: xxh3_128 against blake2b on the same chunks from memory, interleaved;

Interleaved comparisons use ``bench/interleave.py``; each reports medians with their spread and
the machine load at start and end (the machine may be shared).

    python bench/cache_bench.py                    # small (2,000 / 1,000 questions), seconds
    python bench/cache_bench.py --full             # VQA2: 443,757 train, 214,354 val and test
    python bench/cache_bench.py --full --dir /big/disk --json results.json

The default directory is a temporary one, deleted at the end (``--keep`` keeps it). At full
size the cache is 16.4 GB on disk.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from interleave import interleave, load_snapshot, ratio_summary, spread, timed  # noqa: E402

VQA2 = {"train": 443_757, "val": 214_354, "test": 214_354, "labels": 3_129}
"""MMF's VQA2 question counts (imdb_train2014, imdb_val2014; test at val2014's size) and answer
vocabulary with ``<unk>``."""
SMALL = {"train": 2_000, "val": 1_000, "test": 1_000, "labels": 3_129}
TASK = "soft_score"
KEY = "cache-bench"


# -- the build, in its own process -----------------------------------------------------------------
def _rss_now_mb() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def stand_in_batches(split: str, n: int, labels: int, batch: int, clock: list[float]):
    """Seeded random logits for three views and 1-3 scored answers per question, ``batch`` rows
    at a time in row order (as the real build's unshuffled loader gives them)."""
    import torch

    offset = ("train", "val", "test").index(split) << 24
    for b, start in enumerate(range(0, n, batch)):
        tick = time.perf_counter()
        g = torch.Generator().manual_seed(offset + b)
        rows = np.arange(start, min(n, start + batch))
        logits = torch.randn(3, rows.size, labels, generator=g) * 4
        targets = torch.zeros(rows.size, labels)
        answers = torch.randint(1, labels, (rows.size, 3), generator=g)
        targets.scatter_(1, answers, torch.tensor([1.0, 0.6, 0.3]).expand(rows.size, 3))
        outputs = {"multi": logits[0], "image": logits[1], "text": logits[2]}
        clock[0] += time.perf_counter() - tick
        yield rows, outputs, targets


def build(directory: Path, sizes: dict, batch: int) -> dict:
    """Write the cache under ``directory`` with the real writer; returns timings and memory."""
    import torch

    from benchmark.distill.cache import MetricRecheck, cache_meta, write_split
    from benchmark.registry import registry

    torch.set_num_threads(1)
    rss_after_imports = _rss_now_mb()
    definitions = registry.names("saliency")
    directory.mkdir(parents=True, exist_ok=True)
    arrays, recheck, per_split, teacher_clock = {}, {}, {}, [0.0]
    started = time.perf_counter()
    for split in ("train", "val", "test"):
        tick = time.perf_counter()
        metric = MetricRecheck(["vqa_accuracy"], TASK, prefix="val/vqa2") if split == "val" else None
        batches = stand_in_batches(split, sizes[split], sizes["labels"], batch, teacher_clock)
        arrays[split] = write_split(directory, split, batches, sizes[split], sizes["labels"], TASK, definitions,
                                    recheck=metric)
        recheck.update(metric.result() if metric else {})
        per_split[split] = time.perf_counter() - tick
    meta = cache_meta(KEY, {"bench": sizes}, arrays, definitions, recheck)
    (directory / "meta.json").write_text(json.dumps(meta))
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {"build_s": time.perf_counter() - started, "stand_in_teacher_s": teacher_clock[0], "per_split_s": per_split,
            "peak_rss_mb": usage.ru_maxrss / 1024, "rss_after_imports_mb": rss_after_imports,
            "val_recheck": recheck, "batch": batch}


def build_in_subprocess(directory: Path, sizes: dict, batch: int) -> dict:
    command = [sys.executable, __file__, "--_build", str(directory), "--_sizes", json.dumps(sizes),
               "--batch", str(batch)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"the build subprocess failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# -- measurements in this process ------------------------------------------------------------------
def evict(directory: Path) -> None:
    """Drop the cache's files from the page cache (clean pages only: the build fsynced them)."""
    for path in directory.glob("*.npy"):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def measure(directory: Path, rounds: int, batches_per_round: int, verify_rounds: int, seed: int = 0) -> dict:
    import torch

    from benchmark.distill.cache import open_cache
    from benchmark.distill.cache_store import HASHES, ChunkedArray

    out: dict = {}
    probe = open_cache(directory, KEY, verify="lazy")
    out["open_lazy_s"], out["open_full_s"] = _open_times(directory, verify_rounds, open_cache)
    out["full_verify_cold_gbps"] = probe.nbytes / 1e9 / out["open_full_s"]["median"]
    n_train = probe.meta["shapes"]["train"]["logits"][0]
    spec = probe.meta["arrays"]["train"]["logits"]
    rng = np.random.default_rng(seed)

    def read_round(verify: bool) -> tuple[float, float]:
        evict(directory)
        array = ChunkedArray(directory, spec, verify_reads=verify)
        picks = [rng.choice(n_train, size=32, replace=False) for _ in range(batches_per_round)]
        times = []
        for rows in picks:
            tick = time.perf_counter()
            torch.from_numpy(np.asarray(array.take(rows), dtype=np.float32))
            times.append(time.perf_counter() - tick)
        warm = []
        for rows in picks:
            tick = time.perf_counter()
            torch.from_numpy(np.asarray(array.take(rows), dtype=np.float32))
            warm.append(time.perf_counter() - tick)
        array.close()
        last_round[verify] = (times, warm)
        return float(np.median(times))

    last_round: dict[bool, tuple[list[float], list[float]]] = {}
    firsts: dict[str, list[float]] = {"cold, lazy verification": [], "cold, no verification": []}
    warms: list[float] = []

    def variant(verify: bool, name: str):
        def run() -> float:
            median = read_round(verify)
            firsts[name].append(last_round[verify][0][0])
            if verify:
                warms.extend(last_round[verify][1])
            return median
        return run

    reads = interleave({name: variant(name.endswith("lazy verification"), name) for name in firsts},
                       rounds=rounds, warmup=0)
    out["batch_read_median_s"] = {name: spread(values).to_dict() for name, values in reads.items()}
    out["batch_read_lazy_over_none"] = ratio_summary(reads["cold, lazy verification"],
                                                     reads["cold, no verification"]).to_dict()
    out["batch_read_first_s"] = {name: spread(values).to_dict() for name, values in firsts.items()}
    out["batch_read_warm_s"] = spread(warms).to_dict()

    chunk_bytes = spec["chunk_rows"] * ChunkedArray(directory, spec).row_bytes
    count = max(1, min(len(spec["checksums"]), (256 << 20) // chunk_bytes))
    with open(directory / spec["file"], "rb") as handle:
        handle.seek(spec["offset"])
        block = handle.read(count * chunk_bytes)
    views = [memoryview(block)[i * chunk_bytes:(i + 1) * chunk_bytes] for i in range(count)]
    hashes = interleave({name: timed(lambda fn=fn: [fn(v) for v in views]) for name, fn in HASHES.items()},
                        rounds=rounds)
    out["hash_gbps"] = {name: spread([len(block) / 1e9 / t for t in values]).to_dict() for name, values in hashes.items()}
    out["hash_blake2b_over_xxh3"] = spread([b / x for b, x in zip(hashes["blake2b"], hashes["xxh3_128"])]).to_dict()

    out["cold_read_gbps"], out["cold_read_xxh3_over_plain"] = _cold_sequential(directory, spec, verify_rounds)
    out["reader_peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def _cold_sequential(directory: Path, spec: dict, rounds: int, limit: int = 1 << 30) -> tuple[dict, dict]:
    """Read the first ``limit`` bytes of the train logits from a cold page cache in chunks, without
    hashing and with each hash, interleaved: how much of a full verification is the disk's."""
    from benchmark.distill.cache_store import HASHES, ChunkedArray

    chunk = spec["chunk_rows"] * ChunkedArray(directory, spec).row_bytes
    count = max(1, min(len(spec["checksums"]) - 1, limit // chunk))
    buffer = memoryview(bytearray(chunk))

    def reader(hash_fn):
        def run() -> float:
            evict(directory)
            fd = os.open(directory / spec["file"], os.O_RDONLY)
            try:
                tick = time.perf_counter()
                for k in range(count):
                    os.preadv(fd, [buffer], spec["offset"] + k * chunk)
                    if hash_fn is not None:
                        hash_fn(buffer)
                return time.perf_counter() - tick
            finally:
                os.close(fd)
        return run

    variants = {"read only": reader(None), **{f"read + {name}": reader(fn) for name, fn in HASHES.items()}}
    times = interleave(variants, rounds=rounds, warmup=0)
    gbps = {name: spread([count * chunk / 1e9 / t for t in values]).to_dict() for name, values in times.items()}
    return gbps, ratio_summary(times["read + xxh3_128"], times["read only"]).to_dict()


def _open_times(directory: Path, rounds: int, open_cache) -> tuple[dict, dict]:
    """Open with lazy against full verification, interleaved, each from a cold page cache; a full
    round reads and hashes every byte, which is also what ``msd cache verify`` costs."""
    def opener(verify: str):
        def run() -> float:
            evict(directory)
            tick = time.perf_counter()
            open_cache(directory, KEY, verify=verify).close()
            return time.perf_counter() - tick
        return run

    times = interleave({"lazy": opener("lazy"), "full": opener("full")}, rounds=rounds, warmup=0)
    return spread(times["lazy"]).to_dict(), spread(times["full"]).to_dict()


# -- report ----------------------------------------------------------------------------------------
def _fmt(d: dict, scale: float = 1.0, unit: str = "s", fmt: str = "{:.3g}") -> str:
    f = lambda x: fmt.format(x * scale)  # noqa: E731
    return f"{f(d['median'])} {unit} (IQR {f(d['q1'])}-{f(d['q3'])}, range {f(d['min'])}-{f(d['max'])}, n={d['n']})"


def report(result: dict) -> str:
    s, b, m = result["sizes"], result["build"], result["measure"]
    lines = [
        f"teacher cache: train {s['train']:,} / val {s['val']:,} / test {s['test']:,} questions x 3 views x "
        f"{s['labels']:,} answers (fp16), {len(result['definitions'])} saliency definitions",
        f"machine at start: {result['load_start']}",
        f"build: {b['build_s']:.1f} s (stand-in teacher {b['stand_in_teacher_s']:.1f} s of it; per split "
        + ", ".join(f"{k} {v:.1f} s" for k, v in b["per_split_s"].items()) + f"; batches of {b['batch']})",
        f"build peak RSS: {b['peak_rss_mb']:.0f} MB (of which {b['rss_after_imports_mb']:.0f} MB right after imports)",
        f"on disk: {result['bytes_on_disk'] / 1e9:.2f} GB in {result['files']} files; meta.json "
        f"{result['meta_bytes'] / 1e3:.0f} kB, {result['chunks']:,} chunks",
        f"open, lazy verification: {_fmt(m['open_lazy_s'], 1e3, 'ms')}",
        f"open, full verification (cold page cache; = msd cache verify): {_fmt(m['open_full_s'])} = "
        f"{m['full_verify_cold_gbps']:.2f} GB/s",
        "random batch of 32 train rows, median per batch over a round:",
        *(f"  {name}: {_fmt(v, 1e3, 'ms')}" for name, v in m["batch_read_median_s"].items()),
        f"  lazy verification / no verification, per round: {_fmt(m['batch_read_lazy_over_none'], 1, 'x')}",
        "  first batch after opening:",
        *(f"    {name}: {_fmt(v, 1e3, 'ms')}" for name, v in m["batch_read_first_s"].items()),
        f"  warm (same rows again): {_fmt(m['batch_read_warm_s'], 1e3, 'ms')}",
        "hash speed on chunks in memory: " + "; ".join(
            f"{name} {_fmt(v, 1, 'GB/s')}" for name, v in m["hash_gbps"].items()),
        f"  blake2b / xxh3_128 time: {_fmt(m['hash_blake2b_over_xxh3'], 1, 'x')}",
        "cold sequential read of the first GB of train logits, by chunk: " + "; ".join(
            f"{name} {_fmt(v, 1, 'GB/s')}" for name, v in m["cold_read_gbps"].items()),
        f"  (read + xxh3_128) / read only, per round: {_fmt(m['cold_read_xxh3_over_plain'], 1, 'x')}",
        f"reader peak RSS: {m['reader_peak_rss_mb']:.0f} MB",
        f"machine at end: {result['load_end']}",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--full", action="store_true", help="VQA2 size (16.4 GB on disk)")
    parser.add_argument("--train", type=int, help="train questions (overrides the size)")
    parser.add_argument("--val", type=int, help="val and test questions (overrides the size)")
    parser.add_argument("--batch", type=int, default=64, help="rows per batch (the build uses 2 x training.batch_size)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds per comparison")
    parser.add_argument("--batches", type=int, default=20, help="random batches read per round")
    parser.add_argument("--verify-rounds", type=int, default=3,
                        help="interleaved rounds of open (lazy) vs open with full verification (cold)")
    parser.add_argument("--dir", type=Path, help="where to build (default: a temporary directory)")
    parser.add_argument("--keep", action="store_true", help="keep the cache afterwards")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON")
    parser.add_argument("--_build", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--_sizes", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args._build:
        print(json.dumps(build(args._build, json.loads(args._sizes), args.batch)))
        return {}
    sizes = dict(VQA2 if args.full else SMALL)
    sizes["train"] = args.train or sizes["train"]
    sizes["val"] = sizes["test"] = args.val or sizes["val"]
    parent = args.dir or Path(tempfile.mkdtemp(prefix="msd-cache-bench-"))
    directory = parent / "cache"
    if directory.exists():
        raise SystemExit(f"{directory} exists; remove it or choose another --dir")
    result: dict = {"sizes": sizes, "load_start": str(load_snapshot())}
    try:
        result["build"] = build_in_subprocess(directory, sizes, args.batch)
        files = list(directory.iterdir())
        meta = json.loads((directory / "meta.json").read_text())
        result.update(bytes_on_disk=sum(p.stat().st_size for p in files), files=len(files),
                      meta_bytes=(directory / "meta.json").stat().st_size, definitions=meta["saliency_definitions"],
                      chunks=sum(len(s["checksums"]) for kinds in meta["arrays"].values() for s in kinds.values()))
        result["measure"] = measure(directory, args.rounds, args.batches, args.verify_rounds)
    finally:
        if not args.keep:
            shutil.rmtree(directory, ignore_errors=True)
            if args.dir is None:
                shutil.rmtree(parent, ignore_errors=True)
    result["load_end"] = str(load_snapshot())
    print(report(result), flush=True)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
