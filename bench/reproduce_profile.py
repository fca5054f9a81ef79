"""Where the time of ``make reproduce-table2`` goes: each step, each kind of task, and inside a task.

Runs the steps of the Makefile target (grid table2, grid easy_vqa, ``msd analyze all``) into a
fresh results folder, then runs them all again (the "nothing to do" case), and prints:

* per step: wall time, the CPU seconds of the command itself (its own process and the
  processes it waited for) and of its grid tasks, and the load average at its start and end;
* per kind of task (data, teacher, student, cache): count, median wall time with its
  interquartile range, total wall and CPU seconds (``cpu_s`` of each task's result file);
* with ``--profile``: every task runs under cProfile (``MSD_GRID_PROFILE_DIR``, which slows it a
  little) and the cumulative seconds of a few phases are summed over tasks: W&B (init, logging,
  finish, the cache lineage run), trainer set-up and data loading, the training loop, the final
  evaluation and files, the teacher-cache build.

A shared machine's wall times follow its load; the CPU seconds much less, so both are shown.
The variants of a change are compared by running this before and after it on the same machine
(the figures in README.md's performance section came from it).

    python bench/reproduce_profile.py --scale smoke [--profile] [--results /tmp/rp]
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import pstats
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
GRIDS = ("experiments/table2.yaml", "experiments/easy_vqa.yaml")
PHASES = {  # label -> (file fragment, function name) whose cumulative time is summed over tasks
    "W&B (init/log/finish/lineage)": [("wandb_logger.py", n) for n in ("on_start", "on_log", "on_finish",
                                                                         "log_cache_lineage")],
    "trainer set-up + data": [("trainer.py", "_setup"), ("trainer.py", "_load_data")],
    "training loop": [("trainer.py", "_train")],
    "final eval + files": [("trainer.py", "_finish")],
    "teacher cache build": [("cache.py", "get_teacher_cache")],
}


def load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def step(name: str, argv: list[str], env: dict[str, str]) -> dict:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start_load, tick = load(), time.perf_counter()
    proc = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - tick
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if proc.returncode != 0:
        print(proc.stdout[-2000:], proc.stderr[-4000:], sep="\n", file=sys.stderr)
        raise SystemExit(f"{name} failed ({proc.returncode})")
    return {"step": name, "wall_s": wall, "cpu_s": cpu, "load": f"{start_load} -> {load()}",
            "last": (proc.stdout.strip().splitlines() or [""])[-1][:110]}


def task_results(results: Path, since: float) -> list[dict]:
    out = []
    for path in glob.glob(str(results / "grids" / "*" / "tasks" / "*.result.json")):
        if os.path.getmtime(path) < since:
            continue
        record = json.loads(Path(path).read_text())
        task = str(record.get("task", ""))
        kind = task.split(":", 1)[0]
        if kind == "train":
            kind = "teacher" if "-teacher-" in task else "student"
        out.append({"kind": kind, "seconds": float(record.get("seconds") or 0), "cpu_s": float(record.get("cpu_s") or 0)})
    return out


def phases(profile_dir: Path) -> dict[str, float]:
    totals = dict.fromkeys(PHASES, 0.0)
    for path in glob.glob(str(profile_dir / "*.prof")):
        stats = pstats.Stats(path).stats  # type: ignore[attr-defined]
        for label, targets in PHASES.items():
            for (file, _, func), (_, _, _, cum, _) in stats.items():
                if any(file.endswith(f) and func == fn for f, fn in targets):
                    totals[label] += cum
    return totals


def run_all(results: Path, scale: str, env: dict[str, str], msd: str) -> list[dict]:
    rows = []
    for grid in GRIDS:
        started = time.time()
        row = step(f"grid {Path(grid).stem}", [msd, "grid", "run", "--scale", scale, "--no-progress", grid], env)
        tasks = task_results(results, started)
        row["tasks_cpu_s"] = sum(t["cpu_s"] for t in tasks)
        row["tasks"] = tasks
        rows.append(row)
    rows.append(step("analyze all", [msd, "analyze", "all", "--out", str(results), "--scale", scale], env))
    return rows


def print_rows(title: str, rows: list[dict]) -> None:
    print(f"\n{title}")
    print(f"  {'step':<18}{'wall s':>8}{'cpu s (cmd)':>13}{'cpu s (tasks)':>15}  load start -> end  | last line")
    for r in rows:
        print(f"  {r['step']:<18}{r['wall_s']:8.1f}{r['cpu_s']:13.1f}{r.get('tasks_cpu_s', 0):15.1f}  {r['load']}  | {r['last']}")
    print(f"  {'total':<18}{sum(r['wall_s'] for r in rows):8.1f}"
          f"{sum(r['cpu_s'] + r.get('tasks_cpu_s', 0) for r in rows):13.1f} (cmd + tasks)")


def print_tasks(rows: list[dict]) -> None:
    tasks = [t for r in rows for t in r.get("tasks", [])]
    print(f"\n  {'task kind':<10}{'n':>4}{'median wall s (IQR)':>24}{'sum wall s':>12}{'sum cpu s':>11}")
    for kind in ("data", "teacher", "cache", "student"):
        walls = np.array([t["seconds"] for t in tasks if t["kind"] == kind])
        if not len(walls):
            continue
        q1, med, q3 = np.percentile(walls, [25, 50, 75])
        cpu = sum(t["cpu_s"] for t in tasks if t["kind"] == kind)
        print(f"  {kind:<10}{len(walls):4d}{med:10.1f} ({q1:.1f}-{q3:.1f}){'':>6}{walls.sum():12.1f}{cpu:11.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scale", default="smoke")
    parser.add_argument("--results", type=Path, default=Path("/tmp/msd-reproduce-profile"))
    parser.add_argument("--profile", action="store_true", help="cProfile every task (phases inside tasks).")
    parser.add_argument("--keep", action="store_true", help="Reuse --results instead of starting empty.")
    parser.add_argument("--repo", type=Path, default=None, help="Checkout to run (e.g. a worktree of an older "
                        "commit, with PYTHONPATH pointing at it): the 'before' of a comparison.")
    args = parser.parse_args()
    global REPO
    REPO = (args.repo or REPO).absolute()
    results = args.results.absolute()
    if results.exists() and not args.keep:
        shutil.rmtree(results)
    results.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "MSD_SAVE_DIR": str(results / "runs"), "MSD_CACHE_DIR": str(results / "cache"),
           "MSD_DATA_DIR": str(results / "data"), "WANDB_DIR": str(results)}  # truly from nothing: data too
    if args.profile:
        env["MSD_GRID_PROFILE_DIR"] = str(results / "profiles")
    msd = str(Path(sys.executable).with_name("msd"))
    print(f"reproduce-table2 steps, scale {args.scale}, into {results}; {os.cpu_count()} cores, load {load()}")
    first = run_all(results, args.scale, env, msd)
    print_rows("from nothing (data made by the grids):", first)
    print_tasks(first)
    if args.profile:
        print("\n  inside the tasks (cumulative s, summed over tasks):")
        for label, seconds in phases(results / "profiles").items():
            print(f"    {label:<32}{seconds:8.1f}")
        env.pop("MSD_GRID_PROFILE_DIR")
    print_rows("again, nothing to do:", run_all(results, args.scale, env, msd))


if __name__ == "__main__":
    main()
