"""The design-time calculator: O'Brien-Fleming boundaries and inflation factors agree with
Jennison and Turnbull's tables, the exact crossing probabilities with the normal formula
and with 200,000 simulated paths, the fixed sample with statsmodels; reading more often
costs power; the MDE inverts the sample size."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from scipy.stats import norm
from statsmodels.stats.power import NormalIndPower

from experiments import estimators
from experiments import power as pw

DESIGN = pw.Design(
    baseline=0.30,
    mde=0.10,
    treated_share=0.45,
    control_share=0.45,
    members_per_day=300,
    horizon_days=90,
)
FIXED_DRIFT = 2.8015818  # alpha 0.05, power 0.8: z_0.975 + z_0.8, less 3e-6 for the far tail


def _fractions(looks: int) -> np.ndarray:
    return np.arange(1, looks + 1) / looks


@pytest.mark.parametrize(
    ("looks", "expected"),
    [
        (1, (1.959964,)),
        (2, (2.797, 1.977)),
        (3, (3.471, 2.454, 2.004)),
        (4, (4.049, 2.863, 2.337, 2.024)),
        (5, (4.562, 3.226, 2.634, 2.281, 2.040)),
    ],
)
def test_obrien_fleming_boundaries_match_jennison_and_turnbull(looks, expected):
    assert pw.obrien_fleming(looks) == pytest.approx(expected, abs=6e-4)


def test_one_look_is_the_two_sided_z_test():
    assert pw.obrien_fleming(1)[0] == pytest.approx(norm.isf(0.025), abs=1e-12)
    z = norm.isf(0.025)
    for drift in (0.0, 1.0, 2.8, -2.0):
        expected = norm.cdf(drift - z) + norm.cdf(-drift - z)
        assert pw.crossing_power([z], [1.0], drift) == pytest.approx(expected, abs=1e-12)


def test_a_drift_far_beyond_the_boundaries_always_crosses():
    assert pw.crossing_power(pw.obrien_fleming(5), _fractions(5), 40.0) == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("alpha", "fractions"),
    [(0.05, None), (0.01, None), (0.05, (0.3, 0.7, 1.0)), (0.05, (0.2, 0.25, 0.6, 1.0))],
)
def test_the_boundaries_spend_exactly_alpha(alpha, fractions):
    looks = 10 if fractions is None else len(fractions)
    t = _fractions(looks) if fractions is None else fractions
    boundaries = pw.obrien_fleming(looks, alpha, fractions)
    assert pw.crossing_power(boundaries, t, 0.0) == pytest.approx(alpha, abs=1e-6)


@pytest.mark.parametrize(("looks", "expected"), [(2, 1.008), (3, 1.017), (4, 1.024), (5, 1.028)])
def test_inflation_matches_jennison_and_turnbull(looks, expected):
    assert pw.inflation(looks) == pytest.approx(expected, abs=5e-4)


def test_the_1_026_of_five_looks_is_at_power_0_9():
    assert pw.inflation(5, power=0.9) == pytest.approx(1.026, abs=5e-4)


def test_always_valid_boundaries_are_where_the_mixture_p_value_reaches_alpha():
    final_variance, tau2 = 0.0004, 0.0025  # tau2_ratio 6.25
    for k, boundary in enumerate(pw.always_valid_boundaries(10, 0.05, 6.25), start=1):
        variance = final_variance / (k / 10)
        p = estimators.always_valid_p(boundary * math.sqrt(variance), variance, tau2)
        assert p == pytest.approx(0.05, rel=1e-9)


def _simulated_crossing(boundaries, drift: float) -> float:
    """The share of 200,000 Brownian paths with drift whose |Z_k| reaches a boundary."""
    t = _fractions(len(boundaries))
    rng = np.random.default_rng(2024)
    steps = np.diff(t, prepend=0.0)
    paths = np.cumsum(rng.standard_normal((200_000, len(t))) * np.sqrt(steps) + drift * steps, 1)
    return float((np.abs(paths / np.sqrt(t)) >= np.asarray(boundaries)).any(axis=1).mean())


@pytest.mark.parametrize(
    "boundaries",
    [pw.obrien_fleming(5), pw.always_valid_boundaries(20, 0.05, FIXED_DRIFT**2)],
    ids=["obrien_fleming", "always_valid"],
)
def test_exact_crossing_agrees_with_simulated_paths(boundaries):
    t = _fractions(len(boundaries))
    for drift in (0.0, FIXED_DRIFT, 3.5):
        exact = pw.crossing_power(boundaries, t, drift)
        assert _simulated_crossing(boundaries, drift) == pytest.approx(exact, abs=0.005)


def test_always_valid_power_is_the_crossing_of_its_boundaries():
    boundaries = pw.always_valid_boundaries(20, 0.05, FIXED_DRIFT**2)
    assert pw.always_valid_power(FIXED_DRIFT, 20, 0.05, FIXED_DRIFT**2) == pytest.approx(
        pw.crossing_power(boundaries, _fractions(20), FIXED_DRIFT), abs=1e-15
    )


def test_reading_more_often_costs_power():
    fixed = pw.crossing_power([norm.isf(0.025)], [1.0], FIXED_DRIFT)
    sequential = pw.crossing_power(pw.obrien_fleming(10), _fractions(10), FIXED_DRIFT)
    always_valid = pw.always_valid_power(FIXED_DRIFT, 10, 0.05, FIXED_DRIFT**2)
    assert fixed == pytest.approx(0.8, abs=1e-6)
    assert always_valid < sequential < fixed
    assert sequential > 0.75 and always_valid < 0.6


def test_the_fixed_sample_matches_statsmodels_and_the_textbook():
    design = dataclasses.replace(DESIGN, treated_share=0.6, control_share=0.3)
    treated, control = pw.members_needed(design)
    p1, p0 = design.treated_rate, design.baseline
    per_member = p1 * (1 - p1) / 0.6 + p0 * (1 - p0) / 0.3  # N times the variance
    # statsmodels' effect size is over a common sigma with 1/n1 + 1/n2 in the variance.
    sigma = math.sqrt(per_member / (1 / 0.6 + 1 / 0.3))
    expected = NormalIndPower().solve_power(
        effect_size=(p1 - p0) / sigma, alpha=0.05, power=0.8, ratio=0.3 / 0.6
    )
    assert treated == pytest.approx(expected, rel=1e-6)
    assert control == pytest.approx(expected / 2, rel=1e-6)
    # The textbook formula leaves out the far tail's 1e-6 of power: 2.4e-6 more members.
    textbook = (norm.isf(0.025) + norm.isf(0.2)) ** 2 * per_member / (p1 - p0) ** 2
    assert treated == pytest.approx(textbook * 0.6, rel=1e-5)


def test_a_group_sequential_sample_is_the_fixed_one_times_the_inflation():
    fixed = pw.members_needed(DESIGN)
    sequential = pw.members_needed(dataclasses.replace(DESIGN, mode="group_sequential", looks=4))
    assert sequential == pytest.approx([n * pw.inflation(4) for n in fixed], rel=1e-9)


@pytest.mark.parametrize(
    ("mode", "looks"), [("fixed", None), ("group_sequential", 3), ("always_valid", 30)]
)
def test_the_mde_inverts_members_needed(mode, looks):
    design = dataclasses.replace(DESIGN, treated_share=0.6, control_share=0.3)
    design = dataclasses.replace(design, mode=mode, looks=looks)
    treated, control = pw.members_needed(design)
    lift = pw.mde(0.30, treated, control, mode=mode, looks=looks)
    assert lift == pytest.approx(0.10, abs=1e-8)


def test_the_plan_enrols_then_waits_out_the_window():
    for mode in pw.MODES:
        design = dataclasses.replace(DESIGN, mode=mode)
        plan = pw.days_needed(design)
        treated, control = pw.members_needed(design)
        assert (plan.n_treated, plan.n_control) == (math.ceil(treated), math.ceil(control))
        assert plan.days_enrolling == math.ceil(treated / 0.45 / 300)
        assert plan.days_total == plan.days_enrolling + 90
    # Daily looks: one per day of enrolment, and enough of them for the power.
    assert plan.looks == plan.days_enrolling
    p1, p0 = design.treated_rate, design.baseline
    assert design.tau2 == pytest.approx((p1 - p0) ** 2)  # the mixture centred on the MDE
    drift = (p1 - p0) / math.sqrt(p1 * (1 - p1) / treated + p0 * (1 - p0) / control)
    assert pw.always_valid_power(drift, plan.looks, 0.05, drift**2) == pytest.approx(0.8, abs=1e-9)


def test_power_cost_prices_each_way_of_reading():
    fixed, sequential, always_valid = pw.power_cost(DESIGN)
    assert (fixed.mode, sequential.mode, always_valid.mode) == pw.MODES
    assert fixed.power == pytest.approx(0.8, abs=1e-9) and fixed.inflation == 1
    assert 0.78 < sequential.power < 0.8 and always_valid.power < 0.6
    assert sequential.inflation == pytest.approx(pw.inflation(5), rel=1e-9)
    assert 1.3 < always_valid.inflation < 2.0
    assert always_valid.n_treated == pytest.approx(fixed.n_treated * always_valid.inflation)


@pytest.mark.parametrize(
    "call",
    [
        lambda: pw.obrien_fleming(0),
        lambda: pw.obrien_fleming(21),
        lambda: pw.obrien_fleming(3, alpha=0.7),
        lambda: pw.obrien_fleming(3, fractions=(0.5, 0.4, 1.0)),
        lambda: pw.obrien_fleming(3, fractions=(0.2, 0.5, 0.9)),
        lambda: pw.obrien_fleming(2, fractions=(0.5, 0.75, 1.0)),
        lambda: pw.crossing_power([2.0, -1.0], [0.5, 1.0], 1.0),
        lambda: pw.crossing_power([], [], 1.0),
        lambda: pw.always_valid_boundaries(10, 0.05, 0.0),
        lambda: pw.inflation(3, power=0.01),
        lambda: dataclasses.replace(DESIGN, baseline=1.2),
        lambda: dataclasses.replace(DESIGN, mde=3.0),
        lambda: dataclasses.replace(DESIGN, treated_share=0.6, control_share=0.5),
        lambda: dataclasses.replace(DESIGN, control_share=0.0),
        lambda: dataclasses.replace(DESIGN, members_per_day=-5),
        lambda: dataclasses.replace(DESIGN, horizon_days=-1),
        lambda: dataclasses.replace(DESIGN, mode="bayesian"),
        lambda: dataclasses.replace(DESIGN, mode="group_sequential", looks=0),
        lambda: dataclasses.replace(DESIGN, mode="fixed", looks=3),
        lambda: pw.mde(0.3, 1000, 1000, mode="always_valid"),
        lambda: pw.mde(0.3, 0, 1000),
        lambda: pw.mde(0.3, 1, 1),
    ],
)
def test_bad_inputs_raise(call):
    with pytest.raises(ValueError):
        call()


def test_a_slow_audience_still_gets_a_plan_with_each_mode_s_cost():
    """Years of daily looks are computed as 100 evenly spread ones: the always-valid
    row asks for a little more, never fewer, members than daily looks would."""
    slow = pw.days_needed(dataclasses.replace(DESIGN, members_per_day=5))
    assert slow.days_enrolling > 1000
    modes = {cost.mode: cost for cost in slow.costs}
    fast = {
        cost.mode: cost for cost in pw.power_cost(dataclasses.replace(DESIGN, members_per_day=1))
    }
    assert modes["always_valid"].inflation == pytest.approx(fast["always_valid"].inflation)
    assert 1.3 < modes["always_valid"].inflation < 2.0
