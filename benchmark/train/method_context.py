"""What a training method may read when it prepares (docs/architecture.md §4.1).

It lives beside the trainer, which builds it, rather than beside the methods, so that
``benchmark.train`` does not import ``benchmark.distill`` (the methods already depend on
``benchmark.train`` for the DDP helpers): the packages stay free of import cycles.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from benchmark.data.base import MMFDataset
from benchmark.train.distributed import SINGLE, DistContext


@dataclass(frozen=True)
class MethodContext:
    """All a method may read when it prepares, and nothing of the trainer beyond it.

    A method that saw the whole trainer could come to depend on its optimizer, its loaders
    or its step counter, and then could not be prepared outside it (a benchmark, a test,
    another trainer). These three fields are what the methods use:

    - ``device``: where the teacher, its cached outputs and the weight network go;
    - ``train_set``: the training split, whose samples give the population saliency;
    - ``dist``: the DDP process group, so that rank 0 builds the teacher cache first
      (:func:`benchmark.train.distributed.main_first`); single-process by default.
    """

    device: torch.device
    train_set: MMFDataset
    dist: DistContext = SINGLE
