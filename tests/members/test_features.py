"""RFM features computed in SQL agree with a plain Python reference, on both databases."""

import datetime as dt
import random
from decimal import Decimal

import pytest
from sqlalchemy import select

from members import features
from members.event import Event
from members.lifecycle import MemberFeatures
from members.member import Member
from tests import factories

AS_OF = dt.datetime(2026, 11, 23, 12, 0, tzinfo=dt.UTC)
TYPES = ["order", "order", "refund", "login", "app_open", "review", "checkin"]


def _member(session, external_id, joined_days_ago=400, erased=False):
    member = Member(
        external_id=external_id,
        joined_at=AS_OF - dt.timedelta(days=joined_days_ago),
        erased_at=AS_OF if erased else None,
    )
    session.add(member)
    session.flush()
    return member


def _event(session, member, type_, at, amount=None):
    factories.event(session, member, type_, at, amount, received_at=AS_OF)


def _reference(member, events):
    """What the features mean, written the plain way."""
    past = [e for e in events if e.occurred_at <= AS_OF]

    def within(days, e):
        return e.occurred_at > AS_OF - dt.timedelta(days=days)

    def spend(window):
        total = Decimal(0)
        for e in past:
            if window is None or within(window, e):
                if e.type == "order":
                    total += e.amount
                elif e.type == "refund":
                    total -= e.amount
        return total

    orders = [e for e in past if e.type == "order"]
    last = max((e.occurred_at for e in orders), default=None)
    visits = [e for e in past if e.type in ("login", "app_open")]
    lifetime = spend(None)
    return {
        "last_order_at": last,
        "days_since_last_order": None if last is None else (AS_OF - last).days,
        "days_since_joined": (AS_OF - member.joined_at).days,
        **{f"orders_{d}d": sum(within(d, e) for e in orders) for d in (30, 90, 365)},
        **{f"spend_{d}d": spend(d) for d in (30, 90, 365)},
        "lifetime_orders": len(orders),
        "lifetime_spend": lifetime,
        "average_order_value": (lifetime / len(orders)).quantize(Decimal("0.01"))
        if orders
        else None,
        "logins_14d": sum(within(14, e) for e in visits),
        "logins_prev_42d": sum(within(56, e) and not within(14, e) for e in visits),
    }


def _features(session, member):
    session.expire_all()
    row = session.get(MemberFeatures, member.id)
    assert row is not None
    return row


def _compare(row, expected):
    for name, value in expected.items():
        got = getattr(row, name)
        if isinstance(value, Decimal):
            assert got == pytest.approx(value, abs=Decimal("0.01")), name
        else:
            assert got == value, name


def test_random_members_match_the_reference(session):
    rng = random.Random(20261123)
    made = []
    for i in range(40):
        member = _member(session, f"m-{i}", joined_days_ago=rng.randint(0, 900))
        events = []
        for _ in range(rng.randint(0, 25)):
            type_ = rng.choice(TYPES)
            at = AS_OF - dt.timedelta(minutes=rng.randint(-3000, 500 * 24 * 60))
            amount = (
                Decimal(rng.randint(100, 99_900)) / 100 if type_ in ("order", "refund") else None
            )
            _event(session, member, type_, at, amount)
            events.append(Event(type=type_, occurred_at=at, amount=amount))
        made.append((member, events))
    session.flush()
    features.recompute(session, AS_OF)
    assert len(session.scalars(select(MemberFeatures)).all()) == 40
    for member, events in made:
        _compare(_features(session, member), _reference(member, events))


def test_window_edges_refunds_and_later_events(session):
    member = _member(session, "edge", joined_days_ago=30)
    day = dt.timedelta(days=1)
    _event(session, member, "order", AS_OF - 30 * day, Decimal("100"))  # just outside 30d
    _event(session, member, "order", AS_OF - 30 * day + dt.timedelta(seconds=1), Decimal("50"))
    _event(session, member, "refund", AS_OF - day, Decimal("20"))
    _event(session, member, "order", AS_OF, Decimal("10"))  # at as_of: inside
    _event(session, member, "order", AS_OF + dt.timedelta(seconds=1), Decimal("999"))  # later
    _event(session, member, "login", AS_OF - 14 * day)  # the earlier visit window
    _event(session, member, "app_open", AS_OF - 13 * day)
    session.flush()
    features.recompute(session, AS_OF)
    row = _features(session, member)
    assert (row.orders_30d, row.orders_90d, row.lifetime_orders) == (2, 3, 3)
    assert row.spend_30d == Decimal("40.00") and row.lifetime_spend == Decimal("140.00")
    assert row.average_order_value == Decimal("46.67")
    assert row.last_order_at == AS_OF and row.days_since_last_order == 0
    assert row.days_since_joined == 30
    assert (row.logins_14d, row.logins_prev_42d) == (1, 1)


def test_members_without_events_get_zeros_and_erased_ones_nothing(session):
    quiet = _member(session, "quiet", joined_days_ago=3)
    gone = _member(session, "gone", erased=True)
    session.flush()
    features.recompute(session, AS_OF)
    row = _features(session, quiet)
    assert (row.lifetime_orders, row.lifetime_spend, row.logins_14d) == (0, 0, 0)
    assert row.last_order_at is None and row.days_since_last_order is None
    assert row.average_order_value is None and row.days_since_joined == 3
    assert session.get(MemberFeatures, gone.id) is None


def test_a_recompute_for_some_members_touches_only_them_and_updates_in_place(session):
    one, two = _member(session, "one"), _member(session, "two")
    session.flush()
    features.recompute(session, AS_OF)
    _event(session, one, "order", AS_OF - dt.timedelta(hours=1), Decimal("88"))
    _event(session, two, "order", AS_OF - dt.timedelta(hours=1), Decimal("99"))
    session.flush()
    later = AS_OF + dt.timedelta(minutes=5)
    features.recompute(session, later, [one.id])
    assert _features(session, one).lifetime_spend == Decimal("88.00")
    assert _features(session, one).computed_at == later
    assert _features(session, two).lifetime_spend == 0  # not asked for: as before
    assert (
        session.scalar(select(MemberFeatures.computed_at).where(MemberFeatures.member_id == two.id))
        == AS_OF
    )


def test_a_naive_moment_is_refused(session):
    with pytest.raises(ValueError, match="aware"):
        features.recompute(session, AS_OF.replace(tzinfo=None))
