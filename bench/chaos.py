"""Chaos test: kill ``msd run`` processes and grid workers with SIGKILL at random points, rerun
each time, and count what a kill may never cause.

Each trial starts real commands on a tiny synthetic dataset (64 samples) with W&B offline,
kills one process with SIGKILL after a random delay (10-95 % of the wall time of a clean run
of the same kind, timed once at the start), and then reruns the same command until it exits
cleanly. Trials go on until ``--kills`` SIGKILLs have landed. The scenarios take turns:

* ``run``         one ``msd run``, killed;
* ``run-pair``    two identical ``msd run`` started together (the second waits on the run's
                  lock); one of the two, chosen at random, is killed;
* ``grid-worker`` ``msd grid run`` (teacher -> cache -> KD student); a worker training a run
                  or building the cache (it holds that lock) is killed, the runner carries on;
* ``grid-runner`` the same grid; the runner itself is killed (its workers die with it).

Counted at the end, over every run the trials asked for (goal: 0 / 0 / 0 / 0 / 0):

* **lost**: a run that is not complete after its rerun;
* **trained twice**: a run whose ``metrics.jsonl`` holds more than one ``final`` record or
  a duplicated (type, step) record (two processes training it at once would both append);
* **inconsistent**: a completed summary with files missing, final metrics that differ from
  the ``final`` record, or updates that differ from the last logged step; and every time a
  run read as ``running`` while no process was alive to train it (a ghost);
* **duplicated W&B runs**: per run id, distinct W&B run ids among the offline runs beyond
  the first (directories of resumed attempts of one W&B run are counted apart, as resumes);
* **errors**: reruns that did not exit cleanly.

    python bench/chaos.py                  # 24 kills (6 per scenario), ~10 min on 2 quiet cores
    python bench/chaos.py --kills 4 --json out.json
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SCENARIOS = ("run", "run-pair", "grid-worker", "grid-runner")
# Long enough (60 updates, an evaluation and checkpoint every 8) that most kills land in training.
RUN_ARGS = ["dataset=hateful_memes", "model=late_fusion", "method=teacher", "training.max_epochs=15",
            "training.batch_size=16", "training.evaluation_interval=8", "training.threads=1",
            "training.early_stop.enabled=false"]
W_RUN_ID = re.compile(rb'\x06run_id\x82\x01.\"([^"]+)\"', re.S)  # the run_id item of an offline run's config


class Chaos:
    def __init__(self, root: Path, rng: random.Random, max_delay: float) -> None:
        self.root, self.rng, self.max_delay = root, rng, max_delay
        self.data, self.runs, self.cache, self.wandb = (root / n for n in ("data", "runs", "cache", "wandb"))
        self.env = {**os.environ, "WANDB_MODE": "offline", "WANDB_DIR": str(self.wandb), "WANDB_SILENT": "true",
                    "MSD_DATA_DIR": str(self.data), "MSD_SAVE_DIR": str(self.runs), "MSD_CACHE_DIR": str(self.cache),
                    "OMP_NUM_THREADS": "1"}
        self.env_args = [f"env.data_dir={self.data}", f"env.save_dir={self.runs}", f"env.cache_dir={self.cache}"]
        self.lock_dirs = (str(self.runs / ".locks"), str(self.cache / ".locks"))
        self.expected: set[str] = set()
        self.ghosts: list[str] = []
        self.errors: list[str] = []
        self.trials: list[dict[str, Any]] = []
        self.durations: dict[str, float] = {}

    # -- commands ---------------------------------------------------------------------------
    def _start(self, *args: str, log: str) -> subprocess.Popen:
        handle = open(self.root / "logs" / log, "ab")  # noqa: SIM115 - closed with the process
        return subprocess.Popen([sys.executable, "-c", "from benchmark.cli import main; main()", *args],
                                cwd=REPO, env=self.env, stdout=handle, stderr=subprocess.STDOUT)

    def _run_args(self, seed: int) -> list[str]:
        return ["run", "--no-progress", *RUN_ARGS, f"training.seed={seed}", *self.env_args]

    def _grid_args(self, seed: int) -> tuple[list[str], Path]:
        import yaml

        path = self.root / f"grid{seed}.yaml"
        spec = {"name": f"chaos{seed}", "base": {"model": "late_fusion", "training.max_epochs": 6,
                "training.batch_size": 16, "training.evaluation_interval": 8, "distill.cache_spot_check": 1},
                "axes": {"dataset": ["hateful_memes"], "method": {"values": ["teacher", "kd"]}, "seed": [seed]},
                "data": {"size": 64}}
        path.write_text(yaml.safe_dump(spec, sort_keys=False))
        return ["grid", "run", str(path), "--workers", "1", "--threads", "1", "--no-progress", *self.env_args], path

    def _run_ids(self, seed: int, grid: Path | None) -> list[str]:
        from benchmark.config.loader import build_config
        from benchmark.tracking.run_id import compute_run_id

        if grid is None:
            return [compute_run_id(build_config([*RUN_ARGS, f"training.seed={seed}", *self.env_args]))]
        from benchmark.grid.cells import expand
        from benchmark.grid.spec import load_grid

        return [c.run_id for c in expand(load_grid(grid), self.env_args).cells]

    def _rerun(self, args: list[str], log: str) -> None:
        for _attempt in range(3):  # a kill can leave a run failed (grid) or refused; the next call resumes
            proc = self._start(*args, log=log)
            if proc.wait() == 0:
                return
        self.errors.append(f"{log}: exit {proc.returncode} three times")

    # -- trials -------------------------------------------------------------------------------
    def calibrate(self) -> None:
        """Time one clean run of each kind (not counted), so that kills land within a run's life."""
        for kind, seed in (("run", 999), ("grid", 998)):
            args = self._grid_args(seed)[0] if kind == "grid" else self._run_args(seed)
            tick = time.time()
            self._rerun(args, f"calibrate-{kind}.log")
            self.durations[kind] = time.time() - tick
        print(f"calibration: msd run {self.durations['run']:.1f} s, grid {self.durations['grid']:.1f} s", flush=True)

    def trial(self, number: int, scenario: str) -> bool:
        """One trial; True when it killed a process (one may finish before its kill lands)."""
        seed = 1000 + number
        life = self.durations.get("grid" if scenario.startswith("grid") else "run") or self.max_delay
        delay = self.rng.uniform(0.1, 0.95) * min(life, self.max_delay)
        log = f"{number:02d}-{scenario}.log"
        grid = None
        if scenario.startswith("grid"):
            args, grid = self._grid_args(seed)
        else:
            args = self._run_args(seed)
        ids = self._run_ids(seed, grid)  # before the grid made its data they may differ: recomputed below
        procs = [self._start(*args, log=log)]
        if scenario == "run-pair":
            procs.append(self._start(*args, log=log))
        time.sleep(delay)
        victim = self._victim(scenario, procs, ids)
        killed = victim is not None and _kill(victim)
        if scenario in ("run", "grid-runner"):  # nothing is left alive to train these runs
            self._check_no_ghost(ids, number)
        for proc in procs:
            if proc.pid != victim:
                proc.wait()
        self._rerun(args, log)
        ids = self._run_ids(seed, grid)
        self.expected.update(ids)
        self.trials.append({"trial": number, "scenario": scenario, "delay_s": round(delay, 2),
                            "killed": bool(killed), "run_ids": ids})
        print(f"trial {number:2d} {scenario:<11} kill after {delay:5.1f} s: "
              f"{'killed pid ' + str(victim) if killed else 'nothing left to kill (finished)'}", flush=True)
        return bool(killed)

    def _victim(self, scenario: str, procs: list[subprocess.Popen], ids: list[str]) -> int | None:
        alive = [p for p in procs if p.poll() is None]
        if not alive:
            return None
        if scenario == "grid-worker":  # the first worker that trains a run or builds a cache from now on
            while procs[0].poll() is None:
                holders = [pid for pid in _descendants(procs[0].pid) if _holds_lock(pid, self.lock_dirs)]
                if holders:
                    return self.rng.choice(holders)
                time.sleep(0.2)
            return None
        return self.rng.choice(alive).pid

    def _check_no_ghost(self, ids: list[str], number: int) -> None:
        from benchmark.grid.locks import is_locked, run_lock_path
        from benchmark.tracking.run_store import RunStore

        deadline = time.time() + 30
        while time.time() < deadline and any(is_locked(run_lock_path(self.runs, r)) for r in ids):
            time.sleep(0.2)  # a killed runner's workers die with it, within a second or so
        store = RunStore(self.runs)
        for run_id in ids:
            if store.run(run_id).status == "running":
                self.ghosts.append(f"trial {number}: {run_id} reads running with no live process")

    # -- the figures ----------------------------------------------------------------------------
    def figures(self) -> dict[str, Any]:
        from benchmark.tracking.run_store import RunStore

        store = RunStore(self.runs)
        lost, twice, inconsistent = [], [], list(self.ghosts)
        for run_id in sorted(self.expected):
            run = store.run(run_id)
            if not run.is_complete():
                lost.append(f"{run_id}: {run.status}")
                continue
            records = run.read_metrics()
            finals = [r for r in records if r.get("type") == "final"]
            keys = collections.Counter((r.get("type"), r.get("trainer/global_step")) for r in records)
            if len(finals) != 1 or any(n > 1 for n in keys.values()):
                twice.append(f"{run_id}: {len(finals)} final records, "
                             f"{sum(n - 1 for n in keys.values() if n > 1)} duplicated records")
            summary = run.read_summary() or {}
            final_metrics = {k: v for k, v in (finals[-1] if finals else {}).items()
                             if k not in ("type", "trainer/global_step")}
            steps = [int(r.get("trainer/global_step", 0)) for r in records]
            if finals and not _same(final_metrics, summary.get("metrics")):
                inconsistent.append(f"{run_id}: summary metrics differ from the final record")
            if steps and summary.get("updates") != max(steps):
                inconsistent.append(f"{run_id}: summary updates {summary.get('updates')} != last step {max(steps)}")
        wandb_ids: dict[str, set[str]] = collections.defaultdict(set)
        wandb_dirs: collections.Counter = collections.Counter()
        for run_file in sorted(self.wandb.glob("wandb/offline-run-*/run-*.wandb")):
            match = W_RUN_ID.search(run_file.read_bytes())
            if match:
                run_id = match.group(1).decode()
                wandb_ids[run_id].add(run_file.parent.name.split("-", 3)[-1])
                wandb_dirs[run_id] += 1
        duplicated = {r: len(ids) - 1 for r, ids in wandb_ids.items() if len(ids) > 1}
        return {
            "kills": sum(t["killed"] for t in self.trials), "trials": len(self.trials),
            "runs": len(self.expected), "lost": len(lost), "trained_twice": len(twice),
            "inconsistent": len(inconsistent), "duplicated_wandb_runs": sum(duplicated.values()),
            "errors": len(self.errors), "wandb_runs": sum(len(v) for v in wandb_ids.values()),
            "wandb_offline_dirs": sum(wandb_dirs.values()),
            "details": {"lost": lost, "trained_twice": twice, "inconsistent": inconsistent,
                        "duplicated_wandb": duplicated, "errors": self.errors},
            "per_scenario": dict(collections.Counter(t["scenario"] for t in self.trials if t["killed"])),
        }


