"""Stage history for the dashboard: members per stage per day, and the flows from
stage to stage per week, kept as small rollups by every lifecycle run so that reading
a year of history reads a few hundred rows, whatever the size of the membership.

Days and weeks are those of the programme's calendar (its timezone); a week starts on
Monday. A run's transitions all happen at its ``as_of``, so each run adds to one day
and one week.

The daily counts are exact after a full run and after the first run of a day (a
count of members by stage); the runs in between add their own transitions to them.
Members erased during the day leave the count at the next exact count.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterable
from zoneinfo import ZoneInfo

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from members import bulk
from members.lifecycle import Stage, StageDay, StageFlow, StageTransition
from members.member import Member

FIRST_STAGE = ""  # from_stage of a member's first stage in stage_flows

_days = StageDay.__table__
_flows = StageFlow.__table__


def calendar(as_of: dt.datetime, timezone: str) -> tuple[dt.date, dt.date]:
    """The programme's day of ``as_of`` and the Monday of its week."""
    day = as_of.astimezone(ZoneInfo(timezone)).date()
    return day, day - dt.timedelta(days=day.weekday())


def record(
    session: Session, *, run_id: int, as_of: dt.datetime, timezone: str, exact: bool
) -> None:
    """Add a lifecycle run's transitions to the rollups (exact: count every member)."""
    day, week = calendar(as_of, timezone)
    t = StageTransition.__table__.c
    moves = session.execute(
        select(t.from_stage, t.to_stage, func.count())
        .where(t.run_id == run_id)
        .group_by(t.from_stage, t.to_stage)
    ).all()
    _add_flows(session, week, moves)
    counted = session.scalar(select(func.count()).where(_days.c.day == day))
    if exact or not counted:
        _count_day(session, day)
        return
    delta: dict[str, int] = {}
    for from_stage, to_stage, n in moves:
        delta[to_stage.value] = delta.get(to_stage.value, 0) + n
        if from_stage is not None:
            delta[from_stage.value] = delta.get(from_stage.value, 0) - n
    for stage, n in delta.items():
        if n:
            session.execute(
                update(_days)
                .where(_days.c.day == day, _days.c.stage == stage)
                .values(members=_days.c.members + n)
            )


def _add_flows(session: Session, week: dt.date, moves: Iterable) -> None:
    rows = [
        {
            "week": week,
            "from_stage": FIRST_STAGE if from_stage is None else from_stage.value,
            "to_stage": to_stage.value,
            "members": n,
        }
        for from_stage, to_stage, n in moves
    ]
    if not rows:
        return
    insert = bulk.dialect_insert(session.get_bind().dialect.name)(_flows)
    session.execute(
        insert.on_conflict_do_update(
            index_elements=["week", "from_stage", "to_stage"],
            set_={"members": _flows.c.members + insert.excluded.members},
        ),
        rows,
    )


def _count_day(session: Session, day: dt.date) -> None:
    m = Member.__table__.c
    counts = dict.fromkeys((s.value for s in Stage), 0)
    rows = session.execute(
        select(m.stage, func.count())
        .where(m.erased_at.is_(None), m.stage.is_not(None))
        .group_by(m.stage)
    )
    counts.update({stage.value: n for stage, n in rows})
    insert = bulk.dialect_insert(session.get_bind().dialect.name)(_days)
    session.execute(
        insert.on_conflict_do_update(
            index_elements=["day", "stage"], set_={"members": insert.excluded.members}
        ),
        [{"day": day, "stage": stage, "members": n} for stage, n in counts.items()],
    )


@dataclasses.dataclass(frozen=True)
class Day:
    day: dt.date
    members: dict[Stage, int]


def daily(session: Session, first: dt.date, last: dt.date) -> list[Day]:
    """Members per stage on each day from ``first`` to ``last``. A day without a run
    carries the day before it; days before the first run count no one."""
    d = _days.c
    before = session.scalar(select(func.max(d.day)).where(d.day < first))
    rows = session.execute(
        select(d.day, d.stage, d.members)
        .where(d.day >= (before or first), d.day <= last)
        .order_by(d.day)
    )
    known: dict[dt.date, dict[Stage, int]] = {}
    for day, stage, n in rows:
        known.setdefault(day, dict.fromkeys(Stage, 0))[Stage(stage)] = n
    carried = known.get(before, dict.fromkeys(Stage, 0)) if before else dict.fromkeys(Stage, 0)
    out = []
    day = first
    while day <= last:
        carried = known.get(day, carried)
        out.append(Day(day, dict(carried)))
        day += dt.timedelta(days=1)
    return out


@dataclasses.dataclass(frozen=True)
class Flow:
    week: dt.date
    from_stage: Stage | None  # None: the member's first stage
    to_stage: Stage
    members: int


def weekly_flows(session: Session, first_week: dt.date, last_week: dt.date) -> list[Flow]:
    """The transition matrix of each week from the one holding ``first_week`` to the
    one holding ``last_week``, one row per (week, from, to) that happened."""
    f = _flows.c
    start = first_week - dt.timedelta(days=first_week.weekday())
    rows = session.execute(
        select(f.week, f.from_stage, f.to_stage, f.members)
        .where(f.week >= start, f.week <= last_week)
        .order_by(f.week, f.from_stage, f.to_stage)
    )
    return [
        Flow(week, Stage(src) if src != FIRST_STAGE else None, Stage(dst), n)
        for week, src, dst, n in rows
    ]
