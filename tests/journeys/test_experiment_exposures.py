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


def test_a_batch_at_a_split_is_placed_together_once_each_with_its_audience(session):
    """A tick's batch reaching a split is placed ahead in a few statements: every member
    once, by their bucket, granted once; members outside the experiment's audience go
    down the control's path unassigned; held-out enrollments are not assigned."""
    from experiments import assignment as hashing

    control.SETTING.save(session, control.ControlGroup(percent=0), actor="t", now=T0)
    session.add(MessageTemplate(key="hi", name="hi", channel="sms", body="您好"))
    coupon = [{"benefit": "coupon", "value": "30", "threshold": "199", "expires_days": 7}]
    experiment = Experiment(
        key="pack",
        name="pack",
        salt="s2",
        status=ExperimentStatus.RUNNING,
        holdout_percent=Decimal(10),
        audience={"condition": "region = '广东'"},
        variants=[
            Variant(key="discount", weight=50, is_control=True, benefits={"benefits": coupon}),
            Variant(key="service", weight=50, benefits={"benefits": coupon}),
        ],
    )
    session.add(experiment)
    members = [
        Member(external_id=f"b-{i}", region="广东" if i % 5 else "浙江", consent_sms=True)
        for i in range(60)
    ]
    session.add_all(members)
    session.flush()
    definition = {
        **SPLIT,
        "entry": {"reentry": "never", "holdout_percent": 20},
        "steps": {
            **SPLIT["steps"],
            "pick": {**SPLIT["steps"]["pick"], "variants": {
                "discount": "tell", "service": "tell", "holdout": "end"}},
        },
    }  # fmt: skip
    journey = versions.create(
        session, key="j", name="j", definition_data=definition, actor="t", now=T0
    )
    versions.publish(session, journey, actor="t", now=T0, approver=True)
    live = next(x for x in engine.live_journeys(session) if x.journey_id == journey.id)
    admitted = engine.admit(
        session, live, [engine.Candidate(m.id) for m in members], now=T0, timezone="UTC"
    )
    engine.tick(session, now=T0, timezone="UTC")
    engine.tick(session, now=T0 + dt.timedelta(minutes=1), timezone="UTC")

    from journeys.models import Enrollment, EnrollmentState

    held = set(
        session.scalars(
            select(Enrollment.member_id).where(Enrollment.state == EnrollmentState.HELD_OUT)
        )
    )
    assert admitted.held_out == len(held) > 0
    assigned = {a.member_id: a for a in session.scalars(select(Assignment))}
    in_audience = {m.id for m in members if m.region == "广东"}
    assert set(assigned) == in_audience - held
    variants = {v.id: v.key for v in experiment.variants}
    for member in members:
        if member.id not in assigned:
            continue
        number = hashing.bucket("s2", member.external_id)
        expected = hashing.variant_for(experiment, number)
        got = assigned[member.id].variant_id
        assert (variants.get(got) if got else None) == (expected.key if expected else None)
    granted = session.scalars(select(BenefitGrant.member_id)).all()
    with_package = {m for m, a in assigned.items() if a.variant_id is not None}
    assert sorted(granted) == sorted(with_package)  # one coupon each, once
    exposures = session.scalars(select(Exposure).where(Exposure.kind == "benefit_granted"))
    assert len(list(exposures)) == len(with_package)
