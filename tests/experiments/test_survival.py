"""The survival estimates from counts per day agree with statsmodels on the expanded
per-member rows (time d + 1): Kaplan-Meier and its Greenwood log(-log) interval with
SurvfuncRight to 1e-12, the log-rank test with survdiff to 1e-9; an arm without orders
stays at 1, an empty arm is an error."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from statsmodels.duration.survfunc import SurvfuncRight, survdiff

from experiments import survival as surv

HAZARDS = {"control": 0.030, "service": 0.032, "discount": 0.035}  # orders per member-day
MAX_DAYS = 60


def _members(rng, hazard: float, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Each member's day (floor of the days since assignment) of their first order or of
    their censoring, and whether they ordered."""
    purchase = rng.exponential(1 / hazard, size)
    censor = np.minimum(rng.uniform(0, 90, size), MAX_DAYS)
    return np.floor(np.minimum(purchase, censor)).astype(int), (purchase <= censor).astype(int)


def _grouped(day: np.ndarray, status: np.ndarray) -> surv.Grouped:
    days, index = np.unique(day, return_inverse=True)
    events = np.bincount(index[status == 1], minlength=len(days))
    censored = np.bincount(index[status == 0], minlength=len(days))
    return surv.Grouped.from_rows(
        zip(days.tolist(), events.tolist(), censored.tolist(), strict=True)
    )


def _expand(arm: surv.Grouped) -> tuple[np.ndarray, np.ndarray]:
    """The arm's members back from its counts: day and whether they ordered."""
    day = np.concatenate([np.repeat(arm.days, arm.events), np.repeat(arm.days, arm.censored)])
    return day.astype(int), np.repeat([1, 0], [sum(arm.events), sum(arm.censored)])


def _survdiff(arms: list[tuple[np.ndarray, np.ndarray]]) -> tuple[float, float]:
    """statsmodels' log-rank test on the members of the arms, at time d + 1."""
    day = np.concatenate([day for day, _ in arms])
    status = np.concatenate([status for _, status in arms])
    group = np.repeat(np.arange(len(arms)), [len(day) for day, _ in arms])
    return survdiff(day + 1, status, group)


@pytest.fixture(scope="module")
def members() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(20240611)
    return {arm: _members(rng, hazard, 3000) for arm, hazard in HAZARDS.items()}


def test_from_rows_sums_repeated_days_and_drops_empty_ones():
    grouped = surv.Grouped.from_rows([(3, 1, 0), (0, 2, 1), (3, 4, 2), (5, 0, 0), (1, 0, 3)])
    assert grouped == surv.Grouped(days=(0, 1, 3), events=(2, 0, 5), censored=(1, 3, 2))
    assert grouped.members == 13
    with pytest.raises(ValueError, match="increasing"):
        surv.Grouped(days=(3, 1), events=(1, 1), censored=(0, 0))


@pytest.mark.parametrize("arm", HAZARDS)
def test_kaplan_meier_agrees_with_survfunc_right_on_the_members(members, arm):
    day, status = members[arm]
    curve = surv.kaplan_meier(_grouped(day, status))
    expected = SurvfuncRight(day + 1, status)
    assert curve.days == tuple(expected.surv_times.tolist())
    assert curve.at_risk == tuple(expected.n_risk.tolist())
    np.testing.assert_allclose(curve.survival, expected.surv_prob, rtol=0, atol=1e-12)
    # The cloglog interval from statsmodels' S and Greenwood standard error.
    s, se = expected.surv_prob, expected.surv_prob_se
    spread = stats.norm.ppf(0.975) * se / (s * -np.log(s))
    np.testing.assert_allclose(curve.lower, s ** np.exp(spread), rtol=0, atol=1e-12)
    np.testing.assert_allclose(curve.upper, s ** np.exp(-spread), rtol=0, atol=1e-12)
    assert curve.follow_up == MAX_DAYS + 1


def test_the_interval_is_the_one_statsmodels_inverts_for_the_median(members):
    day, status = members["discount"]
    curve = surv.kaplan_meier(_grouped(day, status))
    low, _ = SurvfuncRight(day + 1, status).quantile_ci(0.5, method="cloglog")
    covering = [
        d for d, a, b in zip(curve.days, curve.lower, curve.upper, strict=True) if a <= 0.5 <= b
    ]
    assert covering[0] == low
    assert low <= curve.median


@pytest.mark.parametrize("arms", [("control", "service"), ("control", "service", "discount")])
def test_log_rank_agrees_with_survdiff_on_the_members(members, arms):
    result = surv.log_rank({arm: _grouped(*members[arm]) for arm in arms})
    chi2, p_value = _survdiff([members[arm] for arm in arms])
    assert result.chi2 == pytest.approx(chi2, abs=1e-9)
    assert result.p_value == pytest.approx(p_value, rel=1e-9)
    assert result.df == len(arms) - 1


