"""Proof of correctness of the experiments' statistics, end to end through
:func:`experiments.analysis.analyse` on :class:`experiments.aggregates.Aggregates`
built from simulated members exactly as the SQL of :mod:`experiments.aggregates` sums
them (no database):

- the 95% intervals of the lift cover the true effect in about 95% of repeated runs;
- A/A runs are significant in about 5% of runs;
- peeking every day at a fixed-horizon test inflates false positives to about 25%,
  the always-valid reading stays under 5%, the group-sequential one at its 5 planned
  looks about 5%;
- a 52/48 split of 20,000 is a sample-ratio mismatch, an honest 50/50 split is not;
- on the same rows every figure agrees with statsmodels and scipy to 1e-9;
- CUPED removes R² of the variance and narrows the interval by sqrt(1 - R²);
- the adjusted p-values of the family are statsmodels' Holm and Benjamini-Hochberg.

Every simulation is seeded: the figures are reproducible, and the bounds are wide
enough (two to three binomial standard deviations) that a correct analysis passes for
most seeds while a broken one (a wrong variance, a missing correction) fails.

The simulations read one comparison on one metric, so their family of p-values has one
member and any correction leaves it unchanged: they use ``correction="fdr_bh"``,
because statsmodels' Holm runs ``gc.collect()`` on every call, which costs more than
the rest of the analysis together.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable, Mapping

import numpy as np
import pytest
import statsmodels.api as sm
from scipy import stats
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.proportion import confint_proportions_2indep, proportions_ztest
from statsmodels.stats.weightstats import CompareMeans, DescrStatsW

from experiments import estimators as est
from experiments.aggregates import Aggregates, Arm, RatioSums, Sums
from experiments.analysis import Plan, analyse
from experiments.assignment import HOLDOUT
from experiments.design import METRICS, RETENTION_HORIZONS

AS_OF = dt.datetime(2025, 6, 30, tzinfo=dt.UTC)
NO_SUMS = Sums(0, 0.0, 0.0, (0.0, 0.0), ((0.0, 0.0), (0.0, 0.0)), (0.0, 0.0))
NO_RATIO = RatioSums(0, 0.0, 0.0, 0.0, 0.0, 0.0)
Z95 = float(stats.norm.ppf(0.975))

# The simulated programme: 30% of members order again within 90 days, 1.5 orders each
# when they do, a basket of 40 on average; a variant keeps 12% more members (33.6%)
# and raises the basket to 42.
CONTROL_RATE, TREATED_RATE = 0.30, 0.336
CONTROL_BASKET, TREATED_BASKET = 40.0, 42.0
ORDERS_WHEN_RETAINED = 1.5


# -- the sums SQL computes, from per-member rows


def sums_of(y, pre_orders, pre_spend, counted=None) -> Sums:
    """One arm's metric as ``aggregates._sums_columns`` sums it over the members it
    counts: n, Σy, Σy², Σx, Σxxᵀ and Σyx with x = (pre_orders, pre_spend)."""
    y, x1, x2 = (np.asarray(a, dtype=float) for a in (y, pre_orders, pre_spend))
    if counted is not None:
        counted = np.asarray(counted, dtype=bool)
        y, x1, x2 = y[counted], x1[counted], x2[counted]
    return Sums(
        n=len(y),
        y=float(y.sum()),
        yy=float(y @ y),
        x=(float(x1.sum()), float(x2.sum())),
        xx=((float(x1 @ x1), float(x1 @ x2)), (float(x1 @ x2), float(x2 @ x2))),
        xy=(float(y @ x1), float(y @ x2)),
    )


def arm_from_rows(
    key: str,
    retained_by_horizon: Mapping[int, np.ndarray],
    orders,
    revenue,
    pre_orders,
    pre_spend,
    *,
    cost=None,
    redeemed=None,
    eligible_by_horizon: Mapping[int, np.ndarray] | None = None,
    metrics: Iterable[str] | None = None,
) -> Arm:
    """The arm as ``aggregates.aggregate`` returns it: retention at h days over the
    members whose window has elapsed (``eligible_by_horizon``, everyone by default), the
    other metrics over every member, AOV from revenue and orders. ``metrics`` limits the
    metrics summed (the others count no member, as in an arm without data) to keep long
    simulations cheap; ``"aov"`` among them sums the ratio."""
    orders, revenue = np.asarray(orders, dtype=float), np.asarray(revenue, dtype=float)
    n = len(orders)
    cost = np.zeros(n) if cost is None else np.asarray(cost, dtype=float)
    redeemed = np.zeros(n) if redeemed is None else np.asarray(redeemed, dtype=float)
    eligible_by_horizon = eligible_by_horizon or {}
    wanted = set(METRICS) if metrics is None else set(metrics)
    values = {
        "orders_per_member": orders,
        "revenue_per_member": revenue,
        "cost_per_member": cost,
        "roi_per_member": revenue - cost,
        "redemption_rate": redeemed,
    }
    sums: dict[str, Sums] = {}
    for name in METRICS:
        if name == "aov":
            continue
        if name not in wanted:
            sums[name] = NO_SUMS
        elif name.startswith("retention_"):
            h = int(name.removeprefix("retention_").removesuffix("d"))
            sums[name] = sums_of(
                retained_by_horizon[h], pre_orders, pre_spend, eligible_by_horizon.get(h)
            )
        else:
            sums[name] = sums_of(values[name], pre_orders, pre_spend)
    aov = NO_RATIO
    if "aov" in wanted:
        aov = RatioSums(
            n=n,
            num=float(revenue.sum()),
            den=float(orders.sum()),
            numnum=float(revenue @ revenue),
            denden=float(orders @ orders),
            numden=float(revenue @ orders),
        )
    return Arm(key=key, n=n, metrics=sums, aov=aov)


def aggregates_of(*arms: Arm) -> Aggregates:
    return Aggregates(as_of=AS_OF, arms={a.key: a for a in arms}, winsor_cap=None, breakdowns={})


def plan_of(*keys: str, holdout: float = 0.0, **changes) -> Plan:
    """The first key is the control; the arms share the rest of the audience equally."""
    weights = {k: (1 - holdout) / len(keys) for k in keys}
    if holdout:
        weights[HOLDOUT] = holdout
    changes.setdefault("correction", "fdr_bh")
    return Plan(control=keys[0], variants=list(keys), names={}, weights=weights, **changes)


# -- simulated members


def members(rng: np.random.Generator, n: int, rate: float, basket: float) -> dict[str, np.ndarray]:
    """n members: a loyalty score drives their pre-period orders and spend and the value
    of their baskets; a share ``rate`` order again within 90 days (on a day uniform in
    1..90, so retention at 7, 30, 60 days nests in it), 1 + Poisson(0.5) times, each
    basket lognormal with mean ``basket``. So E[revenue] = rate * 1.5 * basket."""
    loyalty = rng.standard_normal(n)
    pre_spend = np.exp(3.5 + 0.5 * loyalty)
    pre_orders = rng.poisson(np.exp(0.5 + 0.3 * loyalty)).astype(float)
    retained = rng.random(n) < rate
    day = np.where(retained, rng.integers(1, 91, n), 10_000)
    orders = retained * (1.0 + rng.poisson(0.5, n))
    # exp(0.5 loyalty + 0.6 noise) has mean exp((0.25 + 0.36) / 2).
    value = basket * np.exp(0.5 * loyalty + 0.6 * rng.standard_normal(n) - 0.305)
    return {
        "retained": {h: (day <= h).astype(float) for h in RETENTION_HORIZONS},
        "orders": orders,
        "revenue": orders * value,
        "pre_orders": pre_orders,
        "pre_spend": pre_spend,
    }


def arm_of(key: str, rows: Mapping[str, np.ndarray], **kwargs) -> Arm:
    return arm_from_rows(
        key,
        rows["retained"],
        rows["orders"],
        rows["revenue"],
        rows["pre_orders"],
        rows["pre_spend"],
        **kwargs,
    )


def covers(interval, value: float) -> bool:
    return interval[0] <= value <= interval[1]


def test_the_helper_sums_like_the_sql():
    """The sums that stand in for SQL's: n, Σy, Σy², Σx, Σxxᵀ, Σyx over the counted."""
    y, x1, x2 = np.array([1.0, 0, 1, 1]), np.array([2.0, 0, 1, 3]), np.array([10.0, 0, 5, 7])
    s = sums_of(y, x1, x2, counted=[True, True, False, True])
    assert s == Sums(3, 2.0, 2.0, (5.0, 17.0), ((13.0, 41.0), (41.0, 149.0)), (5.0, 17.0))


