"""What the cost measurement adds to a run: ``measure_cost`` at the default settings, per model.

Every run ends with :func:`benchmark.train.cost.measure_cost` (FLOPs, one-thread CPU latency
at batch 1 and 64 with warm-up and N repeats, peak memory); the Table 2 grid has ~100 runs,
so the measurement must stay well under a second a run. This builds the teacher and student
presets of each model family on a small Hateful Memes set and times ``measure_cost`` on them
in interleaved rounds (``bench/interleave.py``), printing the median seconds per model with
their spread and the machine's load at start and end::

    python bench/cost_bench.py                       # 3 families x {tiny, student, teacher}, 7 rounds
    python bench/cost_bench.py --rounds 3 --sizes student --families late_fusion
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from interleave import finish, interleave, print_load, spread, timed

from benchmark.config.loader import build_config
from benchmark.data.build import build_dataset
from benchmark.data.make import make_dataset
from benchmark.models.build import build_model
from benchmark.train.cost import cost_settings, measure_cost

FAMILIES = ("late_fusion", "visual_bert", "mmbt")
SIZES = ("tiny", "student", "teacher")


def models(data_dir: Path, families: list[str], sizes: list[str]) -> tuple[dict, object]:
    built, dataset = {}, None
    for family in families:
        for size in sizes:
            # the efficiency grid's added sizes carry their recipe in the grid file, not in defaults.yaml
            recipe = [f"+recipes.lr.{size}=3e-3", f"+recipes.max_epochs.{size}=20"] if size in ("tiny", "small") else []
            config = build_config([f"model={family}", "dataset=hateful_memes", f"model_size={size}",
                                   f"env.data_dir={data_dir}", "method=student_only", *recipe])
            dataset = build_dataset(config, "test")
            built[f"{family}/{size}"] = build_model(config, dataset.info).eval()
    return built, dataset


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--families", default=",".join(FAMILIES))
    parser.add_argument("--sizes", default=",".join(SIZES))
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds")
    parser.add_argument("--repeats", type=int, help="evaluation.cost.repeats (default: the default config's)")
    parser.add_argument("--dir", type=Path, help="data directory (default: a temporary one)")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    start = print_load("start")
    data_dir = args.dir or Path(tempfile.mkdtemp(prefix="msd-cost-bench-"))
    if not (data_dir / "hateful_memes").exists():
        make_dataset("hateful_memes", data_dir, size=96, seed=0)
    node = dict(build_config([]).evaluation.cost)
    if args.repeats:
        node["repeats"] = args.repeats
    settings = cost_settings(node)
    built, dataset = models(data_dir, args.families.split(","), args.sizes.split(","))
    cpu = torch.device("cpu")
    variants = {name: timed(lambda m=m: measure_cost(m, dataset, cpu, settings)) for name, m in built.items()}
    times = interleave(variants, rounds=args.rounds)
    result = {"settings": {**node, "batch_sizes": list(settings.batch_sizes)}, "load_start": str(start),
              "seconds": {name: spread(values).to_dict() for name, values in times.items()}}
    for name, values in times.items():
        print(f"{name:24s} measure_cost {spread(values).format('{:.3f}')} s")
    return finish(result, args.json)


if __name__ == "__main__":
    main()
