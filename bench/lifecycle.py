"""The lifecycle engine: a full run (RFM features, stages, transitions, triggers) over
100,000 members and 2,000,000 events, and an incremental run after 1,000 members
ordered, on SQLite and PostgreSQL; beside them the bare SQL aggregate over the same
events, so that the engine's overhead over the database's own limit shows as a ratio:
both the simplest GROUP BY (count and sum per member) and the features' own aggregate
read without writing.

BENCH_MEMBERS and BENCH_LIFECYCLE_EVENTS change the sizes, BENCH_DATABASES the
databases (default "sqlite postgresql").
"""

from __future__ import annotations

import datetime as dt
import itertools
import os
import time
from decimal import Decimal

from sqlalchemy import func, select

from app.extensions import db
from bench.setup import instance
from members import bulk, features, lifecycle_run
from members.event import Event
from members.member import Member
from simulator import dataset

MEMBERS = int(os.environ.get("BENCH_MEMBERS", "100000"))
EVENTS = int(os.environ.get("BENCH_LIFECYCLE_EVENTS", "2000000"))
AS_OF = dt.datetime(2026, 11, 23, tzinfo=dt.UTC)
EVENTS_FILLED = 0


def run() -> None:
    for kind in os.environ.get("BENCH_DATABASES", "sqlite postgresql").split():
        with instance(kind) as app, app.app_context():
            _fill()
            _measure(kind)


def _fill() -> None:
    """The virtual membership's members and events (simulator.dataset): joins over time,
    heterogeneous buyers, members drifting away, up to EVENTS events."""
    started = time.perf_counter()
    # The model makes about 0.05 events a member a day; live long enough for EVENTS.
    days = int(min(730, max(60, EVENTS / MEMBERS / 0.05)))
    filled = dataset.fill(
        db.session,
        members=MEMBERS,
        days=days,
        end=AS_OF,
        seed=5,
        max_events=EVENTS,
        commit=db.session.commit,
    )
    global EVENTS_FILLED
    EVENTS_FILLED = filled.events
    if db.session.get_bind().dialect.name == "postgresql":
        # As a nightly run finds the table: vacuumed (hint bits set, visibility map
        # current) and checkpointed, so that no measurement pays for the bulk load.
        with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
            c.exec_driver_sql("VACUUM ANALYZE")
            c.exec_driver_sql("CHECKPOINT")
    print(
        f"  (filled {MEMBERS:,} members and {EVENTS_FILLED:,} events of the simulator in "
        f"{time.perf_counter() - started:.0f}s)",
        flush=True,
    )


def _measure(kind: str) -> None:
    started = time.perf_counter()
    rows = db.session.execute(
        select(Event.member_id, func.count(), func.sum(Event.amount)).group_by(Event.member_id)
    ).all()
    bare = time.perf_counter() - started
    db.session.rollback()

    # The features' own aggregate, read and thrown away: the database's limit for
    # this computation, before the engine writes anything.
    dialect = db.session.get_bind().dialect.name
    params = {"as_of": AS_OF, **features._window_starts(AS_OF)}
    started = time.perf_counter()
    db.session.execute(features._select(dialect, None), params).all()
    aggregate = time.perf_counter() - started
    db.session.rollback()

    started = time.perf_counter()
    features.recompute(db.session, AS_OF)
    db.session.commit()
    features_only = time.perf_counter() - started

    # The first full run gives every member a stage: a transition and a trigger each.
    settled = AS_OF + dt.timedelta(minutes=10)
    first = _timed_run(now=settled, full=True)
    nightly = _timed_run(now=settled + dt.timedelta(minutes=1), full=True)

    # 1,000 members with an event each since the last run.
    some = db.session.scalars(select(Member.id).order_by(Member.id).limit(1000)).all()
    arrived = settled + dt.timedelta(minutes=2)
    rows_in = [
        {
            "event_id": f"new-{member_id}",
            "member_id": member_id,
            "type": "order",
            "occurred_at": arrived,
            "received_at": arrived,
            "properties": {},
            "amount": Decimal("99.00"),
            "currency": "CNY",
            "category": None,
        }
        for member_id in some
    ]
    bulk.insert_ignore(db.session, Event.__table__, rows_in, "event_id")
    db.session.commit()
    incremental = _timed_run(now=arrived + dt.timedelta(seconds=30), full=False)
    print(
        f"{kind}: {MEMBERS:,} members, {EVENTS_FILLED:,} events\n"
        f"  bare GROUP BY member (count, sum) over the events: {bare:.1f}s "
        f"({len(rows):,} groups)\n"
        f"  the features' aggregate alone, read, not written: {aggregate:.1f}s "
        f"({aggregate / bare:.1f}x the GROUP BY)\n"
        f"  features recomputed and written, full: {features_only:.1f}s "
        f"({features_only / aggregate:.1f}x their aggregate)\n"
        f"  first full run (features, stages, tiers; {first.changed:,} transitions and "
        f"triggers): {first.seconds:.1f}s ({MEMBERS / first.seconds:,.0f} members/s)\n"
        f"  nightly full run ({nightly.changed:,} changed): {nightly.seconds:.1f}s "
        f"({MEMBERS / nightly.seconds:,.0f} members/s; {nightly.seconds / aggregate:.1f}x "
        f"the features' aggregate, {nightly.seconds / bare:.1f}x the bare GROUP BY)\n"
        f"  incremental run after 1,000 members ordered: {incremental.members:,} members "
        f"looked at, {incremental.changed:,} changed, {incremental.seconds * 1000:.0f} ms",
        flush=True,
    )


def _timed_run(now: dt.datetime, full: bool) -> lifecycle_run.RunResult:
    started = time.perf_counter()
    marks = [("start", started)]
    result = lifecycle_run.run(
        db.session, now=now, full=full, progress=lambda s: marks.append((s, time.perf_counter()))
    )
    db.session.commit()
    marks.append(("commit", time.perf_counter()))
    result.seconds = time.perf_counter() - started  # with the commit
    steps = ", ".join(
        f"{label} {end - begin:.1f}s" for (_, begin), (label, end) in itertools.pairwise(marks)
    )
    print(f"    ({'full' if full else 'incremental'} run: {steps})", flush=True)
    return result
