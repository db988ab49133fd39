"""Delivery through a real provider's interface: claimed under a lease, started and
recorded in their own commits, retried with backoff, failed with the provider's words;
the reconciler settles claims that ran out without ever sending twice; routing by
where the member is, cross-border consent, the suppression list and priorities."""

from __future__ import annotations

import datetime as dt
import itertools
from typing import ClassVar

import pytest
from sqlalchemy import select

from journeys import accounts, delivery, policies, providers
from journeys.channel_models import ProviderAccount, Suppression
from journeys.models import Message, MessageStatus
from journeys.providers.base import Outcome, Provider, Result
from journeys.vault import Vault
from members.member import Member

NOON = dt.datetime(2026, 11, 23, 4, 0, tzinfo=dt.UTC)  # 12:00 in Shanghai
VAULT = Vault("s" * 32)
_names = itertools.count()


class Scripted(Provider):
    """A provider answering what the test scripts, and recording what it was given."""

    kind = "scripted"
    channel = "sms"
    label = "Scripted"
    concurrency = 2
    answers: ClassVar[list[Outcome]] = []
    calls: ClassVar[list] = []

    def send_one(self, message):
        type(self).calls.append(message)
        if type(self).answers:
            return type(self).answers.pop(0)
        return Outcome(Result.SENT, provider_message_id=f"p-{message.message_id}")


class Abroad(Scripted):
    kind = "abroad"
    cross_border = True


class Idempotent(Scripted):
    kind = "idem"
    idempotent = True


@pytest.fixture(autouse=True)
def scripted(monkeypatch):
    for cls in (Scripted, Abroad, Idempotent):
        monkeypatch.setitem(providers.MODULES, cls.kind, f"{__name__}:{cls.__name__}")
    Scripted.answers, Scripted.calls = [], []
    accounts._built.clear()
    yield Scripted


def _account(session, kind="scripted", scope="all", channel="sms", name=None):
    account = ProviderAccount(
        name=name or f"acct-{next(_names)}",
        kind=kind,
        channel=channel,
        scope=scope,
        settings={},
        secrets_encrypted=VAULT.seal({}),
        receipt_token=f"tok-{next(_names)}",
        created_at=NOON,
        updated_at=NOON,
    )
    session.add(account)
    session.flush()
    return account


def _member(session, **fields):
    fields.setdefault("consent_sms", True)
    fields.setdefault("phone", f"+861390013{next(_names):04d}")
    member = Member(external_id=f"sd-{next(_names)}", **fields)
    session.add(member)
    session.flush()
    return member


def _message(session, member, *, priority=0, at=NOON):
    message = Message(
        member_id=member.id,
        channel="sms",
        provider="outbox",
        dedup_key=f"sd:{next(_names)}",
        body="hi",
        priority=priority,
        send_after=at,
        created_at=at,
    )
    session.add(message)
    session.flush()
    return message


def _run(session, now=NOON):
    claimed = delivery.deliver_due(session, now=now)
    session.flush()
    sent = delivery.send_claimed(
        session, claimed, vault=VAULT, clock=lambda: now, commit=session.flush
    )
    session.expire_all()
    return claimed, sent


def test_a_message_goes_through_its_provider_and_waits_for_a_receipt(session, scripted):
    _account(session)
    member = _member(session)
    message = _message(session, member)
    claimed, sent = _run(session)
    assert claimed.to_send == [message.id] and sent.sent == 1
    assert message.status == MessageStatus.SENT
    assert message.provider_message_id == f"p-{message.id}"
    assert message.started_at == NOON and message.claimed_until is None
    [call] = scripted.calls
    assert (call.body, call.to, call.dedup_key) == (
        "【会员中心】hi 拒收请回复R",
        member.phone,
        message.dedup_key,
    )
    assert _run(session)[0].claimed == 0  # once


def test_transient_errors_are_retried_with_backoff_then_fail(session, scripted):
    _account(session)
    message = _message(session, _member(session))
    scripted.answers = [Outcome(Result.RETRY, error="HTTP 503", retry_after=120)]
    _run(session)
    assert (message.status, message.reason, message.error) == (
        MessageStatus.DEFERRED,
        "retry",
        "HTTP 503",
    )
    assert message.send_after >= NOON + dt.timedelta(seconds=120)  # Retry-After honoured
    body = message.body
    at = message.send_after
    for attempt in range(2, delivery.MAX_ATTEMPTS + 1):
        scripted.answers = [Outcome(Result.RETRY, error="timed out")]
        _run(session, at)
        at = message.send_after
        assert message.attempts == attempt
    assert (message.status, message.reason) == (MessageStatus.FAILED, "retries_exhausted")
    assert message.body == body  # the signature and opt-out are added once
    assert len(scripted.calls) == delivery.MAX_ATTEMPTS


def test_backoff_grows_and_is_capped():
    waits = [delivery.backoff(n) for n in range(1, 12)]
    assert waits[0] < dt.timedelta(seconds=40) < waits[2]
    assert max(waits) <= delivery.BACKOFF_MOST * 1.2


