"""The lifecycle engine's RFM features: a full recompute of 100,000 members over
2,000,000 events, and an incremental pass for 1,000 members, on SQLite and
PostgreSQL; beside them the bare SQL aggregate over the same events, so that the
engine's overhead over the database's own limit shows as a ratio.

BENCH_MEMBERS and BENCH_LIFECYCLE_EVENTS change the sizes, BENCH_DATABASES the
databases (default "sqlite postgresql").
"""

from __future__ import annotations

import datetime as dt
import os
import random
import time
from decimal import Decimal

from sqlalchemy import func, select, text

from app.extensions import db
from bench.setup import instance
from members import bulk, features
from members.event import Event
from members.member import Member

MEMBERS = int(os.environ.get("BENCH_MEMBERS", "100000"))
EVENTS = int(os.environ.get("BENCH_LIFECYCLE_EVENTS", "2000000"))
AS_OF = dt.datetime(2026, 11, 23, tzinfo=dt.UTC)
CHUNK = 20_000
TYPES = ("order", "order", "login", "login", "app_open", "refund", "review")


def run() -> None:
    for kind in os.environ.get("BENCH_DATABASES", "sqlite postgresql").split():
        with instance(kind) as app, app.app_context():
            _fill()
            _measure(kind)


def _fill() -> None:
    started = time.perf_counter()
    joined = AS_OF - dt.timedelta(days=720)
    for start in range(0, MEMBERS, CHUNK):
        bulk.insert_ignore(
            db.session,
            Member.__table__,
            [
                {
                    "external_id": f"m-{i}",
                    "joined_at": joined + dt.timedelta(minutes=i),
                    "attributes": {},
                    "created_at": AS_OF,
                    "updated_at": AS_OF,
                }
                for i in range(start, min(start + CHUNK, MEMBERS))
            ],
            "external_id",
        )
        db.session.commit()
    ids = db.session.scalars(select(Member.id)).all()
    rng = random.Random(5)  # noqa: S311 (reproducible test data)
    for start in range(0, EVENTS, CHUNK):
        rows = []
        for i in range(start, min(start + CHUNK, EVENTS)):
            type_ = rng.choice(TYPES)
            money = type_ in ("order", "refund")
            rows.append(
                {
                    "event_id": f"e-{i}",
                    "member_id": rng.choice(ids),
                    "type": type_,
                    "occurred_at": AS_OF - dt.timedelta(minutes=rng.randint(0, 400 * 24 * 60)),
                    "received_at": AS_OF,
                    "properties": {},
                    "amount": Decimal(rng.randint(1000, 50000)) / 100 if money else None,
                    "currency": "CNY" if money else None,
                    "category": None,
                }
            )
        bulk.insert_ignore(db.session, Event.__table__, rows, "event_id")
        db.session.commit()
    if db.session.get_bind().dialect.name == "postgresql":
        db.session.execute(text("ANALYZE"))
        db.session.commit()
    print(
        f"  (filled {MEMBERS:,} members and {EVENTS:,} events in "
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

    started = time.perf_counter()
    features.recompute(db.session, AS_OF)
    db.session.commit()
    full = time.perf_counter() - started

    some = db.session.scalars(select(Member.id).order_by(Member.id).limit(1000)).all()
    started = time.perf_counter()
    features.recompute(db.session, AS_OF + dt.timedelta(minutes=1), some)
    db.session.commit()
    incremental = time.perf_counter() - started
    print(
        f"{kind}: full recompute of {MEMBERS:,} members over {EVENTS:,} events "
        f"{full:.1f}s ({MEMBERS / full:,.0f} members/s); bare GROUP BY over the events "
        f"{bare:.1f}s ({len(rows):,} groups), ratio {full / bare:.1f}x; "
        f"incremental pass for 1,000 members {incremental * 1000:.0f} ms",
        flush=True,
    )
