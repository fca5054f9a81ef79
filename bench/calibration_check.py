"""Measure the testbed criteria (a)-(d) of docs/calibration.md and print their table.

Why: issue 16 asks that the embedded data separate methods *before* any KD or MSD result
is seen. The criteria are properties of the data, the teacher and the label-only student
only, so this script trains (through ``experiments/calibration.yaml``) nothing but those two
roles, builds each teacher's cache to get its default saliency, and reads:

* (a) teacher - student, headline x 100, mean over seeds, on val and on test (>= 5);
* (b) the seed std of the teacher's and of the student's test headline (<= 1.5 points);
* (c) the Spearman rho of the teacher's default saliency against the ground truth, on val
  (mean over seeds; >= 0.8);
* (d) the shares of image-dominant and text-dominant test samples in the ground truth
  (>= 20 % each).

Usage (private stores, so nothing of the default run store is touched)::

    MSD_SAVE_DIR=/tmp/cal/runs MSD_CACHE_DIR=/tmp/cal/cache MSD_DATA_DIR=/tmp/cal/data \\
        .venv/bin/python bench/calibration_check.py [--skip-grid] [--only 'vqa2/*'] [--workers 2]

``--skip-grid`` reads the runs already in the store. Prints a markdown table and writes it,
with the raw numbers, as JSON next to the run store (``calibration_check.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from analysis.stats import detectable_effect, minimum_detectable  # noqa: F401 (re-exported for the tests)

REPO = Path(__file__).resolve().parents[1]
GRID = REPO / "experiments" / "calibration.yaml"
SYNTHETIC = ("hateful_memes", "mmimdb", "visual_entailment", "vqa2")
# The split each dataset's test headline is scored on (VQA2 tests on val2014: test2015 has no answers).
TEST_SPLITS = {"hateful_memes": "test_unseen", "mmimdb": "test", "visual_entailment": "test", "vqa2": "val2014"}
LIMITS = {"gap": 5.0, "std": 1.5, "rho": 0.8, "share": 0.20}


def run_grid(only: str | None, workers: int) -> float:
    """Train the calibration grid's teachers and students; returns the wall seconds."""
    cmd = [str(REPO / ".venv" / "bin" / "msd"), "grid", "run", str(GRID), "--workers", str(workers), "--no-progress"]
    if only:
        cmd += ["--only", only]
    started = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=REPO)
    return time.perf_counter() - started


def completed_runs(save_dir: Path) -> list[dict]:
    runs = []
    for path in sorted(save_dir.glob("*/summary.json")):
        summary = json.loads(path.read_text())
        if summary.get("status") == "completed" and summary.get("method") in ("teacher", "student_only"):
            summary["_dir"] = str(path.parent)
            runs.append(summary)
    return runs


def teacher_rho(summary: dict) -> dict[str, float] | None:
    """Build (or reuse) the teacher's cache in-process; returns ``{split: rho}`` of the default saliency."""
    if summary.get("saliency_vs_ground_truth") is None:
        from benchmark.config.loader import build_config
        from benchmark.data.build import build_dataset
        from benchmark.distill.cache import full_split_config, get_teacher_cache
        from benchmark.distill.teacher import load_teacher
        from benchmark.train.batching import resolve_device

        config = build_config([f"teacher={summary['_dir']}", f"dataset={summary['dataset']}", "method=kd"])
        device = resolve_device(str(config.training.device))
        info = build_dataset(full_split_config(config), "val").info
        teacher = load_teacher(config, info, device)
        get_teacher_cache(config, teacher, device, spot_check_samples=0)
        summary = {**summary, **json.loads((Path(summary["_dir"]) / "summary.json").read_text())}
    found = summary.get("saliency_vs_ground_truth")
    if not found:
        return None
    from benchmark.config.loader import build_config

    definition = str(build_config([]).distill.saliency)
    return {split: float(values[definition]) for split, values in found.items() if definition in values}


def truth_shares(data_dir: Path, dataset: str) -> tuple[float, float] | None:
    """(image-dominant, text-dominant) shares of the test split in the generator's ground truth."""
    path = next((data_dir / "datasets").glob(f"{dataset}/defaults/extras/msd_ground_truth.jsonl"), None)
    if path is None:
        return None
    diffs = []
    with open(path) as handle:
        for line in handle:
            record = json.loads(line)
            if record["split"] == TEST_SPLITS[dataset]:
                diffs.append(float(record["image_reliance"]) - float(record["text_reliance"]))
    d = np.asarray(diffs)
    return float((d > 0).mean()), float((d < 0).mean())


def mean_std(values: list[float]) -> tuple[float, float, int]:
    arr = np.asarray(values, dtype=float) * 100.0
    return float(arr.mean()), float(arr.std(ddof=1)) if len(arr) > 1 else float("nan"), len(arr)


