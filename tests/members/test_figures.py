"""The year in figures: monthly active rate, buyers, repurchase, stage mix."""

import datetime as dt
from decimal import Decimal

import pytest

from members import figures
from members.event import Event
from members.lifecycle import Stage
from members.member import Member

NOW = dt.datetime(2026, 11, 20, 4, 0, tzinfo=dt.UTC)  # 12:00 in Shanghai
SHANGHAI = dt.timezone(dt.timedelta(hours=8))


def _member(session, name, joined, stage=None):
    member = Member(external_id=name, joined_at=joined, attributes={}, stage=stage)
    session.add(member)
    session.flush()
    return member


def _event(session, member, kind, at, amount=None):
    session.add(
        Event(
            event_id=f"{member.external_id}-{kind}-{at.isoformat()}",
            member_id=member.id,
            type=kind,
            occurred_at=at,
            received_at=at,
            properties={},
            amount=amount,
            currency="CNY" if amount is not None else None,
        )
    )


def test_months_count_members_active_buyers_and_returning_buyers(session):
    old = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    a = _member(session, "a", old, Stage.ACTIVE)
    b = _member(session, "b", old, Stage.DORMANT)
    c = _member(session, "c", dt.datetime(2026, 10, 15, tzinfo=dt.UTC), Stage.NEW)
    _member(session, "d", dt.datetime(2026, 11, 2, tzinfo=dt.UTC))
    # a bought in September and again in October and November: a returning buyer.
    _event(session, a, "order", dt.datetime(2026, 9, 3, tzinfo=dt.UTC), Decimal("100"))
    _event(session, a, "order", dt.datetime(2026, 10, 3, tzinfo=dt.UTC), Decimal("50"))
    _event(session, a, "order", dt.datetime(2026, 11, 3, tzinfo=dt.UTC), Decimal("70"))
    # b only visits; c's first order is in October. A login at 23:30 on 31 October in
    # Shanghai is October's, though it is 31 October 15:30 UTC.
    _event(session, b, "login", dt.datetime(2026, 10, 31, 23, 30, tzinfo=SHANGHAI))
    _event(session, c, "order", dt.datetime(2026, 10, 20, tzinfo=dt.UTC), Decimal("30"))
    # After now: not counted.
    _event(session, c, "login", NOW + dt.timedelta(minutes=30))
    session.flush()

    year = figures.monthly(session, now=NOW, timezone="Asia/Shanghai")
    assert [m.start for m in year][-3:] == [
        dt.date(2026, 9, 1),
        dt.date(2026, 10, 1),
        dt.date(2026, 11, 1),
    ]
    assert len(year) == 12
    sep, oct_, nov = year[-3:]
    assert (oct_.members, oct_.active, oct_.buyers, oct_.repeat_buyers) == (3, 3, 2, 1)
    assert oct_.orders == 2 and oct_.sales == Decimal("80")
    assert oct_.active_rate == pytest.approx(1.0)
    assert oct_.repurchase_rate == pytest.approx(0.5)
    assert (nov.members, nov.active, nov.buyers, nov.repeat_buyers) == (4, 1, 1, 1)
    assert (sep.members, sep.active, sep.buyers, sep.repeat_buyers) == (2, 1, 1, 0)
    assert year[0].members == 2 and year[0].active_rate == 0

    assert figures.stage_mix(session) == {"active": 1, "dormant": 1, "new": 1, "none": 1}
