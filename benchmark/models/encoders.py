"""Unimodal encoders (MultiBench's "encoders" in encoders + fusion + head).

Text encoders split ``embed`` (ids -> input vectors) from ``forward`` (input vectors ->
one vector per sample) because the ``zero``/``mean`` removal modes replace the *input
vectors* of a removed modality, not its ids. Image encoders take an :class:`ImageInput`,
whose stand-in is built the same way. Types are registered by name (registry kinds
``text_encoder`` and ``image_encoder``); pretrained ones live in :mod:`.pretrained`.

The token builders at the end (regions -> tokens, pixels -> patch tokens) are what the
single-stream families put into their BERT sequence.
"""

from __future__ import annotations

import torch
from omegaconf import DictConfig
from torch import nn

from benchmark.data.info import DatasetInfo
from benchmark.errors import ConfigError
from benchmark.models.options import lookup, positive_int
from benchmark.models.views import ImageInput, masked_mean
from benchmark.registry import registry

# image_encoder.type: auto -> the type that fits the dataset's image modality.
AUTO_IMAGE_ENCODER = {"features": "region", "pixels": "cnn"}


class TokenEmbedding(nn.Module):
    """Word embeddings over the real WordPiece vocabulary, optionally factorized.

    With ``embedding_size`` < ``dim`` the table is ``vocab x embedding_size`` followed by a
    projection (ALBERT's factorization): the 30,522-row table dominates small models'
    parameter count and optimizer time, and this shrinks it without remapping token ids.
    """

    def __init__(self, vocab_size: int, dim: int, embedding_size: int | None = None) -> None:
        super().__init__()
        size = embedding_size or dim
        self.table = nn.Embedding(vocab_size, size, padding_idx=0)
        self.proj = nn.Linear(size, dim, bias=False) if size != dim else nn.Identity()
        self.vocab_size = vocab_size

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.proj(self.table(ids))


def transformer_stack(dim: int, layers: int, heads: int, ffn: int, dropout: float) -> nn.TransformerEncoder:
    """Pre-norm transformer encoder layers, batch first, with a final LayerNorm."""
    layer = nn.TransformerEncoderLayer(
        dim, heads, ffn, dropout, activation="gelu", batch_first=True, norm_first=True
    )
    return nn.TransformerEncoder(layer, layers, norm=nn.LayerNorm(dim), enable_nested_tensor=False)


def padding_mask(mask: torch.Tensor) -> torch.Tensor:
    """``src_key_padding_mask`` for ``mask``; a row with no real item keeps item 0 so it is not NaN."""
    pad = ~mask
    pad[:, 0] &= mask.any(1)
    return pad


def _heads(config: DictConfig, dim: int, key: str) -> int:
    heads = positive_int(config, "num_heads", key, 2)
    if dim % heads:
        raise ConfigError(f"{key}.num_heads: {heads} does not divide hidden_size {dim}.")
    return heads


@registry.register("text_encoder", "transformer")
class TransformerTextEncoder(nn.Module):
    """Token + position + segment embeddings, ``num_layers`` transformer layers, masked mean.

    ``num_layers: 0`` is a mean-pooled bag of embeddings (the cheapest student).
    """

    def __init__(self, config: DictConfig, info: DatasetInfo, key: str) -> None:
        super().__init__()
        dim = positive_int(config, "hidden_size", key)
        layers = int(config.get("num_layers", 1))
        vocab = config.get("vocab_size") or info.vocab_size
        self.embedding = TokenEmbedding(vocab, dim, config.get("embedding_size"))
        self.position = nn.Embedding(int(config.get("max_position_embeddings", 512)), dim)
        self.segment = nn.Embedding(2, dim)
        self.norm = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(float(config.get("dropout", 0.1)))
        ffn = int(config.get("ffn_multiplier", 2)) * dim
        self.layers = (
            transformer_stack(dim, layers, _heads(config, dim, key), ffn, float(config.get("dropout", 0.1)))
            if layers > 0
            else None
        )
        self.embed_dim = self.out_dim = dim

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        return self.embedding(ids)

    def forward(self, emb: torch.Tensor, mask: torch.Tensor, segment: torch.Tensor) -> torch.Tensor:
        length = emb.shape[1]
        x = emb + self.position.weight[:length] + self.segment(segment.clamp(0, 1))
        x = self.dropout(self.norm(x))
        if self.layers is not None:
            x = self.layers(x, src_key_padding_mask=padding_mask(mask))
        return masked_mean(x, mask)


