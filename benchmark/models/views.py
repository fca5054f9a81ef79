"""The view rule (docs/protocol.md §3): how a model sees a sample with one modality removed.

Three removal modes exist (config ``views.removal``, copied to ``model_config.<m>.removal``):

- ``drop`` (default): the removed modality contributes nothing. Single-stream models build
  the sequence without its tokens; late-fusion models use one learned "absent" embedding.
- ``zero``: the removed modality is replaced by a content-free stand-in made of zeros.
- ``mean``: the stand-in is a fixed mean input vector, an EMA of the modality's inputs
  tracked during training and frozen in eval.

The stand-in has the dataset's *nominal* shape (``max_seq_length`` tokens, ``max_features``
regions, all of them attended) rather than the sample's: keeping the sample's own real-token
or real-box mask would leak the *number* of tokens or boxes, which is content, into the
prediction. This way neither the content nor the length of the removed modality reaches the
model in any mode.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from omegaconf import DictConfig
from torch import nn

from benchmark import VIEWS
from benchmark.data.info import DatasetInfo
from benchmark.errors import ConfigError
from benchmark.models.options import invalid_choice

TEXT, IMAGE = "text", "image"
MODALITIES: tuple[str, str] = (TEXT, IMAGE)

VIEW_MODALITIES: dict[str, frozenset[str]] = {
    "multi": frozenset({TEXT, IMAGE}),
    "image": frozenset({IMAGE}),  # the text is removed
    "text": frozenset({TEXT}),  # the image is removed
}
assert set(VIEW_MODALITIES) == set(VIEWS)

# mode -> how the stand-in's value is produced from the StandIn module (None: no stand-in).
_STANDIN_VALUES: dict[str, Callable[[StandIn], torch.Tensor] | None] = {}


def register_removal(name: str, value: Callable[[StandIn], torch.Tensor] | None) -> None:
    """Add a removal mode: ``value`` maps a :class:`StandIn` to its stand-in tensor."""
    _STANDIN_VALUES[name] = value


def removal_mode(config: DictConfig, key: str) -> str:
    """The validated removal mode of a model config (``drop`` when the key is absent)."""
    mode = config.get("removal", "drop") or "drop"
    if mode not in _STANDIN_VALUES:
        raise ConfigError(invalid_choice(f"{key}.removal (from views.removal)", mode, _STANDIN_VALUES))
    return mode


def teacher_view_weight(run_config: Mapping[str, Any]) -> float:
    """``views.teacher_loss`` of a run's config: the weight λ of a teacher's single-view label
    losses (docs/protocol.md §3.7). 0 when absent, as in a run stored before the key existed."""
    views = run_config.get("views") or {}
    return float(views.get("teacher_loss", 0.0) or 0.0)


def needs_modality(views: Sequence[str], modality: str) -> bool:
    """Whether any requested view sees ``modality`` (so that it must be encoded)."""
    return any(modality in VIEW_MODALITIES[v] for v in views)


def removes_modality(views: Sequence[str], modality: str) -> bool:
    """Whether any requested view has ``modality`` removed (so that a stand-in is needed)."""
    return any(modality not in VIEW_MODALITIES[v] for v in views)


class StandIn(nn.Module):
    """The content-free replacement of one modality's input vectors (``zero``/``mean`` modes).

    ``shape`` is the shape of one input vector (a token embedding, a region feature, a whole
    image). In ``mean`` mode the value is an EMA of the observed inputs, updated only in
    training and only *after* the forward pass has read it, so that even a training-mode
    prediction never depends on the removed content of its own batch.
    """

    def __init__(self, mode: str, shape: Sequence[int], momentum: float = 0.01) -> None:
        super().__init__()
        self.mode = mode
        self.momentum = float(momentum)
        persistent = mode == "mean"
        self.register_buffer("value_", torch.zeros(*shape), persistent=persistent)
        self.register_buffer("updates", torch.zeros((), dtype=torch.long), persistent=persistent)

    def value(self) -> torch.Tensor:
        """The stand-in vector; a copy, so later EMA updates never touch autograd's saved tensors."""
        produce = _STANDIN_VALUES[self.mode]
        assert produce is not None, "drop mode has no stand-in"
        return produce(self)

    @torch.no_grad()
    def observe(self, rows: torch.Tensor) -> None:
        """Fold a batch of input vectors ``[M, *shape]`` into the EMA (``mean`` mode, training)."""
        if self.mode != "mean" or not self.training or rows.numel() == 0:
            return
        batch_mean = rows.detach().float().mean(0).to(self.value_.dtype)
        if int(self.updates) == 0:
            self.value_.copy_(batch_mean)
        else:
            self.value_.lerp_(batch_mean, self.momentum)
        self.updates += 1


