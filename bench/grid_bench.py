"""Grid runner throughput: 1 vs 2 workers, and the scheduler's overhead per cell.

Each measurement is one fresh ``msd grid run`` process on an empty run store (the data is
made once beforehand and shared), so the numbers include everything a user waits for:
start-up, grid expansion, the DAG (data check, teacher, cache, students), W&B offline
files, the run-store index.

The variants (each start method × 1 and 2 workers) take turns, round after round, with the
first one rotating (``bench/interleave.py``), so a load spike from another process hits them
alike; the figures are medians over rounds with their spread, and the machine's load is
printed at start and end.

* speedup = wall(1 worker) / wall(2 workers), per round, then the median;
* overhead per cell = (runner wall time − Σ cells' own wall time) / cells, with 1 worker
  (so the cells' times do not overlap); it is what the runner adds around training: process
  start, imports, W&B, the teacher-cache task, polling.

    python bench/grid_bench.py                      # experiments/smoke.yaml, forkserver and exec
    python bench/grid_bench.py --grid experiments/table2.yaml --scale smoke --starts forkserver
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from interleave import interleave, print_load, ratio_summary, spread

REPO = Path(__file__).resolve().parents[1]


def run_once(grid: Path, scale: str, root: Path, data: Path, workers: int, start: str, tag: str) -> dict:
    """One ``msd grid run`` on an empty run store under ``root/tag``; removed afterwards."""
    work = root / tag
    save = work / "runs"
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_DIR": str(work / "wandb"), "WANDB_SILENT": "true"}
    command = [sys.executable, "-c", "from benchmark.cli import main; main()", "grid", "run", str(grid),
               "--scale", scale, "--workers", str(workers), "--threads", "1", "--start", start, "--no-progress",
               f"env.data_dir={data}", f"env.save_dir={save}", f"env.cache_dir={work / 'cache'}"]
    started = time.perf_counter()
    proc = subprocess.run(command, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"grid run failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    summaries = [json.loads(p.read_text()) for p in save.glob("*/summary.json")]
    shutil.rmtree(work, ignore_errors=True)
    return {"workers": workers, "start": start, "cells": len(summaries), "wall_s": wall,
            "cells_wall_s": sum(float(s.get("wall_time_s") or 0.0) for s in summaries),
            "train_s": sum(float(s.get("train_time_s") or 0.0) for s in summaries)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--grid", type=Path, default=REPO / "experiments" / "smoke.yaml")
    parser.add_argument("--scale", default="default")
    parser.add_argument("--starts", default="forkserver,exec", help="local start methods to compare")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (each runs every variant once)")
    parser.add_argument("--warmup", type=int, default=1, help="discarded rounds first (cold caches, imports)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (the data)")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="msd-grid-bench-"))
    data = root / "data"
    # Make the data once, as the grid's own data tasks would, so every measurement finds it.
    from benchmark.grid.cells import expand
    from benchmark.grid.dag import DATA, build_plan
    from benchmark.grid.spec import load_grid
    from benchmark.grid.worker import run_data

    plan = build_plan(expand(load_grid(args.grid, args.scale), [f"env.data_dir={data}"]))
    for task in plan.tasks.values():
        if task.kind == DATA:
            run_data(task.payload)
    starts = [s for s in args.starts.split(",") if s]
    start_load = print_load("start")
    print(f"grid {args.grid.name} (scale {args.scale}); {args.rounds} rounds of "
          f"{', '.join(f'{s}/{w}w' for s in starts for w in (1, 2))}, first variant rotating; tmp {root}")
    runs: dict[str, list[dict]] = {}
    counter = itertools.count()

    def variant(start: str, workers: int):
        def measure() -> float:
            result = run_once(args.grid, args.scale, root, data, workers, start, f"run{next(counter)}")
            runs.setdefault(f"{start}/{workers}", []).append(result)
            print(f"  {start:>10}  {workers} worker(s): {result['wall_s']:6.1f} s wall for {result['cells']} cells "
                  f"(cells' own wall time {result['cells_wall_s']:.1f} s, training {result['train_s']:.1f} s)",
                  flush=True)
            return result["wall_s"]
        return measure

    variants = {f"{s}/{w}": variant(s, w) for s in starts for w in (1, 2)}
    if args.warmup:
        print(f"warm-up ({args.warmup} round(s), discarded):")
        interleave(variants, rounds=args.warmup, warmup=0)
        runs.clear()
        print("measured:")
    times = interleave(variants, rounds=args.rounds, warmup=0)
    end_load = print_load("end")
    print()
    for start in starts:
        one, two = times[f"{start}/1"], times[f"{start}/2"]
        singles = runs[f"{start}/1"]
        overhead = spread([(r["wall_s"] - r["cells_wall_s"]) / max(1, r["cells"]) for r in singles])
        print(f"{start}: wall 1 worker {spread(one).format('{:.1f}')} s; 2 workers {spread(two).format('{:.1f}')} s")
        print(f"  speedup 2 vs 1 workers = {ratio_summary(one, two)}")
        print(f"  scheduler overhead per cell (1 worker) = {overhead.format('{:.1f}')} s over {singles[0]['cells']} cells")
    print(f"\nload: {start_load}  ->  {end_load}")
    if args.keep:
        print(f"kept {root}")
    else:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
