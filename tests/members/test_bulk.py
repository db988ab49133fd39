"""The set-based paths write rows that read back exactly as the ORM's own do."""

import datetime as dt
from decimal import Decimal
from zoneinfo import ZoneInfo

from sqlalchemy import select

from members import bulk
from members.event import Event
from members.member import Member

SHANGHAI = ZoneInfo("Asia/Shanghai")


def test_bulk_rows_read_back_like_orm_rows(session):
    at = dt.datetime(2026, 11, 23, 21, 30, 0, 120, tzinfo=SHANGHAI)
    session.add(Member(external_id="orm", joined_at=at, attributes={}))
    session.flush()
    inserted = bulk.insert_ignore(
        session,
        Member.__table__,
        [
            {
                "external_id": "bulk",
                "joined_at": at,
                "attributes": {},
                "created_at": at,
                "updated_at": at,
            }
        ],
        "external_id",
        returning="external_id",
    )
    assert inserted == ["bulk"]
    session.expire_all()
    orm, made = (
        session.scalar(select(Member).where(Member.external_id == x)) for x in ("orm", "bulk")
    )
    for column in Member.__table__.c:
        if column.name not in ("id", "external_id", "created_at", "updated_at"):
            assert getattr(made, column.key) == getattr(orm, column.key), column.name
    assert made.joined_at == at and made.joined_at.tzinfo == dt.UTC
    assert made.timezone == "Asia/Shanghai" and made.personalised_marketing is True


def test_bulk_events_compare_and_round_trip_on_both_databases(session):
    member = Member(external_id="m", joined_at=dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
    session.add(member)
    session.flush()
    base = dt.datetime(2026, 11, 23, 8, 0, tzinfo=SHANGHAI)
    rows = [
        {
            "event_id": f"e-{i}",
            "member_id": member.id,
            "type": "order",
            "occurred_at": base + dt.timedelta(hours=i),
            "received_at": base,
            "properties": {"店": "上海", "n": i, "nested": {"a": [1, 2]}},
            "amount": Decimal("199.90"),
            "currency": "CNY",
            "category": None,
        }
        for i in range(3)
    ]
    assert sorted(bulk.insert_ignore(session, Event.__table__, rows, "event_id", "event_id")) == [
        "e-0",
        "e-1",
        "e-2",
    ]
    again = bulk.insert_ignore(session, Event.__table__, rows[:1], "event_id", "event_id")
    assert again == []  # the unique key decides: a duplicate is skipped
    # A time written by the bulk path compares with a bound parameter as the ORM's do.
    later = session.scalars(
        select(Event.event_id).where(Event.occurred_at > base + dt.timedelta(minutes=30))
    ).all()
    assert sorted(later) == ["e-1", "e-2"]
    event = session.scalar(select(Event).where(Event.event_id == "e-0"))
    assert event.occurred_at == base and event.occurred_at.tzinfo == dt.UTC
    assert event.properties == {"店": "上海", "n": 0, "nested": {"a": [1, 2]}}
    assert event.amount == Decimal("199.90") and event.category is None


def test_rows_where_in_finds_by_key(session):
    session.add_all(
        Member(external_id=x, joined_at=dt.datetime(2026, 1, 1, tzinfo=dt.UTC)) for x in "abc"
    )
    rows = bulk.rows_where_in(
        session, Member.__table__, "external_id", {"a", "c", "z"}, ("external_id",)
    )
    assert sorted(r[0] for r in rows) == ["a", "c"]
    assert bulk.rows_where_in(session, Member.__table__, "external_id", set(), ("id",)) == []


def test_naive_times_are_refused_on_both_databases(session):
    import pytest

    row = {
        "external_id": "naive",
        "joined_at": dt.datetime(2026, 1, 1, 12, 0),
        "attributes": {},
        "created_at": dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
        "updated_at": dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    }
    with pytest.raises(ValueError, match="naive datetime"):
        bulk.insert_ignore(session, Member.__table__, [row], "external_id")
