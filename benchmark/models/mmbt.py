"""MMBT-style single-stream model: a few "image tokens" in BERT's input space, then the text.

Layout (Kiela et al. 2019): ``[CLS] img_1 .. img_K [SEP] text`` where the text keeps its own
tokens after its ``[CLS]``. The K image tokens are attention-pooled from the region (or
patch) tokens with K learned queries, so the image costs K tokens whatever the number of
regions. Everything else (embeddings, view rule, packed views) is :mod:`.visual_bert`'s.

Views (``drop``): the image-only view is ``[CLS] img [SEP]``, the text-only view is the
text as a text-only BERT sees it. Text positions are the text's own (1..L-1), image tokens
take positions 1..K with token type 1, as MMBT's separate modal position embeddings would.
"""

from __future__ import annotations

import math

import torch
from omegaconf import DictConfig
from torch import nn

from benchmark.data.info import DatasetInfo
from benchmark.models.encoders import PatchTokens
from benchmark.models.options import positive_int
from benchmark.models.packing import Segment
from benchmark.models.views import IMAGE, TEXT, ImageInput
from benchmark.models.visual_bert import SingleStreamModel
from benchmark.registry import registry


class AttentionPool(nn.Module):
    """K learned queries attend over the real tokens; padded tokens get an exact zero weight."""

    def __init__(self, dim: int, count: int) -> None:
        super().__init__()
        self.queries = nn.Parameter(torch.randn(count, dim) * 0.02)
        self.key = nn.Linear(dim, dim)
        self.scale = 1.0 / math.sqrt(dim)

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        tokens = tokens.masked_fill(~mask.unsqueeze(-1), 0.0)
        scores = torch.einsum("bnh,kh->bkn", self.key(tokens), self.queries) * self.scale
        scores = scores.masked_fill(~mask.unsqueeze(1), torch.finfo(scores.dtype).min)
        weights = scores.softmax(-1) * mask.unsqueeze(1)  # all-padded image -> zero tokens
        return weights @ tokens


@registry.register_model("mmbt")
class MMBT(SingleStreamModel):
    """MMBT with the suite's view rule (see module docstring)."""

    config_key = "model_config.mmbt"

    def __init__(self, config: DictConfig, info: DatasetInfo) -> None:
        super().__init__(config, info)
        self.num_image_tokens = positive_int(config, "num_image_tokens", self.config_key, 4)
        self.pool = AttentionPool(self.bert.config.hidden_size, self.num_image_tokens)

    def image_segment(self, image: ImageInput) -> Segment:
        tokens = self.image_tokens(image)
        mask = image.mask if image.mask is not None else PatchTokens.mask_for(tokens)
        pooled = self.pool(tokens, mask)
        emb = pooled + self._positions(1, self.num_image_tokens + 1) + self._token_type(1)
        return Segment(
            self._finish(emb), torch.ones(pooled.shape[:2], dtype=torch.bool, device=pooled.device)
        )

    def sequence(self, view: str, parts: dict[str, Segment], device: torch.device) -> list[Segment]:
        dropped = self.standins is None
        cls = self.special_token(self.cls_token_id, 0, 0, device)
        sep = self.special_token(self.sep_token_id, self.num_image_tokens + 1, 1, device)
        if view == "multi":
            return [cls, parts[IMAGE], sep, parts[TEXT].slice(1)]
        if view == "text":
            return [parts[TEXT]] if dropped else [cls, parts["removed_image"], sep, parts[TEXT].slice(1)]
        tail = [] if dropped else [parts["removed_text"].slice(1)]
        return [cls, parts[IMAGE], sep, *tail]
