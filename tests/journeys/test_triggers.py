"""Each kind of trigger enrolls the right members at the right moment, once: tier
changes by direction, a cron schedule in the programme's time zone, a daily time in
each member's own time zone, birthdays, joining anniversaries and points expiring."""

from __future__ import annotations

import datetime as dt
import itertools

from sqlalchemy import select

from journeys import control, engine, versions
from journeys.models import Enrollment, MessageTemplate
from members.lifecycle import TierChange, Trigger
from members.loyalty import PointsLot
from members.member import Member

TZ = "Asia/Shanghai"
_names = itertools.count()


def _journey(session, trigger, at, audience=None):
    control.SETTING.save(session, control.ControlGroup(percent=0), actor="t", now=at)
    if session.scalar(select(MessageTemplate.id).where(MessageTemplate.key == "hi")) is None:
        session.add(MessageTemplate(key="hi", name="hi", channel="sms", body="hi"))
    definition = {
        "trigger": trigger,
        "entry": {"reentry": "always", "audience": audience},
        "start": "hi",
        "steps": {
            "hi": {"type": "send", "channel": "sms", "template": "hi", "next": "bye"},
            "bye": {"type": "exit"},
        },
    }
    key = f"t-{next(_names)}"
    journey = versions.create(
        session, key=key, name=key, definition_data=definition, actor="t", now=at
    )
    versions.publish(session, journey, actor="t", now=at, approver=True)
    return journey


def _member(session, **fields):
    fields.setdefault("joined_at", dt.datetime(2024, 1, 1, tzinfo=dt.UTC))
    member = Member(external_id=f"tr-{next(_names)}", **fields)
    session.add(member)
    session.flush()
    return member


def _enrolled(session, journey):
    return set(
        session.scalars(select(Enrollment.member_id).where(Enrollment.journey_id == journey.id))
    )


def test_tier_changed_by_direction_and_level(session):
    at = dt.datetime(2026, 11, 23, 2, 0, tzinfo=dt.UTC)
    ups = _journey(session, {"type": "tier_changed", "direction": "up"}, at)
    to_gold = _journey(session, {"type": "tier_changed", "to": "gold"}, at)
    climber, faller = _member(session), _member(session)
    for member, before, after in ((climber, "silver", "gold"), (faller, "diamond", "gold")):
        change = TierChange(member_id=member.id, from_tier=before, to_tier=after, at=at)
        session.add(change)
        session.flush()
        session.add(
            Trigger(
                kind="tier.changed",
                member_id=member.id,
                at=at,
                value=after,
                source_type="tier_change",
                source_id=change.id,
            )
        )
    session.flush()
    engine.tick(session, now=at, timezone=TZ)
    assert _enrolled(session, ups) == {climber.id}
    assert _enrolled(session, to_gold) == {climber.id, faller.id}


def test_a_cron_schedule_fires_once_at_its_time_in_the_programme_time_zone(session):
    start = dt.datetime(2026, 11, 23, 1, 0, tzinfo=dt.UTC)  # 09:00 in Shanghai, a Monday
    journey = _journey(session, {"type": "schedule", "cron": "0 10 * * 1"}, start)
    member = _member(session, region="上海")
    engine.tick(session, now=start, timezone=TZ)  # starts the clock
    engine.tick(session, now=start + dt.timedelta(minutes=59), timezone=TZ)
    assert _enrolled(session, journey) == set()
    engine.tick(session, now=start + dt.timedelta(minutes=61), timezone=TZ)  # 10:01
    assert _enrolled(session, journey) == {member.id}
    engine.tick(session, now=start + dt.timedelta(minutes=62), timezone=TZ)
    count = session.scalar(
        select(Enrollment.id).where(Enrollment.journey_id == journey.id).limit(2).offset(1)
    )
    assert count is None  # fired once, not again a minute later


def test_daily_at_a_time_in_each_members_own_time_zone(session):
    start = dt.datetime(2026, 11, 23, 0, 0, tzinfo=dt.UTC)
    journey = _journey(session, {"type": "schedule", "daily_at": "09:00"}, start)
    shanghai = _member(session, timezone="Asia/Shanghai")  # 09:00 there is 01:00 UTC
    london = _member(session, timezone="Europe/London")  # 09:00 there is 09:00 UTC
    engine.tick(session, now=start, timezone=TZ)
    engine.tick(session, now=start + dt.timedelta(hours=1, minutes=1), timezone=TZ)
    assert _enrolled(session, journey) == {shanghai.id}
    engine.tick(session, now=start + dt.timedelta(hours=9, minutes=1), timezone=TZ)
    assert _enrolled(session, journey) == {shanghai.id, london.id}


def test_birthday_anniversary_and_points_expiring_dates(session):
    start = dt.datetime(2026, 11, 23, 0, 0, tzinfo=dt.UTC)  # 08:00 in Shanghai
    birthdays = _journey(session, {"type": "date", "field": "birthday", "at": "10:00"}, start)
    joined = _journey(session, {"type": "date", "field": "joined", "at": "10:00"}, start)
    expiring = _journey(
        session, {"type": "date", "field": "points_expiry", "days_before": 7, "at": "10:00"}, start
    )
    today = _member(session, birthday=dt.date(1990, 11, 23))
    _member(session, birthday=dt.date(1990, 11, 24))  # tomorrow
    # Joined 23 November 2024 at 07:00 in Shanghai: 22 November in UTC.
    anniversary = _member(session, joined_at=dt.datetime(2024, 11, 22, 23, 0, tzinfo=dt.UTC))
    lots = _member(session)
    session.add(
        PointsLot(
            member_id=lots.id,
            points=100,
            remaining=100,
            earned_at=start - dt.timedelta(days=300),
            expires_at=dt.datetime(2026, 11, 30, 12, 0, tzinfo=dt.UTC),  # in 7 days, local
            source="order",
        )
    )
    session.flush()
    engine.tick(session, now=start, timezone=TZ)
    engine.tick(session, now=start + dt.timedelta(hours=2, minutes=1), timezone=TZ)  # 10:01
    assert _enrolled(session, birthdays) == {today.id}
    assert _enrolled(session, joined) == {anniversary.id}
    assert _enrolled(session, expiring) == {lots.id}