register_removal("drop", None)
register_removal("zero", lambda s: torch.zeros_like(s.value_))
register_removal("mean", lambda s: s.value_.clone())


def make_standin(mode: str, shape: Sequence[int], momentum: float) -> StandIn | None:
    """A :class:`StandIn` for modes that replace inputs, ``None`` for ``drop``."""
    return None if _STANDIN_VALUES[mode] is None else StandIn(mode, shape, momentum)


# ---------------------------------------------------------------------------------------
# Batch readers shared by every family (keys of docs/dev/contracts.md).


@dataclass
class TextInput:
    """Token ids ``[B, L]``, real-token mask ``[B, L]`` (bool) and segment ids ``[B, L]``."""

    ids: torch.Tensor
    mask: torch.Tensor
    segment: torch.Tensor


@dataclass
class ImageInput:
    """Region features ``[B, N, D]`` with boxes ``[B, N, 4]`` and real-row mask, or pixels."""

    features: torch.Tensor | None = None
    bbox: torch.Tensor | None = None
    mask: torch.Tensor | None = None
    pixels: torch.Tensor | None = None

    @property
    def batch_size(self) -> int:
        return (self.pixels if self.pixels is not None else self.features).shape[0]


def text_input(batch: dict) -> TextInput:
    """Read the ``bert_tokenizer`` keys; ``input_mask``/``segment_ids`` default as in BERT."""
    ids = batch["input_ids"].long()
    mask = batch.get("input_mask")
    mask = torch.ones_like(ids, dtype=torch.bool) if mask is None else mask.bool()
    segment = batch.get("segment_ids")
    segment = torch.zeros_like(ids) if segment is None else segment.long()
    return TextInput(ids, mask, segment)


def image_input(batch: dict, modality: str) -> ImageInput:
    """Read ``image`` (pixels) or ``image_feature_0`` + ``image_info_0`` (regions).

    As in MMF, a missing ``max_features`` means every row is real; a missing ``bbox`` reads
    as all-zero boxes. Boxes are divided by ``image_width``/``image_height`` when those are
    given (MMF stores absolute pixel boxes), otherwise used as they are.
    """
    if modality == "pixels":
        return ImageInput(pixels=batch["image"].float())
    features = batch["image_feature_0"].float()
    b, n, _ = features.shape
    info = batch.get("image_info_0") or {}
    count = info.get("max_features") if isinstance(info, dict) else None
    if count is None:
        mask = torch.ones(b, n, dtype=torch.bool, device=features.device)
    else:
        count = torch.as_tensor(count, device=features.device).reshape(-1, 1)
        mask = torch.arange(n, device=features.device)[None, :] < count
    bbox = info.get("bbox") if isinstance(info, dict) else None
    if bbox is None:
        bbox = features.new_zeros(b, n, 4)
    else:
        bbox = torch.as_tensor(bbox, device=features.device).float()
        width, height = info.get("image_width"), info.get("image_height")
        if width is not None and height is not None:
            size = torch.stack([torch.as_tensor(width), torch.as_tensor(height)], -1).float()
            bbox = bbox / size.to(bbox.device).reshape(-1, 1, 2).repeat(1, 1, 2).clamp(min=1.0)
    return ImageInput(features=features, bbox=bbox, mask=mask)


