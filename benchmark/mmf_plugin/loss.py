"""``msd_kd``: the MSD/KD objective as an MMF loss (``losses: [{type: msd_kd, params: …}]``).

Why it returns a dict: MMF adds up every value of a model's loss dict for the backward pass
(``mmf.utils.general.extract_loss``) and logs each one, so the objective is returned as its
contributions ``{label: (1-α)ℓ, kd: αD, aux_image: w_image·D(image), aux_text: …}`` (MMF's keys
``train/<dataset>/msd_kd/label`` …), which sum to the objective: MMF's console, ``train.log``
and reporting show every term, and the total it optimises is unchanged. The suite's detached
terms (``loss/label``, ``loss/kd``, ``loss/aux_image``, ``weight/image_mean`` …) are kept in
:attr:`MSDKDLoss.last_terms`, where ``msd_wandb`` reads them. All maths comes from
:mod:`benchmark.distill` through :mod:`.objective`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mmf.common.registry import registry
from torch import Tensor, nn

from benchmark.mmf_plugin.objective import MSDKDObjective


@registry.register_loss("msd_kd")
class MSDKDLoss(nn.Module):
    """``(1-α)ℓ + α D_τ(T, S)`` plus the weighted image-only and text-only terms (docs/protocol.md §4.4, §6).

    ``weighting`` names a scheme of :mod:`benchmark.distill.weighting` (``none`` = plain KD,
    ``uniform``, ``population``, ``instance``, ``only_image``, ``only_text``); ``learned`` is
    refused (it needs the suite's meta step). ``task: auto`` reads single- vs multi-label from
    the targets' shape.
    """

    def __init__(
        self,
        alpha: float = 0.5,
        temperature: float = 1.0,
        weighting: str = "uniform",
        weighting_params: Mapping[str, Any] | None = None,
        saliency: str = "divergence",
        task: str = "auto",
        class_reduction: str = "mean",
        population_saliency: Mapping[str, float] | None = None,
    ) -> None:
        super().__init__()
        self.objective = MSDKDObjective(
            alpha=float(alpha), temperature=float(temperature), weighting=str(weighting),
            weighting_params=weighting_params, saliency=str(saliency), task=str(task),
            class_reduction=str(class_reduction), population_saliency=population_saliency,
        )

    @property
    def last_terms(self) -> dict[str, float]:
        return self.objective.last_terms

    def forward(self, sample_list: Mapping[str, Any], model_output: Mapping[str, Any]) -> dict[str, Tensor]:
        return self.objective.parts(model_output, sample_list["targets"])
