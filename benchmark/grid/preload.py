"""Imported once by the local launcher's fork server, before any cell is forked from it.

Why: a fresh interpreter spends seconds importing torch (and, through
``torch.use_deterministic_algorithms``, its compiler stack), transformers' tokenizer,
pandas and wandb before a tiny cell trains for a fraction of that. Forking each cell from
a server that already holds these modules keeps one process per cell (a crash still takes
down only that cell) at a fraction of the start-up cost. Only imports happen here: no
thread pool, tokenizer or RNG is touched, so a forked child starts from a clean state.

Why ``benchmark.cli`` too: multiprocessing makes each forked child re-run the parent's main
script (the ``msd`` entry point) before the task. Whatever that script imports and the
server lacks is read from disk *then*; after an edit to the source during a long grid, a
child would mix the server's old modules with new files (an ``ImportError`` that killed
25 cells of a real run before this was added). With the whole CLI preloaded, every cell of
a grid runs the code as it was when the grid started.
"""

from __future__ import annotations

import contextlib
import importlib

MODULES = (
    # wandb.init imports its launch package on every run (Run._detect_and_apply_job_inputs):
    # pydantic models whose docstring extraction walks sys.modules. Forked cells would each
    # pay it (4-7 s a cell on a loaded 2-core machine, most of a smoke cell's wall time);
    # imported here once, before torch, while sys.modules is still short (bench/reproduce_profile.py).
    "wandb", "wandb.sdk.launch.inputs.internal",
    "numpy", "pandas", "pyarrow.parquet", "torch", "torch._dynamo", "torch._inductor",
    "benchmark.train.trainer", "benchmark.distill.cache", "benchmark.distill.teacher",
    "benchmark.data.make", "benchmark.tracking.wandb_logger", "benchmark.grid.worker",
    "benchmark.cli",
)
REGISTRY_KINDS = ("model", "dataset", "metric", "loss", "weighting", "saliency", "method", "optimizer", "generator")


def preload() -> None:
    for module in MODULES:
        with contextlib.suppress(Exception):  # a missing optional module only costs speed
            importlib.import_module(module)
    with contextlib.suppress(Exception):
        from transformers import BertTokenizerFast  # noqa: F401 - resolves the lazy module
    from benchmark.registry import registry

    for kind in REGISTRY_KINDS:
        with contextlib.suppress(Exception):
            registry.names(kind)


preload()
