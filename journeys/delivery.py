"""Delivering the outbox: due messages claimed in batches, the send policies applied in
order, each outcome recorded on the message, and what passes handed to its provider.

The policies, in this order (the first that stops a message names itself in
``reason``):

1. the member was erased: suppressed;
2. consent: a marketing message needs the member's consent for its channel, and the
   member must not have refused automated personalised marketing (PIPL art. 24);
   withdrawal wins at once, since it is read at delivery: suppressed;
3. the global pause switch: deferred until it is lifted (a minute at a time);
4. quiet hours in the member's own time zone (marketing SMS; default 21:00-08:00):
   deferred to the first minute after them, never dropped;
5. the frequency cap across all journeys, per member per day and per week (marketing
   only): deferred to the next day, or suppressed once older than the cap's patience.

A message is claimed ``FOR UPDATE SKIP LOCKED`` on PostgreSQL and finished in the same
transaction, so two workers never deliver it twice; the providers here answer at once
(the console provider), and providers over the network come with their own issue.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
import uuid
from collections import Counter
from collections.abc import Mapping
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from journeys.definition import TIME
from journeys.models import Enrollment, Journey, Message, MessageStatus
from journeys.templates import SmsStyle, compose_sms
from members import programme
from members.errors import InvalidFields
from members.member import Member

DUE = (MessageStatus.QUEUED, MessageStatus.DEFERRED)
# The channels a provider here delivers; a webhook step's calls wait for their channel.
CHANNELS = ("sms", "push")
COUNTED = (MessageStatus.SENT, MessageStatus.DELIVERED)
BATCH = 500


@dataclasses.dataclass(frozen=True)
class Policies:
    quiet_start: str = "21:00"
    quiet_end: str = "08:00"
    daily_cap: int = 2  # marketing messages per member per day (0: no cap)
    weekly_cap: int = 5
    cap_patience_days: int = 3  # a capped message older than this is dropped
    paused: bool = False
    # What every SMS carries: the sender's signature, and the opt-out text by country.
    signature: str = "【会员中心】"
    opt_out_cn: str = "拒收请回复R"
    opt_out_other: str = "Reply STOP to opt out"

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def sms_style(self) -> SmsStyle:
        return SmsStyle(self.signature, self.opt_out_cn, self.opt_out_other)


def parse(data: Mapping[str, Any]) -> Policies:
    errors: dict[str, str] = {}
    values: dict[str, Any] = {}
    for name in ("quiet_start", "quiet_end"):
        value = data.get(name, getattr(Policies, name))
        if not isinstance(value, str) or not TIME.fullmatch(value):
            errors[name] = "a time of day as HH:MM"
        values[name] = value
    for name, high in (("daily_cap", 100), ("weekly_cap", 500), ("cap_patience_days", 30)):
        value = data.get(name, getattr(Policies, name))
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= high:
            errors[name] = f"a whole number from 0 to {high}"
        values[name] = value
    paused = data.get("paused", False)
    if not isinstance(paused, bool):
        errors["paused"] = "true or false"
    for name in ("signature", "opt_out_cn", "opt_out_other"):
        value = data.get(name, getattr(Policies, name))
        if not isinstance(value, str) or not value.strip() or len(value) > 40:
            errors[name] = "text of 1 to 40 characters"
        values[name] = value.strip() if isinstance(value, str) else value
    if isinstance(values.get("signature"), str) and not re.fullmatch(
        r"【[^【】]{2,16}】", values["signature"]
    ):
        errors.setdefault(
            "signature", "the sender's name in 【】, 2 to 16 characters: 【鞋履会员】"
        )
    if errors:
        raise InvalidFields(errors)
    return Policies(**values, paused=paused)


SETTING = programme.Document("send_policies", parse, Policies())


@dataclasses.dataclass
class DeliveryResult:
    claimed: int = 0
    delivered: int = 0
    deferred: int = 0
    suppressed: Counter = dataclasses.field(default_factory=Counter)


def _minutes(text: str) -> int:
    hour, minute = map(int, text.split(":"))
    return hour * 60 + minute


def quiet_until(policies: Policies, zone_name: str, now: dt.datetime) -> dt.datetime | None:
    """When the quiet hours around ``now`` end in the member's zone (None: not quiet)."""
    try:
        zone = ZoneInfo(zone_name)
    except (KeyError, ValueError):
        zone = ZoneInfo("Asia/Shanghai")
    local = now.astimezone(zone)
    start, end = _minutes(policies.quiet_start), _minutes(policies.quiet_end)
    minute = local.hour * 60 + local.minute
    quiet = (start <= minute or minute < end) if start > end else (start <= minute < end)
    if start == end or not quiet:
        return None
    day = local.date() if minute < end else local.date() + dt.timedelta(days=1)
    hour, minute_of = divmod(end, 60)
    return dt.datetime.combine(day, dt.time(hour, minute_of), zone)