def test_a_permanent_error_fails_with_the_providers_words(session, scripted):
    _account(session)
    message = _message(session, _member(session))
    scripted.answers = [Outcome(Result.FAILED, error="isv.MOBILE_NUMBER_ILLEGAL: bad number")]
    _run(session)
    assert (message.status, message.reason) == (MessageStatus.FAILED, "provider_error")
    assert message.error == "isv.MOBILE_NUMBER_ILLEGAL: bad number"


def test_a_dead_push_token_is_cleared(session, scripted):
    _account(session, channel="push")
    member = _member(session, consent_push=True, push_token="tok-1")
    message = _message(session, member)
    message.channel = "push"
    session.flush()
    scripted.answers = [Outcome(Result.FAILED, error="UNREGISTERED", token_gone=True)]
    _run(session)
    assert message.status == MessageStatus.FAILED
    assert member.push_token is None


def test_the_reconciler_requeues_unstarted_claims_and_never_resends_started_ones(session):
    _account(session)
    idem = _account(session, kind="idem", channel="push")
    unstarted, started = _message(session, _member(session)), _message(session, _member(session))
    hook = _message(session, _member(session, consent_push=True, push_token="t"))
    hook.channel = "push"
    session.flush()
    claimed = delivery.deliver_due(session, now=NOON)
    assert set(claimed.to_send) == {unstarted.id, started.id, hook.id}
    assert hook.provider == idem.name
    # The worker died: two calls had begun, one had not.
    started.started_at = hook.started_at = NOON
    session.flush()
    assert delivery.reclaim(session, now=NOON + dt.timedelta(minutes=1)).requeued == 0  # lease
    done = delivery.reclaim(session, now=NOON + delivery.LEASE + dt.timedelta(seconds=1))
    session.expire_all()
    assert (done.requeued, done.retried, done.interrupted) == (1, 1, 1)
    assert unstarted.status == MessageStatus.QUEUED
    assert (started.status, started.reason) == (MessageStatus.FAILED, "interrupted")
    assert (hook.status, hook.reason) == (MessageStatus.DEFERRED, "retry")


def test_an_old_claim_cannot_start_a_message_claimed_again(session, scripted):
    _account(session)
    message = _message(session, _member(session))
    first = delivery.deliver_due(session, now=NOON)
    later = NOON + delivery.LEASE + dt.timedelta(minutes=1)
    delivery.reclaim(session, now=later)
    session.expire_all()
    second = delivery.deliver_due(session, now=later)
    assert second.to_send == [message.id]
    # The first worker wakes up and tries: its lease is no longer the message's.
    delivery.send_claimed(session, first, vault=VAULT, clock=lambda: later, commit=session.flush)
    assert scripted.calls == []
    delivery.send_claimed(session, second, vault=VAULT, clock=lambda: later, commit=session.flush)
    assert len(scripted.calls) == 1


def test_routing_by_where_the_member_is(session):
    cn = _account(session, scope="cn")
    mainland = _message(session, _member(session))
    abroad = _message(session, _member(session, phone="+447700900123"))
    _run(session)
    assert mainland.provider == cn.name
    assert (abroad.status, abroad.reason) == (MessageStatus.FAILED, "no_provider")
    assert "outside mainland China" in abroad.error


def test_a_provider_abroad_needs_cross_border_consent_from_a_mainland_member(session):
    _account(session, kind="abroad")
    without = _message(session, _member(session))
    consented = _message(session, _member(session, cross_border_consent=True))
    london = _message(session, _member(session, phone="+447700900456"))
    service = _message(session, _member(session))
    service.transactional = True
    session.flush()
    _run(session)
    assert (without.status, without.reason) == (
        MessageStatus.SUPPRESSED,
        "no_cross_border_consent",
    )
    assert (service.status, service.reason) == (
        MessageStatus.SUPPRESSED,
        "no_cross_border_consent",
    )
    assert consented.status == london.status == MessageStatus.SENT


def test_the_suppression_list_wins_over_consent(session):
    member = _member(session)
    session.add(Suppression(channel="sms", address=member.phone, reason="complaint", source="t"))
    message = _message(session, member)
    _run(session)
    assert (message.status, message.reason) == (MessageStatus.SUPPRESSED, "suppression_list")


def test_under_a_tight_cap_the_higher_priority_goes_first(session):
    policies.SETTING.save(session, policies.Policies(daily_cap=1), actor="t", now=NOON)
    member = _member(session)
    promotion = _message(session, member, priority=0, at=NOON - dt.timedelta(minutes=5))
    care = _message(session, member, priority=2)
    _run(session)
    assert care.status == MessageStatus.DELIVERED
    assert (promotion.status, promotion.reason) == (MessageStatus.DEFERRED, "frequency_cap:daily")


def test_a_channel_without_accounts_uses_the_console_and_secrets_lost_fail_clearly(session):
    message = _message(session, _member(session))
    _run(session)
    assert (message.status, message.provider) == (MessageStatus.DELIVERED, "console")
    account = _account(session)
    account.secrets_encrypted = Vault("another key entirely").seal({})
    session.flush()
    second = _message(session, _member(session))
    _run(session)
    assert (second.status, second.reason) == (MessageStatus.FAILED, "provider_error")
    assert "SECRET_KEY" in second.error


