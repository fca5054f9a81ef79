"""What a model needs to know about a dataset to build itself."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

TASKS = ("single_label", "multi_label", "soft_score")
IMAGE_INPUTS = ("features", "pixels")
"""How a dataset gives its images to a model (``DatasetInfo.modality``): region features or pixels.
Not the image/text modalities (:data:`benchmark.MODALITIES`)."""


@dataclass(frozen=True)
class DatasetInfo:
    """Shapes and label space of a dataset, read from its files (not assumed).

    Models are built from this, so one model config works on 2048-d MMF region
    features and on the small synthetic ones alike.
    """

    name: str
    task: str
    num_labels: int
    label_names: tuple[str, ...] = ()
    modality: str = "features"
    feature_dim: int = 0
    max_features: int = 0
    image_size: int = 0
    vocab_size: int = 30522
    max_seq_length: int = 32
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {self.task!r}")
        if self.modality not in IMAGE_INPUTS:
            raise ValueError(f"modality must be one of {IMAGE_INPUTS}, got {self.modality!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
