"""Where a result came from: code version, library versions, machine."""

from __future__ import annotations

import platform
import subprocess
from functools import lru_cache
from pathlib import Path

import torch

import benchmark
from benchmark.numerics import numerics_in_effect


@lru_cache(maxsize=1)
def git_commit() -> str | None:
    root = Path(benchmark.__file__).resolve().parent.parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5, check=True
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True, text=True, timeout=5
        ).stdout.strip()
        return out.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def environment() -> dict[str, str]:
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "benchmark": benchmark.__version__,
        "machine": platform.machine(),
        "cuda": torch.version.cuda or "cpu",
        **numerics_in_effect(),  # kernels and threads: what decides the last bits (docs/reproducibility.md)
    }
