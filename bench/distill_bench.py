"""Step-time ratios of the distillation methods, measured in one run on the same batch.

For each model family it times real training steps (the trainer's own ``_train_step``, so
cache lookups, loss terms, backward and optimizer are all included):

* MSD (cached teacher) / KD (cached teacher): the price of the two auxiliary views;
* MSD (live teacher) / MSD (cached teacher): what the teacher cache saves.

The token bound for single-stream models is (tokens of the three views) / (tokens of the
multi view): text + image + text-only + image-only over text + image = 2 with no padding.

    python bench/distill_bench.py [--family late_fusion visual_bert mmbt] [--steps 30]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from benchmark.config.loader import build_config
from benchmark.data.build import build_dataloader
from benchmark.data.make import make_dataset
from benchmark.tracking.run_id import compute_run_id
from benchmark.tracking.run_store import RunStore
from benchmark.train.batching import to_device
from benchmark.train.trainer import Trainer, run_experiment


def _config(root: Path, family: str, *args: str):
    return build_config([
        f"env.data_dir={root / 'data'}", f"env.save_dir={root / 'runs'}", f"env.cache_dir={root / 'cache'}",
        "dataset=hateful_memes", f"model={family}", "training.threads=1", "training.batch_size=64", *args,
    ])


def _trainer(config) -> Trainer:
    trainer = Trainer(config, RunStore(config.env.save_dir).run(compute_run_id(config)), progress=False)
    trainer.summary = {}
    trainer._setup()
    return trainer


def _time_steps(trainer: Trainer, batch: dict, steps: int) -> float:
    for _ in range(3):  # warm-up
        trainer._train_step(batch)
    times = []
    for _ in range(steps):
        tick = time.perf_counter()
        trainer._train_step(batch)
        times.append(time.perf_counter() - tick)
    return statistics.median(times)


def _tokens(batch: dict) -> tuple[int, int]:
    text = int(batch["input_mask"].sum())
    image = int(batch["image_info_0"]["max_features"].clamp(max=batch["image_feature_0"].shape[1]).sum())
    return text + image, 2 * (text + image)


def bench_family(root: Path, family: str, steps: int) -> dict[str, float]:
    teacher = run_experiment(_config(root, family, "method=teacher", "training.max_updates=10"), progress=False)
    trainers = {
        "kd": _trainer(_config(root, family, "method=kd", f"teacher={teacher.run_id}")),
        "msd": _trainer(_config(root, family, "method=msd", "weighting=instance", f"teacher={teacher.run_id}")),
        "msd_live": _trainer(_config(root, family, "method=msd", "weighting=instance", f"teacher={teacher.run_id}",
                                     "distill.teacher_source=live")),
    }
    loader = build_dataloader(trainers["kd"].train_set, batch_size=64, shuffle=True, seed=0)
    batch = to_device(next(iter(loader)), torch.device("cpu"))
    times = {name: _time_steps(t, batch, steps) for name, t in trainers.items()}
    multi_tokens, three_view_tokens = _tokens(batch)
    teacher_params = sum(p.numel() for p in trainers["msd_live"].method.teacher.model.parameters())  # frozen
    return {
        "kd_ms": 1000 * times["kd"], "msd_ms": 1000 * times["msd"], "msd_live_ms": 1000 * times["msd_live"],
        "msd_over_kd": times["msd"] / times["kd"], "live_over_cached": times["msd_live"] / times["msd"],
        "token_bound": three_view_tokens / multi_tokens,
        "teacher_over_student_params": teacher_params / trainers["kd"].model.num_parameters(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--family", nargs="+", default=["late_fusion", "visual_bert", "mmbt"])
    parser.add_argument("--steps", type=int, default=30)
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_dataset("hateful_memes", root / "data", size=512, seed=0)
        print(f"{'family':<12} {'KD ms':>8} {'MSD ms':>8} {'live ms':>8} {'MSD/KD':>7} {'bound':>6} "
              f"{'live/cache':>10} {'T/S params':>10}")
        for family in args.family:
            r = bench_family(root, family, args.steps)
            print(f"{family:<12} {r['kd_ms']:8.1f} {r['msd_ms']:8.1f} {r['msd_live_ms']:8.1f} {r['msd_over_kd']:7.2f} "
                  f"{r['token_bound']:6.2f} {r['live_over_cached']:10.2f} {r['teacher_over_student_params']:10.1f}")


if __name__ == "__main__":
    main()
