"""Per-sample modality saliency and its summaries (docs/protocol.md §5, §9.4).

A saliency definition is a registered function
``fn(logits: Mapping[view, Tensor[B, C]], targets: Tensor, task: str, **kwargs) -> {"image": [B], "text": [B]}``
computed from one model's logits on the three views (§3): ``multi`` (full input), ``image``
(text removed) and ``text`` (image removed). So "without the image" is the ``text`` view and
"without the text" is the ``image`` view. A large ``s_image`` means removing the image changes
this sample's prediction a lot, i.e. the image matters to it.

Definitions (``saliency.method`` [rule], §5):

* ``divergence`` (default): ``s_m = D_1(T(multi), T(without m))``, the task's divergence at τ = 1.
  Non-negative; 0 when the view predicts exactly what the full input does.
* ``loss``: ``max(0, ℓ(y, T(without m)) − ℓ(y, T(multi)))``, how much worse the labelled loss gets
  without modality m. Clipping at 0 treats "removing m helps" as "m is not salient".
* ``shapley``: two-player Shapley value of the correct-class probability (see :func:`shapley_saliency`).
  Can be negative (a modality that hurts the correct class).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from scipy.stats import spearmanr
from torch import Tensor

from benchmark import MODALITIES, VIEWS
from benchmark.data.info import TASKS
from benchmark.distill.losses import divergence_for_task, label_loss_for_task
from benchmark.registry import registry

WITHOUT = {"image": "text", "text": "image"}
"""The view in which modality m is removed: without the image is the text view, and vice versa."""


def _check_views(logits: Mapping[str, Tensor], task: str, name: str) -> None:
    if task not in TASKS:
        raise ValueError(f"{name} saliency: task must be one of {TASKS}, got {task!r}")
    missing = [view for view in VIEWS if view not in logits]
    if missing:
        raise ValueError(f"{name} saliency needs logits for the views multi, image, text; missing {missing}")
    shape = logits["multi"].shape
    if len(shape) != 2 or any(logits[view].shape != shape for view in MODALITIES):
        raise ValueError(
            f"{name} saliency: every view's logits must be the same [B, C]; got "
            + ", ".join(f"{view}={tuple(logits[view].shape)}" for view in VIEWS)
        )


@registry.register_saliency("divergence")
def divergence_saliency(logits: Mapping[str, Tensor], targets: Tensor | None, task: str) -> dict[str, Tensor]:
    """``s_m = D_1(T(multi), T(without m))`` per sample (§5 default); ``targets`` are not used.

    τ is fixed to 1 so the scores do not depend on the distillation temperature being searched.
    """
    _check_views(logits, task, "divergence")
    divergence = divergence_for_task(task)
    return {
        m: divergence(logits["multi"], logits[WITHOUT[m]], temperature=1.0, reduction="none")
        for m in MODALITIES
    }


@registry.register_saliency("loss")
def loss_saliency(logits: Mapping[str, Tensor], targets: Tensor, task: str) -> dict[str, Tensor]:
    """``s_m = max(0, ℓ(y, T(without m)) − ℓ(y, T(multi)))`` per sample, ℓ the task's label loss (§5)."""
    _check_views(logits, task, "loss")
    label_loss = label_loss_for_task(task)
    full = label_loss(logits["multi"], targets, reduction="none")
    return {
        m: (label_loss(logits[WITHOUT[m]], targets, reduction="none") - full).clamp(min=0.0)
        for m in MODALITIES
    }


def correct_class_probability(logits: Tensor, targets: Tensor, task: str) -> tuple[Tensor, Tensor]:
    """The value ``v`` of a coalition for Shapley saliency: the probability put on the right answer.

    * single-label: ``softmax(z)[y]`` for class indices ``y``; for probability / one-hot targets
      ``[B, C]``, the expected correct probability ``Σ_c y_c softmax(z)_c``.
    * multi-label and soft-score: the soft-score-weighted mean of ``σ(z_c)`` over the positive
      classes (``y_c > 0``): ``Σ_c y_c σ(z_c) / Σ_c y_c``. Multi-hot targets give the plain mean
      over positive classes; VQA soft scores weight answers by annotator agreement.

    Returns ``(v [B], defined [B] bool)``; ``defined`` is False for multi-label rows without any
    positive class, where no correct class exists.
    """
    if task == "single_label":
        probs = torch.softmax(logits, dim=1)
        if targets.dim() == 2 and targets.size(1) == logits.size(1) and logits.size(1) > 1:
            v = (targets.to(probs.dtype) * probs).sum(dim=1)
        else:
            v = probs.gather(1, targets.reshape(-1, 1).long())[:, 0]
        return v, torch.ones_like(v, dtype=torch.bool)
    if targets.shape != logits.shape:
        raise ValueError(f"{task} targets must be [B, C] = {tuple(logits.shape)}, got {tuple(targets.shape)}")
    weight = targets.to(logits.dtype).clamp(min=0.0)
    mass = weight.sum(dim=1)
    defined = mass > 0
    v = (weight * torch.sigmoid(logits)).sum(dim=1) / mass.clamp(min=torch.finfo(logits.dtype).tiny)
    return v, defined


