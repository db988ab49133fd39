"""The five ready-made journeys install, publish and run: each member takes the path
the campaign describes and gets the benefit and the message it promises."""

from __future__ import annotations

import datetime as dt
import itertools
from decimal import Decimal

import pytest
from sqlalchemy import select

from journeys import control, engine, ready_made, versions
from journeys.models import Enrollment, EnrollmentState, Journey, Message
from members.lifecycle import MemberFeatures, Stage, Trigger
from members.loyalty import BenefitGrant
from members.member import Member

T0 = dt.datetime(2026, 11, 23, 2, 0, tzinfo=dt.UTC)
TZ = "Asia/Shanghai"
_names = itertools.count()


def _member(session, stage=None, days_since_order=None, **fields):
    member = Member(
        external_id=f"r-{next(_names)}",
        name="陈静",
        stage=stage,
        joined_at=T0 - dt.timedelta(days=500),
        **fields,
    )
    session.add(member)
    session.flush()
    session.add(
        MemberFeatures(member_id=member.id, computed_at=T0, days_since_last_order=days_since_order)
    )
    session.flush()
    return member


@pytest.fixture
def installed(session):
    control.SETTING.save(session, control.ControlGroup(percent=0), actor="t", now=T0)
    _member(session, stage=Stage.VIP)  # so that VIP care's audience is not empty
    made = ready_made.install_all(session, actor="demo", now=T0, publish=True)
    assert made == [ready.key for ready in ready_made.ALL]
    journeys = session.scalars(select(Journey)).all()
    assert {j.status.value for j in journeys} == {"active"}
    # Without holdouts, so that every member below takes the path under test.
    for journey in journeys:
        definition = dict(versions.latest(journey).definition)
        definition["entry"] = {**definition["entry"], "holdout_percent": 0}
        versions.save_draft(session, journey, definition, actor="t", now=T0)
        versions.publish(session, journey, actor="t", now=T0, approver=True)
    return {j.key: j for j in journeys}


def _enter(session, member, stage):
    session.add(Trigger(kind="stage.entered", member_id=member.id, at=T0, value=stage))
    session.flush()


def _path(session, member):
    enrollment = session.scalar(
        select(Enrollment)
        .where(Enrollment.member_id == member.id)
        .execution_options(populate_existing=True)
    )
    return enrollment, session.scalars(
        select(Message.template_key).where(Message.member_id == member.id).order_by(Message.id)
    ).all()


def test_dormant_win_back_tiers_the_coupon_by_lapse(session, installed):
    thirty = _member(session, days_since_order=35)
    ninety = _member(session, days_since_order=120)
    _enter(session, thirty, "dormant")
    _enter(session, ninety, "lapsed")
    engine.tick(session, now=T0, timezone=TZ)
    values = dict(session.execute(select(BenefitGrant.member_id, BenefitGrant.value)).all())
    assert values == {thirty.id: Decimal(50), ninety.id: Decimal(100)}
    _, sent = _path(session, ninety)
    assert sent == ["winback_100"]
    body = session.scalar(select(Message.body).where(Message.member_id == ninety.id))
    code = session.scalar(select(BenefitGrant.code).where(BenefitGrant.member_id == ninety.id))
    assert "100元券" in body and code in body
    # No order in two days: the reminder before the coupon expires.
    engine.tick(session, now=T0 + dt.timedelta(days=2), timezone=TZ)
    enrollment, sent = _path(session, ninety)
    assert sent == ["winback_100", "winback_last_day"]
    assert enrollment.state == EnrollmentState.COMPLETED


def test_churn_rescue_branches_on_price_sensitivity(session, installed):
    price = _member(session, attributes={"sensitivity": "price"})
    service = _member(session, attributes={"sensitivity": "service"})
    for member in (price, service):
        _enter(session, member, "at_risk")
    engine.tick(session, now=T0, timezone=TZ)
    kinds = {
        member_id: sorted(kind.value for kind, m in rows if m == member_id)
        for rows in [session.execute(select(BenefitGrant.kind, BenefitGrant.member_id)).all()]
        for member_id in (price.id, service.id)
    }
    assert kinds == {
        price.id: ["coupon", "multiplier"],
        service.id: ["free_shipping", "service"],
    }
    body = session.scalar(select(Message.body).where(Message.member_id == price.id))
    code = session.scalar(
        select(BenefitGrant.code).where(
            BenefitGrant.member_id == price.id, BenefitGrant.kind == "coupon"
        )
    )
    assert code in body


def test_new_member_onboarding_nudges_after_seven_days_without_an_order(session, installed):
    member = _member(session)
    _enter(session, member, "new")
    engine.tick(session, now=T0, timezone=TZ)
    assert _path(session, member)[1] == ["onboarding_welcome"]
    engine.tick(session, now=T0 + dt.timedelta(days=7), timezone=TZ)
    assert _path(session, member)[1] == ["onboarding_welcome", "onboarding_nudge"]


def test_vip_care_on_the_birthday_at_ten_local_time(session, installed):
    vip = _member(session, stage=Stage.VIP, birthday=dt.date(1990, 11, 24))
    other = _member(session, stage=Stage.ACTIVE, birthday=dt.date(1991, 11, 24))
    engine.tick(session, now=T0, timezone=TZ)  # the clock starts looking from here
    # 10:00 on 24 November in Shanghai is 02:00 UTC.
    engine.tick(session, now=dt.datetime(2026, 11, 24, 1, 59, tzinfo=dt.UTC), timezone=TZ)
    assert _path(session, vip)[1] == []
    engine.tick(session, now=dt.datetime(2026, 11, 24, 2, 1, tzinfo=dt.UTC), timezone=TZ)
    assert _path(session, vip)[1] == ["vip_birthday"]
    assert _path(session, other)[1] == []
    services = session.scalars(
        select(BenefitGrant.detail).where(BenefitGrant.member_id == vip.id)
    ).all()
    assert sorted(services) == ["birthday_gift", "early_access"]


def test_active_growth_rewards_a_referral(session, installed):
    member = _member(session)
    engine.tick(session, now=T0 - dt.timedelta(hours=1), timezone=TZ)  # the event cursor
    _enter(session, member, "active")
    engine.tick(session, now=T0, timezone=TZ)
    engine.tick(session, now=T0 + dt.timedelta(days=7), timezone=TZ)
    assert _path(session, member)[1] == ["growth_points", "growth_referral"]
    from tests import factories

    factories.event(session, member, "referral", T0 + dt.timedelta(days=8))
    session.flush()
    engine.tick(session, now=T0 + dt.timedelta(days=8, minutes=5), timezone=TZ)
    assert _path(session, member)[1] == [
        "growth_points",
        "growth_referral",
        "growth_referral_thanks",
    ]
