"""Evaluation metrics with MMF's names and MMF's definitions (docs/protocol.md §9.1).

Each metric is a pure function ``fn(logits [N, C], targets, task) -> float`` registered with
``@registry.register_metric(name)``. The definitions follow ``mmf/modules/metrics.py`` so that
numbers are comparable with MMF runs of the same model:

* ``accuracy``: MMF's ``topk`` rule with k = 1. The predicted class is ``topk(logits, 1)``; 2-D
  targets with more than one column (one-hot, multi-hot, soft scores) are reduced to
  ``topk(targets, 1)`` the same way, and a sample is correct when the two indices agree. On a
  multi-hot row the positives tie, and ``torch.topk`` chooses among tied values by its own
  order, not the first one as ``argmax`` does: on MM-IMDb this scores *one* listed genre,
  the one ``topk`` picks, exactly as MMF does (not a multi-label accuracy).
* ``binary_f1``: F1 of class 1 with argmax predictions (MMF: sklearn ``f1_score(average="binary")``,
  whose positive label is 1).
* ``roc_auc``: softmax of the logits, targets one-hot encoded, sklearn's macro one-vs-rest AUC.
  For two classes this is the AUC of ``softmax[:, 1]``.
* ``multilabel_micro_f1`` / ``multilabel_macro_f1``: ``round(sigmoid(logits))`` against the
  multi-hot targets. MMF keeps every column, including the ``<unk>`` column 0 of MM-IMDb
  (never positive in the targets), and sklearn's default ``zero_division`` scores a label with
  no true and no predicted positives as F1 = 0. Macro F1 therefore averages over all C columns,
  ``<unk>`` included, which caps MMF's MM-IMDb macro F1 at 23/24; we keep that so numbers match.
  ``torch.round`` rounds half to even, so a logit of exactly 0 (sigmoid 0.5) predicts 0.
* ``vqa_accuracy``: ``<unk>`` (index 0) is masked out before the argmax; the soft score of the
  chosen answer is summed and divided by N.

Deviations from MMF, all in cases where MMF's output is broken or degenerate:

* one-column logits (a binary model with a single logit) use ``sigmoid`` / ``logit > 0``; MMF's
  softmax over one column is constantly 1 (AUC 0.5, argmax always 0);
* targets of shape ``[N, 1]`` are squeezed; MMF compares ``[N, 1]`` with ``[N]`` and broadcasts
  to an ``N x N`` matrix;
* ``vqa_accuracy`` takes the argmax over the logits of columns 1..C-1, which is the argmax of
  MMF's renormalised masked softmax without its float32 underflow (where every non-``<unk>``
  probability underflows to 0, MMF divides 0 by 0 and picks ``<unk>``);
* ``binary_f1`` on more than two classes scores class 1 against the rest, where sklearn's
  ``average="binary"`` refuses the input;
* ``roc_auc`` with one class present in a column returns NaN (current sklearn does the same with
  a warning; older sklearn raised). Empty inputs raise ``ValueError``.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
from scipy.stats import rankdata
from torch import Tensor

from benchmark import VIEWS
from benchmark.data.info import TASKS
from benchmark.errors import ConfigError
from benchmark.registry import registry

METRIC_DIRECTION: dict[str, str] = {
    "accuracy": "max",
    "binary_f1": "max",
    "roc_auc": "max",
    "multilabel_micro_f1": "max",
    "multilabel_macro_f1": "max",
    "vqa_accuracy": "max",
}
"""Whether a larger (``max``) or smaller (``min``) value is better, for early stopping."""


# -- input checks and shared helpers -------------------------------------------------------------
def _check(logits: Tensor, targets: Tensor, task: str, metric: str) -> None:
    """Reject inputs a metric cannot score, with a message naming the metric."""
    if task not in TASKS:
        raise ValueError(f"{metric}: task must be one of {TASKS}, got {task!r}")
    if logits.dim() != 2:
        raise ValueError(f"{metric}: logits must be [N, C], got shape {tuple(logits.shape)}")
    if logits.size(0) == 0:
        raise ValueError(f"{metric}: cannot score an empty set of predictions (N = 0)")
    if targets.dim() == 0 or targets.size(0) != logits.size(0):
        raise ValueError(
            f"{metric}: targets {tuple(targets.shape)} do not match logits {tuple(logits.shape)} "
            "(first dimension N must agree)"
        )


def _top1(values: Tensor) -> Tensor:
    """Index of the largest value per row as ``torch.topk(k=1)`` chooses it (MMF's ``Accuracy``);
    among tied values this is topk's choice, which need not be the first (``argmax``'s)."""
    return values.topk(1, dim=1, largest=True, sorted=True).indices[:, 0]


def _class_targets(targets: Tensor, rule: str = "argmax") -> Tensor:
    """Class indices [N] from indices [N] / [N, 1]; 2-D targets are reduced by ``rule``:
    ``argmax`` (MMF's ``F1``) or ``topk`` (MMF's ``Accuracy``)."""
    if targets.dim() == 2 and targets.size(1) == 1:
        return targets[:, 0].long()
    if targets.dim() == 2:
        return _top1(targets) if rule == "topk" else targets.argmax(dim=1)
    return targets.long()


def _predicted_classes(logits: Tensor, rule: str = "argmax") -> Tensor:
    """The predicted class by ``rule`` (``argmax`` or ``topk``, see :func:`_class_targets`);
    ``logit > 0`` for one-column (single-logit binary) models."""
    if logits.size(1) == 1:
        return torch.round(torch.sigmoid(logits[:, 0])).long()
    return _top1(logits) if rule == "topk" else logits.argmax(dim=1)


def _indicator_targets(targets: Tensor, num_classes: int, metric: str) -> Tensor:
    """Binary indicator matrix [N, C]: one-hot of class indices, or 2-D 0/1 targets as they are.

    Mirrors MMF's ``_convert_to_one_hot``; soft (non-0/1) targets are rejected because
    sklearn rejects them too ("can't handle continuous-multioutput").
    """
    if targets.dim() == 1 or (targets.dim() == 2 and targets.size(1) == 1 and num_classes > 1):
        idx = targets.reshape(-1).long()
        if idx.numel() and (idx.min() < 0 or idx.max() >= max(num_classes, 2)):
            raise ValueError(f"{metric}: class index out of range for {num_classes} classes")
        if num_classes == 1:
            return idx.view(-1, 1)
        return torch.nn.functional.one_hot(idx, num_classes=num_classes)
    if targets.size(1) != num_classes:
        raise ValueError(f"{metric}: targets have {targets.size(1)} columns, logits {num_classes}")
    if not bool(((targets == 0) | (targets == 1)).all()):
        raise ValueError(f"{metric}: targets must be 0/1 indicators, got soft or other values")
    return targets.long()


def _f1_from_counts(tp: Tensor, fp: Tensor, fn: Tensor) -> Tensor:
    """F1 = 2TP / (2TP + FP + FN), and 0 where undefined (sklearn's default zero_division)."""
    denom = 2 * tp + fp + fn
    return torch.where(denom > 0, 2 * tp / denom.clamp(min=1), torch.zeros_like(denom))


def _binary_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve via the Mann-Whitney U statistic (ties count one half).

    Identical to sklearn's trapezoidal ROC area; NaN when only one class is present.
    """
    n_pos = int(labels.sum())
    n_neg = labels.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(scores, method="average")
    return float((ranks[labels == 1].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


# -- metrics -------------------------------------------------------------------------------------
@registry.register_metric("accuracy")
def accuracy(logits: Tensor, targets: Tensor, task: str) -> float:
    """Share of samples whose top-1 logit is the target's top-1 class (MMF ``Accuracy``, ``topk=1``)."""
    _check(logits, targets, task, "accuracy")
    return float(accuracy_hits(logits, targets).mean())


def accuracy_hits(logits: Tensor, targets: Tensor) -> Tensor:
    """Per sample, 1.0 where :func:`accuracy` counts a hit (the bootstrap resamples these)."""
    pred = _predicted_classes(logits.detach(), "topk")
    gold = _class_targets(targets.detach(), "topk")
    return (pred == gold).double()


@registry.register_metric("binary_f1")
def binary_f1(logits: Tensor, targets: Tensor, task: str) -> float:
    """F1 of class 1 with argmax predictions (MMF ``BinaryF1``: sklearn ``average="binary"``, positive
    label 1); 0 when class 1 is neither predicted nor present (sklearn's default ``zero_division``)."""
    _check(logits, targets, task, "binary_f1")
    pred = _predicted_classes(logits.detach()) == 1
    gold = _class_targets(targets.detach()) == 1
    tp = (pred & gold).sum().double()
    fp = (pred & ~gold).sum().double()
    fn = (~pred & gold).sum().double()
    return float(_f1_from_counts(tp, fp, fn))


@registry.register_metric("roc_auc")
def roc_auc(logits: Tensor, targets: Tensor, task: str) -> float:
    """Macro one-vs-rest ROC AUC of softmax(logits) against one-hot targets (MMF ``ROC_AUC``).

    For two classes this equals the AUC of ``softmax(logits)[:, 1]``; one-column logits use
    ``sigmoid``. Returns NaN when some column has only one class present (e.g. a validation
    subset with no hateful meme), because the AUC is undefined there; callers that early-stop
    on it must treat NaN as "no improvement".
    """
    _check(logits, targets, task, "roc_auc")
    logits = logits.detach()
    probs = torch.sigmoid(logits) if logits.size(1) == 1 else torch.softmax(logits, dim=1)
    gold = _indicator_targets(targets.detach(), logits.size(1), "roc_auc")
    probs_np = probs.double().cpu().numpy()
    gold_np = gold.cpu().numpy()
    per_column = [_binary_auc(probs_np[:, c], gold_np[:, c]) for c in range(gold_np.shape[1])]
    return float(np.mean(per_column))


def _multilabel_counts(logits: Tensor, targets: Tensor, metric: str) -> tuple[Tensor, Tensor, Tensor]:
    pred = torch.round(torch.sigmoid(logits.detach())).long() == 1
    gold = _indicator_targets(targets.detach(), logits.size(1), metric) == 1
    tp = (pred & gold).sum(dim=0).double()
    fp = (pred & ~gold).sum(dim=0).double()
    fn = (~pred & gold).sum(dim=0).double()
    return tp, fp, fn


@registry.register_metric("multilabel_micro_f1")
def multilabel_micro_f1(logits: Tensor, targets: Tensor, task: str) -> float:
    """Micro F1 over all (sample, class) pairs of round(sigmoid(logits)) (MMF ``MultiLabelMicroF1``)."""
    _check(logits, targets, task, "multilabel_micro_f1")
    tp, fp, fn = _multilabel_counts(logits, targets, "multilabel_micro_f1")
    return float(_f1_from_counts(tp.sum(), fp.sum(), fn.sum()))


@registry.register_metric("multilabel_macro_f1")
def multilabel_macro_f1(logits: Tensor, targets: Tensor, task: str) -> float:
    """Unweighted mean of per-class F1 over all C columns, ``<unk>`` included (MMF ``MultiLabelMacroF1``)."""
    _check(logits, targets, task, "multilabel_macro_f1")
    tp, fp, fn = _multilabel_counts(logits, targets, "multilabel_macro_f1")
    return float(_f1_from_counts(tp, fp, fn).mean())


@registry.register_metric("vqa_accuracy")
def vqa_accuracy(logits: Tensor, targets: Tensor, task: str) -> float:
    """Soft VQA accuracy: score of the best non-``<unk>`` answer, averaged over N (MMF ``VQAAccuracy``).

    Column 0 is ``<unk>``; it is never a prediction, so a model that puts its mass there still
    answers with its best real answer.
    """
    _check(logits, targets, task, "vqa_accuracy")
    if targets.dim() != 2 or targets.size(1) != logits.size(1):
        raise ValueError(
            f"vqa_accuracy: targets must be soft scores [N, C] = {tuple(logits.shape)}, "
            f"got {tuple(targets.shape)}"
        )
    if logits.size(1) < 2:
        raise ValueError("vqa_accuracy: needs at least one answer besides <unk> (C >= 2)")
    answer = logits.detach()[:, 1:].argmax(dim=1) + 1
    chosen = targets.detach().gather(1, answer.view(-1, 1)).double()
    return float(chosen.sum() / targets.size(0))


# -- naming and directions -----------------------------------------------------------------------
def metric_key(prefix: str, name: str, view: str = "multi") -> str:
    """MMF's log key ``<split>/<dataset>/<metric>``, with ``@<view>`` for non-multi views (§9.2)."""
    if view not in VIEWS:
        raise ValueError(f"view must be one of {VIEWS}, got {view!r}")
    key = f"{prefix.rstrip('/')}/{name}"
    return key if view == "multi" else f"{key}@{view}"


def compute_metrics(
    names: Iterable[str], logits: Tensor, targets: Tensor, task: str, prefix: str, view: str = "multi"
) -> dict[str, float]:
    """Score one view with every named metric; keys as :func:`metric_key` (e.g. ``val/hateful_memes/roc_auc@image``).

    ``prefix`` is ``"<split>/<dataset>"``. Unknown metric names raise ``ConfigError`` from the
    registry, listing the registered ones.
    """
    return {
        metric_key(prefix, name, view): registry.get_metric(name)(logits, targets, task) for name in names
    }


def metric_direction(name: str) -> str:
    """``"max"`` or ``"min"`` for a metric name or full key (``val/mmimdb/multilabel_micro_f1@text``).

    Metrics are all "larger is better"; anything named like a loss (``loss/total``,
    ``val/vqa2/logit_bce``) is minimised.
    """
    base = name.split("@", 1)[0].rstrip("/").rsplit("/", 1)[-1]
    if base in METRIC_DIRECTION:
        return METRIC_DIRECTION[base]
    if "loss" in name.split("@", 1)[0] or base in ("cross_entropy", "logit_bce"):
        return "min"
    raise ConfigError(
        f"Unknown metric {name!r}: cannot tell whether to maximise or minimise it. "
        f"Known metrics: {', '.join(sorted(METRIC_DIRECTION))}; losses (names containing 'loss') "
        "are minimised. Set training.early_stop.minimize explicitly for other criteria."
    )


def dataset_metrics(dataset: str) -> tuple[str, tuple[str, ...]]:
    """``(headline, reported)`` of a dataset, read from its YAML (``dataset_config.<name>``'s
    ``headline_metric`` and ``metrics``): the one place they are written (docs/protocol.md §2.1)."""
    from benchmark.config.loader import dataset_node, load_config

    try:
        node = dataset_node(load_config([f"dataset={dataset}"]))
    except ConfigError as exc:
        raise ConfigError(f"No headline metric known for dataset {dataset!r}: {exc}") from exc
    headline = node.get("headline_metric")
    if not headline:
        raise ConfigError(f"dataset_config.{dataset}.headline_metric is not set in the dataset's config.")
    return str(headline), tuple(str(m) for m in node.get("metrics") or (headline,))


def headline_metric(dataset: str) -> str:
    """The headline (early-stopping, Table 2) metric of a dataset, from its YAML."""
    return dataset_metrics(dataset)[0]
