"""The SQL half of the analysis on SQLite and PostgreSQL: the sums per arm that come
out of the database are those of a direct computation on the same rows, and the
figures built on them agree with statsmodels and scipy on the per-member values."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import numpy as np
import pytest
from scipy import stats as scipy_stats
from statsmodels.duration.survfunc import SurvfuncRight
from statsmodels.stats.proportion import confint_proportions_2indep, proportions_ztest

from experiments import aggregates, analysis
from experiments.models import Assignment, Experiment, ExperimentStatus, Variant
from members.event import Event
from members.loyalty import BenefitGrant, BenefitKind
from members.member import Member

AS_OF = dt.datetime(2026, 9, 1, tzinfo=dt.UTC)
START = AS_OF - dt.timedelta(days=150)
N = 1500


def _world(session, seed: int = 7):
    """N members assigned over 150 days to control / service / holdout, with orders and
    refunds before and after; returns the experiment and the per-member truth."""
    rng = np.random.default_rng(seed)
    experiment = Experiment(
        key="pack",
        name="Pack",
        salt="s",
        status=ExperimentStatus.RUNNING,
        holdout_percent=Decimal(10),
        started_at=START,
        variants=[
            Variant(key="discount", weight=50, is_control=True),
            Variant(key="service", weight=50),
        ],
    )
    session.add(experiment)
    session.flush()
    ids = {v.key: v.id for v in experiment.variants}
    members = [
        {"external_id": f"m{i}", "joined_at": START - dt.timedelta(days=400)} for i in range(N)
    ]
    session.execute(Member.__table__.insert(), members)
    member_ids = [m.id for m in session.query(Member.id).order_by(Member.id)]
    arms = rng.choice(["discount", "service", "holdout"], size=N, p=[0.45, 0.45, 0.10])
    truth = []
    assignments, events, grants = [], [], []
    for i, member_id in enumerate(member_ids):
        assigned = START + dt.timedelta(seconds=int(rng.integers(0, 150 * 86400)))
        assignments.append(
            {
                "experiment_id": experiment.id,
                "member_id": member_id,
                "variant_id": ids.get(arms[i]),
                "bucket": None,
                "source": "hash",
                "assigned_at": assigned,
                "stage": str(rng.choice(["active", "at_risk"])),
                "tier": None,
                "region": "华东",
            }
        )
        rate = 1 / (25 if arms[i] == "service" else 40)
        times = []
        for k in range(int(rng.poisson(4))):
            # from 100 days before assignment to 200 after (past as_of: not counted)
            offset = dt.timedelta(seconds=int(rng.integers(-100 * 86400, 200 * 86400)))
            if k == 0:
                offset = dt.timedelta(seconds=int(rng.exponential(1 / rate) * 86400) + 1)
            at = assigned + offset
            amount = Decimal(int(rng.lognormal(5, 1))) + Decimal("0.50")
            kind = "refund" if rng.random() < 0.1 else "order"
            events.append(
                {
                    "event_id": f"e{i}-{k}",
                    "member_id": member_id,
                    "type": kind,
                    "occurred_at": at,
                    "amount": amount,
                    "properties": {},
                }
            )
            times.append((at, kind, float(amount)))
        redeemed = arms[i] == "service" and rng.random() < 0.4
        if arms[i] != "holdout":
            grants.append(
                {
                    "member_id": member_id,
                    "kind": BenefitKind.COUPON,
                    "value": Decimal(30),
                    "cost": Decimal(30),
                    "source": "experiment_variant",
                    "source_ref": f"pack:{arms[i]}",
                    "granted_at": assigned,
                    "redeemed_at": assigned + dt.timedelta(days=3) if redeemed else None,
                }
            )
        used = redeemed and assigned + dt.timedelta(days=3) <= AS_OF
        truth.append(_member_truth(arms[i], assigned, times, used))
    session.execute(Assignment.__table__.insert(), assignments)
    session.execute(Event.__table__.insert(), events)
    session.execute(BenefitGrant.__table__.insert(), grants)
    session.flush()
    return experiment, truth


def _member_truth(arm, assigned, times, redeemed):
    after = [(at, kind, amount) for at, kind, amount in times if assigned < at <= AS_OF]
    before = [
        (at, kind, amount)
        for at, kind, amount in times
        if assigned - dt.timedelta(days=90) < at <= assigned
    ]
    firsts = [at for at, kind, _ in after if kind == "order"]
    first = (min(firsts) - assigned).total_seconds() / 86400 if firsts else None
    return {
        "arm": arm,
        "elapsed": (AS_OF - assigned).total_seconds() / 86400,
        "first": first,
        "orders": sum(kind == "order" for _, kind, _ in after),
        "revenue": sum(a if kind == "order" else -a for _, kind, a in after),
        "pre_orders": sum(kind == "order" for _, kind, _ in before),
        "pre_spend": sum(a if kind == "order" else -a for _, kind, a in before),
        "redeemed": int(redeemed),
        "cost": 30.0 if redeemed else 0.0,
    }


def _column(truth, arm, name):
    return np.array([t[name] for t in truth if t["arm"] == arm], dtype=float)


def test_sums_per_arm_are_those_of_the_rows(session):
    experiment, truth = _world(session)
    data = aggregates.aggregate(session, experiment, as_of=AS_OF, winsor_percentile=100)
    for arm in ("discount", "service", "holdout"):
        rows = [t for t in truth if t["arm"] == arm]
        got = data.arms[arm]
        assert got.n == len(rows)
        for h in (7, 30, 60, 90):
            eligible = [t for t in rows if t["elapsed"] >= h]
            kept = [t for t in eligible if t["first"] is not None and t["first"] <= h]
            sums = got.metrics[f"retention_{h}d"]
            assert (sums.n, sums.y) == (len(eligible), len(kept))
            assert sums.x[1] == pytest.approx(sum(t["pre_spend"] for t in eligible), abs=1e-6)
        revenue = got.metrics["revenue_per_member"]
        assert revenue.y == pytest.approx(sum(t["revenue"] for t in rows), abs=1e-6)
        assert revenue.yy == pytest.approx(sum(t["revenue"] ** 2 for t in rows), rel=1e-12)
        orders = got.metrics["orders_per_member"]
        assert orders.y == sum(t["orders"] for t in rows)
        assert orders.xy[0] == sum(t["orders"] * t["pre_orders"] for t in rows)
        assert got.aov.numden == pytest.approx(sum(t["revenue"] * t["orders"] for t in rows))
        assert got.metrics["redemption_rate"].y == sum(t["redeemed"] for t in rows)
        assert got.metrics["cost_per_member"].y == pytest.approx(sum(t["cost"] for t in rows))


def test_figures_agree_with_statsmodels_on_the_same_rows(session):
    experiment, truth = _world(session, seed=11)
    result = analysis.results(session, experiment, as_of=AS_OF, cuped=True)
    service = result["variants"]["service"]["metrics"]
    # retention at 30 days: the two-proportion z-test and Newcombe's interval
    eligible = [t for t in truth if t["elapsed"] >= 30]
    kept = {
        arm: sum(1 for t in eligible if t["arm"] == arm and t["first"] and t["first"] <= 30)
        for arm in ("service", "discount")
    }
    n = {arm: sum(1 for t in eligible if t["arm"] == arm) for arm in ("service", "discount")}
    _, p = proportions_ztest([kept["service"], kept["discount"]], [n["service"], n["discount"]])
    low, high = confint_proportions_2indep(
        kept["service"], n["service"], kept["discount"], n["discount"], method="newcomb"
    )
    cell = service["retention_30d"]
    assert cell["p_value"] == pytest.approx(p, abs=1e-9)
    assert cell["abs_ci"] == pytest.approx([low, high], abs=1e-9)
    assert (cell["n"], cell["n_control"]) == (n["service"], n["discount"])
    # revenue per member (winsorised at the 99th percentile, nearest rank): Welch
    revenue = np.array([t["revenue"] for t in truth])
    cap = np.sort(revenue)[int(0.99 * (len(revenue) - 1))]
    assert result["winsor_cap"] == pytest.approx(cap)
    t_rev = np.minimum(_column(truth, "service", "revenue"), cap)
    c_rev = np.minimum(_column(truth, "discount", "revenue"), cap)
    welch = scipy_stats.ttest_ind(t_rev, c_rev, equal_var=False)
    cell = service["revenue_per_member"]
    assert cell["value"] == pytest.approx(t_rev.mean(), abs=1e-9)
    assert cell["abs_lift"] == pytest.approx(t_rev.mean() - c_rev.mean(), abs=1e-9)
    assert cell["p_value"] == pytest.approx(welch.pvalue, abs=1e-9)
    # the holdout comparison is the same computation against the holdout
    h_rev = np.minimum(_column(truth, "holdout", "revenue"), cap)
    against = result["holdout"]["variants"]["service"]["metrics"]["revenue_per_member"]
    assert against["p_value"] == pytest.approx(
        scipy_stats.ttest_ind(t_rev, h_rev, equal_var=False).pvalue, abs=1e-9
    )
    assert result["srm"]["counts"]["holdout"] == len(h_rev)


def test_survival_counts_give_the_kaplan_meier_of_the_rows(session):
    experiment, truth = _world(session, seed=5)
    result = analysis.results(session, experiment, as_of=AS_OF)
    rows = [t for t in truth if t["arm"] == "service"]
    # the day a member's next purchase fell in (counted from 1), else the last whole
    # day watched, at most 90
    times, status = [], []
    for t in rows:
        if t["first"] is not None and t["first"] < 90:
            times.append(int(np.floor(t["first"])) + 1)
            status.append(1)
        else:
            times.append(int(np.floor(min(t["elapsed"], 90) + 1e-8)) + 1)
            status.append(0)
    direct = SurvfuncRight(np.array(times), np.array(status))
    curve = result["survival"]["curves"]["service"]
    assert curve["days"] == [int(d) for d in direct.surv_times]
    assert curve["survival"] == pytest.approx(list(direct.surv_prob), abs=1e-12)
    assert result["survival"]["log_rank"]["df"] == 2


def test_breakdowns_slice_the_primary_metric_by_stage(session):
    experiment, truth = _world(session, seed=3)
    data = aggregates.aggregate(session, experiment, as_of=AS_OF, primary="retention_30d")
    by_stage = data.breakdowns["stage"]
    assert set(by_stage) == {"active", "at_risk"}
    total = sum(sums.n for slice_ in by_stage.values() for sums in slice_.values())
    assert total == sum(1 for t in truth if t["elapsed"] >= 30)
    # every member is in 华东 and has no tier: one slice each, the same members
    assert set(data.breakdowns["region"]) == {"华东"}
    assert set(data.breakdowns["tier"]) == {"(none)"}
    for dimension in ("region", "tier"):
        (only,) = data.breakdowns[dimension].values()
        assert {key: sums.n for key, sums in only.items()} == {
            key: sum(s.n for slice_ in by_stage.values() for k, s in slice_.items() if k == key)
            for key in only
        }
