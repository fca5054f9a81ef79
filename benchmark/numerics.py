"""CPU numerics that do not depend on which x86 machine runs them.

Why: the same run (same run id, same data, one thread) gave different numbers on two 2-core
machines (issue 16: Hateful Memes up to 0.4 points per run, an easy-VQA student 10 points).
torch picks its vectorised kernels by the CPU's instruction set (AVX-512 here, AVX2 on many
machines), and so do MKL's GEMM and oneDNN; each choice sums floats in another order, the
last bits differ from the first step, and early stopping turns the drift into another
checkpoint. Pinning the three to their AVX2 paths, which every x86-64 machine of the last
decade has, makes a run compute the same bits on any of them (docs/reproducibility.md has
the measurements).

Must run before torch loads its kernels, so :mod:`benchmark` calls :func:`pin_cpu_numerics`
when it is imported (every entry point imports ``benchmark`` before torch: ``msd``, the grid
worker, the fork server's preload). ``setdefault`` only: a value the user exported wins, and
``MSD_CPU_NUMERICS=native`` turns the pinning off (the machine's fastest kernels, results
reproducible on that machine only).
"""

from __future__ import annotations

import os
import platform
from collections.abc import MutableMapping

PINNED: dict[str, str] = {
    "ATEN_CPU_CAPABILITY": "avx2",  # torch's own vectorised kernels (reductions, elementwise, softmax)
    "MKL_CBWR": "AVX2",             # MKL's conditional numerical reproducibility: one code path for GEMM
    "ONEDNN_MAX_CPU_ISA": "AVX2",   # oneDNN (convolutions, some matmuls)
}
SWITCH = "MSD_CPU_NUMERICS"  # "pinned" (default) | "native"


def pin_cpu_numerics(environ: MutableMapping[str, str] | None = None, machine: str | None = None) -> dict[str, str]:
    """Set the :data:`PINNED` variables that are not set yet; return those in effect.

    Only on x86-64 (other machines have other kernels altogether: ARM results are compared
    within the tolerance of docs/reproducibility.md), and not when ``MSD_CPU_NUMERICS=native``."""
    env = os.environ if environ is None else environ
    arch = (machine or platform.machine()).lower()
    if env.get(SWITCH, "pinned") == "native" or arch not in ("x86_64", "amd64"):
        return {}
    for key, value in PINNED.items():
        env.setdefault(key, value)
    return {key: env[key] for key in PINNED}


def numerics_in_effect() -> dict[str, str]:
    """What a run records (``environment`` in its summary): the pinned variables and torch's kernels."""
    import torch

    return {**{key: os.environ.get(key, "") for key in PINNED},
            "cpu_capability": str(torch.backends.cpu.get_cpu_capability()),
            "intra_op_threads": str(torch.get_num_threads())}
