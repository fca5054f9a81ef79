"""Late fusion (MultiBench style): a text encoder, an image encoder, a fusion, a head.

The view rule is applied to the *encoder outputs*: a removed modality's vector is one
learned "absent" embedding (``drop``), or the encoder's output on a content-free stand-in
input (``zero``/``mean``, computed once per call on a batch of one and broadcast). Either
way it is the same vector for every sample, so no content of the removed modality exists
anywhere in the computation of that view.

:meth:`LateFusion.forward_views` encodes each modality once and runs only fusion + head per
view (all views in one batch), so an MSD step costs about what a KD step does.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from omegaconf import DictConfig
from torch import nn

from benchmark import VIEWS
from benchmark.data.info import DatasetInfo
from benchmark.models.base import MultimodalModel
from benchmark.models.encoders import build_image_encoder, build_text_encoder
from benchmark.models.fusion import build_fusion
from benchmark.models.heads import build_head
from benchmark.models.options import node
from benchmark.models.views import (
    IMAGE,
    TEXT,
    VIEW_MODALITIES,
    batchnorm_frozen,
    image_input,
    make_standins,
    needs_modality,
    removal_mode,
    removes_modality,
    text_input,
)
from benchmark.registry import registry


@registry.register_model("late_fusion")
class LateFusion(MultimodalModel):
    """Encoders + fusion + head with per-modality absent embeddings (see module docstring)."""

    config_key = "model_config.late_fusion"

    def __init__(self, config: DictConfig, info: DatasetInfo) -> None:
        super().__init__(config, info)
        key = self.config_key
        self.removal = removal_mode(config, key)
        self.text_encoder = build_text_encoder(node(config, "text_encoder"), info, f"{key}.text_encoder")
        self.image_encoder = build_image_encoder(node(config, "image_encoder"), info, f"{key}.image_encoder")
        self.fusion = build_fusion(
            node(config, "fusion"), self.text_encoder.out_dim, self.image_encoder.out_dim, f"{key}.fusion"
        )
        self.head = build_head(node(config, "head"), self.fusion.out_dim, info.num_labels, f"{key}.head")

        if self.removal == "drop":
            self.absent = nn.ParameterDict(
                {
                    TEXT: nn.Parameter(torch.randn(self.text_encoder.out_dim) * 0.02),
                    IMAGE: nn.Parameter(torch.randn(self.image_encoder.out_dim) * 0.02),
                }
            )
        momentum = float(config.get("mean_momentum", 0.01))
        self.standins = make_standins(self.removal, info, self.text_encoder.embed_dim, momentum)

    # -- per-modality vectors ------------------------------------------------------------
    def _encode_text(self, batch: dict) -> torch.Tensor:
        text = text_input(batch)
        return self.text_encoder(self.text_encoder.embed(text.ids), text.mask, text.segment)

    def _encode_image(self, batch: dict) -> torch.Tensor:
        return self.image_encoder(image_input(batch, self.info.modality))

    def _removed_text(self, batch: dict) -> torch.Tensor:
        """``[1, H]``: the text vector of a view without text (the same for every sample)."""
        if self.standins is None:
            return self.absent[TEXT].unsqueeze(0)
        emb = self.standins.text_vectors(batch)
        ones = torch.ones(emb.shape[:2], dtype=torch.bool, device=emb.device)
        with batchnorm_frozen(self.text_encoder):
            return self.text_encoder(
                emb, ones, torch.zeros(emb.shape[:2], dtype=torch.long, device=emb.device)
            )

    def _removed_image(self, batch: dict) -> torch.Tensor:
        """``[1, H]``: the image vector of a view without image (the same for every sample)."""
        if self.standins is None:
            return self.absent[IMAGE].unsqueeze(0)
        with batchnorm_frozen(self.image_encoder):
            return self.image_encoder(self.standins.image(batch))

    # -- views ---------------------------------------------------------------------------
    def forward_views(self, batch: dict, views: Sequence[str] = VIEWS) -> dict[str, torch.Tensor]:
        self.check_views(views)
        present: dict[str, torch.Tensor] = {}
        removed: dict[str, torch.Tensor] = {}
        for modality, encode, standin in (
            (TEXT, self._encode_text, self._removed_text),
            (IMAGE, self._encode_image, self._removed_image),
        ):
            if needs_modality(views, modality):
                present[modality] = encode(batch)
            if removes_modality(views, modality):
                removed[modality] = standin(batch)
        size = batch["input_ids"].shape[0]

        def vector(view: str, modality: str) -> torch.Tensor:
            if modality in VIEW_MODALITIES[view]:
                return present[modality]
            return removed[modality].expand(size, -1)

        texts = torch.cat([vector(v, TEXT) for v in views])
        images = torch.cat([vector(v, IMAGE) for v in views])
        logits = self.head(self.fusion(texts, images)).split(size)
        if self.standins is not None:
            self.standins.observe(batch, self.text_encoder.embed)
        return dict(zip(views, logits, strict=True))
