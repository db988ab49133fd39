"""Experiment results: an experiment with 3 arms (two variants and a holdout),
1,000,000 assigned members and 5,000,000 orders and refunds; prints the seconds of a
full results computation (every metric, CUPED, the sample-ratio test, Kaplan-Meier
and log-rank, breakdowns), split into the SQL aggregation and the statistics, with
the peak Python memory of the computation (bounded by arms, not members), on SQLite
and PostgreSQL. Target: under 10 s on PostgreSQL.

BENCH_MEMBERS and BENCH_ORDERS change the size, BENCH_DATABASES the databases.
"""

from __future__ import annotations

import datetime as dt
import os
import time
import tracemalloc
from decimal import Decimal

import numpy as np
from sqlalchemy import select, text

from app.extensions import db
from bench.setup import instance
from experiments import aggregates, analysis
from experiments.models import Assignment, Experiment, ExperimentStatus, Variant
from members import bulk
from members.event import Event
from members.member import Member
from simulator import dataset

MEMBERS = int(os.environ.get("BENCH_MEMBERS", "1000000"))
ORDERS = int(os.environ.get("BENCH_ORDERS", "5000000"))
CHUNK = 50_000
AS_OF = dt.datetime(2026, 9, 1, tzinfo=dt.UTC)
START = AS_OF - dt.timedelta(days=150)


def run() -> None:
    for kind in os.environ.get("BENCH_DATABASES", "sqlite postgresql").split():
        with instance(kind) as app, app.app_context():
            started = time.perf_counter()
            experiment = _prepare()
            print(
                f"{kind}: {MEMBERS:,} members, {ORDERS:,} orders loaded in "
                f"{time.perf_counter() - started:.0f} s",
                flush=True,
            )
            _measure(kind, experiment)


def _prepare() -> Experiment:
    session = db.session
    experiment = Experiment(
        key="bench",
        name="Service vs discount",
        salt="bench",
        status=ExperimentStatus.RUNNING,
        holdout_percent=Decimal(10),
        started_at=START,
        primary_metric="retention_90d",
        guardrail_metrics={"metrics": ["revenue_per_member", "cost_per_member"]},
        variants=[
            Variant(key="discount", weight=50, is_control=True),
            Variant(key="service", weight=50),
        ],
    )
    session.add(experiment)
    session.commit()
    arms = [v.id for v in experiment.variants] + [None]
    rng = np.random.default_rng(1)
    per_member = ORDERS / MEMBERS
    people = dataset.People(MEMBERS, joined=START - dt.timedelta(days=400), seed=1)
    event_id = 0
    for first in range(0, MEMBERS, CHUNK):
        count = min(CHUNK, MEMBERS - first)
        _members(people, first, count)
        newest = select(Member.id).order_by(Member.id.desc()).limit(count)
        ids = session.scalars(newest).all()[::-1]
        arm = rng.choice(3, size=count, p=[0.45, 0.45, 0.10])
        assigned = rng.integers(0, 150 * 86400, size=count)
        bulk.insert_rows(
            session,
            Assignment.__table__,
            [
                {
                    "experiment_id": experiment.id,
                    "member_id": member_id,
                    "variant_id": arms[arm[i]],
                    "bucket": None,
                    "source": "hash",
                    "assigned_at": START + dt.timedelta(seconds=int(assigned[i])),
                    "stage": ("active", "at_risk", "dormant")[i % 3],
                    "tier": ("silver", "gold")[i % 2],
                    "region": ("华东", "华南", "华北", "西南")[i % 4],
                }
                for i, member_id in enumerate(ids)
            ],
        )
        orders = rng.poisson(per_member, size=count)
        owners = np.repeat(np.arange(count), orders)
        offsets = rng.integers(-120 * 86400, 150 * 86400, size=len(owners))
        amounts = np.round(rng.lognormal(5, 1, size=len(owners)), 2)
        refunds = rng.random(len(owners)) < 0.05
        rows = []
        for j, owner in enumerate(owners):
            event_id += 1
            rows.append(
                {
                    "event_id": f"e{event_id}",
                    "member_id": ids[owner],
                    "type": "refund" if refunds[j] else "order",
                    "occurred_at": START + dt.timedelta(seconds=int(assigned[owner] + offsets[j])),
                    "received_at": AS_OF,
                    "properties": {},
                    "amount": Decimal(str(amounts[j])),
                    "currency": "CNY",
                }
            )
        for start in range(0, len(rows), CHUNK):
            bulk.insert_rows(session, Event.__table__, rows[start : start + CHUNK])
        session.commit()
    session.execute(text("ANALYZE"))  # fresh statistics, as autovacuum would leave them
    session.commit()
    return experiment


def _members(people: dataset.People, first: int, count: int) -> None:
    """The simulator's people: names, phones of their regions, time zones."""
    bulk.insert_rows(db.session, Member.__table__, people.rows(first, first + count))


def _measure(kind: str, experiment: Experiment) -> None:
    session = db.session
    for run_ in (1, 2):  # the second run with a warm cache
        tracemalloc.start()
        started = time.perf_counter()
        data = aggregates.aggregate(session, experiment, as_of=AS_OF)
        middle = time.perf_counter()
        result = analysis.analyse(data, analysis.plan_of(experiment), cuped=True)
        ended = time.perf_counter()
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        session.rollback()
        n = sum(arm.n for arm in data.arms.values())
        print(
            f"{kind} run {run_}: {ended - started:.2f} s for the full results of {n:,} "
            f"members (SQL aggregation {middle - started:.2f} s, statistics "
            f"{ended - middle:.2f} s), peak Python memory {peak / 1e6:.1f} MB; "
            f"survival rows {sum(len(a.survival) for a in data.arms.values())}",
            flush=True,
        )
    lift = result["variants"]["service"]["metrics"]["retention_90d"]
    print(f"{kind}: retention_90d service vs discount {lift['rel_lift']:+.3%}", flush=True)


if __name__ == "__main__":
    run()
