"""`flask --app wsgi lifecycle run` as an operator runs it."""

import datetime as dt
from decimal import Decimal

import pytest
from sqlalchemy import select

from members.event import Event
from members.lifecycle import Stage
from members.member import Member

NOW = dt.datetime(2026, 11, 23, 12, 0, tzinfo=dt.UTC)


@pytest.fixture
def cli(app):
    app.config["TENURE_CLOCK"] = lambda: NOW
    return app.test_cli_runner()


@pytest.fixture
def three_members(session):
    for name, joined, order_days_ago in (("a", 400, 3), ("b", 400, 60), ("c", 2, None)):
        member = Member(external_id=name, joined_at=NOW - dt.timedelta(days=joined))
        session.add(member)
        session.flush()
        if order_days_ago is not None:
            session.add(
                Event(
                    event_id=f"order-{name}",
                    member_id=member.id,
                    type="order",
                    occurred_at=NOW - dt.timedelta(days=order_days_ago),
                    received_at=NOW - dt.timedelta(days=order_days_ago),
                    properties={},
                    amount=Decimal("99.00"),
                    currency="CNY",
                )
            )
    session.commit()


def test_a_run_prints_how_many_members_changed_stage(cli, session, three_members):
    result = cli.invoke(args=["lifecycle", "run"])
    assert result.exit_code == 0, result.output
    assert (
        "Full run as of 2026-11-23 12:00:00 UTC: 3 members looked at, 3 changed stage: "
        "active 1, dormant 1, new 1"
    ) in result.output
    stages = dict(session.execute(select(Member.external_id, Member.stage)).all())
    assert stages == {"a": Stage.ACTIVE, "b": Stage.DORMANT, "c": Stage.NEW}
    # Then the points tick: one point per yuan of the two orders.
    assert "Points: 2 new events looked at, 198 points earned" in result.output

    again = cli.invoke(args=["lifecycle", "run"])
    assert again.exit_code == 0, again.output
    assert "Incremental run" in again.output and "0 changed stage" in again.output


def test_a_run_as_of_a_past_moment(cli, session, three_members):
    result = cli.invoke(args=["lifecycle", "run", "--full", "--as-of", "2026-11-01T08:00:00+08:00"])
    assert result.exit_code == 0, result.output
    assert "as of 2026-11-01 08:00:00 UTC+08:00" in result.output
    stages = dict(session.execute(select(Member.external_id, Member.stage)).all())
    # Three weeks earlier, b's order was 38 days old, and a's had not happened: a had
    # never bought in 378 days as a member.
    assert stages == {"a": Stage.LAPSED, "b": Stage.DORMANT, "c": Stage.NEW}


@pytest.mark.parametrize(
    ("as_of", "message"),
    [
        ("2027-01-01T00:00:00Z", "Error: --as-of: 2027-01-01T00:00:00Z is in the future"),
        ("2026-11-01", "Error: --as-of: give a time zone offset"),
        ("last week", "Error: --as-of: 'last week' is not an ISO 8601 time"),
    ],
    ids=["future", "naive", "words"],
)
def test_a_bad_as_of_is_one_line_and_changes_nothing(cli, session, three_members, as_of, message):
    result = cli.invoke(args=["lifecycle", "run", "--as-of", as_of])
    assert result.exit_code == 2
    assert result.output.strip().splitlines()[-1].startswith(message)
    assert "Traceback" not in result.output
    assert set(session.scalars(select(Member.stage))) == {None}