def _same(a: Any, b: Any) -> bool:
    """Equal as stored JSON (so a NaN metric equals itself)."""
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def _kill(pid: int) -> bool:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return False
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)  # reap our own child; a grandchild is reaped by its parent
    return True


def _descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        try:
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except OSError:
            continue
        for child in map(int, children):
            out.append(child)
            todo.append(child)
    return out


def _holds_lock(pid: int, lock_dirs: tuple[str, ...]) -> bool:
    """Whether ``pid`` has a run's or a cache's lock file open (it trains that run or builds that cache)."""
    try:
        return any(os.readlink(fd).startswith(lock_dirs) for fd in Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=24, help="SIGKILLs to land (trials go on until then, at most twice as many).")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-delay", type=float, default=60.0,
                        help="Kills land uniformly in 10-95%% of a calibrated run's wall time, capped at this.")
    parser.add_argument("--root", type=Path, default=None, help="Work directory (default: a fresh temporary one).")
    parser.add_argument("--keep", action="store_true", help="Keep the work directory.")
    parser.add_argument("--json", type=Path, default=None, help="Also write the figures here.")
    args = parser.parse_args()

    root = args.root or Path(tempfile.mkdtemp(prefix="msd-chaos-"))
    (root / "logs").mkdir(parents=True, exist_ok=True)
    from benchmark.data.make import make_dataset

    make_dataset("hateful_memes", root / "data", size=64, seed=0)
    rng = random.Random(args.seed)
    chaos = Chaos(root, rng, args.max_delay)
    print(f"chaos: trials until {args.kills} SIGKILLs under {root}, load {os.getloadavg()[0]:.2f}", flush=True)
    started = time.time()
    chaos.calibrate()
    kills, number = 0, 0
    while kills < args.kills and number < 2 * args.kills:  # trials until that many kills have landed
        kills += chaos.trial(number, SCENARIOS[number % len(SCENARIOS)])
        number += 1
    figures = chaos.figures()
    figures.update(seconds=round(time.time() - started, 1), load_end=round(os.getloadavg()[0], 2), seed=args.seed)
    print(json.dumps({k: v for k, v in figures.items() if k != "details"}, indent=2))
    for name, items in figures["details"].items():
        for item in (items.items() if isinstance(items, dict) else items):
            print(f"  {name}: {item}")
    print(f"runs lost / trained twice / inconsistent / duplicated W&B runs: {figures['lost']} / "
          f"{figures['trained_twice']} / {figures['inconsistent']} / {figures['duplicated_wandb_runs']} "
          f"({figures['kills']} kills, {figures['runs']} runs, {figures['errors']} rerun errors)")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    if not args.keep and args.root is None:
        shutil.rmtree(root, ignore_errors=True)
    sys.exit(1 if any(figures[k] for k in ("lost", "trained_twice", "inconsistent", "duplicated_wandb_runs",
                                           "errors")) else 0)


if __name__ == "__main__":
    main()
