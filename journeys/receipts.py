"""What providers tell us back: delivery receipts settle a message's fate, and an SMS
reply that says "TD", "退订", "STOP"... withdraws the member's SMS consent at once.

Each receipt and reply is stored once (the provider's own identity of it is unique),
so a provider repeating its push changes nothing; a receipt for a message Tenure does
not know is kept, unmatched, for the record.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import re

from sqlalchemy import or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from journeys import exposures, webhooks_out
from journeys.channel_models import InboundMessage, ProviderAccount, Receipt
from journeys.models import Message, MessageStatus
from journeys.policies import OPT_OUT_WORDS
from journeys.providers.base import Reply, Report
from members import profiles
from members.fields import mask_phone
from members.member import Channel, Member

log = logging.getLogger(__name__)

# A reply is compared after upper-casing and dropping spaces and punctuation.
_NOISE = re.compile(r"[\s\.,!?。，！？、;；:：'\"“”‘’]+")
# A receipt may move a message only forward from these.
_OPEN = (MessageStatus.SENDING, MessageStatus.SENT, MessageStatus.FAILED)


def is_opt_out(text: str) -> bool:
    return _NOISE.sub("", text).upper() in OPT_OUT_WORDS


@dataclasses.dataclass
class Tally:
    stored: int = 0
    repeated: int = 0
    matched: int = 0
    unknown: int = 0
    opt_outs: int = 0


def record_reports(
    session: Session, account: ProviderAccount, reports: list[Report], *, now: dt.datetime
) -> Tally:
    """Store each receipt once and settle the message it is about."""
    tally = Tally()
    settled: list[int] = []
    for report in reports:
        if not _store_once(
            session,
            Receipt(
                provider=account.name,
                event_key=report.event_key[:200],
                provider_message_id=report.provider_message_id,
                status=report.status,
                error_code=report.error_code,
                detail=dict(report.detail),
                received_at=now,
            ),
        ):
            tally.repeated += 1
            continue
        tally.stored += 1
        message = _message_of(session, account, report)
        if message is None:
            tally.unknown += 1
            continue
        tally.matched += 1
        session.execute(
            Receipt.__table__.update()
            .where(Receipt.provider == account.name, Receipt.event_key == report.event_key[:200])
            .values(message_id=message.id)
        )
        if _settle(message, report, now):
            settled.append(message.id)
    session.flush()
    webhooks_out.message_statuses(session, settled, now)
    exposures.of_messages(session, settled, now)
    return tally


def _store_once(session: Session, row) -> bool:
    """Insert, or False when the provider's identity of it is stored already."""
    try:
        with session.begin_nested():
            session.add(row)
            session.flush()
    except IntegrityError:
        return False
    return True


def _message_of(session: Session, account: ProviderAccount, report: Report) -> Message | None:
    keys = []
    if report.provider_message_id:
        keys.append(
            (Message.provider == account.name)
            & (Message.provider_message_id == report.provider_message_id)
        )
    if report.dedup_key:
        keys.append(Message.dedup_key == report.dedup_key)
    if not keys:
        return None
    return session.scalars(select(Message).where(or_(*keys)).limit(1)).first()


def _settle(message: Message, report: Report, now: dt.datetime) -> bool:
    """Move the message on by the report; whether its status changed."""
    if message.status not in _OPEN:
        return False  # delivered stays delivered; a late "sent" or a repeat changes nothing
    before = message.status
    if report.status == "delivered":
        message.status, message.reason, message.error = MessageStatus.DELIVERED, None, None
        message.delivered_at = now
        if message.provider_message_id is None and report.provider_message_id:
            message.provider_message_id = report.provider_message_id
    elif report.status == "failed" and message.status != MessageStatus.FAILED:
        message.status, message.reason = MessageStatus.FAILED, "undelivered"
        message.error = report.error_code or "the provider reported it undelivered"
    message.updated_at = now
    return message.status != before


def record_replies(
    session: Session, account: ProviderAccount, replies: list[Reply], *, now: dt.datetime
) -> Tally:
    """Store each reply once; an opt-out withdraws SMS consent (consent_log source
    "sms_reply") from every member with that number, at once."""
    tally = Tally()
    for reply in replies:
        opt_out = is_opt_out(reply.body)
        members = (
            session.scalars(
                select(Member).where(Member.phone == reply.phone, Member.erased_at.is_(None))
            ).all()
            if reply.phone
            else []
        )
        stored = _store_once(
            session,
            InboundMessage(
                provider=account.name,
                provider_message_id=reply.provider_message_id[:128],
                phone=reply.phone[:32],
                member_id=members[0].id if members else None,
                body=reply.body[:1600],
                action="opt_out" if opt_out else "none",
                received_at=now,
            ),
        )
        if not stored:
            tally.repeated += 1
            continue
        tally.stored += 1
        if not opt_out:
            continue
        for member in members:
            profiles.set_consent(
                session,
                member,
                [(Channel.SMS, False)],
                source="sms_reply",
                now=now,
                note=f"replied {reply.body.strip()[:40]!r} through {account.name}",
            )
            tally.opt_outs += 1
        log.info(
            "opt-out reply from %s: SMS consent withdrawn for %d members",
            mask_phone(reply.phone),
            len(members),
        )
    session.flush()
    return tally


def account_by_token(session: Session, token: str) -> ProviderAccount | None:
    if not token or len(token) > 64:
        return None
    return session.scalar(select(ProviderAccount).where(ProviderAccount.receipt_token == token))