# -- 1. coverage


def test_the_95_percent_intervals_cover_the_true_effect_in_about_95_percent_of_runs():
    """400 runs of 4,000 members per arm, +12% retention at 90 days and a larger basket:
    the absolute and relative intervals of retention, revenue per member and its CUPED
    reading each cover the true effect in 90% to 99% of the runs."""
    rng = np.random.default_rng(20240601)
    runs, n = 400, 4000
    true_retention = (TREATED_RATE - CONTROL_RATE, TREATED_RATE / CONTROL_RATE - 1)
    control_revenue = CONTROL_RATE * ORDERS_WHEN_RETAINED * CONTROL_BASKET
    treated_revenue = TREATED_RATE * ORDERS_WHEN_RETAINED * TREATED_BASKET
    true_revenue = (treated_revenue - control_revenue, treated_revenue / control_revenue - 1)
    plan = plan_of("control", "treated")
    metrics = ("retention_90d", "revenue_per_member")
    hits = {
        (m, reading, which): 0
        for m in metrics
        for reading in ("plain", "cuped")
        for which in ("abs", "rel")
    }
    for _ in range(runs):
        control = arm_of("control", members(rng, n, CONTROL_RATE, CONTROL_BASKET), metrics=metrics)
        treated = arm_of("treated", members(rng, n, TREATED_RATE, TREATED_BASKET), metrics=metrics)
        result = analyse(aggregates_of(control, treated), plan)
        cells = result["variants"]["treated"]["metrics"]
        for metric, truth in (
            ("retention_90d", true_retention),
            ("revenue_per_member", true_revenue),
        ):
            for reading, cell in (("plain", cells[metric]), ("cuped", cells[metric]["cuped"])):
                hits[metric, reading, "abs"] += covers(cell["abs_ci"], truth[0])
                hits[metric, reading, "rel"] += covers(cell["rel_ci"], truth[1])
    coverage = {k: v / runs for k, v in hits.items()}
    assert all(0.90 <= c <= 0.99 for c in coverage.values()), coverage


