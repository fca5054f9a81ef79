"""How long config validation takes: one run, a whole grid, and ``msd run`` from a cold start.

The brief of validation is "under 3 s, before anything is written". Three figures, each
interleaved with a reference measured under the same load (``interleave.py``):

* ``validate`` vs ``build``: ``validate_config`` of an MSD student whose teacher is in the run
  store, against ``build_config`` of the same command line (which ``msd run`` pays anyway).
* ``grid``: ``validate_cells`` over every cell of a grid file (default experiments/table2.yaml).
* ``cold`` vs ``imports``: a fresh ``msd run optimizer.params.lr=-1`` until its error, against
  a fresh interpreter that only imports what ``msd run`` imports; the difference is what
  building and validating the config cost in a cold process.

    python bench/validate_bench.py [--rounds 20] [--cold-rounds 5] [--grid experiments/table2.yaml]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from interleave import interleave, print_load, ratio_summary, spread, timed

REPO = Path(__file__).resolve().parents[1]


def _store(root: Path) -> list[str]:
    """A run store holding one hand-written, completed teacher; the student's arguments."""
    from benchmark.config.loader import build_config
    from benchmark.models.build import model_config
    from benchmark.tracking.run_store import RunDir

    env = [f"env.data_dir={root / 'data'}", f"env.save_dir={root / 'runs'}", f"env.cache_dir={root / 'cache'}",
           "training.device=cpu"]
    teacher = build_config([*env, "method=teacher"])
    run = RunDir(root / "runs" / "teacher0")
    run.write_config(teacher)
    built = model_config(teacher)
    run.write_summary({"status": "completed", "dataset": str(teacher.dataset), "method": "teacher",
                       "model_description": {"name": built.name, "size": built.size}})
    run.file("checkpoint.pt").write_bytes(b"")
    return [*env, "method=msd", "distill.weighting=instance", "teacher=teacher0"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--cold-rounds", type=int, default=5)
    parser.add_argument("--grid", default=str(REPO / "experiments" / "table2.yaml"))
    args = parser.parse_args()

    from benchmark.config.loader import build_config
    from benchmark.config.validate import validate_config
    from benchmark.grid.cells import expand
    from benchmark.grid.dag import build_plan
    from benchmark.grid.runner import validate_cells
    from benchmark.grid.spec import load_grid

    print_load("start")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        student_args = _store(root)
        config = build_config(student_args)
        validate_config(config)  # the registry's modules are imported once, as msd run has by then

        warm = interleave({"validate": timed(lambda: validate_config(config)),
                           "build": timed(lambda: build_config(student_args))}, rounds=args.rounds)
        v = spread(warm["validate"])
        print(f"validate_config, one MSD student with a stored teacher (ms): {v.format('{:.1f}', 1e3)}")
        print(f"  validate / build_config of the same command line: {ratio_summary(warm['validate'], warm['build'])}")

        plan = build_plan(expand(load_grid(args.grid), [f"env.save_dir={root / 'runs'}"]), None)
        grid = [timed(lambda: validate_cells(plan))() for _ in range(max(3, args.rounds // 4))]
        g = spread(grid)
        print(f"validate_cells, {len(plan.cells)} cells of {Path(args.grid).name} (s): {g.format('{:.3f}')}; "
              f"{g.median / len(plan.cells) * 1e3:.1f} ms a cell")

        bad = [sys.executable, "-m", "benchmark.cli", "run", "--no-progress", *student_args[:3],
               "optimizer.params.lr=-1"]
        imports = [sys.executable, "-c", "import benchmark.cli, benchmark.config.loader, "
                   "benchmark.config.validate, benchmark.tracking.wandb_logger, benchmark.train.trainer"]

        def run(command: list[str], expect: int) -> float:
            tick = time.perf_counter()
            done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
            seconds = time.perf_counter() - tick
            if done.returncode != expect:
                raise SystemExit(f"{' '.join(command)} exited {done.returncode}:\n{done.stderr[-2000:]}")
            return seconds

        cold = interleave({"cold": lambda: run(bad, 2), "imports": lambda: run(imports, 0)},
                          rounds=args.cold_rounds, warmup=1)
        extra = spread([a - b for a, b in zip(cold["cold"], cold["imports"])])
        print(f"cold `msd run optimizer.params.lr=-1` to its error (s): {spread(cold['cold'])}")
        print(f"  a fresh interpreter importing what msd run imports (s): {spread(cold['imports'])}")
        print(f"  the difference, per round (s; config building, validation, exit): {extra}")
        if any(p.name != "teacher0" for p in (root / "runs").iterdir()):
            raise SystemExit("the failing msd run wrote into the run store")
    print_load("end")


if __name__ == "__main__":
    main()
