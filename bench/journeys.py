"""The journey engine: 100,000 active enrollments across the five ready-made journeys,
ticked until all are done in simulated time; then one tick of 10,000 due enrollments.
Prints enrollments advanced, step executions and messages written per second, and
batches (what a job carries) per second, on SQLite and PostgreSQL.

BENCH_ENROLLMENTS changes the size, BENCH_DATABASES the databases (default "sqlite
postgresql").
"""

from __future__ import annotations

import datetime as dt
import os
import random
import time

from sqlalchemy import func, select, update

from app.extensions import db
from bench.setup import instance
from journeys import control, engine, ready_made, versions
from journeys.models import Enrollment, Journey, Message
from members import bulk
from members.lifecycle import MemberFeatures, Stage
from members.member import Member
from simulator import dataset

ENROLLMENTS = int(os.environ.get("BENCH_ENROLLMENTS", "100000"))
ONE_TICK = 10_000
T0 = dt.datetime(2026, 11, 23, 2, 0, tzinfo=dt.UTC)
TZ = "Asia/Shanghai"
CHUNK = 20_000


def run() -> None:
    for kind in os.environ.get("BENCH_DATABASES", "sqlite postgresql").split():
        with instance(kind) as app, app.app_context():
            lives = _prepare(ENROLLMENTS + ONE_TICK)
            _measure_all(kind, lives)
            _measure_one_tick(kind, lives)


def _prepare(members: int) -> list[engine.Live]:
    started = time.perf_counter()
    rng = random.Random(6)  # noqa: S311 (reproducible test data)
    # The virtual membership's people (names, phones, regions, sensitivity); stages
    # and features spread at random, so that every journey has its audience.
    dataset.members_only(
        db.session, members, joined=T0 - dt.timedelta(days=400), seed=6, commit=db.session.commit
    )
    stages = list(Stage)
    for i, stage in enumerate(stages):
        db.session.execute(update(Member).where(Member.id % len(stages) == i).values(stage=stage))
    ids = db.session.scalars(select(Member.id).order_by(Member.id)).all()
    for start in range(0, len(ids), CHUNK):
        bulk.insert_ignore(
            db.session,
            MemberFeatures.__table__,
            [
                {
                    "member_id": member_id,
                    "computed_at": T0,
                    "days_since_last_order": rng.randint(0, 200),
                }
                for member_id in ids[start : start + CHUNK]
            ],
            "member_id",
        )
    control.SETTING.save(db.session, control.ControlGroup(percent=0), actor="bench", now=T0)
    ready_made.install_all(db.session, actor="bench", now=T0, publish=False)
    # Every member active: no holdout, no audience (VIP care's is for birthdays).
    for journey in db.session.scalars(select(Journey)):
        definition = dict(versions.latest(journey).definition)
        definition["entry"] = {**definition["entry"], "holdout_percent": 0, "audience": None}
        versions.save_draft(db.session, journey, definition, actor="bench", now=T0)
        versions.publish(db.session, journey, actor="bench", now=T0, approver=True)
    db.session.commit()
    if db.session.get_bind().dialect.name == "postgresql":
        with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
            c.exec_driver_sql("VACUUM ANALYZE")
    print(f"  (prepared {members:,} members in {time.perf_counter() - started:.0f}s)")
    return engine.live_journeys(db.session)


def _admit(lives: list[engine.Live], ids: list[int], now: dt.datetime) -> float:
    started = time.perf_counter()
    for index, live in enumerate(lives):
        mine = ids[index :: len(lives)]
        engine.admit(db.session, live, [engine.Candidate(i) for i in mine], now=now, timezone=TZ)
        db.session.commit()
    return time.perf_counter() - started


def _measure_all(kind: str, lives: list[engine.Live]) -> None:
    ids = db.session.scalars(select(Member.id).order_by(Member.id).limit(ENROLLMENTS)).all()
    admitted = _admit(lives, ids, T0)
    now, ticks = T0, 0
    total = engine.TickResult()
    busy = 0.0
    while True:
        started = time.perf_counter()
        result = engine.tick(db.session, now=now, timezone=TZ, commit=db.session.commit)
        db.session.commit()
        busy += time.perf_counter() - started
        total.add(result)
        ticks += 1
        due = db.session.scalar(
            select(func.min(Enrollment.next_run_at)).where(Enrollment.state.in_(engine.DUE))
        )
        if due is None:
            break
        now = max(due, now + dt.timedelta(minutes=1))
    messages = db.session.scalar(select(func.count()).select_from(Message))
    print(
        f"{kind}: {len(ids):,} enrollments across {len(lives)} journeys, admitted in "
        f"{admitted:.1f}s ({len(ids) / admitted:,.0f}/s)\n"
        f"  {ticks} ticks in simulated time, {busy:.1f}s busy: {total.advanced:,} "
        f"enrollments advanced ({total.advanced / busy:,.0f}/s), {total.steps:,} step "
        f"executions ({total.steps / busy:,.0f}/s), {messages:,} messages written "
        f"({messages / busy:,.0f}/s), {total.batches:,} batches ({total.batches / busy:,.1f}/s)",
        flush=True,
    )


def _measure_one_tick(kind: str, lives: list[engine.Live]) -> None:
    ids = db.session.scalars(
        select(Member.id).order_by(Member.id).offset(ENROLLMENTS).limit(ONE_TICK)
    ).all()
    later = T0 + dt.timedelta(days=400)
    _admit(lives, ids, later)
    started = time.perf_counter()
    result = engine.tick(db.session, now=later, timezone=TZ, commit=db.session.commit)
    db.session.commit()
    seconds = time.perf_counter() - started
    print(
        f"  one tick of {result.advanced:,} due enrollments: {seconds:.2f}s "
        f"({result.steps:,} step executions, {result.messages:,} messages, "
        f"{result.grants:,} grants)",
        flush=True,
    )
