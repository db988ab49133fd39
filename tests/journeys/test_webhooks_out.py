"""Webhooks out, the writing side: endpoints validated and their secrets sealed and
shown once; a fact emitted once per subscribed endpoint, never twice; the fan-out
pass over stage transitions, tier changes, grants and assignments by cursors that
start from now, re-read late commits and never emit a row twice; the facts that
delivery and the engine emit themselves."""

from __future__ import annotations

import base64
import datetime as dt
import itertools
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from experiments.models import Assignment, Experiment, Variant
from journeys import webhook_endpoints as endpoints
from journeys import webhook_fanout, webhooks_out
from journeys.models import Enrollment, Journey, JourneyVersion, Message, MessageStatus
from journeys.vault import Vault
from journeys.webhook_models import WebhookDelivery, WebhookEndpoint
from members.audit import AuditEntry
from members.errors import InvalidFields, NotFound
from members.lifecycle import Stage, StageTransition, TierChange
from members.loyalty import BenefitGrant, BenefitKind
from members.member import Member
from members.programme import Cursor

VAULT = Vault("w" * 32)
_ids = itertools.count(1)


def _endpoint(session, now, types=("member.stage_changed",), url="https://shop.example/h"):
    endpoint, _ = endpoints.create(
        session, url=url, event_types=list(types), vault=VAULT, actor="test", now=now
    )
    return endpoint


def _member(session, external_id=None) -> Member:
    member = Member(external_id=external_id or f"m-{next(_ids)}")
    session.add(member)
    session.flush()
    return member


def _deliveries(session, event_type=None):
    query = select(WebhookDelivery).order_by(WebhookDelivery.id)
    if event_type:
        query = query.where(WebhookDelivery.event_type == event_type)
    return session.scalars(query).all()


# -- endpoints


def test_an_endpoint_gets_a_standard_secret_shown_once_and_sealed(session, now):
    endpoint, secret = endpoints.create(
        session,
        url=" https://shop.example/webhooks ",
        event_types=["benefit.granted", "member.stage_changed", "benefit.granted"],
        description="CRM sync",
        vault=VAULT,
        actor="user:a@shop.example",
        now=now,
    )
    assert secret.startswith("whsec_") and len(base64.b64decode(secret[6:])) == 24
    assert secret not in endpoint.secret_encrypted
    assert endpoints.signing_secrets(endpoint.secret_encrypted, VAULT, now) == [secret]
    assert endpoint.url == "https://shop.example/webhooks"
    assert endpoints.types_of(endpoint) == ["member.stage_changed", "benefit.granted"]
    entry = session.scalar(select(AuditEntry).where(AuditEntry.action == "webhook.created"))
    assert entry.target_id == str(endpoint.id) and secret not in str(entry.details)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"url": "ftp://shop.example/h"}, "url"),
        ({"url": "https:///no-host"}, "url"),
        ({"url": "https://shop.example:99999/h"}, "url"),
        ({"url": "https://user:pw@shop.example/h"}, "url"),
        ({"url": "https://shop.example/a b"}, "url"),
        ({"url": "https://shop.example/" + "x" * 2000}, "url"),
        ({"url": ""}, "url"),
        ({"event_types": []}, "event_types"),
        ({"event_types": ["member.deleted"]}, "event_types"),
        ({"event_types": "member.stage_changed"}, "event_types"),
        ({"description": "x" * 501}, "description"),
    ],
)
def test_bad_endpoints_are_refused_naming_the_field(session, now, changes, field):
    given = {"url": "https://shop.example/h", "event_types": ["benefit.granted"], **changes}
    with pytest.raises(InvalidFields) as refused:
        endpoints.create(session, **given, vault=VAULT, actor="test", now=now)
    assert list(refused.value.errors) == [field]
    assert session.scalar(select(func.count()).select_from(WebhookEndpoint)) == 0


