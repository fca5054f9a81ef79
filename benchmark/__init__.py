"""MSD benchmark suite: saliency-aware knowledge distillation for vision-language models.

Importing this package is cheap on purpose: models, datasets and metrics are registered
lazily (see :mod:`benchmark.registry`), so ``import benchmark`` never pulls in torch models
or MMF.
"""

from benchmark.numerics import pin_cpu_numerics as _pin_cpu_numerics

_pin_cpu_numerics()  # before anything loads torch: the same kernels on every x86 machine (benchmark/numerics.py)

__version__ = "0.1.0"

VIEWS: tuple[str, ...] = ("multi", "image", "text")
"""The three views of a sample (docs/protocol.md §3.1): full input, image only, text only."""

MODALITIES: tuple[str, ...] = ("image", "text")
"""The two modalities, in the order every saliency, weight and cache column uses. They are also
MSD's auxiliary views: the image-only and the text-only predictions (docs/protocol.md §4)."""
