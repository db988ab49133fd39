"""Receipts settle a message once (a repeated push changes nothing, an unknown one is
kept unmatched); an opt-out reply withdraws SMS consent at once, in consent_log."""

from __future__ import annotations

import datetime as dt
import itertools

import pytest
from sqlalchemy import select

from journeys import receipts
from journeys.channel_models import InboundMessage, ProviderAccount, Receipt
from journeys.models import Message, MessageStatus
from journeys.providers.base import Reply, Report
from members.member import ConsentRecord, Member

NOW = dt.datetime(2026, 11, 23, 4, 0, tzinfo=dt.UTC)
_names = itertools.count()


@pytest.fixture
def account(session):
    row = ProviderAccount(
        name=f"sms-{next(_names)}",
        kind="twilio",
        channel="sms",
        settings={},
        receipt_token=f"t-{next(_names)}",
    )
    session.add(row)
    session.flush()
    return row


def _sent(session, account, phone="+8613800138000"):
    member = Member(external_id=f"rc-{next(_names)}", phone=phone, consent_sms=True)
    session.add(member)
    session.flush()
    message = Message(
        member_id=member.id,
        channel="sms",
        provider=account.name,
        dedup_key=f"rc:{next(_names)}",
        body="hi",
        status=MessageStatus.SENT,
        provider_message_id=f"SM{next(_names)}",
        send_after=NOW,
    )
    session.add(message)
    session.flush()
    return member, message


def test_a_receipt_settles_its_message_once(session, account):
    _, message = _sent(session, account)
    report = Report(
        f"{message.provider_message_id}:delivered", "delivered", message.provider_message_id
    )
    tally = receipts.record_reports(session, account, [report], now=NOW)
    assert (tally.stored, tally.matched) == (1, 1)
    assert (message.status, message.delivered_at) == (MessageStatus.DELIVERED, NOW)
    again = receipts.record_reports(session, account, [report], now=NOW)
    assert (again.stored, again.repeated) == (0, 1)
    # A late failure report does not undo a delivery.
    late = Report(f"{message.provider_message_id}:failed", "failed", message.provider_message_id)
    receipts.record_reports(session, account, [late], now=NOW)
    assert message.status == MessageStatus.DELIVERED


def test_a_failure_receipt_and_one_matched_by_our_own_key(session, account):
    _, failed = _sent(session, account)
    _, echoed = _sent(session, account)
    receipts.record_reports(
        session,
        account,
        [
            Report("a", "failed", failed.provider_message_id, error_code="30003"),
            Report("b", "delivered", "BIZ-9", dedup_key=echoed.dedup_key),
        ],
        now=NOW,
    )
    assert (failed.status, failed.reason, failed.error) == (
        MessageStatus.FAILED,
        "undelivered",
        "30003",
    )
    assert echoed.status == MessageStatus.DELIVERED


def test_an_interrupted_message_is_settled_by_its_receipt(session, account):
    _, message = _sent(session, account)
    message.status, message.reason = MessageStatus.FAILED, "interrupted"
    session.flush()
    receipts.record_reports(
        session, account, [Report("x", "delivered", dedup_key=message.dedup_key)], now=NOW
    )
    assert message.status == MessageStatus.DELIVERED


def test_a_receipt_for_an_unknown_message_is_kept_unmatched(session, account):
    tally = receipts.record_reports(
        session, account, [Report("zz", "delivered", "SMnope")], now=NOW
    )
    assert (tally.stored, tally.unknown) == (1, 1)
    row = session.scalar(select(Receipt).where(Receipt.event_key == "zz"))
    assert row.message_id is None and row.provider == account.name


@pytest.mark.parametrize("text", ["TD", "t", " 退订 ", "STOP", "unsubscribe", "R。", "Stop!"])
def test_opt_out_words(text):
    assert receipts.is_opt_out(text)


@pytest.mark.parametrize("text", ["thanks", "TD please call me", "停", ""])
def test_other_replies_are_not_opt_outs(text):
    assert not receipts.is_opt_out(text)


def test_an_opt_out_reply_withdraws_sms_consent_at_once(session, account):
    member, _ = _sent(session, account, phone="+8613900139000")
    tally = receipts.record_replies(
        session, account, [Reply("in-1", "+8613900139000", "退订")], now=NOW
    )
    assert tally.opt_outs == 1
    assert member.consent_sms is False
    record = session.scalar(select(ConsentRecord).where(ConsentRecord.member_id == member.id))
    assert (record.channel, record.granted, record.source) == ("sms", False, "sms_reply")
    inbound = session.scalar(
        select(InboundMessage).where(InboundMessage.provider_message_id == "in-1")
    )
    assert (inbound.action, inbound.member_id) == ("opt_out", member.id)
    # The provider repeats its push: stored once, nothing more in the log.
    assert (
        receipts.record_replies(
            session, account, [Reply("in-1", "+8613900139000", "退订")], now=NOW
        ).repeated
        == 1
    )


def test_a_chatty_reply_is_kept_and_changes_nothing(session, account):
    member, _ = _sent(session, account, phone="+8613900139001")
    receipts.record_replies(session, account, [Reply("in-2", member.phone, "谢谢")], now=NOW)
    assert member.consent_sms is True