# -- 2. A/A


def test_aa_runs_are_significant_in_about_5_percent():
    """400 A/A runs of 4,000 members per arm at alpha 0.05: p < 0.05 in 2% to 8% of them,
    on retention and on revenue per member, plain and CUPED; and the p-values are
    uniform (Kolmogorov-Smirnov)."""
    rng = np.random.default_rng(7)
    runs, n = 400, 4000
    plan = plan_of("a", "b")
    metrics = ("retention_90d", "revenue_per_member")
    p_values: dict[tuple[str, str], list[float]] = {
        (m, reading): [] for m in metrics for reading in ("plain", "cuped")
    }
    for _ in range(runs):
        arms = [
            arm_of(key, members(rng, n, CONTROL_RATE, CONTROL_BASKET), metrics=metrics)
            for key in ("a", "b")
        ]
        cells = analyse(aggregates_of(*arms), plan)["variants"]["b"]["metrics"]
        for metric in metrics:
            p_values[metric, "plain"].append(cells[metric]["p_value"])
            p_values[metric, "cuped"].append(cells[metric]["cuped"]["p_value"])
    rates = {k: float(np.mean(np.array(p) < 0.05)) for k, p in p_values.items()}
    assert all(0.02 <= r <= 0.08 for r in rates.values()), rates
    uniform = {k: stats.kstest(p, "uniform").pvalue for k, p in p_values.items()}
    assert all(p > 0.001 for p in uniform.values()), uniform


# -- 3. peeking


