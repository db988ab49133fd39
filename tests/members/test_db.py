import datetime as dt
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select
from sqlalchemy.exc import StatementError

from members.member import Member


def test_timestamps_come_back_in_utc_whatever_offset_went_in(session):
    shanghai = dt.datetime(2026, 11, 23, 21, 30, tzinfo=ZoneInfo("Asia/Shanghai"))
    session.add(Member(external_id="m-1", joined_at=shanghai))
    session.flush()
    session.expire_all()
    joined = session.scalar(select(Member.joined_at).where(Member.external_id == "m-1"))
    assert joined == shanghai
    assert joined.tzinfo == dt.UTC
    assert joined.hour == 13


def test_naive_timestamps_are_refused(session):
    session.add(Member(external_id="m-2", joined_at=dt.datetime(2026, 1, 1, 12, 0)))
    with pytest.raises(StatementError, match="naive datetime"):
        session.flush()
