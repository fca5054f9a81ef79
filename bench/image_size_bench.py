"""What reading easy-VQA at 32x32 instead of its native 64x64 saves per training step.

Why: the default `dataset_config.easy_vqa.image_size` became 32 to shorten `make
reproduce-table2` (issue 16). This times whole trainer updates (forward, losses, backward,
optimizer) of the teacher and the label-only student at both sizes on the same batches, the
variants interleaved round by round so that the machine's load falls on both, and prints the
32/64 ratio per role (median of the per-round ratios, with its IQR).

    python bench/image_size_bench.py [--rounds 7] [--steps 10] [--json out.json]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from interleave import finish, interleave, print_load, ratio_summary, spread

from benchmark.config.loader import build_config
from benchmark.data.make import make_dataset
from benchmark.tracking.run_id import compute_run_id
from benchmark.tracking.run_store import RunStore
from benchmark.train.trainer import Trainer

NATIVE, READ = 64, 32  # easy-VQA's PNG side, and the side the suite reads them at
ROLES = ("teacher", "student_only")


def _trainer(root: Path, method: str, side: int) -> Trainer:
    config = build_config([f"env.data_dir={root / 'data'}", f"env.save_dir={root / 'runs'}",
                           f"env.cache_dir={root / 'cache'}", "dataset=easy_vqa", "model=late_fusion",
                           f"method={method}", "training.threads=1", "tracking.wandb.enabled=false",
                           f"dataset_config.easy_vqa.image_size={side}"])
    trainer = Trainer(config, RunStore(config.env.save_dir).run(compute_run_id(config)), progress=False)
    trainer.setup()
    return trainer


def _steps(trainer: Trainer, count: int):
    batches = []
    for batch in trainer.train_loader:
        batches.append(batch)
        if len(batches) == count:
            break
    if len(batches) < count:
        raise SystemExit(f"--steps {count}: one epoch of this data has only {len(batches)} batches; "
                         "ask for fewer steps or a larger --size")

    def run() -> float:
        tick = time.perf_counter()
        for batch in batches:
            trainer.train_step(batch)
        return time.perf_counter() - tick

    return run


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds")
    parser.add_argument("--steps", type=int, default=10, help="training updates timed per variant and round")
    parser.add_argument("--size", type=int, default=None, help="easy-VQA training questions (default: the suite's)")
    parser.add_argument("--dir", type=Path, help="work directory (default: a temporary one)")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON")
    args = parser.parse_args(argv)
    for name in ("rounds", "steps"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1, got {getattr(args, name)}")
    torch.set_num_threads(1)
    start = print_load("start")
    root = args.dir or Path(tempfile.mkdtemp(prefix="msd-image-size-bench-"))
    make_dataset("easy_vqa", root / "data", size=args.size, seed=0)
    variants = {f"{method}/{side}": _steps(_trainer(root, method, side), args.steps)
                for method in ROLES for side in (NATIVE, READ)}
    times = interleave(variants, rounds=args.rounds)
    ratios = {f"{method} step, {READ}x{READ} / {NATIVE}x{NATIVE}":
              ratio_summary(times[f"{method}/{READ}"], times[f"{method}/{NATIVE}"]) for method in ROLES}
    for name, values in times.items():
        print(f"{name:18s} {spread([v / args.steps for v in values]).format('{:.1f}', 1000)} ms per update")
    for name, value in ratios.items():
        print(f"{name:36s} {value.format('{:.3f}')}")
    result = {"load_start": str(start), "steps": args.steps,
              "seconds": {name: spread(v).to_dict() for name, v in times.items()},
              "ratios": {k: v.to_dict() for k, v in ratios.items()}}
    return finish(result, args.json)


if __name__ == "__main__":
    main()
