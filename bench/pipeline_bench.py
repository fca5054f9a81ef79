"""What the in-memory splits and the fused optimizer save: a student's epoch and one update.

Two changes made a run cheaper without changing its recipe (issue 16's 10-minute budget):

* ``training.in_memory``: a split is read, padded, tokenized and collated once, then every
  batch is an index selection (``benchmark/data/in_memory.py``). Compared here: one training
  epoch of the label-only student (data loading plus ``train_step``), and one pass over the
  validation split (data loading only), each with the split kept in memory and read sample by
  sample;
* ``optimizer.params.fused``: torch's fused AdamW kernel against its per-tensor loop, one
  ``optimizer.step()`` on the real teacher's and student's parameters (random gradients).

Variants run interleaved (``bench/interleave.py``: A B A B ..., rotating who goes first) and
each ratio is taken within a round, then summarised by its median and spread::

    python bench/pipeline_bench.py                 # 2,000 Hateful Memes samples, 7 rounds
    python bench/pipeline_bench.py --size 400 --rounds 3
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from interleave import finish, interleave, print_load, ratio_summary, spread

from benchmark.config.loader import build_config
from benchmark.data.build import build_dataloader, build_dataset
from benchmark.data.in_memory import InMemoryPolicy
from benchmark.data.make import make_dataset
from benchmark.models.build import build_model
from benchmark.tracking.run_id import compute_run_id
from benchmark.tracking.run_store import RunStore
from benchmark.train.optim import build_optimizer
from benchmark.train.trainer import Trainer


def _config(root: Path, *args: str):
    return build_config([f"env.data_dir={root / 'data'}", f"env.save_dir={root / 'runs'}",
                         f"env.cache_dir={root / 'cache'}", "dataset=hateful_memes", "model=late_fusion",
                         "method=student_only", "training.threads=1", *args])


def _trainer(config) -> Trainer:
    trainer = Trainer(config, RunStore(config.env.save_dir).run(compute_run_id(config)), progress=False)
    trainer.setup()
    return trainer


def _epoch(trainer: Trainer):
    def run() -> float:
        tick = time.perf_counter()
        for batch in trainer.train_loader:
            trainer.train_step(batch)
        return time.perf_counter() - tick

    return run


def _read(loader):
    def run() -> float:
        tick = time.perf_counter()
        for _ in loader:
            pass
        return time.perf_counter() - tick

    return run


def _step(config, info, fused: bool):
    model = build_model(config, info)
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    config.optimizer.params.fused = fused
    optimizer = build_optimizer(model, config)

    def run() -> float:
        tick = time.perf_counter()
        optimizer.step()
        return time.perf_counter() - tick

    return run


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=2000, help="train samples of the synthetic Hateful Memes")
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds")
    parser.add_argument("--dir", type=Path, help="work directory (default: a temporary one)")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    start = print_load("start")
    root = args.dir or Path(tempfile.mkdtemp(prefix="msd-pipeline-bench-"))
    make_dataset("hateful_memes", root / "data", size=args.size, seed=0)

    kept, read = (_trainer(_config(root, f"training.in_memory={mode}")) for mode in ("true", "false"))
    val_kept, val_read = build_dataset(kept.config, "val"), build_dataset(kept.config, "val")
    val_kept.in_memory, val_read.in_memory = InMemoryPolicy("true", 1), None
    epochs = interleave({"epoch/in_memory": _epoch(kept), "epoch/per_sample": _epoch(read),
                         "val/in_memory": _read(build_dataloader(val_kept, 128)),
                         "val/per_sample": _read(build_dataloader(val_read, 128))}, rounds=args.rounds)

    steps = {}
    for size in ("student", "teacher"):
        config = _config(root, f"model_size={size}")
        steps.update(interleave({f"{size}/fused": _step(config, kept.info, True),
                                 f"{size}/loop": _step(config, kept.info, False)}, rounds=5 * args.rounds, warmup=3))

    result = {
        "size": args.size, "load_start": str(start),
        "seconds": {name: spread(v).to_dict() for name, v in {**epochs, **steps}.items()},
        "ratios": {
            "student epoch, in memory / per sample": ratio_summary(epochs["epoch/in_memory"], epochs["epoch/per_sample"]),
            "val pass, in memory / per sample": ratio_summary(epochs["val/in_memory"], epochs["val/per_sample"]),
            **{f"{size} AdamW step, fused / loop": ratio_summary(steps[f"{size}/fused"], steps[f"{size}/loop"])
               for size in ("student", "teacher")},
        },
    }
    for name, values in {**epochs, **steps}.items():
        print(f"{name:22s} {spread(values).format('{:.1f}', 1000)} ms")
    for name, value in result["ratios"].items():
        print(f"{name:40s} {value.format('{:.3f}')}")
    result["ratios"] = {k: v.to_dict() for k, v in result["ratios"].items()}
    return finish(result, args.json)


if __name__ == "__main__":
    main()