def nominal_length(info_value: int, batch_value: int) -> int:
    """The stand-in's length: the dataset's padded length, or the batch's when info lacks it."""
    return info_value if info_value and info_value > 0 else batch_value


class StandIns(nn.Module):
    """Both modalities' stand-ins for the ``zero``/``mean`` modes, shaped like a batch of one.

    Text stand-ins are input *vectors* (``text_dim``: the model's word-embedding width),
    image stand-ins are raw inputs (region features + boxes, or a whole image), so that the
    model runs its own encoder on them exactly as on real content.
    """

    def __init__(self, mode: str, info: DatasetInfo, text_dim: int, momentum: float = 0.01) -> None:
        super().__init__()
        self.info = info
        self.text = make_standin(mode, (text_dim,), momentum)
        if info.modality == "pixels":
            if info.image_size <= 0:
                raise ValueError("DatasetInfo.image_size must be set for a pixel dataset")
            self.pixels = make_standin(mode, (3, info.image_size, info.image_size), momentum)
        else:
            self.features = make_standin(mode, (info.feature_dim,), momentum)
            self.bbox = make_standin(mode, (4,), momentum)

    def text_vectors(self, batch: dict) -> torch.Tensor:
        """``[1, L0, text_dim]``, L0 = the dataset's ``max_seq_length`` (all positions real)."""
        length = nominal_length(self.info.max_seq_length, batch["input_ids"].shape[1])
        return self.text.value().expand(1, length, -1)

    def image(self, batch: dict) -> ImageInput:
        """A content-free :class:`ImageInput` with a batch of one."""
        if self.info.modality == "pixels":
            return ImageInput(pixels=self.pixels.value().unsqueeze(0))
        count = nominal_length(self.info.max_features, batch["image_feature_0"].shape[1])
        mask = torch.ones(1, count, dtype=torch.bool, device=self.features.value_.device)
        return ImageInput(
            features=self.features.value().expand(1, count, -1),
            bbox=self.bbox.value().expand(1, count, -1),
            mask=mask,
        )

    @torch.no_grad()
    def observe(self, batch: dict, embed: Callable[[torch.Tensor], torch.Tensor]) -> None:
        """Fold a training batch into the ``mean`` EMAs; call it after the forward pass."""
        if self.text.mode != "mean" or not self.training:
            return
        text = text_input(batch)
        self.text.observe(embed(text.ids)[text.mask])
        image = image_input(batch, self.info.modality)
        if image.pixels is not None:
            self.pixels.observe(image.pixels)
        else:
            self.features.observe(image.features[image.mask])
            self.bbox.observe(image.bbox[image.mask])


@contextlib.contextmanager
def batchnorm_frozen(module: nn.Module) -> Iterator[None]:
    """Run ``module``'s BatchNorm layers on running statistics for a moment.

    A stand-in is encoded as a batch of one constant input: its batch statistics are
    meaningless (and undefined for 1x1 maps), and must not move the running statistics.
    """
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training]
    for norm in norms:
        norm.eval()
    try:
        yield
    finally:
        for norm in norms:
            norm.train()


def make_standins(mode: str, info: DatasetInfo, text_dim: int, momentum: float) -> StandIns | None:
    """The model's stand-ins, or ``None`` in ``drop`` mode (which has none)."""
    return None if _STANDIN_VALUES[mode] is None else StandIns(mode, info, text_dim, momentum)


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``x [B, S, H]`` over rows where ``mask [B, S]`` is true (zeros when none are).

    Padded rows are overwritten by zeros (not multiplied, which would let inf/nan through),
    so their content cannot reach the result.
    """
    total = x.masked_fill(~mask.unsqueeze(-1), 0.0).sum(1)
    return total / mask.sum(1, keepdim=True).clamp(min=1).to(x.dtype)