def test_update_disable_enable_rotate_and_delete(session, now):
    endpoint, first = endpoints.create(
        session,
        url="https://a.example/h",
        event_types=["benefit.granted"],
        vault=VAULT,
        actor="test",
        now=now,
    )
    endpoints.update(session, endpoint, description="  ", active=False, actor="user:x", now=now)
    assert endpoint.description is None and not endpoint.active
    assert endpoint.disabled_at == now and endpoint.disabled_reason == "disabled by user:x"
    assert webhooks_out.emit(session, "benefit.granted", {}, now) == 0  # paused: nothing
    endpoints.update(session, endpoint, active=True, url="http://b.example", actor="t", now=now)
    assert endpoint.active and endpoint.disabled_at is None and endpoint.url == "http://b.example"
    with pytest.raises(InvalidFields) as refused:
        endpoints.update(session, endpoint, event_types=[], url="nope", actor="t", now=now)
    assert set(refused.value.errors) == {"url", "event_types"}

    second = endpoints.rotate_secret(session, endpoint, vault=VAULT, actor="t", now=now)
    assert second != first
    assert endpoints.signing_secrets(endpoint.secret_encrypted, VAULT, now) == [second, first]
    later = now + endpoints.ROTATION_GRACE
    assert endpoints.signing_secrets(endpoint.secret_encrypted, VAULT, later) == [second]
    # A secret sealed under another SECRET_KEY is replaced without its old one.
    third = endpoints.rotate_secret(session, endpoint, vault=Vault("k" * 32), actor="t", now=now)
    assert endpoints.signing_secrets(endpoint.secret_encrypted, Vault("k" * 32), now) == [third]

    webhooks_out.emit(session, "benefit.granted", {"n": 1}, now, key="g1")
    endpoints.delete(session, endpoint, actor="t", now=now)
    session.expire_all()
    assert _deliveries(session) == []
    with pytest.raises(NotFound):
        endpoints.get(session, endpoint.id)


# -- emit


def test_emit_writes_one_delivery_per_subscriber_and_never_twice(session, now):
    assert webhooks_out.emit(session, "benefit.granted", {"x": 1}, now) == 0  # no endpoint
    first = _endpoint(session, now, types=["benefit.granted", "message.status"])
    second = _endpoint(session, now, types=["benefit.granted"])
    _endpoint(session, now, types=["member.tier_changed"])
    data = {"member": "m-1", "value": Decimal("20.00"), "expires_at": now, "kind": Stage.VIP}
    at = now - dt.timedelta(minutes=5)
    assert webhooks_out.emit(session, "benefit.granted", data, now, key="grant:7", at=at) == 2
    assert webhooks_out.emit(session, "benefit.granted", data, now, key="grant:7") == 0
    rows = _deliveries(session)
    assert {row.endpoint_id for row in rows} == {first.id, second.id}
    assert len({row.event_id for row in rows}) == 1
    assert rows[0].event_id == webhooks_out.event_id("benefit.granted", "grant:7")
    assert rows[0].event_id.startswith("msg_")
    assert rows[0].payload == {
        "type": "benefit.granted",
        "timestamp": "2026-11-23T05:55:00Z",
        "data": {
            "member": "m-1",
            "value": "20.00",
            "expires_at": "2026-11-23T06:00:00Z",
            "kind": "vip",
        },
    }
    assert rows[0].status == "pending" and rows[0].next_attempt_at == now
    assert rows[0].created_at == now
    # Without a key, each emit is a new fact.
    webhooks_out.emit(session, "message.status", {}, now)
    webhooks_out.emit(session, "message.status", {}, now)
    assert len(_deliveries(session, "message.status")) == 2
    with pytest.raises(ValueError, match="unknown webhook event type"):
        webhooks_out.emit(session, "member.deleted", {}, now)


