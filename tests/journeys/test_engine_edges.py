"""The engine where it meets odd input and odd timing: definitions that must be refused
before they can stop the engine, one member's failure that must not stop the others,
re-entry within one pass, an event after a wait's deadline, a refused hand-off, a
migration in the middle of a wait."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select

from journeys import control, definition, engine, versions
from journeys.models import Enrollment, EnrollmentState, Message, MessageTemplate
from members.member import Member
from tests import factories

T0 = dt.datetime(2026, 11, 23, 2, 0, tzinfo=dt.UTC)
TZ = "Asia/Shanghai"
SEND_THEN_EXIT = {
    "trigger": {"type": "api"},
    "entry": {"reentry": "always"},
    "start": "hi",
    "steps": {
        "hi": {"type": "send", "channel": "sms", "template": "hi", "next": "bye"},
        "bye": {"type": "exit"},
    },
}


@pytest.mark.parametrize(
    ("change", "where"),
    [
        ({"goal": {"event": "order", "within_days": None}}, None),  # null: the default
        ({"trigger": {"type": "schedule", "cron": "0 0 31 2 *"}}, "trigger.cron"),
        ({"entry": {"audience": "(" * 30 + "orders_90d > 1" + ")" * 30}}, "entry.audience"),
        ({"start": ["hi"]}, "start"),
    ],
    ids=["null-within-days", "cron-never-fires", "deep-nesting", "start-not-text"],
)
def test_definitions_that_would_stop_the_engine_are_refused(change, where):
    clean, errors = definition.check(
        {**SEND_THEN_EXIT, **change}, definition.Known(templates={"hi": "sms"})
    )
    if where is None:
        assert errors == {} and clean["goal"]["within_days"] == 14
    else:
        assert where in errors, errors


def _setup(session, definition_data=SEND_THEN_EXIT, key="hi", body="您好"):
    control.SETTING.save(session, control.ControlGroup(percent=0), actor="t", now=T0)
    if session.scalar(select(MessageTemplate).where(MessageTemplate.key == "hi")) is None:
        session.add(MessageTemplate(key="hi", name="hi", channel="sms", body=body))
    journey = versions.create(
        session, key=key, name=key, definition_data=definition_data, actor="t", now=T0
    )
    versions.publish(session, journey, actor="t", now=T0, approver=True)
    return next(x for x in engine.live_journeys(session) if x.journey_id == journey.id)


def _members(session, n):
    made = [Member(external_id=f"e-{i}-{id(session)}") for i in range(n)]
    session.add_all(made)
    session.flush()
    return made


def test_one_members_failure_does_not_stop_the_others(session):
    live = _setup(session, body="{{ context.amount * 2 }}元")
    good, bad = _members(session, 2)
    engine.admit(
        session,
        live,
        [engine.Candidate(good.id, {"amount": 5}), engine.Candidate(bad.id, {"outcomes": 5})],
        now=T0,
        timezone=TZ,
    )
    engine.tick(session, now=T0, timezone=TZ)
    states = dict(session.execute(select(Enrollment.member_id, Enrollment.state)).all())
    assert states[good.id] == EnrollmentState.COMPLETED
    assert session.scalar(select(Message.body).where(Message.member_id == good.id)) == "10元"
    # The other member's template fails to render: the message is recorded as failed,
    # with the reason, and the member walks on.
    failed = session.scalar(select(Message).where(Message.member_id == bad.id))
    assert failed.status.value == "failed" and "template 'hi'" in failed.error


def test_two_events_of_one_member_in_one_pass_respect_reentry_never(session):
    engine.tick(session, now=T0 - dt.timedelta(hours=1), timezone=TZ)  # the event cursor
    definition_data = {
        **SEND_THEN_EXIT,
        "trigger": {"type": "event", "event": "order", "entry_key": "order_id"},
        "entry": {"reentry": "never"},
    }
    _setup(session, definition_data)
    (member,) = _members(session, 1)
    for order in ("A", "B"):
        made = factories.event(session, member, "order", T0 - dt.timedelta(minutes=5), 10)
        made.properties = {"order_id": order}
    session.flush()
    result = engine.tick(session, now=T0, timezone=TZ)
    assert (result.enrolled, result.skipped) == (1, {"reentry": 1})


def test_an_event_after_the_deadline_does_not_match(session):
    engine.tick(session, now=T0 - dt.timedelta(hours=1), timezone=TZ)
    definition_data = {
        "trigger": {"type": "api"},
        "start": "watch",
        "steps": {
            "watch": {
                "type": "wait_for_event",
                "event": "order",
                "within_days": 1,
                "matched": "yes",
                "timeout": "no",
            },
            "yes": {"type": "exit"},
            "no": {"type": "exit"},
        },
    }
    live = _setup(session, definition_data)
    (member,) = _members(session, 1)
    engine.admit(session, live, [engine.Candidate(member.id)], now=T0, timezone=TZ)
    engine.tick(session, now=T0, timezone=TZ)
    # The worker was down: the order came a day and a half later, after the deadline.
    factories.event(session, member, "order", T0 + dt.timedelta(hours=36), 10)
    session.flush()
    engine.tick(session, now=T0 + dt.timedelta(hours=40), timezone=TZ)
    enrollment = session.scalar(select(Enrollment).execution_options(populate_existing=True))
    assert enrollment.context["outcomes"]["watch"] == "timeout"


def test_a_hand_off_to_a_paused_journey_says_so(session):
    target = _setup(session, key="target")
    paused = versions.get(session, "target")
    versions.set_status(session, paused, paused.status.__class__("paused"), actor="t", now=T0)
    source = _setup(
        session,
        {
            "trigger": {"type": "api"},
            "start": "pass",
            "steps": {"pass": {"type": "handoff", "journey": "target"}},
        },
        key="source",
    )
    (member,) = _members(session, 1)
    engine.admit(session, source, [engine.Candidate(member.id)], now=T0, timezone=TZ)
    engine.tick(session, now=T0, timezone=TZ)
    enrollment = session.scalar(
        select(Enrollment)
        .where(Enrollment.journey_id == source.journey_id)
        .execution_options(populate_existing=True)
    )
    assert enrollment.exit_reason == "handoff_refused:paused"
    assert target.journey_id not in set(session.scalars(select(Enrollment.journey_id)))


def test_a_migration_in_the_middle_of_a_wait_keeps_its_deadline(session):
    waiting = {
        "trigger": {"type": "api"},
        "start": "rest",
        "steps": {"rest": {"type": "wait", "days": 7, "next": "bye"}, "bye": {"type": "exit"}},
    }
    live = _setup(session, waiting)
    (member,) = _members(session, 1)
    engine.admit(session, live, [engine.Candidate(member.id)], now=T0, timezone=TZ)
    engine.tick(session, now=T0, timezone=TZ)
    journey = versions.get(session, "hi")
    versions.save_draft(session, journey, waiting, actor="t", now=T0)
    later = T0 + dt.timedelta(days=6)
    versions.publish(session, journey, actor="t", now=later, approver=True)
    versions.migrate(session, journey, 1, {"rest": "rest"}, actor="t", now=later)
    enrollment = session.scalar(select(Enrollment).execution_options(populate_existing=True))
    assert enrollment.journey_version_id == journey.live_version_id
    assert enrollment.next_run_at == T0 + dt.timedelta(days=7)