def daily_sums(rng, runs: int, days: int, per_day: int, rate: float) -> np.ndarray:
    """For each run and day, the cumulative sums of retention at 90 days over one arm's
    members enrolled so far (per_day a day): shape (runs, days, 10) in the order n, Σy,
    Σy², Σx1, Σx2, Σx1², Σx1x2, Σx2², Σyx1, Σyx2, as SQL would give them at each look."""
    size = (runs, days, per_day)
    loyalty = rng.standard_normal(size)
    x1 = rng.poisson(np.exp(0.5 + 0.3 * loyalty)).astype(float)
    x2 = np.exp(3.5 + 0.5 * loyalty)
    y = (rng.random(size) < rate).astype(float)
    parts = (np.ones(size), y, y * y, x1, x2, x1 * x1, x1 * x2, x2 * x2, y * x1, y * x2)
    return np.stack([p.sum(axis=2).cumsum(axis=1) for p in parts], axis=-1)


def retention_arm(key: str, s: np.ndarray) -> Arm:
    """An arm whose only data is retention at 90 days, from one row of daily_sums."""
    n, y, yy, x1, x2, x11, x12, x22, yx1, yx2 = (float(v) for v in s)
    sums = Sums(int(n), y, yy, (x1, x2), ((x11, x12), (x12, x22)), (yx1, yx2))
    metrics = {m: NO_SUMS for m in METRICS if m != "aov"}
    metrics["retention_90d"] = sums
    return Arm(key, int(n), metrics, NO_RATIO)


def test_daily_peeking_inflates_a_fixed_test_but_not_the_always_valid_reading():
    """300 A/A runs looked at every day for 20 days (200 members per arm a day): the
    fixed-horizon test is significant at some look in about 25% of runs (Armitage et al.
    1969: 20 equally spaced looks at 1.96 reject in 24.8%); the always-valid p-value in
    under 5%, and its confidence sequence excludes 0 exactly when it is significant."""
    rng = np.random.default_rng(11)
    runs, days, per_day = 300, 20, 200
    control = daily_sums(rng, runs, days, per_day, CONTROL_RATE)
    treated = daily_sums(rng, runs, days, per_day, CONTROL_RATE)
    plan = plan_of("control", "treated", mode="always_valid", mde=0.10)
    fixed_ever = valid_ever = 0
    for run in range(runs):
        fixed = valid = False
        for day in range(days):
            data = aggregates_of(
                retention_arm("control", control[run, day]),
                retention_arm("treated", treated[run, day]),
            )
            result = analyse(data, plan)
            cell = result["variants"]["treated"]["metrics"]["retention_90d"]
            reading = result["sequential"]["variants"]["treated"]
            assert cell["n"] == cell["n_control"] == per_day * (day + 1)
            assert reading["significant"] == (reading["p_value"] < 0.05)
            assert reading["significant"] == (not covers(reading["ci"], 0.0))
            fixed |= cell["p_value"] < 0.05
            valid |= reading["significant"]
        fixed_ever += fixed
        valid_ever += valid
    assert 0.18 <= fixed_ever / runs <= 0.32, fixed_ever / runs
    assert valid_ever / runs < 0.05, valid_ever / runs


def test_the_always_valid_reading_still_finds_a_real_effect():
    """The same daily looks with +12% retention: the always-valid reading becomes
    significant by the last look in most runs (it is not merely never significant)."""
    rng = np.random.default_rng(12)
    runs, days, per_day = 100, 20, 200
    control = daily_sums(rng, runs, days, per_day, CONTROL_RATE)
    treated = daily_sums(rng, runs, days, per_day, TREATED_RATE)
    plan = plan_of("control", "treated", mode="always_valid", mde=0.10)
    found = 0
    for run in range(runs):
        for day in range(days):
            data = aggregates_of(
                retention_arm("control", control[run, day]),
                retention_arm("treated", treated[run, day]),
            )
            if analyse(data, plan)["sequential"]["variants"]["treated"]["significant"]:
                found += 1
                break
    assert found / runs >= 0.6, found / runs