def test_message_statuses_and_conversions_are_emitted_by_their_writers(session, now):
    _endpoint(session, now, types=["message.status", "journey.converted"])
    member = _member(session, "u-10086")
    journey = Journey(key="winback", name="Win-back")
    session.add(journey)
    session.flush()
    version = JourneyVersion(journey_id=journey.id, version=1)
    session.add(version)
    session.flush()
    enrollment = Enrollment(
        journey_id=journey.id,
        journey_version_id=version.id,
        member_id=member.id,
        entered_at=now - dt.timedelta(days=3),
        converted_at=now - dt.timedelta(days=1),
    )
    session.add(enrollment)
    session.flush()
    message = Message(
        enrollment_id=enrollment.id,
        step="hello",
        member_id=member.id,
        channel="sms",
        provider="outbox",
        dedup_key="d:1",
        body="您好",
        status=MessageStatus.DEFERRED,
        reason="quiet_hours",
        send_after=now + dt.timedelta(hours=2),
    )
    session.add(message)
    session.flush()
    assert webhooks_out.message_statuses(session, [message.id], now) == 1
    assert webhooks_out.message_statuses(session, [message.id], now) == 0  # the same fact
    message.send_after = now + dt.timedelta(hours=3)  # deferred again: a new fact
    message.status = MessageStatus.DEFERRED
    session.flush()
    assert webhooks_out.message_statuses(session, [message.id], now) == 1
    message.status, message.reason = MessageStatus.DELIVERED, None
    session.flush()
    assert webhooks_out.message_statuses(session, [message.id], now) == 1
    statuses = [row.payload["data"] for row in _deliveries(session, "message.status")]
    assert [s["status"] for s in statuses] == ["deferred", "deferred", "delivered"]
    assert statuses[0]["member"] == "u-10086" and statuses[0]["journey"] == "winback"
    assert statuses[0]["reason"] == "quiet_hours" and statuses[0]["message"] == str(message.id)

    assert webhooks_out.journey_conversions(session, [enrollment.id], now) == 1
    assert webhooks_out.journey_conversions(session, [enrollment.id], now) == 0
    (converted,) = _deliveries(session, "journey.converted")
    assert converted.payload["timestamp"] == "2026-11-22T06:00:00Z"
    assert converted.payload["data"]["journey"] == "winback"
    assert converted.payload["data"]["member"] == "u-10086"


# -- the fan-out pass


def _transition(session, member, at, to=Stage.ACTIVE, id_=None) -> StageTransition:
    row = StageTransition(member_id=member.id, from_stage=Stage.NEW, to_stage=to, at=at)
    if id_ is not None:
        row.id = id_
    session.add(row)
    session.flush()
    return row


def _cursor(session, name):
    return session.get(Cursor, name, populate_existing=True).position


def test_fan_out_starts_from_now_and_emits_each_row_once(session, now):
    member = _member(session, "u-1")
    old = _transition(session, member, now - dt.timedelta(days=1))
    # No endpoint: the cursors follow the newest row, and nothing is written.
    assert webhook_fanout.fan_out(session, now=now)["member.stage_changed"] == 0
    assert _cursor(session, "webhooks.stage_transitions") == old.id
    second = _transition(session, member, now, to=Stage.VIP)
    webhook_fanout.fan_out(session, now=now)
    assert _cursor(session, "webhooks.stage_transitions") == second.id
    assert _deliveries(session) == []

    endpoint = _endpoint(session, now, types=["member.stage_changed", "member.tier_changed"])
    later = now + dt.timedelta(minutes=1)
    third = _transition(session, member, later, to=Stage.AT_RISK)
    session.add(TierChange(member_id=member.id, from_tier="silver", to_tier="gold", at=later))
    session.flush()
    assert webhook_fanout.fan_out(session, now=later) == {
        "member.stage_changed": 1,
        "member.tier_changed": 1,
        "benefit.granted": 0,
        "experiment.assigned": 0,
    }
    stage, tier = _deliveries(session)
    assert stage.endpoint_id == endpoint.id
    assert stage.payload == {
        "type": "member.stage_changed",
        "timestamp": "2026-11-23T06:01:00Z",
        "data": {"member": "u-1", "from": "new", "to": "at_risk", "at": "2026-11-23T06:01:00Z"},
    }
    assert stage.event_id == webhooks_out.event_id("member.stage_changed", str(third.id))
    assert tier.payload["data"] == {
        "member": "u-1",
        "from": "silver",
        "to": "gold",
        "at": "2026-11-23T06:01:00Z",
    }
    # Passes that read the same rows again write nothing new.
    for minutes in (2, 3, 10, 20):
        counts = webhook_fanout.fan_out(session, now=now + dt.timedelta(minutes=minutes))
        assert counts["member.stage_changed"] == counts["member.tier_changed"] == 0
    assert len(_deliveries(session)) == 2