def measure(save_dir: Path, data_dir: Path) -> dict[str, dict]:
    by = defaultdict(lambda: defaultdict(list))
    rhos = defaultdict(lambda: defaultdict(list))
    times = defaultdict(list)
    for summary in completed_runs(save_dir):
        dataset, role = summary["dataset"], summary["method"]
        by[dataset][(role, "val")].append(float(summary["headline"]["val"]))
        by[dataset][(role, "test")].append(float(summary["headline"]["test"]))
        times[(dataset, role)].append(float(summary.get("train_time_s") or 0.0))
        if role == "teacher":
            for split, rho in (teacher_rho(summary) or {}).items():
                rhos[dataset][split].append(rho)
    out = {}
    for dataset, cells in sorted(by.items()):
        row = {f"{role}_{split}": mean_std(v) for (role, split), v in cells.items()}
        if "teacher_val" in row and "student_only_val" in row:
            row["gap_val"] = row["teacher_val"][0] - row["student_only_val"][0]
            row["gap_test"] = row["teacher_test"][0] - row["student_only_test"][0]
        row["rho"] = {split: float(np.mean(v)) for split, v in rhos[dataset].items()}
        row["shares"] = truth_shares(data_dir, dataset) if dataset in SYNTHETIC else None
        row["train_s"] = {role: float(np.median(times[(dataset, role)])) for role in ("teacher", "student_only")
                          if times[(dataset, role)]}
        out[dataset] = row
    return out


def verdicts(row: dict) -> dict[str, bool | None]:
    gap = row.get("gap_val") is not None and min(row["gap_val"], row["gap_test"]) >= LIMITS["gap"]
    stds = [row.get(k, (0, float("nan"), 0))[1] for k in ("teacher_test", "student_only_test")]
    std = all(np.isfinite(s) and s <= LIMITS["std"] for s in stds)
    rho = row["rho"].get("val")
    shares = row["shares"]
    return {
        "a": gap,
        "b": std,
        "c": None if rho is None else rho >= LIMITS["rho"],
        "d": None if shares is None else min(shares) >= LIMITS["share"],
    }


def table(results: dict[str, dict]) -> str:
    def cell(v: tuple[float, float, int] | None) -> str:
        return "—" if v is None else f"{v[0]:.1f} ± {v[1]:.1f} ({v[2]})"

    mark = {True: "yes", False: "**no**", None: "—"}
    lines = [
        "| Dataset | Teacher val | Student val | Teacher test | Student test | (a) gap val / test | (b) std T / S "
        "| (c) rho val (train) | (d) image / text share | train s T / S | holds a b c d |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for dataset, row in results.items():
        v = verdicts(row)
        gaps = f"{row.get('gap_val', float('nan')):.1f} / {row.get('gap_test', float('nan')):.1f}"
        stds = f"{row.get('teacher_test', (0, float('nan')))[1]:.1f} / {row.get('student_only_test', (0, float('nan')))[1]:.1f}"
        rho = row["rho"]
        rho_s = f"{rho['val']:.2f} ({rho.get('train', float('nan')):.2f})" if "val" in rho else "—"
        shares = row["shares"]
        share_s = f"{shares[0]:.0%} / {shares[1]:.0%}" if shares else "—"
        t = row["train_s"]
        time_s = f"{t.get('teacher', float('nan')):.0f} / {t.get('student_only', float('nan')):.0f}"
        holds = " ".join(mark[v[k]] for k in "abcd")
        lines.append(
            f"| {dataset} | {cell(row.get('teacher_val'))} | {cell(row.get('student_only_val'))} | "
            f"{cell(row.get('teacher_test'))} | {cell(row.get('student_only_test'))} | {gaps} | {stds} | {rho_s} | "
            f"{share_s} | {time_s} | {holds} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--skip-grid", action="store_true", help="only read the runs already in the store")
    parser.add_argument("--only", default=None, help="glob(s) over cell names, as msd grid run --only")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    os.chdir(REPO)
    sys.path.insert(0, str(REPO))
    from benchmark.config.loader import build_config

    env = build_config([]).env
    save_dir, data_dir = Path(str(env.save_dir)).expanduser(), Path(str(env.data_dir)).expanduser()
    wall = None if args.skip_grid else run_grid(args.only, args.workers)
    results = measure(save_dir, data_dir)
    text = table(results)
    print(text)
    if wall is not None:
        print(f"\ncalibration grid wall time: {wall:.0f} s")
    print("\nMinimum difference between two students detectable at p < 0.05 with power 0.8 (two-sided "
          "two-sample t-test over seeds, the label-only student's test seed std as each method's):")
    for dataset, row in results.items():
        mean, std, n = row.get("student_only_test", (float("nan"), float("nan"), 0))
        if n > 1:
            mdd = {k: round(minimum_detectable(std, k), 2) for k in (n, 5, 10)}
            row["minimum_detectable"] = {"std": std, "seeds": n, "points_by_seeds": mdd}
            print(f"  {dataset}: std {std:.2f} -> {mdd[n]:.1f} points with {n} seeds "
                  f"({mdd[5]:.1f} with 5, {mdd[10]:.1f} with 10)")
    report = {"wall_s": wall, "results": results, "verdicts": {d: verdicts(r) for d, r in results.items()}}
    (save_dir / "calibration_check.json").write_text(json.dumps(report, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
