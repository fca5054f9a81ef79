"""bench/calibration_check.py: the power calculation and the criteria verdicts, on hand-checked values."""

from __future__ import annotations

import math

import pytest
from calibration_check import detectable_effect, minimum_detectable, verdicts
from scipy.stats import nct, t


def test_detectable_effect_matches_textbook_values() -> None:
    # Cohen's tables / G*Power, two-sided two-sample t-test, alpha 0.05, power 0.8
    assert detectable_effect(3) == pytest.approx(3.07, abs=0.01)
    assert detectable_effect(10) == pytest.approx(1.325, abs=0.005)
    # large n: the normal approximation (z_0.975 + z_0.8) * sqrt(2 / n) = 2.8016 * sqrt(2 / n)
    assert detectable_effect(200) == pytest.approx(2.8016 * math.sqrt(2 / 200), rel=0.01)


def test_detectable_effect_has_power_point_eight() -> None:
    n = 5
    d = detectable_effect(n)
    crit = t.ppf(0.975, 2 * n - 2)
    assert nct.sf(crit, 2 * n - 2, d * math.sqrt(n / 2)) == pytest.approx(0.8, abs=1e-3)


def test_minimum_detectable_scales_with_std() -> None:
    assert minimum_detectable(1.5, 3) == pytest.approx(1.5 * detectable_effect(3))


def test_verdicts_apply_the_written_limits() -> None:
    row = {"gap_val": 5.0, "gap_test": 6.0, "teacher_test": (80.0, 1.5, 3), "student_only_test": (70.0, 1.2, 3),
           "rho": {"val": 0.8}, "shares": (0.2, 0.5)}
    assert verdicts(row) == {"a": True, "b": True, "c": True, "d": True}
    worse = {**row, "gap_val": 4.9, "student_only_test": (70.0, 1.6, 3), "rho": {"val": 0.79}, "shares": (0.19, 0.6)}
    assert verdicts(worse) == {"a": False, "b": False, "c": False, "d": False}
    assert verdicts({**row, "rho": {}, "shares": None})["c"] is None
