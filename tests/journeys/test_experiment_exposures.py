"""An experiment split in a journey: the member is assigned once, granted the
variant's benefit package once, and exposed when the package is granted and when a
message down the variant's path goes out."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from sqlalchemy import select

from experiments.models import Assignment, Experiment, ExperimentStatus, Exposure, Variant
from journeys import control, delivery, engine, versions
from journeys.models import Message, MessageStatus, MessageTemplate
from members.loyalty import BenefitGrant
from members.member import Member

T0 = dt.datetime(2026, 11, 23, 4, 0, tzinfo=dt.UTC)  # 12:00 in Shanghai: no quiet hours
SPLIT = {
    "trigger": {"type": "api"},
    "entry": {"reentry": "never"},
    "start": "pick",
    "steps": {
        "pick": {
            "type": "experiment_split",
            "experiment": "pack",
            "variants": {"discount": "tell", "service": "tell"},
        },
        "tell": {"type": "send", "channel": "sms", "template": "hi", "next": "end"},
        "end": {"type": "exit"},
    },
}


def test_a_split_grants_the_package_and_a_delivered_message_is_an_exposure(session):
    control.SETTING.save(session, control.ControlGroup(percent=0), actor="t", now=T0)
    session.add(MessageTemplate(key="hi", name="hi", channel="sms", body="您好"))
    coupon = [{"benefit": "coupon", "value": "30", "threshold": "199", "expires_days": 7}]
    session.add(
        Experiment(
            key="pack",
            name="pack",
            salt="s1",
            status=ExperimentStatus.RUNNING,
            variants=[
                Variant(key="discount", weight=50, is_control=True, benefits={"benefits": coupon}),
                Variant(key="service", weight=50, benefits={"benefits": coupon}),
            ],
        )
    )
    member = Member(external_id="x-1", phone="+8613800138000", consent_sms=True)
    session.add(member)
    session.flush()
    journey = versions.create(session, key="j", name="j", definition_data=SPLIT, actor="t", now=T0)
    versions.publish(session, journey, actor="t", now=T0, approver=True)
    live = next(x for x in engine.live_journeys(session) if x.journey_id == journey.id)
    engine.admit(session, live, [engine.Candidate(member.id)], now=T0, timezone="UTC")
    engine.tick(session, now=T0, timezone="UTC")
    assignment = session.scalar(select(Assignment))
    grant = session.scalar(select(BenefitGrant))
    assert grant.source == "experiment_variant" and grant.cost == Decimal(30)
    assert grant.source_ref.startswith("pack:")
    delivery.deliver_due(session, now=T0)
    message = session.scalar(select(Message))
    assert message.status == MessageStatus.DELIVERED  # the console: no provider account
    exposures = {(e.kind, e.ref) for e in session.scalars(select(Exposure))}
    assert exposures == {
        ("benefit_granted", f"experiment:{assignment.experiment_id}:{member.id}:0"),
        ("message_delivered", f"message:{message.id}"),
    }
    assert all(e.assignment_id == assignment.id for e in session.scalars(select(Exposure)))


def test_a_member_outside_the_experiment_s_audience_is_not_assigned(session):
    control.SETTING.save(session, control.ControlGroup(percent=0), actor="t", now=T0)
    session.add(MessageTemplate(key="hi", name="hi", channel="sms", body="您好"))
    session.add(
        Experiment(
            key="pack",
            name="pack",
            salt="s1",
            status=ExperimentStatus.RUNNING,
            audience={"condition": "stage = 'vip'"},
            variants=[
                Variant(key="discount", weight=50, is_control=True),
                Variant(key="service", weight=50),
            ],
        )
    )
    member = Member(external_id="x-2", phone="+8613800138001", consent_sms=True)
    session.add(member)
    session.flush()
    journey = versions.create(session, key="j", name="j", definition_data=SPLIT, actor="t", now=T0)
    versions.publish(session, journey, actor="t", now=T0, approver=True)
    live = next(x for x in engine.live_journeys(session) if x.journey_id == journey.id)
    engine.admit(session, live, [engine.Candidate(member.id)], now=T0, timezone="UTC")
    engine.tick(session, now=T0, timezone="UTC")
    assert session.scalar(select(Assignment)) is None
    assert session.scalar(select(Message)) is not None  # down the control's path
