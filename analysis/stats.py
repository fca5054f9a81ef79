"""Statistics of the tables: mean ± std, 95 % t-intervals, paired bootstrap, paired t-test.

The question every MSD row asks is "is this MSD variant better than KD?". Two tests answer
it from different angles, and both are reported (docs/protocol.md §9.6):

* **Paired bootstrap over test samples** (:func:`paired_bootstrap`), the † in Table 2. Each
  of the ``B = 1000`` resamples draws ``N`` test samples with replacement; the *same* draw is
  applied to every run of both methods (samples are matched by ``sample_index``). The
  headline metric is recomputed on the resample for every seed, **averaged over seeds**
  within each method, and the difference ``Δ* = mean_seeds(MSD) − mean_seeds(KD)`` recorded.
  The one-sided p-value for "MSD > KD" is the share of resamples with ``Δ* < 0``, counting
  ties ``Δ* = 0`` one half (a mid-p): identical methods give p = 0.5, and a method better on
  every sample gives p = 0. It captures test-set sampling noise, not seed noise.
* **Paired-seed t-test** (:func:`paired_t_test`): seeds with both methods are paired (same
  seed = same teacher, same data order), and ``ttest_rel(MSD, KD, alternative="greater")``
  is computed over the per-seed test metric. Needs two or more pairs; it captures seed
  noise, and with 3 seeds it has little power, which is why both are shown.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as scipy_stats

from analysis.resample import SampleStats, resample_weights

N_RESAMPLES = 1000
ALPHA = 0.05


@dataclass(frozen=True)
class Summary:
    """Aggregate of one cell's per-seed values."""

    n: int
    mean: float
    std: float  # sample standard deviation (ddof = 1); NaN for n < 2
    ci_low: float  # 95 % t-interval; NaN for n < 2
    ci_high: float


def summarize(values: Sequence[float], confidence: float = 0.95) -> Summary:
    """Mean, sample std and the t-interval ``mean ± t_{(1+c)/2, n-1} · std / √n``.

    NaN values (a metric undefined on a run) are dropped first; an empty input gives n = 0
    and NaNs, never zeros.
    """
    x = np.asarray([v for v in values if v is not None and not math.isnan(float(v))], dtype=np.float64)
    n = int(x.size)
    if n == 0:
        return Summary(0, math.nan, math.nan, math.nan, math.nan)
    mean = float(x.mean())
    if n < 2:
        return Summary(1, mean, math.nan, math.nan, math.nan)
    std = float(x.std(ddof=1))
    half = float(scipy_stats.t.ppf((1 + confidence) / 2, df=n - 1)) * std / math.sqrt(n)
    return Summary(n, mean, std, mean - half, mean + half)


@dataclass(frozen=True)
class BootstrapResult:
    delta: float  # observed mean_seeds(a) - mean_seeds(b) on the common samples
    p_value: float  # one-sided, "a > b", mid-p
    ci_low: float  # 95 % percentile interval of Δ*
    ci_high: float
    n_samples: int
    n_resamples: int


def paired_bootstrap(
    a: Sequence[SampleStats], b: Sequence[SampleStats], n_resamples: int = N_RESAMPLES, seed: int = 0,
    chunk: int = 100,
) -> BootstrapResult:
    """Paired bootstrap of ``mean(a) − mean(b)`` over shared test samples (module docstring).

    ``a`` and ``b`` hold one :class:`SampleStats` per seed; only samples present in every run
    are used, so both methods are always scored on the same resampled indices.
    """
    if not a or not b:
        raise ValueError("paired_bootstrap needs at least one run of each method")
    common = a[0].sample_index
    for s in (*a, *b):
        common = np.intersect1d(common, s.sample_index)
    if common.size == 0:
        raise ValueError("the runs share no test sample (different test sets?)")
    runs_a = [s if np.array_equal(s.sample_index, common) else s.subset(common) for s in a]
    runs_b = [s if np.array_equal(s.sample_index, common) else s.subset(common) for s in b]
    ones = np.ones((1, common.size))
    observed = _mean_of(runs_a, ones)[0] - _mean_of(runs_b, ones)[0]
    rng = np.random.default_rng(seed)
    deltas = []
    for start in range(0, n_resamples, chunk):
        W = resample_weights(common.size, min(chunk, n_resamples - start), rng)
        deltas.append(_mean_of(runs_a, W) - _mean_of(runs_b, W))
    d = np.concatenate(deltas)
    d = d[np.isfinite(d)]
    if d.size == 0:
        return BootstrapResult(float(observed), math.nan, math.nan, math.nan, int(common.size), 0)
    p = (np.sum(d < 0) + 0.5 * np.sum(d == 0)) / d.size
    low, high = np.percentile(d, [2.5, 97.5])
    return BootstrapResult(float(observed), float(p), float(low), float(high), int(common.size), int(d.size))


def _mean_of(runs: Sequence[SampleStats], W: np.ndarray) -> np.ndarray:
    return np.mean([run.evaluate(W) for run in runs], axis=0)


@dataclass(frozen=True)
class TTestResult:
    n_pairs: int
    mean_difference: float
    p_value: float  # one-sided "a > b"; NaN for fewer than 2 pairs or zero variance


def paired_t_test(a_by_seed: dict[int, float], b_by_seed: dict[int, float]) -> TTestResult:
    """``ttest_rel`` over the seeds both methods have, one-sided "a > b"."""
    seeds = sorted(set(a_by_seed) & set(b_by_seed))
    pairs = [(a_by_seed[s], b_by_seed[s]) for s in seeds
             if not (math.isnan(a_by_seed[s]) or math.isnan(b_by_seed[s]))]
    if not pairs:
        return TTestResult(0, math.nan, math.nan)
    x, y = np.array(pairs).T
    diff = float(np.mean(x - y))
    if len(pairs) < 2 or np.allclose(x - y, (x - y)[0]):
        # No spread in the differences: the t statistic is undefined (scipy returns NaN).
        return TTestResult(len(pairs), diff, math.nan)
    result = scipy_stats.ttest_rel(x, y, alternative="greater")
    return TTestResult(len(pairs), diff, float(result.pvalue))


def detectable_effect(n: int, alpha: float = 0.05, power: float = 0.8) -> float:
    """Smallest standardised difference d a two-sided two-sample t-test detects (n seeds a side).

    Why it is stated under Table 2: with 3 seeds a difference smaller than about three seed
    standard deviations is invisible to a seed-level test, however many test samples the
    bootstrap marks. Equal variances and equal n (Welch's test then has df = 2n - 2); the power
    at d is ``P(|T| > t_crit)`` with T noncentral t of noncentrality ``d * sqrt(n / 2)``.
    """
    from scipy.optimize import brentq
    from scipy.stats import nct

    if n < 2:
        raise ValueError(f"a seed-level test needs at least 2 seeds a side, got {n}")
    df = 2 * n - 2
    crit = scipy_stats.t.ppf(1 - alpha / 2, df)

    def shortfall(d: float) -> float:
        nc = d * math.sqrt(n / 2)
        lower = nct.cdf(-crit, df, nc)  # the wrong-sign tail: negligible, but part of a two-sided power
        return float(nct.sf(crit, df, nc) + (0.0 if math.isnan(lower) else lower)) - power

    return float(brentq(shortfall, 1e-6, 12.0))


def minimum_detectable(std: float, n: int) -> float:
    """The smallest difference of two methods' seed means detectable at p < 0.05 with power 0.8."""
    return detectable_effect(n) * std
