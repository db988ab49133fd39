"""The points ledger: the balance is always the sum of the live lots, spending takes
the first to expire first, expiry and reminders run set-based, events earn once."""

import datetime as dt
import itertools

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from members import points
from members.errors import InvalidField
from members.lifecycle import Trigger
from members.loyalty import PointsEntry, PointsKind, PointsLot
from members.member import Member
from members.points import BonusDay, PointsRules
from tests import factories

T0 = dt.datetime(2026, 11, 23, 12, 0, tzinfo=dt.UTC)
DAY = dt.timedelta(days=1)
RULES = PointsRules()
_names = itertools.count()


def _member(session, birthday=None):
    member = Member(external_id=f"p-{next(_names)}", joined_at=T0, birthday=birthday)
    session.add(member)
    session.flush()
    return member


def _live_sum(session, member, now):
    return sum(lot.remaining for lot in points.live_lots(session, member.id, now))


operations = st.lists(
    st.one_of(
        st.tuples(st.just("earn"), st.integers(1, 500), st.integers(1, 400)),
        st.tuples(st.just("spend"), st.integers(1, 800), st.just(0)),
        st.tuples(st.just("adjust"), st.integers(-300, 300).filter(bool), st.integers(1, 400)),
        st.tuples(st.just("wait"), st.integers(1, 200), st.just(0)),
    ),
    max_size=25,
)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(ops=operations)
def test_the_balance_is_always_the_sum_of_live_lots(session, ops):
    member = _member(session)
    now = T0
    model: list[list] = []  # [remaining, expires_at] per lot, in earning order

    def live():
        return [lot for lot in model if lot[0] > 0 and lot[1] > now]

    for op, amount, days in ops:
        if op == "wait":
            now += amount * DAY
            points.expire_due(session, now)
            continue
        expires = now + days * DAY
        balance = sum(lot[0] for lot in live())
        if op == "earn" or (op == "adjust" and amount > 0):
            call = points.earn if op == "earn" else points.adjust
            call(
                session,
                member,
                amount,
                reason="test",
                now=now,
                rules=RULES,
                actor="t",
                expires_at=expires,
            )
            model.append([amount, expires])
            continue
        wanted = amount if op == "spend" else -amount
        if wanted > balance:
            with pytest.raises(InvalidField) as refused:
                if op == "spend":
                    points.spend(session, member, wanted, reason="t", now=now, actor="t")
                else:
                    points.adjust(
                        session, member, amount, reason="t", now=now, rules=RULES, actor="t"
                    )
            assert refused.value.field == "points"
            continue
        if op == "spend":
            points.spend(session, member, wanted, reason="t", now=now, actor="t")
        else:
            points.adjust(session, member, amount, reason="t", now=now, rules=RULES, actor="t")
        # First to expire first, then the oldest (a stable sort keeps earning order).
        for lot in sorted(live(), key=lambda lot: lot[1]):
            taken = min(lot[0], wanted)
            lot[0] -= taken
            wanted -= taken

    points.expire_due(session, now)
    session.refresh(member)
    expected = sum(lot[0] for lot in live())
    assert member.points_balance == expected == _live_sum(session, member, now)
    assert member.points_balance >= 0
    # The journal adds up to the balance too.
    journal = session.scalar(
        select(func.coalesce(func.sum(PointsEntry.points), 0)).where(
            PointsEntry.member_id == member.id
        )
    )
    assert journal == member.points_balance
    lots = session.scalars(
        select(PointsLot).where(PointsLot.member_id == member.id).order_by(PointsLot.id)
    ).all()
    assert [lot.remaining for lot in lots] == [lot[0] if lot[1] > now else 0 for lot in model]


def test_spending_more_than_the_balance_changes_nothing(session):
    member = _member(session)
    points.earn(session, member, 100, reason="gift", now=T0, rules=RULES, actor="t")
    with pytest.raises(InvalidField, match="more than the balance of 100"):
        points.spend(session, member, 101, reason="goods", now=T0, actor="t")
    assert member.points_balance == 100
    assert session.scalar(select(func.count()).select_from(PointsEntry)) == 1


def test_an_expiry_in_the_past_is_refused(session):
    member = _member(session)
    with pytest.raises(InvalidField) as refused:
        points.earn(
            session, member, 10, reason="x", now=T0, rules=RULES, actor="t", expires_at=T0 - DAY
        )
    assert refused.value.field == "expires_at"
    assert session.scalar(select(func.count()).select_from(PointsLot)) == 0


def test_an_idempotency_key_answers_the_same_twice_and_refuses_another_request(session):
    member = _member(session)
    first = points.earn(session, member, 50, reason="x", now=T0, rules=RULES, actor="t", key="k1")
    again = points.earn(session, member, 50, reason="x", now=T0, rules=RULES, actor="t", key="k1")
    assert again.replayed and again.entry.id == first.entry.id and again.balance == 50
    with pytest.raises(points.KeyReused):
        points.earn(session, member, 60, reason="x", now=T0, rules=RULES, actor="t", key="k1")
    assert member.points_balance == 50


