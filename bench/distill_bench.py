"""Step-time ratios of the distillation methods, interleaved on the same batch.

For each model family it times real training steps (the trainer's own ``train_step``, so
cache lookups, loss terms, backward and optimizer are all included):

* MSD (cached teacher) / KD (cached teacher): the price of the two auxiliary views;
* MSD (live teacher) / MSD (cached teacher): what the teacher cache saves.

The three trainers take turns, one block of ``--block`` steps each (KD, MSD, live, then the
next round starting one further along), so a load spike from another process hits all of
them alike; each ratio is the median of the per-round ratios, with its interquartile range
and extremes (``bench/interleave.py``). Timing them one after the other once gave MSD/KD =
0.52 on a loaded 2-core machine against 1.03 on a quiet one.

The token bound for single-stream models is (tokens of the three views) / (tokens of the
multi view): text + image + text-only + image-only over text + image = 2 with no padding.

    python bench/distill_bench.py [--family late_fusion visual_bert mmbt] [--steps 30] [--block 1]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from interleave import interleave, print_load, ratio_summary, spread

from benchmark.config.loader import build_config
from benchmark.data.build import build_dataloader
from benchmark.data.make import make_dataset
from benchmark.tracking.run_id import compute_run_id
from benchmark.tracking.run_store import RunStore
from benchmark.train.batching import to_device
from benchmark.train.trainer import Trainer, run_experiment

VARIANTS = ("kd", "msd", "msd_live")


def _config(root: Path, family: str, *args: str):
    return build_config([
        f"env.data_dir={root / 'data'}", f"env.save_dir={root / 'runs'}", f"env.cache_dir={root / 'cache'}",
        "dataset=hateful_memes", f"model={family}", "training.threads=1", "training.batch_size=64", *args,
    ])


def _trainer(config) -> Trainer:
    trainer = Trainer(config, RunStore(config.env.save_dir).run(compute_run_id(config)), progress=False)
    trainer.summary = {}
    trainer.setup()
    return trainer


def _block(trainer: Trainer, batch: dict, steps: int):
    """A variant for :func:`interleave`: ``steps`` training steps, their total seconds."""

    def run() -> float:
        tick = time.perf_counter()
        for _ in range(steps):
            trainer.train_step(batch)
        return time.perf_counter() - tick

    return run


def _tokens(batch: dict) -> tuple[int, int]:
    text = int(batch["input_mask"].sum())
    image = int(batch["image_info_0"]["max_features"].clamp(max=batch["image_feature_0"].shape[1]).sum())
    return text + image, 2 * (text + image)


def bench_family(root: Path, family: str, rounds: int, block: int) -> dict:
    teacher = run_experiment(_config(root, family, "method=teacher", "training.max_updates=10"), progress=False)
    trainers = {
        "kd": _trainer(_config(root, family, "method=kd", f"teacher={teacher.run_id}")),
        "msd": _trainer(_config(root, family, "method=msd", "distill.weighting=instance", f"teacher={teacher.run_id}")),
        "msd_live": _trainer(_config(root, family, "method=msd", "distill.weighting=instance", f"teacher={teacher.run_id}",
                                     "distill.teacher_source=live")),
    }
    loader = build_dataloader(trainers["kd"].train_set, batch_size=64, shuffle=True, seed=0)
    batch = to_device(next(iter(loader)), torch.device("cpu"))
    # Warm-up: 3 steps each (allocator, first-call paths), then one discarded interleaved round.
    times = interleave({name: _block(t, batch, block) for name, t in trainers.items()}, rounds=rounds,
                       warmup=max(1, -(-3 // block)))
    multi_tokens, three_view_tokens = _tokens(batch)
    teacher_params = sum(p.numel() for p in trainers["msd_live"].method.teacher.model.parameters())  # frozen
    return {
        **{f"{name}_ms": spread([1000 * t / block for t in times[name]]) for name in VARIANTS},
        "msd_over_kd": ratio_summary(times["msd"], times["kd"]),
        "live_over_cached": ratio_summary(times["msd_live"], times["msd"]),
        "token_bound": three_view_tokens / multi_tokens,
        "teacher_over_student_params": teacher_params / trainers["kd"].model.num_parameters(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--family", nargs="+", default=["late_fusion", "visual_bert", "mmbt"])
    parser.add_argument("--steps", type=int, default=30, help="timed steps per variant (rounds = steps / block)")
    parser.add_argument("--block", type=int, default=1, help="steps per variant per round")
    args = parser.parse_args()
    if args.steps < args.block or args.block < 1:
        parser.error("--steps must be at least --block, and --block at least 1")
    rounds = args.steps // args.block
    torch.set_num_threads(1)
    start = print_load("start")
    print(f"{rounds} interleaved rounds of {args.block} step(s) per variant (KD, MSD cached, MSD live), "
          "rotating which goes first; batch of 64, one thread, synthetic Hateful Memes")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_dataset("hateful_memes", root / "data", size=512, seed=0)
        for family in args.family:
            results[family] = r = bench_family(root, family, rounds, args.block)
            print(f"\n{family}:  KD {r['kd_ms'].median:.1f} ms, MSD {r['msd_ms'].median:.1f} ms, "
                  f"live {r['msd_live_ms'].median:.1f} ms per step (medians); token bound {r['token_bound']:.2f}; "
                  f"teacher/student params {r['teacher_over_student_params']:.1f}")
            print(f"  MSD/KD            {r['msd_over_kd']}")
            print(f"  live/cached MSD   {r['live_over_cached']}")
    end = print_load("end")
    print()
    print("| model family | KD step | MSD step | MSD/KD (IQR) | token bound | MSD live / cached (IQR) |")
    print("|---|---|---|---|---|---|")
    for family, r in results.items():
        bound = f"{r['token_bound']:.2f}" if family != "late_fusion" else "–"
        print(f"| `{family}` | {r['kd_ms'].median:.1f} ms | {r['msd_ms'].median:.1f} ms | "
              f"**{r['msd_over_kd'].median:.2f}** ({r['msd_over_kd'].q1:.2f}–{r['msd_over_kd'].q3:.2f}) | {bound} | "
              f"**{r['live_over_cached'].median:.2f}** ({r['live_over_cached'].q1:.2f}–{r['live_over_cached'].q3:.2f}) |")
    print(f"\nload: {start.load1:.2f} at start, {end.load1:.2f} at end (1-min average, {start.cpus} CPUs)")


if __name__ == "__main__":
    main()
