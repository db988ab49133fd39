"""Two rates compared: the figures checked against the textbook formulas written out."""

from __future__ import annotations

import math

import pytest
from scipy.stats import norm

from experiments.stats import compare_proportions


def _wilson(x: int, n: int, z: float) -> tuple[float, float]:
    p = x / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def test_lift_interval_and_p_value_match_the_formulas():
    result = compare_proportions(120, 1000, 80, 1000)
    z = norm.ppf(0.975)
    p1, p2 = 0.12, 0.08
    l1, u1 = _wilson(120, 1000, z)
    l2, u2 = _wilson(80, 1000, z)
    # Newcombe's hybrid score interval (method 10).
    low = (p1 - p2) - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)
    high = (p1 - p2) + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
    assert result.absolute_lift == pytest.approx(0.04)
    assert result.absolute_ci == pytest.approx((low, high), abs=1e-9)
    pooled = 0.1
    se = math.sqrt(pooled * (1 - pooled) * (2 / 1000))
    assert result.p_value == pytest.approx(2 * norm.sf(0.04 / se), rel=1e-9)
    # The ratio's log interval: exp(log(p1/p2) +- z * sqrt(1/x1 - 1/n1 + 1/x2 - 1/n2)) - 1.
    spread = z * math.sqrt(1 / 120 - 1 / 1000 + 1 / 80 - 1 / 1000)
    assert result.relative_lift == pytest.approx(0.5)
    assert result.relative_ci == pytest.approx(
        (1.5 * math.exp(-spread) - 1, 1.5 * math.exp(spread) - 1), rel=1e-6
    )
    assert result.significant


def test_empty_and_degenerate_groups():
    assert compare_proportions(0, 0, 1, 10) is None
    nothing = compare_proportions(0, 50, 0, 50)
    assert (nothing.absolute_lift, nothing.p_value, nothing.relative_lift) == (0.0, 1.0, None)
    assert nothing.absolute_ci[0] < 0 < nothing.absolute_ci[1]
    with pytest.raises(ValueError, match="between 0"):
        compare_proportions(11, 10, 1, 10)
