"""The enrollment engine on a real database: members enter by the journey's rules, walk
its steps once each, wait, convert, and leave; nothing is done twice."""

from __future__ import annotations

import datetime as dt
import itertools
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from journeys import control, engine, versions
from journeys.models import (
    Enrollment,
    EnrollmentState,
    JourneyCount,
    Message,
    MessageTemplate,
    StepRun,
)
from members import programme
from members.lifecycle import Stage, Trigger
from members.loyalty import BenefitGrant
from members.member import Member
from tests import factories

T0 = dt.datetime(2026, 11, 23, 2, 0, tzinfo=dt.UTC)  # 10:00 in Shanghai
TZ = "Asia/Shanghai"
_names = itertools.count()


def _member(session, **fields) -> Member:
    fields.setdefault("external_id", f"m-{next(_names)}")
    fields.setdefault("joined_at", T0 - dt.timedelta(days=400))
    member = Member(**fields)
    session.add(member)
    session.flush()
    return member


def _template(session, key="winback_sms", body="{{ member.name }}，送您{{ benefit.value }}元券"):
    session.add(MessageTemplate(key=key, name=key, channel="sms", body=body))
    session.flush()


def _journey(session, definition, key=None, approver=True):
    key = key or f"j-{next(_names)}"
    journey = versions.create(
        session, key=key, name=key, definition_data=definition, actor="test", now=T0
    )
    versions.publish(session, journey, actor="test", now=T0, approver=approver)
    return journey


def _no_control(session):
    control.SETTING.save(session, control.ControlGroup(percent=0), actor="test", now=T0)


WINBACK = {
    "trigger": {"type": "stage_entered", "stage": "dormant"},
    "entry": {"reentry": "never"},
    "start": "coupon",
    "steps": {
        "coupon": {
            "type": "grant",
            "benefit": "coupon",
            "value": 50,
            "threshold": 200,
            "expires_days": 3,
            "next": "tell",
        },
        "tell": {"type": "send", "channel": "sms", "template": "winback_sms", "next": "pause"},
        "pause": {"type": "wait", "days": 1, "next": "done"},
        "done": {"type": "exit"},
    },
}


def _trigger(session, member, stage="dormant", at=T0):
    session.add(Trigger(kind="stage.entered", member_id=member.id, at=at, value=stage))
    session.flush()


def _tick(session, at):
    return engine.tick(session, now=at, timezone=TZ)


def test_a_stage_trigger_walks_the_member_through_each_step_once(session):
    _no_control(session)
    _template(session)
    journey = _journey(session, WINBACK)
    member = _member(session, name="王芳", stage=Stage.DORMANT)
    _trigger(session, member)

    first = _tick(session, T0)
    assert (first.enrolled, first.steps, first.messages, first.grants) == (1, 2, 1, 1)
    enrollment = session.scalar(select(Enrollment).where(Enrollment.journey_id == journey.id))
    assert (enrollment.state, enrollment.current_step) == (EnrollmentState.WAITING, "pause")
    message = session.scalar(select(Message))
    assert message.body == "王芳，送您50元券"
    assert message.dedup_key == f"enrollment:{enrollment.id}:2"
    grant = session.scalar(select(BenefitGrant))
    assert (grant.value, grant.threshold) == (Decimal(50), Decimal(200))
    assert grant.expires_at == T0 + dt.timedelta(days=3)

    again = _tick(session, T0 + dt.timedelta(hours=1))  # the wait is not over
    assert (again.enrolled, again.steps, again.messages) == (0, 0, 0)

    done = _tick(session, T0 + dt.timedelta(days=1))
    assert done.steps == 2
    session.refresh(enrollment)
    assert (enrollment.state, enrollment.exit_reason) == (EnrollmentState.COMPLETED, "completed")
    assert session.scalar(select(func.count()).select_from(Message)) == 1
    assert session.scalar(select(func.count()).select_from(BenefitGrant)) == 1
    path = session.scalars(select(StepRun.step).order_by(StepRun.seq)).all()
    assert path == ["coupon", "tell", "pause", "done"]


def test_a_trigger_is_read_once_and_never_re_enrolls_under_reentry_never(session):
    _no_control(session)
    _template(session)
    journey = _journey(session, WINBACK)
    member = _member(session, stage=Stage.DORMANT)
    _trigger(session, member)
    _tick(session, T0)
    _tick(session, T0)  # the same trigger is not read again
    _trigger(session, member, at=T0 + dt.timedelta(days=40))
    later = _tick(session, T0 + dt.timedelta(days=40))
    assert later.skipped == {"reentry": 1}
    assert session.scalar(select(func.count()).select_from(Enrollment)) == 1
    counted = session.scalar(
        select(JourneyCount.count).where(
            JourneyCount.journey_id == journey.id, JourneyCount.reason == "reentry"
        )
    )
    assert counted == 1