def test_log_rank_with_heavy_ties_and_equal_arms():
    a = surv.Grouped(days=(0, 1, 2), events=(400, 300, 100), censored=(50, 50, 600))
    b = surv.Grouped(days=(0, 2), events=(380, 250), censored=(120, 700))
    result = surv.log_rank({"a": a, "b": b})
    chi2, p_value = _survdiff([_expand(a), _expand(b)])
    assert result.chi2 == pytest.approx(chi2, abs=1e-9)
    assert result.p_value == pytest.approx(p_value, rel=1e-9)
    assert surv.log_rank({"a": a, "same": a}).chi2 == pytest.approx(0, abs=1e-12)


def test_an_arm_without_orders_stays_at_one(members):
    quiet = surv.Grouped(days=(0, 10, 40), events=(0, 0, 0), censored=(5, 20, 75))
    curve = surv.kaplan_meier(quiet)
    assert (curve.days, curve.survival, curve.median) == ((), (), None)
    assert curve.at(0) == curve.at(41) == 1.0
    assert surv.restricted_mean(curve, 30) == 30
    result = surv.log_rank({"control": _grouped(*members["control"]), "quiet": quiet})
    chi2, p_value = _survdiff([members["control"], _expand(quiet)])
    assert result.chi2 == pytest.approx(chi2, abs=1e-9)
    assert result.p_value == pytest.approx(p_value, rel=1e-9)


def test_an_arm_censored_before_any_order_is_left_out_of_the_log_rank(members):
    # Everyone a day later: no orders on day 0, when the new arm's members are censored.
    late = {arm: _grouped(day + 1, status) for arm, (day, status) in members.items()}
    late["new"] = surv.Grouped(days=(0,), events=(0,), censored=(40,))
    result = surv.log_rank(late)
    chi2, p_value = _survdiff([(day + 1, status) for day, status in members.values()])
    assert result.df == 2
    assert result.chi2 == pytest.approx(chi2, abs=1e-9)
    assert result.p_value == pytest.approx(p_value, rel=1e-9)
    assert surv.kaplan_meier(late["new"]).follow_up == 1
    with pytest.raises(ValueError, match="nothing to compare"):
        surv.log_rank({"control": late["control"], "new": late["new"]})


def test_an_empty_arm_is_an_error(members):
    empty = surv.Grouped(days=(), events=(), censored=())
    with pytest.raises(ValueError, match="no members"):
        surv.kaplan_meier(empty)
    with pytest.raises(ValueError, match="no members"):
        surv.log_rank({"control": _grouped(*members["control"]), "empty": empty})
    with pytest.raises(ValueError, match="two or more"):
        surv.log_rank({"control": _grouped(*members["control"])})


def test_the_step_function_median_and_restricted_mean():
    # Four members: orders on days 0 and 2, one censored on day 1, one on day 3.
    curve = surv.kaplan_meier(
        surv.Grouped(days=(0, 1, 2, 3), events=(1, 0, 1, 0), censored=(0, 1, 0, 1))
    )
    assert curve.days == (1, 3)
    assert curve.survival == pytest.approx((0.75, 0.375))
    assert (curve.at(0), curve.at(1), curve.at(2.5), curve.at(3), curve.at(99)) == pytest.approx(
        (1, 0.75, 0.75, 0.375, 0.375)
    )
    assert curve.median == 3
    assert surv.restricted_mean(curve, 4) == pytest.approx(1 + 2 * 0.75 + 0.375)
    with pytest.raises(ValueError, match="follow-up"):
        surv.restricted_mean(curve, 5)
    # S = 0.5 exactly is the median (statsmodels' quantile, as SAS, wants S < 0.5); where S
    # falls to 0 the interval is undefined.
    both = surv.kaplan_meier(surv.Grouped(days=(0, 4), events=(1, 1), censored=(0, 0)))
    assert (both.median, both.survival) == (1, (0.5, 0.0))
    assert np.isnan(both.lower[-1]) and np.isnan(both.upper[-1])


def test_the_restricted_mean_without_censoring_is_the_mean_of_the_capped_days():
    rng = np.random.default_rng(3)
    day = rng.geometric(0.05, 4000) - 1
    curve = surv.kaplan_meier(_grouped(day, np.ones_like(day)))
    assert surv.restricted_mean(curve, 30) == pytest.approx(
        np.minimum(day + 1, 30).mean(), abs=1e-9
    )
    assert surv.restricted_mean(curve, 30.5) == pytest.approx(
        np.minimum(day + 1, 30.5).mean(), abs=1e-9
    )