def test_the_group_sequential_reading_at_its_planned_looks_keeps_alpha():
    """800 A/A runs read at the 5 planned looks (20%, 40%, ... of 4,000 members) with
    O'Brien-Fleming boundaries: significant at some look in 3% to 7% of runs (5% give or
    take two and a half binomial standard deviations), while the fixed-horizon test at
    the same 5 looks is in over 10% (14.2% in theory). With +12% retention the
    boundaries are still crossed in most runs."""
    rng = np.random.default_rng(13)
    runs, looks, per_look = 800, 5, 400
    plan = plan_of("control", "treated", mode="group_sequential", looks=looks, planned_members=4000)

    def ever(control: np.ndarray, treated: np.ndarray, run: int) -> tuple[bool, bool]:
        sequential = fixed = False
        for look in range(looks):
            data = aggregates_of(
                retention_arm("control", control[run, look]),
                retention_arm("treated", treated[run, look]),
            )
            result = analyse(data, plan)
            reading = result["sequential"]["variants"]["treated"]
            assert result["sequential"]["look"] == look + 1
            assert result["sequential"]["information"] == pytest.approx((look + 1) / looks)
            sequential |= reading["significant"]
            fixed |= result["variants"]["treated"]["metrics"]["retention_90d"]["p_value"] < 0.05
        return sequential, fixed

    control = daily_sums(rng, runs, looks, per_look, CONTROL_RATE)
    treated = daily_sums(rng, runs, looks, per_look, CONTROL_RATE)
    readings = np.array([ever(control, treated, run) for run in range(runs)])
    sequential_rate, fixed_rate = readings.mean(axis=0)
    assert 0.03 <= sequential_rate <= 0.07, sequential_rate
    assert fixed_rate > 0.10, fixed_rate

    runs = 100
    control = daily_sums(rng, runs, looks, per_look, CONTROL_RATE)
    treated = daily_sums(rng, runs, looks, per_look, TREATED_RATE)
    power = np.mean([ever(control, treated, run)[0] for run in range(runs)])
    assert power >= 0.6, power


# -- 4. sample ratio


def test_a_52_48_split_is_a_sample_ratio_mismatch_and_an_honest_split_is_not():
    """10,400 against 9,600 under a planned 50/50 fails the check (chi² = 32, p < 0.001);
    honest coin-toss splits of 20,000 pass it in at least 99 of 100 seeds; with a
    holdout, a short holdout fails it."""
    rng = np.random.default_rng(4)
    plan = plan_of("control", "treated")
    retention = ("retention_90d",)

    def split(n_control: int, n_treated: int) -> dict:
        arms = [
            arm_of(key, members(rng, size, CONTROL_RATE, CONTROL_BASKET), metrics=retention)
            for key, size in (("control", n_control), ("treated", n_treated))
        ]
        return analyse(aggregates_of(*arms), plan)["srm"]

    srm = split(10_400, 9_600)
    assert srm["ok"] is False
    assert srm["p_value"] < 0.001
    assert srm["chi2"] == pytest.approx(32.0)  # 2 * 400² / 10,000
    assert srm["expected"] == {"control": 10_000, "treated": 10_000}

    # An honest split: each of 20,000 members a coin toss, under 100 seeds.
    passed = 0
    for seed in range(100):
        n_control = int(np.random.default_rng(seed).binomial(20_000, 0.5))
        srm = split(n_control, 20_000 - n_control)
        passed += srm["ok"] is True
    assert passed >= 99

    # With a 10% holdout the check counts the holdout against its share too.
    holdout_plan = plan_of("control", "treated", holdout=0.1)
    sizes = {"control": 9_000, "treated": 9_000, HOLDOUT: 2_000}
    arms = [
        arm_of(key, members(rng, size, CONTROL_RATE, CONTROL_BASKET), metrics=retention)
        for key, size in sizes.items()
    ]
    srm = analyse(aggregates_of(*arms), holdout_plan)["srm"]
    assert srm["ok"] is True and srm["p_value"] == pytest.approx(1.0)
    sizes = {"control": 9_000, "treated": 9_000, HOLDOUT: 1_700}
    arms = [
        arm_of(key, members(rng, size, CONTROL_RATE, CONTROL_BASKET), metrics=retention)
        for key, size in sizes.items()
    ]
    assert analyse(aggregates_of(*arms), holdout_plan)["srm"]["ok"] is False


# -- 5. agreement with statsmodels and scipy on the rows