def test_an_erased_member_is_skipped_and_counted_without_stopping_the_tick(session):
    _no_control(session)
    _template(session)
    _journey(session, WINBACK)
    gone = _member(session, erased_at=T0 - dt.timedelta(days=1))
    present = _member(session)
    _trigger(session, gone)
    _trigger(session, present)
    result = _tick(session, T0)
    assert result.enrolled == 1
    assert result.skipped == {"erased": 1}


def test_the_audience_filter_keeps_out_members_who_do_not_match(session):
    _no_control(session)
    _template(session)
    definition = {**WINBACK, "entry": {"audience": "region = '上海' and points_balance >= 100"}}
    _member(session, region="上海", points_balance=500)  # so that the audience is not empty
    _journey(session, definition)
    inside = _member(session, region="上海", points_balance=100)
    outside = _member(session, region="北京", points_balance=900)
    _trigger(session, inside)
    _trigger(session, outside)
    result = _tick(session, T0)
    assert (result.enrolled, result.skipped) == (1, {"audience": 1})


def test_the_global_control_group_is_deterministic_and_sticky(session):
    control.SETTING.save(session, control.ControlGroup(percent=Decimal(20)), actor="t", now=T0)
    _template(session)
    _journey(session, {**WINBACK, "entry": {"reentry": "always"}})
    members = [_member(session) for _ in range(100)]
    for member in members:
        _trigger(session, member)
    result = _tick(session, T0)
    held = result.skipped["global_control"]
    assert 8 <= held <= 35 and result.enrolled == 100 - held
    group, _ = control.SETTING.load(session)
    expected = {m.id for m in members if group.holds(control.bucket(group.salt, m.external_id))}
    recorded = set(session.scalars(select(control.GlobalControl.member_id)))
    assert recorded == expected
    # Lowering the share keeps those already in: nobody is reshuffled.
    control.SETTING.save(
        session, control.ControlGroup(percent=Decimal(0), salt=group.salt), actor="t", now=T0
    )
    assert control.members_in(session, [(m.id, m.external_id) for m in members], T0) == expected


def test_a_holdout_is_recorded_not_messaged_and_converts_like_the_others(session):
    _no_control(session)
    _template(session)
    definition = {
        **WINBACK,
        "entry": {"holdout_percent": 50},
        "goal": {"event": "order", "within_days": 7},
    }
    _journey(session, definition)
    members = [_member(session) for _ in range(30)]
    for member in members:
        _trigger(session, member)
    result = _tick(session, T0)
    assert result.held_out + result.enrolled == 30 and 5 <= result.held_out <= 25
    held = session.scalars(
        select(Enrollment).where(Enrollment.state == EnrollmentState.HELD_OUT)
    ).all()
    messaged = set(session.scalars(select(Message.member_id)))
    assert not messaged & {e.member_id for e in held}
    # An order within the goal's window converts a held-out member too.
    factories.event(
        session, session.get(Member, held[0].member_id), "order", T0 + dt.timedelta(hours=5), 99
    )
    session.flush()
    converted = _tick(session, T0 + dt.timedelta(hours=6))
    assert converted.converted == 1
    session.refresh(held[0])
    assert held[0].converted_at == T0 + dt.timedelta(hours=5)
    # When the window is over, the held-out enrollments end, still held out (reports
    # tell them from the others by their state).
    _tick(session, T0 + dt.timedelta(days=8))
    session.refresh(held[0])
    assert (held[0].state, held[0].exit_reason) == (EnrollmentState.HELD_OUT, "holdout_window_over")
    assert held[0].next_run_at is None


def _first_tick_sets_the_event_cursor(session):
    engine.tick(session, now=T0 - dt.timedelta(hours=1), timezone=TZ)


def test_an_event_with_an_entry_key_enrolls_once_per_key(session):
    _no_control(session)
    _template(session, key="thanks", body="谢谢您的订单 {{ context.event.amount }}")
    _first_tick_sets_the_event_cursor(session)
    definition = {
        "trigger": {
            "type": "event",
            "event": "order",
            "filter": "amount >= 200",
            "entry_key": "order_id",
        },
        "entry": {"reentry": "always"},
        "start": "thanks",
        "steps": {
            "thanks": {"type": "send", "channel": "sms", "template": "thanks", "next": "end"},
            "end": {"type": "exit"},
        },
    }
    _journey(session, definition)
    member = _member(session)
    for amount, order in ((250, "A1"), (250, "A1"), (120, "A2"), (300, "A3")):
        made = factories.event(session, member, "order", T0 - dt.timedelta(minutes=5), amount)
        made.properties = {"order_id": order}
    session.flush()
    result = _tick(session, T0)
    assert result.enrolled == 2  # A1 once, A3; A2 is below the filter
    assert result.skipped == {"already_in": 1}
    keys = set(session.scalars(select(Enrollment.entry_key)))
    assert keys == {"A1", "A3"}
    assert sorted(session.scalars(select(Message.body))) == [
        "谢谢您的订单 250.00",
        "谢谢您的订单 300.00",
    ]