def test_a_row_committed_late_with_a_smaller_id_is_still_emitted(session, now):
    """PostgreSQL hands out ids before commit: a pass may see id 5 before id 4."""
    _endpoint(session, now)
    member = _member(session)
    webhook_fanout.fan_out(session, now=now)  # the cursors start here
    base = _cursor(session, "webhooks.stage_transitions")
    _transition(session, member, now, id_=base + 5)
    webhook_fanout.fan_out(session, now=now + dt.timedelta(seconds=30))
    late = _transition(session, member, now, to=Stage.VIP, id_=base + 4)  # its commit was slow
    webhook_fanout.fan_out(session, now=now + dt.timedelta(seconds=90))
    keys = {row.event_id for row in _deliveries(session)}
    assert webhooks_out.event_id("member.stage_changed", str(late.id)) in keys
    assert len(keys) == 2
    # Once SETTLE has passed twice, the settled position moves on past them.
    for minutes in (4, 8):
        webhook_fanout.fan_out(session, now=now + dt.timedelta(minutes=minutes))
    assert _cursor(session, "webhooks.stage_transitions") == base + 5
    assert len(_deliveries(session)) == 2


def test_a_backlog_is_read_a_pass_at_a_time(session, now, monkeypatch):
    monkeypatch.setattr(webhook_fanout, "PASS_ROWS", 3)
    _endpoint(session, now)
    member = _member(session)
    webhook_fanout.fan_out(session, now=now)
    for _ in range(7):
        _transition(session, member, now)
    written = [
        webhook_fanout.fan_out(session, now=now + dt.timedelta(minutes=4 * i))[
            "member.stage_changed"
        ]
        for i in range(1, 6)
    ]
    assert sum(written) == 7 and len(_deliveries(session)) == 7
    assert written[0] == 3


def test_fan_out_of_grants_and_assignments_skips_erased_members(session, now):
    _endpoint(session, now, types=["benefit.granted", "experiment.assigned"])
    webhook_fanout.fan_out(session, now=now)
    member, erased = _member(session, "u-2"), _member(session, "u-gone")
    erased.erased_at = now
    experiment = Experiment(key="double_points", name="Double points", salt="s1")
    session.add(experiment)
    session.flush()
    variant = Variant(experiment_id=experiment.id, key="treatment", weight=50)
    session.add(variant)
    session.flush()
    for who in (member, erased):
        session.add(
            BenefitGrant(
                member_id=who.id,
                kind=BenefitKind.COUPON,
                value=Decimal("50.00"),
                threshold=Decimal("299.00"),
                code="WB-123",
                expires_at=now + dt.timedelta(days=7),
                source="journey_step",
                source_ref="winback:gift",
                granted_at=now,
            )
        )
    session.add(
        Assignment(
            experiment_id=experiment.id, member_id=member.id, variant_id=None, assigned_at=now
        )
    )
    session.flush()
    counts = webhook_fanout.fan_out(session, now=now)
    assert counts["benefit.granted"] == 1 and counts["experiment.assigned"] == 1
    grant = _deliveries(session, "benefit.granted")[0].payload["data"]
    assert grant["member"] == "u-2" and grant["kind"] == "coupon" and grant["value"] == "50.00"
    assert grant["code"] == "WB-123" and grant["expires_at"] == "2026-11-30T06:00:00Z"
    assigned = _deliveries(session, "experiment.assigned")[0].payload["data"]
    assert assigned == {
        "member": "u-2",
        "experiment": "double_points",
        "variant": None,
        "holdout": True,
        "source": "hash",
        "at": "2026-11-23T06:00:00Z",
    }