def test_lots_expire_after_twelve_months_with_a_reminder_a_week_before(session):
    member = _member(session)
    points.earn(session, member, 300, reason="a", now=T0, rules=RULES, actor="t")
    points.earn(session, member, 200, reason="b", now=T0 + 30 * DAY, rules=RULES, actor="t")
    expiry = dt.datetime(2027, 11, 23, 12, 0, tzinfo=dt.UTC)  # 12 calendar months
    assert points.notify_expiring(session, expiry - 8 * DAY, 7) == 0
    assert points.notify_expiring(session, expiry - 6 * DAY, 7) == 1
    assert points.notify_expiring(session, expiry - 5 * DAY, 7) == 0  # once
    reminder = session.scalars(select(Trigger).where(Trigger.kind == "points.expiring")).one()
    assert (reminder.member_id, reminder.value) == (member.id, "300")
    assert points.expire_due(session, expiry) == 1
    session.refresh(member)
    assert member.points_balance == 200
    entry = session.scalars(select(PointsEntry).where(PointsEntry.kind == PointsKind.EXPIRE)).one()
    assert (entry.points, entry.at) == (-300, expiry)
    assert points.expire_due(session, expiry) == 0


def _event(session, member, type_, at, amount=None, received=None):
    event = factories.event(session, member, type_, at, amount, received_at=received)
    session.flush()
    return event


def test_a_tick_earns_from_events_once_with_bonus_days_and_birthdays(session):
    rules = PointsRules(bonus_days=(BonusDay(dt.date(2026, 11, 11), 3),))
    points.save(session, rules, actor="t", now=T0)
    plain = _member(session)
    birthday = _member(session, birthday=dt.date(1990, 11, 20))
    at = dt.datetime(2026, 11, 20, 3, 0, tzinfo=dt.UTC)  # 11:00 on 20 November in Shanghai
    _event(session, plain, "order", at, "199.90")
    _event(session, birthday, "order", at, "100")
    # 23:30 on 10 November UTC is 07:30 on 11 November in Shanghai: a bonus day.
    _event(session, plain, "order", dt.datetime(2026, 11, 10, 23, 30, tzinfo=dt.UTC), "10")
    _event(session, plain, "review", at)
    _event(session, plain, "login", at)
    result = points.tick(session, now=T0, timezone="Asia/Shanghai")
    assert (result.events, result.earned) == (4, 199 + 200 + 30 + 10)
    session.refresh(plain)
    session.refresh(birthday)
    assert (plain.points_balance, birthday.points_balance) == (239, 200)
    reasons = sorted(session.scalars(select(PointsEntry.reason)))
    assert reasons == ["order", "order ×2", "order ×3", "review"]
    again = points.tick(session, now=T0 + dt.timedelta(minutes=5), timezone="Asia/Shanghai")
    assert again.earned == 0
    session.refresh(plain)
    assert plain.points_balance == 239


def test_a_refund_takes_back_points_and_late_events_wait_to_settle(session):
    member = _member(session)
    _event(session, member, "order", T0 - DAY, "500")
    points.tick(session, now=T0, timezone="Asia/Shanghai")
    # Received 30 s ago: perhaps its transaction has not committed everywhere yet.
    _event(session, member, "refund", T0, "200", received=T0 + dt.timedelta(minutes=10))
    points.tick(session, now=T0 + dt.timedelta(minutes=10, seconds=30), timezone="Asia/Shanghai")
    session.refresh(member)
    assert member.points_balance == 500
    points.tick(session, now=T0 + dt.timedelta(minutes=12), timezone="Asia/Shanghai")
    session.refresh(member)
    assert member.points_balance == 300
    refund = session.scalars(select(PointsEntry).where(PointsEntry.kind == PointsKind.REFUND)).one()
    assert refund.points == -200 and refund.dedup_key.startswith("event:")


def test_bad_points_rules_name_the_field():
    from members.errors import InvalidFields

    document = {**PointsRules().as_dict(), "per_yuan": "-1", "expiry_months": 200}
    document["per_event"] = {"review": 10, "like": 1}
    document["bonus_days"] = [
        {"day": "2026-13-01", "multiplier": 2},
        {"day": "2026-11-11", "multiplier": 0},
    ]
    with pytest.raises(InvalidFields) as caught:
        points.parse(document)
    assert set(caught.value.errors) == {
        "per_yuan",
        "expiry_months",
        "per_event.like",
        "bonus_days.0.day",
        "bonus_days.1.multiplier",
    }
    assert points.parse(PointsRules().as_dict()) == PointsRules()


def test_a_coupon_redeemed_event_marks_the_granted_coupon_used(session):
    from decimal import Decimal

    from members.loyalty import BenefitGrant, BenefitKind

    member, other = _member(session), _member(session)
    for who, code in ((member, "TNAAA"), (member, "TNBBB"), (other, "TNAAA")):
        session.add(
            BenefitGrant(
                member_id=who.id,
                kind=BenefitKind.COUPON,
                value=Decimal(30),
                code=code,
                source="experiment_variant",
                granted_at=T0 - DAY * 3,
            )
        )
    used = T0 - DAY
    event = _event(session, member, "coupon_redeemed", used)
    event.properties = {"code": "TNAAA"}
    segment_style = _event(session, member, "coupon_redeemed", used + DAY / 2)
    segment_style.properties = {"coupon_id": "TNNONE"}  # a code nobody was granted
    session.flush()
    points.tick(session, now=T0, timezone="Asia/Shanghai")
    redeemed = {(g.member_id, g.code): g.redeemed_at for g in session.scalars(select(BenefitGrant))}
    assert redeemed[member.id, "TNAAA"].replace(tzinfo=dt.UTC) == used
    assert redeemed[member.id, "TNBBB"] is None
    assert redeemed[other.id, "TNAAA"] is None  # another member's coupon of the same code
