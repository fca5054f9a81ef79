"""Statistics on constructed data with known answers: CI, paired bootstrap, t-test, and the
resampling metrics against the suite's own metric functions."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from analysis.resample import SampleStats, resample_weights, sample_stats, weighted_auc
from analysis.stats import paired_bootstrap, paired_t_test, summarize
from benchmark.train.metrics import compute_metrics


def test_summary_mean_std_and_t_interval_on_known_values():
    s = summarize([1.0, 2.0, 3.0])
    assert (s.n, s.mean, s.std) == (3, 2.0, 1.0)
    half = 4.302652729911275 / math.sqrt(3)  # t_{0.975, df=2} * std / sqrt(n)
    assert s.ci_low == pytest.approx(2 - half) and s.ci_high == pytest.approx(2 + half)
    one = summarize([0.7])
    assert one.n == 1 and one.mean == 0.7 and math.isnan(one.std) and math.isnan(one.ci_low)
    empty = summarize([float("nan")])
    assert empty.n == 0 and math.isnan(empty.mean)  # missing, never zero


def test_bootstrap_constant_gain_on_every_sample_gives_p_zero():
    scores = np.random.default_rng(0).normal(0, 1, 500)  # huge per-sample spread ...
    a = [SampleStats.from_scores(scores + 0.01)]  # ... but B is better by 0.01 on *every* sample
    b = [SampleStats.from_scores(scores)]
    result = paired_bootstrap(a, b, n_resamples=1000, seed=1)
    assert result.delta == pytest.approx(0.01)
    # Resampling the same indices for both methods makes every Δ* exactly 0.01; drawing them
    # independently would give p ≈ 0.45 here.
    assert result.p_value == 0.0 and result.ci_low == pytest.approx(0.01) and result.n_resamples == 1000


def test_bootstrap_identical_methods_give_p_one_half_and_reversed_gives_one():
    scores = np.random.default_rng(0).random(200)
    same = paired_bootstrap([SampleStats.from_scores(scores)], [SampleStats.from_scores(scores)], n_resamples=300)
    assert same.p_value == 0.5 and same.delta == 0.0
    worse = paired_bootstrap([SampleStats.from_scores(scores - 0.1)], [SampleStats.from_scores(scores)], n_resamples=300)
    assert worse.p_value == 1.0


def test_bootstrap_noisy_gain_is_between_and_seed_averaged():
    rng = np.random.default_rng(3)
    base = rng.random(400)
    kd = [SampleStats.from_scores(base + rng.normal(0, 0.2, 400)) for _ in range(3)]
    msd = [SampleStats.from_scores(base + 0.02 + rng.normal(0, 0.2, 400)) for _ in range(3)]
    result = paired_bootstrap(msd, kd, n_resamples=1000)
    observed = np.mean([m.value() for m in msd]) - np.mean([k.value() for k in kd])
    assert result.delta == pytest.approx(observed)
    # The normal approximation of the same test: z = delta / SE of the seed-averaged difference.
    diff = np.mean([m.evaluate(np.eye(400)) for m in msd], axis=0) - np.mean([k.evaluate(np.eye(400)) for k in kd], axis=0)
    z = observed / (diff.std(ddof=1) / np.sqrt(400))
    expected = 0.5 * math.erfc(z / math.sqrt(2))
    assert 0.0 < result.p_value < 0.2 and result.p_value == pytest.approx(expected, abs=0.02)


def test_bootstrap_uses_only_shared_samples():
    a = SampleStats.from_scores(np.array([1.0, 1.0, 1.0, 0.0]), sample_index=np.array([0, 1, 2, 3]))
    b = SampleStats.from_scores(np.array([0.0, 0.0]), sample_index=np.array([1, 2]))
    result = paired_bootstrap([a], [b], n_resamples=50)
    assert result.n_samples == 2 and result.delta == 1.0


def test_paired_t_test_on_known_differences():
    kd = {0: 0.50, 1: 0.60, 2: 0.70}
    msd = {0: 0.51, 1: 0.62, 2: 0.73}  # differences 0.01, 0.02, 0.03: t = 0.02 / (0.01 / sqrt 3)
    result = paired_t_test(msd, kd)
    assert result.n_pairs == 3 and result.mean_difference == pytest.approx(0.02)
    assert result.p_value == pytest.approx(0.03709, abs=1e-4)  # one-sided, df = 2
    assert math.isnan(paired_t_test({0: 0.5}, {0: 0.4}).p_value)  # one pair: undefined


def _frame(logits: np.ndarray, targets, task: str) -> pd.DataFrame:
    n = logits.shape[0]
    frame = pd.DataFrame({"sample_index": np.arange(n), "logits": list(logits)})
    frame["target"] = list(targets) if np.ndim(targets) == 2 else targets
    if task == "soft_score":
        pred = logits[:, 1:].argmax(1) + 1
        frame["score"] = np.asarray(targets)[np.arange(n), pred]
    return frame


@pytest.mark.parametrize(
    ("task", "metrics"),
    [("single_label", ["roc_auc", "accuracy", "binary_f1"]),
     ("multi_label", ["multilabel_micro_f1", "multilabel_macro_f1", "accuracy"]),
     ("soft_score", ["vqa_accuracy"])],
)
def test_resampling_metrics_equal_the_registered_metrics(task, metrics):
    rng = np.random.default_rng(7)
    n, c = 80, 2 if task == "single_label" else 5
    logits = np.round(rng.normal(0, 1, (n, c)), 1).astype(np.float32)  # rounded: ties in AUC
    if task == "single_label":
        targets = rng.integers(0, c, n)
    elif task == "multi_label":
        targets = (rng.random((n, c)) < 0.4).astype(np.float32)
    else:
        targets = np.round(rng.random((n, c)), 1).astype(np.float32)
    frame = _frame(logits, targets, task)
    reference = compute_metrics(metrics, torch.tensor(logits), torch.tensor(targets), task, prefix="x")
    draw = resample_weights(n, 1, np.random.default_rng(1))[0]
    idx = np.repeat(np.arange(n), draw.astype(int))  # the resample written out explicitly
    resampled = compute_metrics(metrics, torch.tensor(logits[idx]), torch.tensor(targets[idx]), task, prefix="x")
    for metric in metrics:
        stats = sample_stats(frame, metric, task)
        assert stats.value() == pytest.approx(reference[f"x/{metric}"], abs=1e-12)
        assert stats.evaluate(draw[None, :])[0] == pytest.approx(resampled[f"x/{metric}"], abs=1e-12)


def test_weighted_auc_counts_ties_one_half_and_is_nan_with_one_class():
    scores = np.array([0.1, 0.5, 0.5, 0.9])
    labels = np.array([0, 0, 1, 1])
    assert weighted_auc(scores, labels, np.ones((1, 4)))[0] == pytest.approx(0.875)
    assert math.isnan(weighted_auc(scores, labels, np.array([[1.0, 1.0, 0.0, 0.0]]))[0])


def test_resample_weights_draw_n_samples_each():
    w = resample_weights(10, 50, np.random.default_rng(0))
    assert w.shape == (50, 10) and (w.sum(axis=1) == 10).all()
