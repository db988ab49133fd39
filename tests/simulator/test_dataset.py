"""The virtual membership as a benchmark's data set: written in bulk, bounded by day."""

import datetime as dt

from sqlalchemy import func, select

from members.event import Event
from members.fields import normalise_phone
from members.member import Member
from simulator import dataset

END = dt.datetime(2026, 11, 23, 16, 0, tzinfo=dt.UTC)


def test_fill_writes_the_models_members_and_events(session):
    filled = dataset.fill(session, members=300, days=90, end=END, seed=3, max_events=4000)
    session.commit()
    assert filled.members == 300
    assert 1000 < filled.events <= 4000
    assert session.scalar(select(func.count()).select_from(Member)) == 300
    assert session.scalar(select(func.count()).select_from(Event)) == filled.events
    for member in session.scalars(select(Member).limit(20)):
        assert normalise_phone(member.phone) == member.phone
        assert member.attributes["sensitivity"] in ("price", "service")
    # Events fall after their member joined and no later than the end.
    early = session.scalar(
        select(func.count())
        .select_from(Event)
        .join(Member, Member.id == Event.member_id)
        .where(Event.occurred_at < Member.joined_at)
    )
    assert early == 0
    assert session.scalar(select(func.max(Event.occurred_at))) <= END
    types = set(session.scalars(select(Event.type).distinct()))
    assert {"order", "login", "app_open"} <= types
