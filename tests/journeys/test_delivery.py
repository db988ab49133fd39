"""Delivering the outbox: the policies in order, each visible on the message; quiet
hours in the member's own zone defer to the minute they end; the frequency cap defers
marketing, never a service message; consent is read at delivery."""

from __future__ import annotations

import datetime as dt
import itertools

import pytest

from journeys import delivery, policies
from journeys.models import Message, MessageStatus
from members.errors import InvalidFields
from members.member import Member

NOON = dt.datetime(2026, 11, 23, 4, 0, tzinfo=dt.UTC)  # 12:00 in Shanghai
_names = itertools.count()


def _member(session, **fields):
    fields.setdefault("consent_sms", True)
    fields.setdefault("phone", f"+861380013{next(_names):04d}")
    member = Member(external_id=f"dl-{next(_names)}", **fields)
    session.add(member)
    session.flush()
    return member


def _message(session, member, at=NOON, channel="sms", transactional=False):
    message = Message(
        member_id=member.id,
        channel=channel,
        provider="outbox",
        dedup_key=f"test:{next(_names)}",
        body="hi",
        transactional=transactional,
        send_after=at,
        created_at=at,
    )
    session.add(message)
    session.flush()
    return message


def _deliver(session, at):
    result = delivery.deliver_due(session, now=at)
    session.flush()
    return result


def test_a_message_with_consent_is_delivered_by_the_console_provider(session):
    message = _message(session, _member(session))
    result = _deliver(session, NOON)
    assert (result.claimed, result.delivered) == (1, 1)
    assert (message.status, message.provider, message.sent_at) == (
        MessageStatus.DELIVERED,
        "console",
        NOON,
    )
    assert _deliver(session, NOON).claimed == 0  # once


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"consent_sms": False}, "no_consent:sms"),
        ({"personalised_marketing": False}, "refused_personalised_marketing"),
        ({"erased_at": NOON}, "erased"),
    ],
    ids=["no-consent", "pipl-24", "erased"],
)
def test_suppressed_with_the_policy_that_stopped_it(session, fields, reason):
    message = _message(session, _member(session, **fields))
    _deliver(session, NOON)
    assert (message.status, message.reason) == (MessageStatus.SUPPRESSED, reason)


def test_a_service_message_needs_no_marketing_consent(session):
    message = _message(session, _member(session, consent_sms=False), transactional=True)
    _deliver(session, NOON)
    assert message.status == MessageStatus.DELIVERED


def test_quiet_hours_defer_to_the_minute_they_end_in_the_members_zone(session):
    late = dt.datetime(2026, 11, 23, 14, 30, tzinfo=dt.UTC)  # 22:30 Shanghai, 14:30 London
    shanghai = _message(session, _member(session), at=late)
    london = _message(session, _member(session, timezone="Europe/London"), at=late)
    _deliver(session, late)
    assert (shanghai.status, shanghai.reason) == (MessageStatus.DEFERRED, "quiet_hours")
    assert shanghai.send_after == dt.datetime(2026, 11, 24, 0, 0, tzinfo=dt.UTC)  # 08:00
    assert london.status == MessageStatus.DELIVERED
    _deliver(session, shanghai.send_after)
    assert shanghai.status == MessageStatus.DELIVERED


def test_the_frequency_cap_defers_marketing_and_then_drops_it(session):
    member = _member(session)
    messages = [_message(session, member) for _ in range(3)]
    service = _message(session, member, transactional=True)
    _deliver(session, NOON)
    assert [m.status for m in messages] == [
        MessageStatus.DELIVERED,
        MessageStatus.DELIVERED,
        MessageStatus.DEFERRED,
    ]
    assert messages[2].reason == "frequency_cap:daily"
    assert service.status == MessageStatus.DELIVERED
    # A capped message older than the cap's patience (3 days) is dropped, with the reason.
    stale = _message(session, member, at=NOON - dt.timedelta(days=4))
    _deliver(session, NOON + dt.timedelta(minutes=1))
    assert (stale.status, stale.reason) == (MessageStatus.SUPPRESSED, "frequency_cap:daily")


def test_the_global_pause_defers_everything(session):
    policies.SETTING.save(session, policies.Policies(paused=True), actor="t", now=NOON)
    message = _message(session, _member(session))
    _deliver(session, NOON)
    assert (message.status, message.reason) == (MessageStatus.DEFERRED, "paused")
    policies.SETTING.save(session, policies.Policies(), actor="t", now=NOON)
    _deliver(session, NOON + dt.timedelta(minutes=1))
    assert message.status == MessageStatus.DELIVERED


def test_policies_are_checked():
    with pytest.raises(InvalidFields) as raised:
        policies.parse({"quiet_start": "25:00", "daily_cap": -1})
    assert set(raised.value.errors) == {"quiet_start", "daily_cap"}


def test_an_sms_is_delivered_with_the_signature_and_opt_out(session):
    message = _message(session, _member(session))
    _deliver(session, NOON)
    assert message.body == "【会员中心】hi 拒收请回复R"


def test_a_member_without_a_phone_gets_no_sms(session):
    message = _message(session, _member(session, phone=None))
    _deliver(session, NOON)
    assert (message.status, message.reason) == (MessageStatus.SUPPRESSED, "no_address:sms")


@pytest.mark.parametrize(
    ("field", "text"),
    [("opt_out_cn", "回复QX退出"), ("opt_out_other", "Text NOMORE to leave the list")],
    ids=["cn-unknown-word", "other-no-keyword"],
)
def test_an_opt_out_text_must_name_a_reply_tenure_understands(field, text):
    with pytest.raises(InvalidFields) as raised:
        policies.parse({field: text})
    assert set(raised.value.errors) == {field}


def test_the_usual_opt_out_texts_pass():
    for text in ("拒收请回复R", "回T退订", "回TD退订", "Reply STOP to opt out"):
        assert policies.parse({"opt_out_cn": text, "opt_out_other": text})
