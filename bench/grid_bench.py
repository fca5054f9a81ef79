"""Grid runner throughput: 1 vs 2 workers, and the scheduler's overhead per cell.

Each measurement is one fresh ``msd grid run`` process on an empty run store (the data is
made once beforehand and shared), so the numbers include everything a user waits for:
start-up, grid expansion, the DAG (data check, teacher, cache, students), W&B offline
files, the run-store index.

* speedup = wall(1 worker) / wall(2 workers), measured in the same invocation;
* overhead per cell = (runner wall time − Σ cells' own wall time) / cells, with 1 worker
  (so the cells' times do not overlap); it is what the runner adds around training: process
  start, imports, W&B, the teacher-cache task, polling.

    python bench/grid_bench.py                      # experiments/smoke.yaml, forkserver and exec
    python bench/grid_bench.py --grid experiments/table2.yaml --scale smoke --starts forkserver
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_once(grid: Path, scale: str, root: Path, data: Path, workers: int, start: str) -> dict:
    save = root / f"runs-{start}-{workers}w"
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_DIR": str(root / f"wandb-{start}-{workers}w"),
           "WANDB_SILENT": "true"}
    command = [sys.executable, "-c", "from benchmark.cli import main; main()", "grid", "run", str(grid),
               "--scale", scale, "--workers", str(workers), "--threads", "1", "--start", start, "--no-progress",
               f"env.data_dir={data}", f"env.save_dir={save}", f"env.cache_dir={root / f'cache-{start}-{workers}w'}"]
    started = time.perf_counter()
    proc = subprocess.run(command, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"grid run failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    summaries = [json.loads(p.read_text()) for p in save.glob("*/summary.json")]
    cell_wall = sum(float(s.get("wall_time_s") or 0.0) for s in summaries)
    train = sum(float(s.get("train_time_s") or 0.0) for s in summaries)
    return {"workers": workers, "start": start, "cells": len(summaries), "wall_s": wall,
            "cells_wall_s": cell_wall, "train_s": train}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--grid", type=Path, default=REPO / "experiments" / "smoke.yaml")
    parser.add_argument("--scale", default="default")
    parser.add_argument("--starts", default="forkserver,exec", help="local start methods to compare")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
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
    print(f"grid {args.grid.name} (scale {args.scale}) on {os.cpu_count()} cores; tmp {root}")
    results = []
    for start in args.starts.split(","):
        for workers in (1, 2):
            result = run_once(args.grid, args.scale, root, data, workers, start)
            results.append(result)
            print(f"  {start:>10}  {workers} worker(s): {result['wall_s']:6.1f} s wall for {result['cells']} cells "
                  f"(cells' own wall time {result['cells_wall_s']:.1f} s, of which training {result['train_s']:.1f} s)")
    print()
    for start in args.starts.split(","):
        one = next(r for r in results if r["start"] == start and r["workers"] == 1)
        two = next(r for r in results if r["start"] == start and r["workers"] == 2)
        overhead = (one["wall_s"] - one["cells_wall_s"]) / max(1, one["cells"])
        print(f"{start}: speedup 2 vs 1 workers = {one['wall_s'] / two['wall_s']:.2f}x; "
              f"scheduler overhead per cell = {overhead:.1f} s "
              f"({one['wall_s']:.1f} s runner − {one['cells_wall_s']:.1f} s in cells, / {one['cells']})")
    if not args.keep:
        import shutil

        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