@pytest.fixture(scope="module")
def rows() -> dict[str, dict]:
    """Unequal arms; a fifth of the members assigned less than 90 days ago (not yet
    counted for retention at 90 days)."""
    rng = np.random.default_rng(5)
    out = {
        "control": members(rng, 3000, CONTROL_RATE, CONTROL_BASKET),
        "treated": members(rng, 2600, TREATED_RATE, TREATED_BASKET),
    }
    for r in out.values():
        r["eligible"] = {90: rng.random(len(r["orders"])) < 0.8}
    return out


@pytest.fixture(scope="module")
def agreed(rows) -> dict:
    arms = [arm_of(key, r, eligible_by_horizon=r["eligible"]) for key, r in rows.items()]
    return analyse(aggregates_of(*arms), plan_of("control", "treated", correction="holm"))


def test_retention_agrees_with_statsmodels(rows, agreed):
    t_rows, c_rows = rows["treated"], rows["control"]
    t = t_rows["retained"][90][t_rows["eligible"][90]]
    c = c_rows["retained"][90][c_rows["eligible"][90]]
    count, nobs = [int(t.sum()), int(c.sum())], [len(t), len(c)]
    cell = agreed["variants"]["treated"]["metrics"]["retention_90d"]
    assert (cell["n"], cell["n_control"]) == (len(t), len(c))
    assert cell["value"] == pytest.approx(t.mean(), abs=1e-12)
    assert cell["control"] == pytest.approx(c.mean(), abs=1e-12)
    assert cell["abs_lift"] == pytest.approx(t.mean() - c.mean(), abs=1e-12)
    assert cell["p_value"] == pytest.approx(proportions_ztest(count, nobs)[1], abs=1e-9)
    low, high = confint_proportions_2indep(
        count[0], nobs[0], count[1], nobs[1], method="newcomb", compare="diff"
    )
    assert cell["abs_ci"] == [pytest.approx(low, abs=1e-9), pytest.approx(high, abs=1e-9)]
    low, high = confint_proportions_2indep(
        count[0], nobs[0], count[1], nobs[1], method="log", compare="ratio"
    )
    assert cell["rel_lift"] == pytest.approx(t.mean() / c.mean() - 1, abs=1e-12)
    assert cell["rel_ci"] == [pytest.approx(low - 1, abs=1e-9), pytest.approx(high - 1, abs=1e-9)]
    # Retention at 60 days counts everyone (no eligibility given for it).
    assert agreed["variants"]["treated"]["metrics"]["retention_60d"]["n"] == 2600


def test_revenue_per_member_agrees_with_scipy_and_statsmodels(rows, agreed):
    t, c = rows["treated"]["revenue"], rows["control"]["revenue"]
    cell = agreed["variants"]["treated"]["metrics"]["revenue_per_member"]
    assert cell["abs_lift"] == pytest.approx(t.mean() - c.mean(), abs=1e-9)
    assert cell["p_value"] == pytest.approx(stats.ttest_ind(t, c, equal_var=False).pvalue, abs=1e-9)
    low, high = CompareMeans(DescrStatsW(t), DescrStatsW(c)).tconfint_diff(usevar="unequal")
    assert cell["abs_ci"] == [pytest.approx(low, abs=1e-9), pytest.approx(high, abs=1e-9)]
    # The delta method on the ratio of the means, each arm's variance of its mean.
    ratio = t.mean() / c.mean()
    vt, vc = t.var(ddof=1) / len(t), c.var(ddof=1) / len(c)
    se = math.sqrt(vt / c.mean() ** 2 + t.mean() ** 2 * vc / c.mean() ** 4)
    assert cell["rel_lift"] == pytest.approx(ratio - 1, abs=1e-12)
    assert cell["rel_ci"] == [
        pytest.approx(ratio - 1 - Z95 * se, abs=1e-9),
        pytest.approx(ratio - 1 + Z95 * se, abs=1e-9),
    ]


