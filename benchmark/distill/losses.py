"""Label losses, teacher-student divergences and the training objectives (docs/protocol.md §4).

Everything here is a pure function of tensors. Per-sample values (shape ``[B]``) are the
currency: MSD weights each sample's auxiliary terms separately (§4, §6), so every loss and
divergence can return one value per sample and the objectives average over the batch only
after weighting.

Reductions: label losses default to ``reduction="mean"`` (MMF's behaviour when used as the
training loss); divergences default to ``reduction="none"`` (per sample, what the objectives
and saliency need). Both accept ``"none" | "mean" | "sum"``; ``"mean"`` of a divergence is the
batch mean of per-sample divergences ("batchmean").

Argument order follows the maths: ``D(T, S) = KL(p_T || p_S)`` takes the reference (teacher)
logits first and the approximating (student) logits second. Teacher logits are not detached
here: callers pass cached or ``no_grad`` teacher outputs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor

from benchmark import MODALITIES
from benchmark.data.info import TASKS
from benchmark.registry import registry

REDUCTIONS = ("none", "mean", "sum")

LABEL_LOSS_FOR_TASK: dict[str, str] = {
    "single_label": "cross_entropy",
    "multi_label": "logit_bce",
    "soft_score": "logit_bce",
}
DIVERGENCE_FOR_TASK: dict[str, str] = {
    "single_label": "kl_softmax",
    "multi_label": "bernoulli_kl",
    "soft_score": "bernoulli_kl",
}


def _reduce(per_sample: Tensor, reduction: str) -> Tensor:
    if reduction == "none":
        return per_sample
    if reduction == "mean":
        return per_sample.mean()
    if reduction == "sum":
        return per_sample.sum()
    raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")


def _check_pair(a: Tensor, b: Tensor, what: str) -> None:
    if a.dim() != 2 or a.shape != b.shape:
        raise ValueError(
            f"{what}: expected two [B, C] tensors of equal shape, got {tuple(a.shape)} and {tuple(b.shape)}"
        )


def _check_temperature(temperature: float) -> None:
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")


# -- label losses ----------------------------------------------------------------------------------
@registry.register_loss("cross_entropy")
def cross_entropy(logits: Tensor, targets: Tensor, reduction: str = "mean") -> Tensor:
    """Softmax cross-entropy ``-log softmax(z)[y]`` per sample; MMF's ``cross_entropy`` when meaned.

    ``targets`` are class indices ``[B]`` (or ``[B, 1]``); probability targets ``[B, C]`` are
    accepted as torch does (expected negative log-likelihood).
    """
    if logits.dim() != 2:
        raise ValueError(f"cross_entropy: logits must be [B, C], got {tuple(logits.shape)}")
    if targets.dim() == 2 and targets.size(1) == 1 and logits.size(1) != 1:
        targets = targets[:, 0]
    if targets.dim() == 1:
        targets = targets.long()
    return _reduce(F.cross_entropy(logits, targets, reduction="none"), reduction)


@registry.register_loss("logit_bce")
def logit_bce(logits: Tensor, targets: Tensor, reduction: str = "mean") -> Tensor:
    """Per-class BCE with logits, summed over classes per sample (MMF ``LogitBinaryCrossEntropy``).

    MMF computes ``binary_cross_entropy_with_logits(reduction="mean") * C``, i.e. the batch mean of
    the per-sample *sum* over classes; ``reduction="mean"`` here reproduces that number exactly
    and ``"none"`` gives the per-sample sums ``[B]`` whose mean it is.
    """
    _check_pair(logits, targets, "logit_bce")
    per_element = F.binary_cross_entropy_with_logits(logits, targets.to(logits.dtype), reduction="none")
    return _reduce(per_element.sum(dim=1), reduction)


# -- divergences ----------------------------------------------------------------------------------
@registry.register_divergence("kl_softmax")
def kl_softmax(
    teacher_logits: Tensor, student_logits: Tensor, temperature: float = 1.0, reduction: str = "none"
) -> Tensor:
    """``τ² · KL(softmax(z_T/τ) || softmax(z_S/τ))`` per sample, for single-label tasks (§4).

    The τ² factor keeps the gradient scale independent of τ (Hinton et al.). Computed from
    log-softmax; classes where the teacher's probability is exactly 0 contribute 0 (the limit of
    ``p log p``). Exactly 0 when the two logit rows are equal.
    """
    _check_pair(teacher_logits, student_logits, "kl_softmax")
    _check_temperature(temperature)
    log_p_t = F.log_softmax(teacher_logits / temperature, dim=1)
    log_p_s = F.log_softmax(student_logits / temperature, dim=1)
    p_t = log_p_t.exp()
    terms = torch.where(p_t > 0, p_t * (log_p_t - log_p_s), torch.zeros_like(p_t))
    return _reduce(temperature**2 * terms.sum(dim=1), reduction)


@registry.register_divergence("bernoulli_kl")
def bernoulli_kl(
    teacher_logits: Tensor, student_logits: Tensor, temperature: float = 1.0, reduction: str = "none"
) -> Tensor:
    """``τ² · mean_c KL_Bernoulli(σ(z_T,c/τ) || σ(z_S,c/τ))`` per sample, for multi-label and soft-score tasks (§4).

    With ``a = z_T/τ``, ``b = z_S/τ``, ``p = σ(a)``:
    ``KL = p (log σ(a) − log σ(b)) + (1 − p)(log σ(−a) − log σ(−b))``, using log-sigmoid so that
    large logits neither overflow nor lose precision. This is the soft-target BCE
    ``BCE(σ(b), p)`` minus the teacher's own entropy ``H(p)``, a constant in the student, so its
    gradient w.r.t. the student logits equals the soft-target BCE's while the value is exactly 0
    when student equals teacher (a BCE-based KD term would instead log ``H(p) > 0``).
    """
    _check_pair(teacher_logits, student_logits, "bernoulli_kl")
    _check_temperature(temperature)
    a = teacher_logits / temperature
    b = student_logits / temperature
    p = torch.sigmoid(a)
    kl = p * (F.logsigmoid(a) - F.logsigmoid(b)) + (1 - p) * (F.logsigmoid(-a) - F.logsigmoid(-b))
    return _reduce(temperature**2 * kl.mean(dim=1), reduction)


def _lookup(table: dict[str, str], task: str, what: str) -> str:
    if task not in TASKS:
        raise ValueError(f"{what}: task must be one of {TASKS}, got {task!r}")
    return table[task]


def label_loss_for_task(task: str, configured: str | None = None) -> Callable[..., Tensor]:
    """The label loss ℓ: the one place that resolves it, for the trainer's methods, the MMF loss and
    the ``loss`` saliency (§4).

    ``configured`` is a dataset's ``loss`` key (MMF's ``losses``), which wins when given; without
    it the task decides: ``cross_entropy`` (single-label) or ``logit_bce`` (multi-label, soft score).
    """
    if configured:
        return registry.get_loss(str(configured))
    return registry.get_loss(_lookup(LABEL_LOSS_FOR_TASK, task, "label_loss_for_task"))


def divergence_for_task(task: str) -> Callable[..., Tensor]:
    """The divergence D of a task: ``kl_softmax`` (single-label) or ``bernoulli_kl`` (§4)."""
    return registry.get_divergence(_lookup(DIVERGENCE_FOR_TASK, task, "divergence_for_task"))


# -- objectives -----------------------------------------------------------------------------------
def _per_sample(x: Tensor, name: str, batch: int | None = None) -> Tensor:
    """A per-sample tensor [B]; a 0-dim tensor is broadcast (it is the same for every sample)."""
    if x.dim() == 0:
        return x.expand(batch) if batch is not None else x.reshape(1)
    if x.dim() != 1 or x.numel() == 0:
        raise ValueError(
            f"{name} must be a non-empty per-sample tensor [B] or a scalar, got {tuple(x.shape)}"
        )
    if batch is not None and x.size(0) != batch:
        raise ValueError(f"{name} has {x.size(0)} samples, expected {batch}")
    return x


def _batch_size(*values: Tensor) -> int | None:
    """The batch size B of the first per-sample tensor, or None when all are scalars."""
    return next((value.size(0) for value in values if value.dim() == 1), None)


def _check_alpha(alpha: float) -> None:
    if not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")


def _logged(terms: dict[str, Tensor]) -> dict[str, Tensor]:
    return {key: value.detach() for key, value in terms.items()}


def kd_objective(label_loss: Tensor, kd_div: Tensor, alpha: float) -> tuple[Tensor, dict[str, Tensor]]:
    """Standard KD: batch mean of ``(1 − α) ℓ + α D_τ(T(multi), S(multi))`` (§4)."""
    _check_alpha(alpha)
    batch = _batch_size(label_loss, kd_div)
    ell = _per_sample(label_loss, "label_loss", batch)
    div = _per_sample(kd_div, "kd_div", batch)
    total = ((1 - alpha) * ell + alpha * div).mean()
    return total, _logged({"loss/label": ell.mean(), "loss/kd": div.mean(), "loss/total": total})


def msd_objective(
    label_loss: Tensor,
    kd_div: Tensor,
    aux_div: Mapping[str, Tensor],
    weights: Mapping[str, Tensor | float],
    alpha: float,
) -> tuple[Tensor, dict[str, Tensor]]:
    """MSD: batch mean of ``(1 − α) ℓ + α D(multi) + Σ_m w_m(x) · D(m)`` over m ∈ {image, text} (§4).

    ``aux_div[m]`` is ``D_τ(T(m), S(m))`` per sample ``[B]``; ``weights[m]`` is a per-sample
    tensor ``[B]`` (instance / learned schemes), or a scalar (uniform / population / ablations,
    §6). Weighting happens per sample *before* the batch mean, so a per-sample weight scales
    exactly that sample's auxiliary term. Weights are not detached: the learned scheme
    differentiates the objective w.r.t. them (§6). A view may be left out of ``aux_div`` (e.g. the
    ``only_image`` ablation need not run the student on the text view); it then adds no term.

    Terms: ``loss/label``, ``loss/kd``, ``loss/aux_<m>`` (unweighted mean divergence, comparable
    across schemes), ``loss/aux_<m>_weighted`` (its contribution to the total),
    ``weight/<m>_mean`` and ``loss/total``.
    """
    _check_alpha(alpha)
    unknown = set(aux_div) - set(MODALITIES)
    if unknown:
        raise ValueError(f"aux_div views must be among {MODALITIES}, got {sorted(unknown)}")
    missing = [view for view in aux_div if view not in weights]
    if missing:
        raise ValueError(f"weights are missing for aux views {missing}")
    batch = _batch_size(label_loss, kd_div, *aux_div.values())
    ell = _per_sample(label_loss, "label_loss", batch)
    div = _per_sample(kd_div, "kd_div", batch)
    per_sample = (1 - alpha) * ell + alpha * div
    terms: dict[str, Tensor] = {"loss/label": ell.mean(), "loss/kd": div.mean()}
    for view in MODALITIES:
        if view not in aux_div:
            continue
        d_m = _per_sample(aux_div[view], f"aux_div[{view!r}]", batch)
        w_m = torch.as_tensor(weights[view], dtype=d_m.dtype, device=d_m.device)
        w_m = _per_sample(w_m, f"weights[{view!r}]", d_m.size(0))
        weighted = w_m * d_m
        per_sample = per_sample + weighted
        terms[f"loss/aux_{view}"] = d_m.mean()
        terms[f"loss/aux_{view}_weighted"] = weighted.mean()
        terms[f"weight/{view}_mean"] = w_m.mean()
    total = per_sample.mean()
    terms["loss/total"] = total
    return total, _logged(terms)