def test_message_statuses_and_receipts_go_out_as_webhooks(session):
    from journeys import webhook_endpoints
    from journeys.webhook_models import WebhookDelivery

    webhook_endpoints.create(
        session,
        url="https://crm.shop.example/hooks",
        event_types=["message.status"],
        vault=VAULT,
        actor="t",
        now=NOON,
    )
    delivered = _message(session, _member(session))
    refused = _message(session, _member(session, consent_sms=False))
    _run(session)
    rows = session.scalars(select(WebhookDelivery).order_by(WebhookDelivery.id)).all()
    statuses = {row.payload["data"]["message"]: row.payload["data"]["status"] for row in rows}
    assert statuses == {str(delivered.id): "delivered", str(refused.id): "suppressed"}
    assert {row.event_type for row in rows} == {"message.status"}


def test_a_call_that_may_have_gone_is_never_sent_again(session, scripted):
    _account(session)
    idem = _account(session, kind="idem", channel="push")
    sms = _message(session, _member(session))
    hook = _message(session, _member(session, consent_push=True, push_token="t"))
    hook.channel = "push"
    session.flush()
    scripted.answers = [
        Outcome(Result.RETRY, error="no answer: ReadTimeout", uncertain=True),
        Outcome(Result.RETRY, error="no answer: ReadTimeout", uncertain=True),
    ]
    _run(session)
    assert (sms.status, sms.reason) == (MessageStatus.FAILED, "uncertain")
    assert "never sent twice" in sms.error
    # Through a provider whose receiver de-duplicates, it is simply tried again.
    assert (hook.status, hook.reason, hook.provider) == (MessageStatus.DEFERRED, "retry", idem.name)


def test_a_provider_asking_to_wait_forever_is_not_taken_at_its_word(session, scripted):
    _account(session)
    message = _message(session, _member(session))
    scripted.answers = [Outcome(Result.RETRY, error="HTTP 429", retry_after=float("inf"))]
    _run(session)
    assert message.status == MessageStatus.DEFERRED
    assert message.send_after <= NOON + dt.timedelta(hours=1, minutes=15)
    assert delivery.backoff(1, 1e12) == dt.timedelta(seconds=delivery.RETRY_AFTER_MOST)


class Exploding(Scripted):
    kind = "exploding"

    def send_one(self, message):
        raise ValueError("a bug in a provider")


def test_a_provider_that_raises_settles_only_its_own_message(session, monkeypatch):
    monkeypatch.setitem(providers.MODULES, "exploding", f"{__name__}:Exploding")
    _account(session, kind="exploding")
    message = _message(session, _member(session))
    _run(session)
    assert (message.status, message.reason) == (MessageStatus.FAILED, "uncertain")
    assert "ValueError" in message.error


def test_past_the_deadline_unstarted_messages_go_back_to_the_queue(session, scripted):
    _account(session)
    messages = [_message(session, _member(session)) for _ in range(3)]
    claimed = delivery.deliver_due(session, now=NOON)
    delivery.send_claimed(
        session, claimed, vault=VAULT, clock=lambda: NOON, commit=session.flush, deadline=NOON
    )
    session.expire_all()
    assert [m.status for m in messages] == [MessageStatus.QUEUED] * 3
    assert all(m.claimed_until is None for m in messages) and scripted.calls == []


def test_consent_withdrawn_after_the_claim_still_wins(session, scripted):
    _account(session)
    member = _member(session)
    message = _message(session, member)
    claimed = delivery.deliver_due(session, now=NOON)
    member.consent_sms = False  # a "TD" reply arrives while the batch waits its turn
    session.flush()
    delivery.send_claimed(session, claimed, vault=VAULT, clock=lambda: NOON, commit=session.flush)
    session.expire_all()
    assert (message.status, message.reason) == (MessageStatus.SUPPRESSED, "no_consent:sms")
    assert scripted.calls == []


class FastReceipt(Scripted):
    """A provider whose delivery receipt arrives before its answer is recorded."""

    kind = "fast"
    on_send: ClassVar[list] = []

    def send_one(self, message):
        for hook in type(self).on_send:
            hook(message)
        return Outcome(Result.SENT, provider_message_id="p-fast")


def test_a_receipt_that_beats_the_record_keeps_the_last_word(session, monkeypatch):
    from journeys import receipts
    from journeys.providers.base import Report

    monkeypatch.setitem(providers.MODULES, "fast", f"{__name__}:FastReceipt")
    account = _account(session, kind="fast")
    message = _message(session, _member(session))
    monkeypatch.setattr(
        FastReceipt,
        "on_send",
        [
            lambda out: receipts.record_reports(
                session, account, [Report("r1", "delivered", dedup_key=out.dedup_key)], now=NOON
            )
        ],
    )
    _run(session)
    assert message.status == MessageStatus.DELIVERED
