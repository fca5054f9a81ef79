"""The shared benchmark helper: alternation order, warm-up, and the statistics on hand-computed
values."""

from __future__ import annotations

import math

import pytest
from interleave import interleave, load_snapshot, ratio_summary, round_order, spread, timed


def _recorder(calls: list[str], name: str, seconds: float = 1.0):
    def variant() -> float:
        calls.append(name)
        return seconds
    return variant


def test_rounds_alternate_with_a_rotating_start_after_a_discarded_warmup():
    calls: list[str] = []
    times = interleave({n: _recorder(calls, n) for n in "abc"}, rounds=3, warmup=1)
    # warm-up round 0: a b c; measured rounds 1..3 rotate the start by one each time
    assert calls == list("abc" "bca" "cab" "abc")
    assert times == {"a": [1.0] * 3, "b": [1.0] * 3, "c": [1.0] * 3}


def test_without_rotation_the_order_is_fixed_and_warmup_can_be_zero():
    calls: list[str] = []
    interleave({n: _recorder(calls, n) for n in "ab"}, rounds=2, warmup=0, rotate=False)
    assert calls == list("abab")
    assert round_order(["a", "b"], 5, rotate=False) == ["a", "b"]
    assert round_order(["a", "b", "c"], 4) == ["b", "c", "a"]


def test_times_are_kept_in_round_order_per_variant():
    seq = iter([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])  # rounds: a b | b a | a b
    times = interleave({"a": lambda: next(seq), "b": lambda: next(seq)}, rounds=3, warmup=0)
    assert times == {"a": [1.0, 4.0, 5.0], "b": [2.0, 3.0, 6.0]}


def test_bad_arguments_and_non_positive_times_are_refused():
    with pytest.raises(ValueError):
        interleave({}, rounds=1)
    with pytest.raises(ValueError):
        interleave({"a": lambda: 1.0}, rounds=0)
    with pytest.raises(ValueError, match="'a' returned"):
        interleave({"a": lambda: 0.0}, rounds=1, warmup=0)


def test_spread_matches_hand_computed_quartiles():
    # sorted 1 2 3 4 10: median 3; q1 at rank 1 -> 2, q3 at rank 3 -> 4 (linear interpolation)
    s = spread([10, 2, 4, 1, 3])
    assert (s.median, s.q1, s.q3, s.min, s.max, s.n) == (3, 2, 4, 1, 10, 5)
    # four values 1 2 3 4: q1 at rank 0.75 -> 1.75, median 2.5, q3 at rank 2.25 -> 3.25
    s = spread([4, 3, 2, 1])
    assert (s.q1, s.median, s.q3) == pytest.approx((1.75, 2.5, 3.25))
    assert str(spread([2.0])) == "2.00 (IQR 2.00-2.00, range 2.00-2.00, n=1)"


def test_ratio_summary_takes_the_median_of_per_round_ratios_not_the_ratio_of_medians():
    num = [2.0, 10.0, 4.0, 3.0]
    den = [1.0, 10.0, 1.0, 1.0]
    r = ratio_summary(num, den)  # ratios 2, 1, 4, 3 -> sorted 1 2 3 4
    assert (r.median, r.q1, r.q3, r.min, r.max, r.n) == pytest.approx((2.5, 1.75, 3.25, 1, 4, 4))
    assert r.median != pytest.approx(3.5 / 1.0)  # the ratio of medians, median(num) / median(den), differs
    assert r.format("{:.1f}") == "2.5 (IQR 1.8-3.2, range 1.0-4.0, n=4)"


def test_ratio_summary_refuses_mismatched_or_non_positive_inputs():
    with pytest.raises(ValueError, match="same rounds"):
        ratio_summary([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="positive"):
        ratio_summary([1.0], [0.0])


def test_timed_measures_the_call():
    calls = []
    seconds = timed(lambda: calls.append(1))()
    assert calls == [1] and 0 < seconds < 1


def test_load_snapshot_reports_load_and_cpus():
    snap = load_snapshot(sample_s=0.05)
    assert snap.cpus >= 1
    assert math.isnan(snap.load1) or snap.load1 >= 0
    assert snap.others_busy_cores is None or 0 <= snap.others_busy_cores <= snap.cpus + 0.5
    text = str(snap)
    assert "1/5/15 min" in text and f"on {snap.cpus} CPUs" in text
    assert load_snapshot(sample_s=0).others_busy_cores is None