@registry.register_saliency("shapley")
def shapley_saliency(
    logits: Mapping[str, Tensor], targets: Tensor, task: str, empty_value: str | float = "uniform"
) -> dict[str, Tensor]:
    """Two-player Shapley value of the correct-class probability (§5 ``shapley``).

    Players are the image (I) and the text (T); the value of a coalition is
    :func:`correct_class_probability` of the model's prediction on the matching view:
    ``v({I, T}) = v(multi)``, ``v({I}) = v(image view)``, ``v({T}) = v(text view)``. The model is
    never run with both modalities removed, so the empty coalition is a rule [rule]:
    ``empty_value="uniform"`` sets ``v(∅)`` to the uninformed prediction, ``1/C`` for single-label
    tasks and ``0.5`` for multi-label / soft-score tasks (``σ(0)`` per class, hence 0.5 for any
    weighted mean over classes); a float sets ``v(∅)`` to that value.

    ``φ_I = ½[(v(I) − v(∅)) + (v(IT) − v(T))]`` and ``φ_T = ½[(v(T) − v(∅)) + (v(IT) − v(I))]``, so
    ``φ_I + φ_T = v(IT) − v(∅)`` (efficiency). Rows with no positive class (multi-label) have no
    correct class: all their coalitions get ``v(∅)`` and both values are 0.
    """
    _check_views(logits, task, "shapley")
    v_it, defined = correct_class_probability(logits["multi"], targets, task)
    v_i, _ = correct_class_probability(logits["image"], targets, task)
    v_t, _ = correct_class_probability(logits["text"], targets, task)
    if empty_value == "uniform":
        v0 = 1.0 / logits["multi"].size(1) if task == "single_label" else 0.5
    elif isinstance(empty_value, (int, float)) and not isinstance(empty_value, bool):
        v0 = float(empty_value)
    else:
        raise ValueError(f"empty_value must be 'uniform' or a number, got {empty_value!r}")
    v_empty = torch.full_like(v_it, v0)
    v_it, v_i, v_t = (torch.where(defined, v, v_empty) for v in (v_it, v_i, v_t))
    return {
        "image": 0.5 * ((v_i - v_empty) + (v_it - v_t)),
        "text": 0.5 * ((v_t - v_empty) + (v_it - v_i)),
    }


def compute_saliency(
    logits: Mapping[str, Tensor], targets: Tensor, task: str, method: str = "divergence", **kwargs: object
) -> dict[str, Tensor]:
    """Per-sample saliency with the registered definition ``method`` (no gradients are kept)."""
    with torch.no_grad():
        return registry.get_saliency(method)(logits, targets, task, **kwargs)


# -- summaries ------------------------------------------------------------------------------------
def _pair(per_sample: Mapping[str, Tensor]) -> tuple[Tensor, Tensor]:
    if any(m not in per_sample for m in MODALITIES):
        raise ValueError(f"per-sample saliency needs keys {MODALITIES}, got {sorted(per_sample)}")
    s_i = torch.as_tensor(per_sample["image"]).detach().double().reshape(-1)
    s_t = torch.as_tensor(per_sample["text"]).detach().double().reshape(-1)
    if s_i.numel() == 0 or s_i.shape != s_t.shape:
        raise ValueError(
            f"per-sample saliency must be two non-empty vectors of equal length, got {s_i.numel()} and {s_t.numel()}"
        )
    return s_i, s_t


def dataset_saliency(per_sample: Mapping[str, Tensor]) -> dict[str, float]:
    """Dataset-level saliency ``s̄_m``: the mean of ``s_m`` over the samples (§5; used by ``population``)."""
    s_i, s_t = _pair(per_sample)
    return {"image": float(s_i.mean()), "text": float(s_t.mean())}


def image_dominant_share(per_sample: Mapping[str, Tensor]) -> float:
    """Share of samples where the image is strictly more salient than the text (saliency table, §9.4).

    Ties (e.g. both 0 under the clipped ``loss`` definition) count as not image-dominant.
    """
    s_i, s_t = _pair(per_sample)
    return float((s_i > s_t).double().mean())


def spearman_with_ground_truth(
    est_image_minus_text: Tensor | Sequence[float] | np.ndarray,
    true_image_minus_text: Tensor | Sequence[float] | np.ndarray,
) -> float:
    """Spearman rank correlation between estimated and true per-sample image-vs-text reliance (§5.4).

    Ranks use average ranks for ties (the ground truth is coarse: image / text / combination).
    NaN when either input is constant, where the correlation is undefined.
    """
    est = torch.as_tensor(est_image_minus_text).detach().double().reshape(-1).cpu().numpy()
    true = torch.as_tensor(true_image_minus_text).detach().double().reshape(-1).cpu().numpy()
    if est.size != true.size:
        raise ValueError(f"estimated ({est.size}) and true ({true.size}) saliency differ in length")
    if est.size < 2:
        raise ValueError("Spearman correlation needs at least two samples")
    if np.all(est == est[0]) or np.all(true == true[0]):
        return float("nan")
    return float(spearmanr(est, true).statistic)
