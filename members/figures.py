"""The membership in a year of figures: per calendar month (in the programme's time
zone), how many were members, how many were active (any event: a visit, an order, a
check-in), how many bought, and what they spent; and the stage mix now.

Monthly active rate = active members / members at the month's end; buyer rate =
members who ordered / members; repeat buyers = buyers of the month who had ordered
before in the 365 days before it (the share is the month's repurchase rate).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from decimal import Decimal
from zoneinfo import ZoneInfo

from sqlalchemy import and_, case, distinct, func, select
from sqlalchemy.orm import Session, aliased

from members.event import Event
from members.member import Member


@dataclasses.dataclass(frozen=True)
class Month:
    start: dt.date  # the first day of the month
    members: int  # joined by the month's end (not erased)
    active: int
    buyers: int
    repeat_buyers: int
    orders: int
    sales: Decimal

    @property
    def active_rate(self) -> float | None:
        return self.active / self.members if self.members else None

    @property
    def repurchase_rate(self) -> float | None:
        return self.repeat_buyers / self.buyers if self.buyers else None


def monthly(session: Session, *, now: dt.datetime, timezone: str, months: int = 12) -> list[Month]:
    """The last ``months`` calendar months up to and including the current one."""
    zone = ZoneInfo(timezone)
    local = now.astimezone(zone).date().replace(day=1)
    starts = [_add_months(local, -k) for k in range(months - 1, -1, -1)]
    out = []
    for start in starts:
        begin = dt.datetime.combine(start, dt.time(0), zone).astimezone(dt.UTC)
        end = dt.datetime.combine(_add_months(start, 1), dt.time(0), zone).astimezone(dt.UTC)
        end = min(end, now)
        out.append(_month(session, start, begin, end))
    return out


def _month(session: Session, start: dt.date, begin: dt.datetime, end: dt.datetime) -> Month:
    e = Event.__table__.c
    within = and_(e.occurred_at >= begin, e.occurred_at < end)
    is_order = e.type == "order"
    active, buyers, orders, sales = session.execute(
        select(
            func.count(distinct(e.member_id)),
            func.count(distinct(case((is_order, e.member_id)))),
            func.count().filter(is_order),
            func.coalesce(func.sum(e.amount).filter(is_order), 0),
        ).where(within)
    ).one()
    earlier = aliased(Event)
    before = begin - dt.timedelta(days=365)
    repeat = session.scalar(
        select(func.count(distinct(e.member_id))).where(
            within,
            is_order,
            select(earlier.id)
            .where(
                earlier.member_id == e.member_id,
                earlier.type == "order",
                earlier.occurred_at >= before,
                earlier.occurred_at < begin,
            )
            .exists(),
        )
    )
    m = Member.__table__.c
    members = session.scalar(select(func.count()).where(m.joined_at < end, m.erased_at.is_(None)))
    return Month(start, members or 0, active, buyers, repeat or 0, orders, Decimal(sales))


def stage_mix(session: Session) -> dict[str, int]:
    """Members per stage now (members not yet placed under "none")."""
    m = Member.__table__.c
    rows = session.execute(
        select(m.stage, func.count()).where(m.erased_at.is_(None)).group_by(m.stage)
    )
    return {(stage.value if stage else "none"): n for stage, n in rows}


def _add_months(day: dt.date, k: int) -> dt.date:
    index = day.year * 12 + day.month - 1 + k
    return dt.date(index // 12, index % 12 + 1, 1)