WAIT_FOR_ORDER = {
    "trigger": {"type": "api"},
    "start": "watch",
    "steps": {
        "watch": {
            "type": "wait_for_event",
            "event": "order",
            "filter": "amount >= 100",
            "within_days": 3,
            "matched": "bought",
            "timeout": "nudge",
        },
        "bought": {"type": "exit"},
        "nudge": {"type": "exit"},
    },
}


@pytest.mark.parametrize(
    ("amount", "outcome"), [(150, "matched"), (50, "timeout")], ids=["matched", "filtered"]
)
def test_wait_for_event_takes_the_matched_exit_or_times_out(session, amount, outcome):
    _no_control(session)
    _first_tick_sets_the_event_cursor(session)
    journey = _journey(session, WAIT_FOR_ORDER)
    member = _member(session)
    live = next(x for x in engine.live_journeys(session) if x.journey_id == journey.id)
    enrollment, reason = engine.enroll(
        session, live, member, context={"source": "test"}, entry_key=None, now=T0, timezone=TZ
    )
    assert reason is None
    _tick(session, T0)
    session.refresh(enrollment)
    assert (enrollment.state, enrollment.waiting_for) == (EnrollmentState.WAITING, "order")

    factories.event(session, member, "order", T0 + dt.timedelta(hours=2), amount)
    session.flush()
    _tick(session, T0 + dt.timedelta(hours=3))  # the event settles a minute after receipt
    session.refresh(enrollment)
    if outcome == "matched":
        assert enrollment.state == EnrollmentState.COMPLETED
        assert enrollment.context["outcomes"]["watch"] == "matched"
        assert enrollment.context["event"]["amount"] == "150.00"
        return
    assert enrollment.state == EnrollmentState.WAITING
    _tick(session, T0 + dt.timedelta(days=3))
    session.refresh(enrollment)
    assert enrollment.state == EnrollmentState.COMPLETED
    assert enrollment.context["outcomes"]["watch"] == "timeout"


def test_the_daily_cap_admits_so_many_members_a_day(session):
    _no_control(session)
    _template(session)
    _journey(session, {**WINBACK, "entry": {"daily_cap": 3}})
    for _ in range(5):
        _trigger(session, _member(session))
    result = _tick(session, T0)
    assert (result.enrolled, result.skipped) == (3, {"daily_cap": 2})


def test_a_goal_converts_and_exits_the_member_when_the_journey_says_so(session):
    _no_control(session)
    _template(session)
    _first_tick_sets_the_event_cursor(session)
    definition = {
        **WINBACK,
        "entry": {"exit": "on_conversion"},
        "goal": {"event": "order", "filter": "amount >= 100", "within_days": 7},
    }
    _journey(session, definition)
    member = _member(session)
    _trigger(session, member)
    _tick(session, T0)
    factories.event(session, member, "order", T0 + dt.timedelta(hours=1), 80)
    factories.event(session, member, "order", T0 + dt.timedelta(hours=2), 180)
    session.flush()
    result = _tick(session, T0 + dt.timedelta(hours=3))
    assert result.converted == 1
    enrollment = session.scalar(select(Enrollment))
    assert enrollment.state == EnrollmentState.CONVERTED
    assert enrollment.converted_at == T0 + dt.timedelta(hours=2)


def test_a_programme_setting_exists_for_the_control_group(session):
    assert programme.load(session, "global_control") is None
    group, version = control.SETTING.load(session)
    assert (group.percent, version) == (Decimal(5), 0)


def test_a_message_reads_the_members_points_expiring_and_next_tier(session):
    from members.loyalty import PointsLot

    _no_control(session)
    session.add(
        MessageTemplate(
            key="expiring",
            name="expiring",
            channel="sms",
            body="{{ member.points_expiring }}分将于{{ member.points_expiring_at|date }}过期，"
            "再消费{{ member.spend_to_next_tier|money }}升级{{ member.next_tier }}",
        )
    )
    definition = {
        "trigger": {"type": "api"},
        "start": "tell",
        "steps": {
            "tell": {"type": "send", "channel": "sms", "template": "expiring", "next": "end"},
            "end": {"type": "exit"},
        },
    }
    journey = _journey(session, definition)
    member = _member(session, tier="silver")
    session.add(
        PointsLot(
            member_id=member.id,
            points=300,
            remaining=300,
            earned_at=T0 - dt.timedelta(days=300),
            expires_at=dt.datetime(2026, 11, 30, 15, 0, tzinfo=dt.UTC),  # 30 Nov, 23:00 local
            source="order",
        )
    )
    session.flush()
    live = next(x for x in engine.live_journeys(session) if x.journey_id == journey.id)
    engine.admit(session, live, [engine.Candidate(member.id)], now=T0, timezone=TZ)
    _tick(session, T0)
    body = session.scalar(select(Message.body))
    assert body.startswith("300分将于11月30日过期，再消费")
    assert body.endswith("元升级金卡")