@pytest.mark.parametrize("metric", ["revenue_per_member", "retention_90d", "orders_per_member"])
def test_cuped_agrees_with_ols_and_welch_on_the_adjusted_rows(rows, agreed, metric):
    """θ is the pooled OLS slope of y on [1, pre_orders, pre_spend]; the CUPED lift is
    the difference of the means of y - θ·(x - x̄), its p-value and interval Welch's on
    those per-member values."""
    key = {"revenue_per_member": "revenue", "orders_per_member": "orders"}.get(metric)
    per_arm = {}
    for arm, r in rows.items():
        counted = (
            r["eligible"][90] if metric == "retention_90d" else np.ones(len(r["orders"]), bool)
        )
        y = r["retained"][90] if key is None else r[key]
        per_arm[arm] = (y[counted], r["pre_orders"][counted], r["pre_spend"][counted])
    y = np.concatenate([v[0] for v in per_arm.values()])
    x = np.column_stack([np.concatenate([v[i] for v in per_arm.values()]) for i in (1, 2)])
    ols = sm.OLS(y, sm.add_constant(x)).fit()
    theta = ols.params[1:]

    arms = [arm_of(k, r, eligible_by_horizon=r["eligible"]) for k, r in rows.items()]
    co = [est.CoMoments(**vars(a.metrics[metric])) for a in arms]
    assert est.cuped_theta(co) == pytest.approx(theta, rel=1e-9, abs=1e-12)

    x_mean = x.mean(axis=0)
    adjusted = {
        k: yv - np.column_stack([x1, x2]) @ theta + theta @ x_mean
        for k, (yv, x1, x2) in per_arm.items()
    }
    t, c = adjusted["treated"], adjusted["control"]
    cell = agreed["variants"]["treated"]["metrics"][metric]["cuped"]
    assert cell["value"] == pytest.approx(t.mean(), abs=1e-9)
    assert cell["control"] == pytest.approx(c.mean(), abs=1e-9)
    assert cell["abs_lift"] == pytest.approx(t.mean() - c.mean(), abs=1e-9)
    assert cell["p_value"] == pytest.approx(stats.ttest_ind(t, c, equal_var=False).pvalue, abs=1e-9)
    low, high = CompareMeans(DescrStatsW(t), DescrStatsW(c)).tconfint_diff(usevar="unequal")
    assert cell["abs_ci"] == [pytest.approx(low, abs=1e-9), pytest.approx(high, abs=1e-9)]
    # The share of variance removed: the pooled regression's R².
    assert agreed["variance_reduction"][metric] == pytest.approx(ols.rsquared, abs=1e-9)


def test_aov_agrees_with_the_delta_method_on_the_rows(rows, agreed):
    def ratio_and_variance(r) -> tuple[float, float]:
        num, den = r["revenue"], r["orders"]
        n, ratio = len(num), num.sum() / den.sum()
        cov = np.cov(num, den, ddof=1)
        variance = (cov[0, 0] - 2 * ratio * cov[0, 1] + ratio**2 * cov[1, 1]) / (
            n * den.mean() ** 2
        )
        return ratio, variance

    (rt, vt), (rc, vc) = ratio_and_variance(rows["treated"]), ratio_and_variance(rows["control"])
    cell = agreed["variants"]["treated"]["metrics"]["aov"]
    assert (cell["value"], cell["control"]) == (
        pytest.approx(rt, abs=1e-9),
        pytest.approx(rc, abs=1e-9),
    )
    se = math.sqrt(vt + vc)
    assert cell["abs_ci"] == [
        pytest.approx(rt - rc - Z95 * se, abs=1e-9),
        pytest.approx(rt - rc + Z95 * se, abs=1e-9),
    ]
    assert cell["p_value"] == pytest.approx(2 * stats.norm.sf(abs(rt - rc) / se), abs=1e-9)
    rel_se = math.sqrt(vt / rc**2 + rt**2 * vc / rc**4)
    assert cell["rel_ci"] == [
        pytest.approx(rt / rc - 1 - Z95 * rel_se, abs=1e-9),
        pytest.approx(rt / rc - 1 + Z95 * rel_se, abs=1e-9),
    ]
    assert "cuped" not in cell


# -- 6. CUPED's variance reduction


