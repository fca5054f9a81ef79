"""VisualBERT-style single-stream model: one BERT over text tokens ++ image tokens.

Built from ``transformers``' ``BertConfig``/``BertModel`` (random init), or from pretrained
weights (``bert_model_name``/``pretrained_path``: a Hugging Face name such as
``bert-base-uncased``, a directory, or ``minilm`` for the packaged MiniLM).
Text tokens are embedded as in BERT; each region becomes a token (projected feature +
projected box + token type 1, VisualBERT's visual embedding); pixel datasets are cut into
patches by a strided conv. The ``[CLS]`` state goes through BERT's pooler and the head.

View rule ``drop``: a view's sequence is built from the kept tokens only (the image-only
view is ``[CLS]`` + regions, with ``[CLS]`` the model's own constant token), so the removed
modality is not masked but absent. ``zero``/``mean`` put a content-free stand-in of the
dataset's nominal length in its place. :meth:`SingleStreamModel.forward_views` runs all
views in one packed pass (:mod:`.packing`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from omegaconf import DictConfig
from torch import nn

from benchmark import VIEWS
from benchmark.data.info import DatasetInfo
from benchmark.errors import ConfigError
from benchmark.models.base import MultimodalModel
from benchmark.models.encoders import PatchTokens, RegionTokens, TokenEmbedding
from benchmark.models.heads import build_head
from benchmark.models.options import node, positive_int
from benchmark.models.packing import Segment, join, pack
from benchmark.models.pretrained import freeze, load_bert
from benchmark.models.views import (
    IMAGE,
    TEXT,
    ImageInput,
    TextInput,
    image_input,
    make_standins,
    needs_modality,
    removal_mode,
    removes_modality,
    text_input,
)
from benchmark.registry import registry

# Keys of a model config that are passed to BertConfig when the BERT is built from scratch.
BERT_CONFIG_KEYS = (
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "hidden_dropout_prob",
    "attention_probs_dropout_prob",
    "max_position_embeddings",
    "initializer_range",
)


def build_bert(config: DictConfig, info: DatasetInfo, key: str) -> nn.Module:
    """A ``BertModel``: pretrained weights when configured, else random from config."""
    from transformers import BertConfig, BertModel

    source = config.get("pretrained_path") or config.get("bert_model_name")
    if source:
        bert = load_bert(
            source,
            f"{key}.{'pretrained_path' if config.get('pretrained_path') else 'bert_model_name'}",
            info.vocab_size,
        )
        if config.get("embedding_size"):
            raise ConfigError(
                f"{key}.embedding_size: cannot factorize a pretrained embedding; set it to null."
            )
        return freeze(bert) if config.get("freeze_base", False) else bert
    for name in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size"):
        positive_int(config, name, key)
    if config.hidden_size % config.num_attention_heads:
        raise ConfigError(
            f"{key}.num_attention_heads: {config.num_attention_heads} does not divide hidden_size."
        )
    params = {k: config[k] for k in BERT_CONFIG_KEYS if config.get(k) is not None}
    bert_config = BertConfig(
        vocab_size=config.get("vocab_size") or info.vocab_size, type_vocab_size=2, **params
    )
    bert_config._attn_implementation = config.get("attn_implementation") or "sdpa"
    bert = BertModel(bert_config)
    if config.get("embedding_size") and config.embedding_size != bert_config.hidden_size:
        bert.set_input_embeddings(
            TokenEmbedding(bert_config.vocab_size, bert_config.hidden_size, int(config.embedding_size))
        )
    return bert


class SingleStreamModel(MultimodalModel):
    """Shared machinery of the single-stream families; subclasses lay out the sequences."""

    config_key = "model_config.visual_bert"

    def __init__(self, config: DictConfig, info: DatasetInfo) -> None:
        super().__init__(config, info)
        key = self.config_key
        self.removal = removal_mode(config, key)
        self.bert = build_bert(config, info, key)
        dim = self.bert.config.hidden_size
        if info.modality == "pixels":
            self.image_tokens = PatchTokens(info.image_size, int(config.get("patch_size", 16)), dim)
        else:
            self.image_tokens = RegionTokens(info.feature_dim, dim)
        self.head = build_head(node(config, "head"), dim, info.num_labels, f"{key}.head")
        self.cls_token_id = int(config.get("cls_token_id", 101))
        self.sep_token_id = int(config.get("sep_token_id", 102))
        self.pack_views = bool(config.get("pack_views", True))
        momentum = float(config.get("mean_momentum", 0.01))
        self.standins = make_standins(self.removal, info, dim, momentum)

    # -- embeddings ----------------------------------------------------------------------
    @property
    def embeddings(self) -> nn.Module:
        return self.bert.embeddings

    def _finish(self, x: torch.Tensor) -> torch.Tensor:
        return self.embeddings.dropout(self.embeddings.LayerNorm(x))

    def _positions(self, start: int, stop: int) -> torch.Tensor:
        table = self.embeddings.position_embeddings.weight
        if stop > table.shape[0]:
            raise ValueError(f"sequence of {stop} tokens exceeds max_position_embeddings={table.shape[0]}")
        return table[start:stop]

    def _token_type(self, index: int) -> torch.Tensor:
        return self.embeddings.token_type_embeddings.weight[index]

    def special_token(self, token_id: int, position: int, token_type: int, device: torch.device) -> Segment:
        """A constant token (``[CLS]``, ``[SEP]``): the model's own, never read from the batch."""
        ids = torch.full((1, 1), token_id, dtype=torch.long, device=device)
        emb = (
            self.embeddings.word_embeddings(ids)
            + self._positions(position, position + 1)
            + self._token_type(token_type)
        )
        return Segment(self._finish(emb), torch.ones(1, 1, dtype=torch.bool, device=device))

    def text_segment(self, text: TextInput) -> Segment:
        words = self.embeddings.word_embeddings(text.ids)
        types = self.embeddings.token_type_embeddings(text.segment.clamp(0, 1))
        return Segment(self._finish(words + self._positions(0, text.ids.shape[1]) + types), text.mask)

    def removed_text_segment(self, batch: dict) -> Segment:
        """``zero``/``mean``: ``[CLS]`` then stand-in vectors at positions 1..L0-1 (type 0)."""
        vectors = self.standins.text_vectors(batch)[:, 1:]
        cls = self.special_token(self.cls_token_id, 0, 0, vectors.device)
        rest = self._finish(vectors + self._positions(1, vectors.shape[1] + 1) + self._token_type(0))
        return join([cls, Segment(rest, torch.ones(rest.shape[:2], dtype=torch.bool, device=rest.device))], 1)

    def image_segment(self, image: ImageInput) -> Segment:
        tokens = self.image_tokens(image)
        mask = image.mask if image.mask is not None else PatchTokens.mask_for(tokens)
        return Segment(self._finish(tokens + self._token_type(1)), mask)

    # -- layout (overridden by MMBT) ------------------------------------------------------
    def sequence(self, view: str, parts: dict[str, Segment], device: torch.device) -> list[Segment]:
        """VisualBERT layout: ``text ++ regions``; without text, ``[CLS] ++ regions``."""
        dropped = self.standins is None
        if view == "multi":
            return [parts[TEXT], parts[IMAGE]]
        if view == "text":
            return [parts[TEXT]] if dropped else [parts[TEXT], parts["removed_image"]]
        first = self.special_token(self.cls_token_id, 0, 0, device) if dropped else parts["removed_text"]
        return [first, parts[IMAGE]]

    # -- views ---------------------------------------------------------------------------
    def forward_views(self, batch: dict, views: Sequence[str] = VIEWS) -> dict[str, torch.Tensor]:
        self.check_views(views)
        text = text_input(batch)
        size, device = text.ids.shape[0], text.ids.device
        parts: dict[str, Segment] = {}
        if needs_modality(views, TEXT):
            parts[TEXT] = self.text_segment(text)
        if needs_modality(views, IMAGE):
            parts[IMAGE] = self.image_segment(image_input(batch, self.info.modality))
        if self.standins is not None:
            if removes_modality(views, TEXT):
                parts["removed_text"] = self.removed_text_segment(batch)
            if removes_modality(views, IMAGE):
                parts["removed_image"] = self.image_segment(self.standins.image(batch))
        sequences = [join(self.sequence(v, parts, device), size) for v in views]
        packed = pack(sequences, size, self.pack_views)
        hidden = self.bert.encoder(packed.embeddings, attention_mask=packed.attention_mask).last_hidden_state
        pooled = self.bert.pooler(packed.first_tokens(hidden).unsqueeze(1))
        logits = self.head(pooled).split(size)
        if self.standins is not None:
            self.standins.observe(batch, self.embeddings.word_embeddings)
        return dict(zip(views, logits, strict=True))


@registry.register_model("visual_bert")
class VisualBert(SingleStreamModel):
    """VisualBERT (Li et al. 2019) as MMF configures it, with the suite's view rule."""

    config_key = "model_config.visual_bert"