@registry.register("image_encoder", "region")
class RegionImageEncoder(nn.Module):
    """Region features (+ boxes) projected, optional transformer layers, masked mean."""

    modalities = ("features",)

    def __init__(self, config: DictConfig, info: DatasetInfo, key: str) -> None:
        super().__init__()
        dim = positive_int(config, "hidden_size", key)
        self.tokens = RegionTokens(info.feature_dim, dim)
        self.norm = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(float(config.get("dropout", 0.1)))
        layers = int(config.get("num_layers", 0))
        ffn = int(config.get("ffn_multiplier", 2)) * dim
        self.layers = (
            transformer_stack(dim, layers, _heads(config, dim, key), ffn, float(config.get("dropout", 0.1)))
            if layers > 0
            else None
        )
        self.out_dim = dim

    def forward(self, image: ImageInput) -> torch.Tensor:
        x = self.dropout(self.norm(self.tokens(image)))
        if self.layers is not None:
            x = self.layers(x, src_key_padding_mask=padding_mask(image.mask))
        return masked_mean(x, image.mask)


@registry.register("image_encoder", "cnn")
class ConvImageEncoder(nn.Module):
    """A small CNN over pixels (easy-VQA's 64x64 images): stride-2 convs, global pooling.

    GroupNorm rather than BatchNorm keeps every sample's output independent of the rest of
    the batch, which the view rule's tests (and the stand-in passes) rely on.
    """

    modalities = ("pixels",)

    def __init__(self, config: DictConfig, info: DatasetInfo, key: str) -> None:
        super().__init__()
        dim = positive_int(config, "hidden_size", key)
        channels = list(config.get("channels") or [max(8, dim // 4), max(8, dim // 2), dim])
        layers: list[nn.Module] = []
        previous = 3
        for width in channels:
            layers += [nn.Conv2d(previous, width, 3, stride=2, padding=1), nn.GroupNorm(1, width), nn.GELU()]
            previous = width
        self.convs = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.proj = nn.Linear(previous, dim)
        self.out_dim = dim

    def forward(self, image: ImageInput) -> torch.Tensor:
        return self.proj(self.convs(image.pixels))


def _ensure_pretrained_registered() -> None:
    # Pretrained encoders register themselves on import; importing here keeps lookups lazy.
    import benchmark.models.pretrained  # noqa: F401


def build_text_encoder(config: DictConfig, info: DatasetInfo, key: str) -> nn.Module:
    """The text encoder named by ``<key>.type`` (default ``transformer``)."""
    _ensure_pretrained_registered()
    cls = lookup("text_encoder", config.get("type", "transformer"), f"{key}.type")
    return cls(config, info, key)


def build_image_encoder(config: DictConfig, info: DatasetInfo, key: str) -> nn.Module:
    """The image encoder named by ``<key>.type``; ``auto`` picks one for the data's modality."""
    _ensure_pretrained_registered()
    name = config.get("type", "auto")
    if name == "auto":
        name = AUTO_IMAGE_ENCODER[info.modality]
    cls = lookup("image_encoder", name, f"{key}.type")
    if info.modality not in cls.modalities:
        fitting = [
            n
            for n in registry.names("image_encoder")
            if info.modality in registry.get("image_encoder", n).modalities
        ]
        raise ConfigError(
            f"{key}.type: {name!r} encodes {'/'.join(cls.modalities)} but dataset {info.name!r} "
            f"provides {info.modality}. Valid values here: {', '.join(['auto', *fitting])}."
        )
    return cls(config, info, key)


# ---------------------------------------------------------------------------------------
# Image -> tokens, for single-stream models.


class RegionTokens(nn.Module):
    """One token per region: projected feature + projected box (VisualBERT's visual embedding)."""

    def __init__(self, feature_dim: int, dim: int) -> None:
        super().__init__()
        if feature_dim <= 0:
            raise ValueError("DatasetInfo.feature_dim must be set for a region-feature dataset")
        self.proj = nn.Linear(feature_dim, dim)
        self.box = nn.Linear(4, dim)

    def forward(self, image: ImageInput) -> torch.Tensor:
        return self.proj(image.features) + self.box(image.bbox)


class PatchTokens(nn.Module):
    """One token per ``patch_size`` x ``patch_size`` patch (a strided conv) + patch position.

    Lets a single-stream model read pixel datasets as region-like tokens.
    """

    def __init__(self, image_size: int, patch_size: int, dim: int) -> None:
        super().__init__()
        if image_size <= 0:
            raise ValueError("DatasetInfo.image_size must be set for a pixel dataset")
        if image_size % patch_size:
            raise ConfigError(f"patch_size: {patch_size} does not divide the image size {image_size}.")
        self.conv = nn.Conv2d(3, dim, patch_size, stride=patch_size)
        self.position = nn.Parameter(torch.randn((image_size // patch_size) ** 2, dim) * 0.02)

    def forward(self, image: ImageInput) -> torch.Tensor:
        x = self.conv(image.pixels).flatten(2).transpose(1, 2)
        if x.shape[1] != self.position.shape[0]:
            raise ValueError(
                f"image of size {tuple(image.pixels.shape[-2:])} gives {x.shape[1]} patches, "
                f"the model was built for {self.position.shape[0]} (DatasetInfo.image_size)"
            )
        return x + self.position

    @staticmethod
    def mask_for(tokens: torch.Tensor) -> torch.Tensor:
        return torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