def deliver_due(session: Session, *, now: dt.datetime, limit: int = BATCH) -> DeliveryResult:
    """Claim up to ``limit`` due messages and settle each (the caller commits)."""
    policies, _ = SETTING.load(session)
    m = Message.__table__.c
    query = (
        select(Message)
        .where(m.status.in_(DUE), m.send_after <= now, m.channel.in_(CHANNELS))
        .order_by(m.send_after, m.id)
        .limit(limit)
    )
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True, of=Message)
    messages = session.scalars(query).all()
    result = DeliveryResult(claimed=len(messages))
    if not messages:
        return result
    ids = {message.member_id for message in messages}
    members = {row.id: row for row in session.scalars(select(Member).where(Member.id.in_(ids)))}
    counts = _sent_counts(session, ids, now)
    for message in messages:
        member = members.get(message.member_id)
        outcome = _policy(message, member, policies, counts, now)
        if outcome is None:
            _send_console(message, member, policies, now)
            counts[message.member_id] = [c + 1 for c in counts.get(message.member_id, [0, 0])]
            result.delivered += 1
            continue
        status, reason, until = outcome
        message.status, message.reason, message.updated_at = status, reason, now
        if status == MessageStatus.DEFERRED:
            message.send_after = until
            result.deferred += 1
        else:
            result.suppressed[reason] += 1
    session.flush()
    return result


def _sent_counts(session: Session, member_ids: set[int], now: dt.datetime) -> dict[int, list[int]]:
    """Per member: marketing messages sent in the last day and the last week."""
    m = Message.__table__.c
    day, week = now - dt.timedelta(days=1), now - dt.timedelta(days=7)
    rows = session.execute(
        select(
            m.member_id,
            func.count().filter(m.sent_at > day),
            func.count(),
        )
        .where(
            m.member_id.in_(member_ids),
            m.status.in_(COUNTED),
            m.transactional.is_(False),
            m.sent_at > week,
        )
        .group_by(m.member_id)
    )
    return {member_id: [daily, weekly] for member_id, daily, weekly in rows}


def _policy(message, member, policies, counts, now):
    """(status, reason, until) of the first policy that holds the message back."""
    if member is None or member.erased_at is not None:
        return MessageStatus.SUPPRESSED, "erased", None
    marketing = not message.transactional
    if marketing:
        consent = {"sms": member.consent_sms, "push": member.consent_push}.get(
            message.channel, True
        )
        if not consent:
            return MessageStatus.SUPPRESSED, f"no_consent:{message.channel}", None
        if not member.personalised_marketing:
            return MessageStatus.SUPPRESSED, "refused_personalised_marketing", None
    if policies.paused:
        return MessageStatus.DEFERRED, "paused", now + dt.timedelta(minutes=1)
    if marketing and message.channel == "sms":
        until = quiet_until(policies, member.timezone, now)
        if until is not None:
            return MessageStatus.DEFERRED, "quiet_hours", until
    if marketing:
        daily, weekly = counts.get(member.id, [0, 0])
        capped = (policies.daily_cap and daily >= policies.daily_cap) or (
            policies.weekly_cap and weekly >= policies.weekly_cap
        )
        if capped:
            if now - message.created_at > dt.timedelta(days=policies.cap_patience_days):
                return MessageStatus.SUPPRESSED, "frequency_cap", None
            return MessageStatus.DEFERRED, "frequency_cap", now + dt.timedelta(days=1)
    return None


def outbox(
    *,
    member: str | None = None,
    journey: str | None = None,
    status: str | None = None,
    channel: str | None = None,
) -> Select:
    """Messages, newest first, each with its member's external id and phone and its
    journey's key, filtered (the messages page and API read this)."""
    query = (
        select(Message, Member.external_id, Member.phone, Journey.key)
        .join(Member, Member.id == Message.member_id)
        .outerjoin(Enrollment, Enrollment.id == Message.enrollment_id)
        .outerjoin(Journey, Journey.id == Enrollment.journey_id)
        .order_by(Message.id.desc())
    )
    if member:
        query = query.where(Member.external_id == member)
    if journey:
        query = query.where(Journey.key == journey)
    if status:
        query = query.where(Message.status == status)
    if channel:
        query = query.where(Message.channel == channel)
    return query


def _send_console(message: Message, member: Member, policies: Policies, now: dt.datetime) -> None:
    """The console provider: the message is delivered into the outbox, to be read on
    the messages page (so that a demo needs no SMS account). An SMS is stored as sent:
    with the signature and the opt-out text."""
    if message.channel == "sms":
        message.body = compose_sms(message.body, policies.sms_style, phone=member.phone)
    message.status = MessageStatus.DELIVERED
    message.provider = "console"
    message.provider_message_id = f"console-{uuid.uuid4().hex[:16]}"
    message.attempts += 1
    message.sent_at = message.delivered_at = message.updated_at = now
    message.reason = None