def test_cuped_removes_r_squared_of_the_variance_and_narrows_the_interval():
    """y = 0.8 pre_spend + noise (pre_orders uninformative), 20,000 members per arm:
    ρ² = 0.64·900 / (0.64·900 + 400) = 0.590. The variance reduction is the direct R²
    and within 0.02 of ρ²; the CUPED interval is sqrt(1 - R²) as wide as the plain one;
    the effect is kept."""
    rng = np.random.default_rng(6)
    n, effect = 20_000, 2.0
    rho2 = 0.64 * 900 / (0.64 * 900 + 400)
    arms, xs, ys = [], [], []
    for key, shift in (("control", 0.0), ("treated", effect)):
        pre_spend = rng.gamma(4.0, 15.0, n)  # mean 60, sd 30
        pre_orders = rng.poisson(2.0, n).astype(float)
        y = 0.8 * pre_spend + rng.normal(0, 20, n) + shift
        zeros = np.zeros(n)
        arms.append(
            arm_from_rows(key, {}, zeros, y, pre_orders, pre_spend, metrics=("revenue_per_member",))
        )
        xs.append(np.column_stack([pre_orders, pre_spend]))
        ys.append(y)
    result = analyse(aggregates_of(*arms), plan_of("control", "treated"))
    x, y = np.concatenate(xs), np.concatenate(ys)
    design = np.column_stack([np.ones(len(y)), x])
    beta, *_ = np.linalg.lstsq(design, y, rcond=None)
    r2 = 1 - np.sum((y - design @ beta) ** 2) / np.sum((y - y.mean()) ** 2)
    reduction = result["variance_reduction"]["revenue_per_member"]
    assert reduction == pytest.approx(r2, abs=1e-9)
    assert reduction == pytest.approx(rho2, abs=0.02)
    assert np.corrcoef(x[:, 1], y)[0, 1] ** 2 == pytest.approx(reduction, abs=0.005)

    cell = result["variants"]["treated"]["metrics"]["revenue_per_member"]
    plain = cell["abs_ci"][1] - cell["abs_ci"][0]
    cuped = cell["cuped"]["abs_ci"][1] - cell["cuped"]["abs_ci"][0]
    assert cuped / plain == pytest.approx(math.sqrt(1 - r2), abs=0.02)
    assert covers(cell["cuped"]["abs_ci"], effect)
    assert cell["cuped"]["p_value"] < cell["p_value"]


# -- 7. multiple testing


@pytest.mark.parametrize("correction", ["holm", "fdr_bh"])
def test_adjusted_p_values_are_statsmodels_on_the_family(correction):
    """Three variants and a holdout; the family is every variant on the primary and
    guardrail metrics: against the control (the control itself excluded) and against
    the holdout (every variant)."""
    rng = np.random.default_rng(8)
    sizes = {"control": 3000, "a": 3000, "b": 3000, HOLDOUT: 1000}
    effects = {
        "control": (CONTROL_RATE, CONTROL_BASKET),
        "a": (0.33, 41.0),
        "b": (0.31, 46.0),
        HOLDOUT: (0.28, 40.0),
    }
    arms = [arm_of(k, members(rng, size, *effects[k])) for k, size in sizes.items()]
    guardrails = ["revenue_per_member", "aov", "retention_90d"]  # the primary repeated
    plan = plan_of("control", "a", "b", holdout=0.1, guardrails=guardrails, correction=correction)
    result = analyse(aggregates_of(*arms), plan)
    family = ["retention_90d", "revenue_per_member", "aov"]

    def check(variants: dict, keys: list[str]) -> None:
        cells = [variants[k]["metrics"][m] for k in keys for m in family]
        expected = multipletests([c["p_value"] for c in cells], alpha=0.05, method=correction)[1]
        assert [c["p_adjusted"] for c in cells] == pytest.approx(list(expected), abs=1e-12)
        for c in cells:
            assert c["significant"] == (c["p_adjusted"] < 0.05)
            assert c["p_adjusted"] >= c["p_value"]
        outside = [variants[k]["metrics"][m] for k in variants for m in METRICS if m not in family]
        assert all("p_adjusted" not in c for c in outside)

    check(result["variants"], ["a", "b"])
    assert all("p_adjusted" not in c for c in result["variants"]["control"]["metrics"].values())
    check(result["holdout"]["variants"], ["control", "a", "b"])
    # The family is not trivial: some adjustment changed a p-value.
    cells = [result["variants"][k]["metrics"][m] for k in ("a", "b") for m in family]
    assert any(c["p_adjusted"] > c["p_value"] * 1.5 for c in cells)
    assert any(c["p_value"] < 0.05 for c in cells)
