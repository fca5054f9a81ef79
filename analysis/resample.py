"""Metrics under resampling weights: the engine of the paired bootstrap.

Why not call the registered metric 1,000 times: the headline metrics are not all means of
per-sample scores (AUROC and the F1s are not), so a bootstrap must recompute them on every
resample, and doing that one resample at a time is slow on real-size test sets. A resample
of ``N`` samples drawn with replacement is the same as integer weights ``W[b, i]`` (how often
sample ``i`` was drawn in resample ``b``); every metric here is written as a function of
``W`` over per-sample statistics, so all resamples are scored in a few matrix products.
With ``W`` all ones each function equals the registered metric of
:mod:`benchmark.train.metrics` (tested), ties and MMF's conventions included.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from benchmark.train.metrics import accuracy_hits

Evaluator = Callable[[np.ndarray], np.ndarray]


def _stack(column: pd.Series) -> np.ndarray:
    return np.stack([np.asarray(v, dtype=np.float64) for v in column.to_numpy()])


def _f1(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> np.ndarray:
    denom = 2 * tp + fp + fn
    return np.where(denom > 0, 2 * tp / np.maximum(denom, 1e-300), 0.0)


def _class_targets(target: np.ndarray) -> np.ndarray:
    if target.ndim == 2:
        return target[:, 0].astype(int) if target.shape[1] == 1 else target.argmax(axis=1)
    return target.astype(int)


def _pred_classes(logits: np.ndarray) -> np.ndarray:
    if logits.shape[1] == 1:
        return (logits[:, 0] > 0).astype(int)
    return logits.argmax(axis=1)


def weighted_auc(scores: np.ndarray, labels: np.ndarray, W: np.ndarray) -> np.ndarray:
    """ROC AUC of ``scores`` against 0/1 ``labels`` for each row of weights ``W`` [B, N].

    Mann-Whitney form: the weighted share of (positive, negative) pairs ranked correctly,
    ties counting one half; NaN where a resample holds only one class.
    """
    order = np.argsort(scores, kind="mergesort")
    s, y, w = scores[order], labels[order].astype(bool), W[:, order].astype(np.float64)
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])  # groups of tied scores
    pos = np.add.reduceat(w * y, starts, axis=1)
    neg = np.add.reduceat(w * ~y, starts, axis=1)
    below = np.cumsum(neg, axis=1) - neg
    n_pos, n_neg = pos.sum(axis=1), neg.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (pos * (below + 0.5 * neg)).sum(axis=1) / (n_pos * n_neg)


@dataclass
class SampleStats:
    """Per-sample statistics of one run on one split, and how to score them under ``W``."""

    metric: str
    sample_index: np.ndarray
    evaluate: Evaluator

    @property
    def n(self) -> int:
        return int(self.sample_index.size)

    def value(self) -> float:
        """The metric on the full set (all weights one)."""
        return float(self.evaluate(np.ones((1, self.n)))[0])

    def subset(self, keep: np.ndarray) -> SampleStats:
        """The same statistics restricted to the samples ``keep`` (sorted sample indices)."""
        pos = np.searchsorted(self.sample_index, keep)
        inner = self.evaluate

        def evaluate(W: np.ndarray) -> np.ndarray:
            full = np.zeros((W.shape[0], self.n))
            full[:, pos] = W
            return inner(full)

        return SampleStats(self.metric, keep, evaluate)

    @classmethod
    def from_scores(cls, scores: np.ndarray, metric: str = "mean_score", sample_index: np.ndarray | None = None) -> SampleStats:
        """A metric that is the (weighted) mean of per-sample scores, e.g. accuracy."""
        scores = np.asarray(scores, dtype=np.float64)
        index = np.arange(scores.size) if sample_index is None else np.asarray(sample_index)
        return cls(metric, index, lambda W: (W @ scores) / W.sum(axis=1))


def sample_stats(frame: pd.DataFrame, metric: str, task: str | None = None) -> SampleStats | None:
    """Per-sample statistics of ``metric`` from a run's predictions (one split, one view).

    Returns None where the predictions cannot reproduce the metric (e.g. F1 over a label
    space too large for full logits to have been stored).
    """
    frame = frame.sort_values("sample_index")
    index = frame["sample_index"].to_numpy()
    has_logits = "logits" in frame.columns and frame["logits"].notna().all()
    has_target = "target" in frame.columns and frame["target"].notna().all()
    if metric == "vqa_accuracy":
        return SampleStats.from_scores(frame["score"].to_numpy(), metric, index)
    if not has_logits or not has_target:
        if metric == "accuracy" and task == "single_label":
            return SampleStats.from_scores(frame["score"].to_numpy(), metric, index)
        return None
    logits = _stack(frame["logits"])
    raw_target = frame["target"].to_numpy()
    target = _stack(frame["target"]) if isinstance(raw_target[0], (list, np.ndarray)) else raw_target.astype(np.float64)
    if metric == "accuracy":  # the registered metric's own per-sample rule (MMF's topk)
        correct = accuracy_hits(torch.from_numpy(logits), torch.from_numpy(target)).numpy()
        return SampleStats.from_scores(correct, metric, index)
    if metric == "binary_f1":
        pred, gold = _pred_classes(logits) == 1, _class_targets(target) == 1
        tp, fp, fn = (np.asarray(x, dtype=np.float64) for x in (pred & gold, pred & ~gold, ~pred & gold))
        return SampleStats(metric, index, lambda W: _f1(W @ tp, W @ fp, W @ fn))
    if metric == "roc_auc":
        return SampleStats(metric, index, _auc_evaluator(logits, target))
    if metric in ("multilabel_micro_f1", "multilabel_macro_f1"):
        pred = _multilabel_predictions(logits)
        gold = target == 1
        tp, fp, fn = ((x).astype(np.float64) for x in (pred & gold, pred & ~gold, ~pred & gold))
        if metric == "multilabel_micro_f1":
            tps, fps, fns = tp.sum(1), fp.sum(1), fn.sum(1)
            return SampleStats(metric, index, lambda W: _f1(W @ tps, W @ fps, W @ fns))
        return SampleStats(metric, index, lambda W: _f1(W @ tp, W @ fp, W @ fn).mean(axis=1))
    return None


def _auc_evaluator(logits: np.ndarray, target: np.ndarray) -> Evaluator:
    """Macro one-vs-rest AUC of softmax(logits) (sigmoid for one column), as MMF's ROC_AUC.

    Probabilities are computed exactly as the registered metric does (torch, float32), so
    ties between samples — which count one half — are the same ties.
    """
    import torch

    z = torch.from_numpy(np.ascontiguousarray(logits, dtype=np.float32))
    probs = (torch.sigmoid(z) if z.shape[1] == 1 else torch.softmax(z, dim=1)).double().numpy()
    if target.ndim == 1 or target.shape[1] == 1:
        classes = _class_targets(target)
        onehot = np.eye(logits.shape[1])[classes] if logits.shape[1] > 1 else classes[:, None]
    else:
        onehot = target
    columns = range(probs.shape[1])
    return lambda W: np.mean([weighted_auc(probs[:, c], onehot[:, c], W) for c in columns], axis=0)


def _multilabel_predictions(logits: np.ndarray) -> np.ndarray:
    """``round(sigmoid(z)) == 1`` in float32, as the registered metric (a logit of ~0 predicts 0)."""
    import torch

    z = torch.from_numpy(np.ascontiguousarray(logits, dtype=np.float32))
    return (torch.round(torch.sigmoid(z)) == 1).numpy()


def resample_weights(n: int, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """``W[b, i]``: how often sample ``i`` is drawn in resample ``b`` (``n`` draws, with replacement)."""
    draws = rng.integers(0, n, size=(n_resamples, n))
    flat = draws + (np.arange(n_resamples) * n)[:, None]
    return np.bincount(flat.ravel(), minlength=n_resamples * n).reshape(n_resamples, n).astype(np.float64)
