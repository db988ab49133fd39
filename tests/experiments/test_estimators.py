"""The estimators on aggregates agree with a direct computation on the rows (scipy,
statsmodels) to 1e-9; the SRM check flags a 52/48 split of 20,000; CUPED removes about
rho^2 of the variance; the always-valid p-value keeps daily peeking honest."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats
from statsmodels.stats.multitest import multipletests

from experiments import estimators as est


def _moments(values) -> est.Moments:
    values = np.asarray(values, dtype=float)
    return est.Moments(len(values), float(values.sum()), float((values**2).sum()))


def test_welch_agrees_with_scipy_on_the_rows():
    rng = np.random.default_rng(7)
    treated = rng.gamma(2.0, 60.0, size=3000)
    control = rng.gamma(2.0, 55.0, size=2500)
    lift = est.welch(_moments(treated), _moments(control))
    expected = stats.ttest_ind(treated, control, equal_var=False)
    assert lift.p_value == pytest.approx(expected.pvalue, abs=1e-9)
    low, high = expected.confidence_interval(0.95)
    assert lift.abs_ci == (pytest.approx(low, abs=1e-9), pytest.approx(high, abs=1e-9))
    assert lift.abs_lift == pytest.approx(treated.mean() - control.mean(), abs=1e-9)


def test_the_relative_interval_carries_the_controls_uncertainty():
    treated, control = est.Moments(1000, 1100.0, 3000.0), est.Moments(1000, 1000.0, 2800.0)
    lift = est.welch(treated, control)
    naive_half = (lift.abs_ci[1] - lift.abs_ci[0]) / 2 / control.mean
    assert lift.rel_lift == pytest.approx(0.1)
    assert (lift.rel_ci[1] - lift.rel_ci[0]) / 2 > naive_half


def test_the_delta_method_covers_the_true_ratio():
    rng = np.random.default_rng(11)
    covered = 0
    for _ in range(200):
        treated = rng.normal(11.0, 4.0, size=800)
        control = rng.normal(10.0, 4.0, size=800)
        low, high = est.welch(_moments(treated), _moments(control)).rel_ci
        covered += low <= 0.1 <= high
    assert 180 <= covered <= 198  # about 95% of 200


def test_a_52_48_split_of_20000_is_a_sample_ratio_mismatch():
    assert not est.sample_ratio([10400, 9600], [50, 50]).ok
    assert est.sample_ratio([10040, 9960], [50, 50]).ok
    result = est.sample_ratio([4000, 3000, 3000], [40, 30, 30])
    assert result.ok and result.p_value == pytest.approx(1.0)


def test_cuped_removes_about_rho_squared_and_keeps_the_effect():
    rng = np.random.default_rng(3)
    arms, raw = [], []
    for effect in (0.0, 2.0):
        x = rng.normal(50, 10, size=20000)
        y = 0.8 * x + rng.normal(0, 6, size=20000) + effect
        arms.append(
            est.CoMoments(
                len(y), y.sum(), (y * y).sum(), (x.sum(),), (((x * x).sum(),),), ((x * y).sum(),)
            )
        )
        raw.append((x, y))
    theta = est.cuped_theta(arms)
    x_all = np.concatenate([x for x, _ in raw])
    y_all = np.concatenate([y for _, y in raw])
    rho = np.corrcoef(x_all, y_all)[0, 1]
    assert est.variance_reduction(arms) == pytest.approx(rho**2, abs=1e-9)
    mean_x = x_all.mean()
    adjusted = [est.cuped(arm, theta, np.array([mean_x])) for arm in arms]
    direct = [y - theta[0] * (x - mean_x) for x, y in raw]
    for moments, values in zip(adjusted, direct, strict=True):
        assert moments.mean == pytest.approx(values.mean(), abs=1e-9)
        assert moments.variance == pytest.approx(values.var(ddof=1), rel=1e-9)
    plain = est.welch(_moments(raw[1][1]), _moments(raw[0][1]))
    cut = est.welch(adjusted[1], adjusted[0])
    assert cut.abs_lift == pytest.approx(2.0, abs=0.15)
    assert (cut.abs_ci[1] - cut.abs_ci[0]) < (plain.abs_ci[1] - plain.abs_ci[0]) * math.sqrt(
        1 - rho**2
    ) * 1.05


@pytest.mark.parametrize("method", ["holm", "fdr_bh"])
def test_corrections_match_statsmodels(method):
    p_values = [0.01, 0.04, 0.03, 0.2]
    assert est.adjust(p_values, method) == pytest.approx(
        list(multipletests(p_values, method=method)[1]), abs=1e-12
    )
    rng = np.random.default_rng(4)
    for _ in range(50):  # ties, p-values near 1, families of every size
        p_values = list(np.round(rng.uniform(0, 1, size=rng.integers(1, 12)) ** 3, 2))
        assert est.adjust(p_values, method) == pytest.approx(
            list(multipletests(p_values, method=method)[1]), abs=1e-12
        )
    with pytest.raises(ValueError):
        est.adjust(p_values, "bonferroni-ish")


def test_the_always_valid_p_value_keeps_daily_peeking_under_alpha():
    """A/A experiments looked at every day for 30 days: a fixed-horizon z-test's
    running minimum p-value crosses 0.05 far more often than 5%; the mixture SPRT's
    does not."""
    rng = np.random.default_rng(5)
    runs, fixed_hits, valid_hits = 300, 0, 0
    for _ in range(runs):
        a = rng.normal(0, 1, size=(30, 100)).cumsum(axis=0)
        b = rng.normal(0, 1, size=(30, 100)).cumsum(axis=0)
        fixed, valid = 1.0, 1.0
        for day in range(30):
            n = (day + 1) * 100
            diff = a[day].sum() / n - b[day].sum() / n
            variance = 2 / n
            fixed = min(fixed, 2 * stats.norm.sf(abs(diff) / math.sqrt(variance)))
            valid = min(valid, est.always_valid_p(diff, variance, tau2=0.01))
        fixed_hits += fixed < 0.05
        valid_hits += valid < 0.05
    assert fixed_hits / runs > 0.15
    assert valid_hits / runs < 0.05
