"""Training throughput at paper scale: fp32 vs bf16 autocast, teacher vs KD vs MSD (cached).

For each role it times the trainer's own ``train_step`` (forward under ``training.fp16``'s
autocast, losses, backward, optimizer) on one fixed batch, with the variants interleaved
(``bench/interleave.py``: fp32 and bf16 of every role take turns), and reports steps/s,
samples/s per device and peak memory.

* ``--full`` (for a GPU machine): BERT-base widths (preset ``paper_base``, 12 layers, 768
  wide; weights randomly initialised: speed does not depend on them), batch 32.
* default (CPU, reduced): the suite's small ``teacher`` and ``student`` presets, batch 16, so
  it runs in about a minute; the figures are CPU figures and say so.

Peak memory is ``torch.cuda.max_memory_allocated`` per variant on a GPU; on a CPU it is the
process's peak resident set, which covers all variants together (reported once).

    python bench/gpu_bench.py [--full] [--steps 20] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

import torch
from interleave import interleave, print_load, ratio_summary, spread

from benchmark.config.loader import build_config
from benchmark.data.make import make_dataset
from benchmark.tracking.run_id import compute_run_id
from benchmark.tracking.run_store import RunStore
from benchmark.train.batching import to_device
from benchmark.train.trainer import Trainer, run_experiment

PRECISIONS = {"fp32": [], "bf16": ["training.fp16=true", "training.amp_dtype=bfloat16"]}


def _config(root: Path, model: str, size: str, batch: int, *args: str):
    return build_config([
        f"env.data_dir={root / 'data'}", f"env.save_dir={root / 'runs'}", f"env.cache_dir={root / 'cache'}",
        "dataset=hateful_memes", f"model={model}", f"model_size={size}", f"training.batch_size={batch}",
        "tracking.wandb.mode=disabled", *args,
    ])


def _trainer(config) -> Trainer:
    trainer = Trainer(config, RunStore(config.env.save_dir).run(compute_run_id(config)), progress=False)
    trainer.setup()
    return trainer


def _timed(trainer: Trainer, batch: dict, steps: int):
    def run() -> float:
        if trainer.device.type == "cuda":
            torch.cuda.synchronize()
        tick = time.perf_counter()
        for _ in range(steps):
            trainer.train_step(batch)
        if trainer.device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - tick

    return run


def _peak_memory_mb(trainer: Trainer, batch: dict) -> float | None:
    if trainer.device.type != "cuda":
        return None
    torch.cuda.reset_peak_memory_stats()
    trainer.train_step(batch)
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="store_true", help="paper_base widths, batch 32 (for a GPU)")
    parser.add_argument("--model", default="visual_bert", help="model family of teacher and students")
    parser.add_argument("--steps", type=int, default=20, help="timed rounds (one step per variant per round)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    teacher_size, student_size, batch_size = ("paper_base", "student", 32) if args.full else ("teacher", "student", 16)
    if not torch.cuda.is_available():
        torch.set_num_threads(1)
    start = print_load("start")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(f"device {device}; {args.model}: teacher preset {teacher_size}, students {student_size}; batch {batch_size}; "
          f"{args.steps} interleaved rounds; {'full' if args.full else 'reduced (CPU)'} version")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_dataset("hateful_memes", root / "data", size=max(256, 4 * batch_size), seed=0)
        teacher = run_experiment(_config(root, args.model, teacher_size, batch_size, "method=teacher",
                                         "training.max_updates=2"), progress=False)
        roles = {
            "teacher": (teacher_size, ["method=teacher"]),
            "kd": (student_size, ["method=kd", f"teacher={teacher.run_id}"]),
            "msd": (student_size, ["method=msd", "distill.weighting=instance", f"teacher={teacher.run_id}"]),
        }
        trainers = {
            f"{role}/{precision}": _trainer(_config(root, args.model, size, batch_size, *extra, *PRECISIONS[precision]))
            for role, (size, extra) in roles.items() for precision in PRECISIONS
        }
        batch = to_device(next(iter(trainers["teacher/fp32"].train_loader)), trainers["teacher/fp32"].device)
        peaks = {name: _peak_memory_mb(t, batch) for name, t in trainers.items()}
        times = interleave({name: _timed(t, batch, 1) for name, t in trainers.items()}, rounds=args.steps, warmup=2)
    end = print_load("end")
    rows = {}
    print("\n| role | precision | params | steps/s | samples/s per device | peak memory |")
    print("|---|---|---|---|---|---|")
    for name, trainer in trainers.items():
        role, precision = name.split("/")
        step = spread(times[name])
        peak = peaks[name]
        rows[name] = {"steps_per_s": 1 / step.median, "samples_per_s": batch_size / step.median,
                      "step_s": step.median, "step_s_iqr": [step.q1, step.q3], "peak_mb": peak,
                      "params": trainer.model.num_parameters()}
        memory = f"{peak:.0f} MiB" if peak is not None else "see below"
        print(f"| {role} | {precision} | {rows[name]['params'] / 1e6:.2f} M | {rows[name]['steps_per_s']:.1f} "
              f"({1 / step.q3:.1f}–{1 / step.q1:.1f}) | {rows[name]['samples_per_s']:.0f} | {memory} |")
    for role in roles:
        print(f"{role}: bf16 speed-up over fp32 (fp32 step / bf16 step, per round): "
              f"{ratio_summary(times[f'{role}/fp32'], times[f'{role}/bf16'])}")
    if device == "cpu":
        peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"peak resident memory of the whole process (all variants): {peak_rss:.0f} MiB")
    print(f"load: {start.load1:.2f} at start, {end.load1:.2f} at end (1-min average, {start.cpus} CPUs)")
    if args.json:
        args.json.write_text(json.dumps({"device": device, "full": args.full, "batch_size": batch_size,
                                         "model": args.model, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
