"""Bulk insert into the events table with its two indexes, on SQLite (rows/s)."""

from __future__ import annotations

import datetime as dt
import time
from decimal import Decimal

from sqlalchemy import insert

from app.extensions import db
from bench.setup import instance
from members.event import Event
from members.member import Member

MEMBERS = 10_000
EVENTS = 200_000
BATCH = 5_000


def run() -> None:
    with instance() as app, app.app_context():
        base = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
        db.session.execute(
            insert(Member),
            [
                {"external_id": f"m-{i}", "joined_at": base, "attributes": {}}
                for i in range(MEMBERS)
            ],
        )
        db.session.commit()
        rows = [
            {
                "event_id": f"e-{i}",
                "member_id": 1 + i % MEMBERS,
                "type": "order" if i % 5 == 0 else "login",
                "occurred_at": base + dt.timedelta(minutes=i),
                "received_at": base,
                "properties": {},
                "amount": Decimal("199.00") if i % 5 == 0 else None,
                "currency": "CNY" if i % 5 == 0 else None,
            }
            for i in range(EVENTS)
        ]
        start = time.perf_counter()
        for offset in range(0, EVENTS, BATCH):
            db.session.execute(insert(Event), rows[offset : offset + BATCH])
            db.session.commit()
        elapsed = time.perf_counter() - start
    print(
        f"events inserted: {EVENTS:,} in {elapsed:.2f}s = {EVENTS / elapsed:,.0f} rows/s "
        f"(SQLite, batches of {BATCH:,}, ORM bulk insert)"
    )
