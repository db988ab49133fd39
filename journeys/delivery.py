"""Delivering the outbox, a batch at a time, as a state machine kept in the database.

1. ``deliver_due`` claims due messages (``FOR UPDATE SKIP LOCKED`` on PostgreSQL),
   applies the send policies (journeys/policies.py) and settles what they hold back.
   A message for the console provider is delivered there and then; one for a real
   provider becomes ``sending`` with a lease. The caller commits.
2. ``send_claimed`` hands those to their providers outside any long transaction. Just
   before a provider call it marks the messages ``started_at`` (committed), and after
   it records each outcome (committed): ``sent`` (a receipt will follow),
   ``delivered``, ``deferred`` with the time of the next try (transient errors, with
   exponential backoff), or ``failed`` with the provider's words.
3. ``reclaim`` (the reconciler) looks at leases that ran out: a message never started
   is simply due again; one whose worker died during the provider call is sent again
   only through an idempotent provider, and otherwise ends ``failed`` as
   ``interrupted``, so that no member ever gets it twice.

Redis only carries the jobs that run these: a message Redis lost is due in the
database, and the next run takes it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import math
import random
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from typing import Any

from sqlalchemy import Select, func, select, update
from sqlalchemy.orm import Session

from journeys import accounts, exposures, providers, webhooks_out
from journeys.channel_models import ProviderAccount, Suppression
from journeys.models import Enrollment, Journey, Message, MessageStatus, MessageTemplate
from journeys.policies import CHANNEL_CONSENT, SETTING, Usage, evaluate, refusal
from journeys.providers.base import Outcome, Outgoing, Result
from journeys.templates import compose_sms
from journeys.vault import SecretUnreadable, Vault
from members.fields import mask_phone, mask_phones
from members.member import Member

log = logging.getLogger(__name__)

DUE = (MessageStatus.QUEUED, MessageStatus.DEFERRED)
CHANNELS = ("sms", "push", "webhook")
COUNTED = (MessageStatus.SENDING, MessageStatus.SENT, MessageStatus.DELIVERED)
BATCH = 500
# Long enough for a batch through a slow provider; a message is only ever started
# under the lease it was claimed with, so a lease running out cannot send it twice.
LEASE = dt.timedelta(minutes=15)
MAX_ATTEMPTS = 8
BACKOFF_FIRST = dt.timedelta(seconds=30)
BACKOFF_MOST = dt.timedelta(hours=1)
RETRY_AFTER_MOST = 86400  # seconds
_messages = Message.__table__


@dataclasses.dataclass
class DeliveryResult:
    claimed: int = 0
    delivered: int = 0
    sent: int = 0
    deferred: int = 0
    failed: int = 0
    suppressed: Counter = dataclasses.field(default_factory=Counter)
    # Claimed for a real provider: ``send_claimed`` takes them on under ``lease``.
    to_send: list[int] = dataclasses.field(default_factory=list)
    lease: dt.datetime | None = None

    def add(self, other: DeliveryResult) -> None:
        self.claimed += other.claimed
        self.delivered += other.delivered
        self.sent += other.sent
        self.deferred += other.deferred
        self.failed += other.failed
        self.suppressed.update(other.suppressed)

    def summary(self) -> str:
        return (
            f"{self.claimed} claimed, {self.delivered} delivered, {self.sent} sent, "
            f"{self.deferred} deferred, {sum(self.suppressed.values())} suppressed, "
            f"{self.failed} failed"
        )


def address(message, member) -> str | None:
    """Where a message goes: the member's phone or push token, or a webhook step's URL."""
    if message.channel == "sms":
        return member.phone
    if message.channel == "push":
        return member.push_token
    url = (message.params or {}).get("url")
    if url is None:  # written before webhook steps kept their URL in params
        try:
            url = json.loads(message.body).get("url")
        except (ValueError, AttributeError):
            url = None
    return url


def due_count(session: Session, now: dt.datetime) -> int:
    return session.scalar(
        select(func.count())
        .select_from(_messages)
        .where(
            _messages.c.status.in_(DUE),
            _messages.c.send_after <= now,
            _messages.c.channel.in_(CHANNELS),
        )
    )


def deliver_due(session: Session, *, now: dt.datetime, limit: int = BATCH) -> DeliveryResult:
    """Claim up to ``limit`` due messages and settle each, or claim it for its provider
    (the caller commits, then calls ``send_claimed`` with ``to_send``)."""
    policies, _ = SETTING.load(session)
    m = _messages.c
    query = (
        select(Message)
        .where(m.status.in_(DUE), m.send_after <= now, m.channel.in_(CHANNELS))
        .order_by(m.priority.desc(), m.send_after, m.id)
        .limit(limit)
    )
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True, of=Message)
    messages = session.scalars(query).all()
    result = DeliveryResult(claimed=len(messages), lease=now + LEASE)
    if not messages:
        return result
    ids = {message.member_id for message in messages}
    members = {row.id: row for row in session.scalars(select(Member).where(Member.id.in_(ids)))}
    usage = _usage(session, ids, now)
    addresses = {
        (message.channel, address(message, members[message.member_id]))
        for message in messages
        if message.member_id in members
    }
    blocked = _suppressed(session, addresses)
    router = accounts.Router(session)
    # Under a tight cap the higher priority goes first, then the older.
    for message in sorted(messages, key=lambda msg: (-msg.priority, msg.created_at, msg.id)):
        member = members.get(message.member_id)
        _settle(message, member, policies, router, usage, blocked, now, result)
    session.flush()
    sending = set(result.to_send)
    # A pause re-defers every minute: that is not news worth a webhook each time.
    news = [m.id for m in messages if m.id not in sending and m.reason != "paused"]
    webhooks_out.message_statuses(session, news, now)
    exposures.of_messages(session, news, now)
    return result


def _settle(message, member, policies, router, usage, blocked, now, result) -> None:
    route = router.route(message.channel, member) if member is not None else None
    to = address(message, member) if member is not None else None
    hold = evaluate(
        message,
        member,
        policies,
        now=now,
        usage=usage[message.member_id],
        suppressed=(message.channel, to) in blocked,
        cross_border=route is not None and route.cross_border,
    )
    message.updated_at = now
    if hold is None and route.error:
        message.status, message.reason, message.error = (
            MessageStatus.FAILED,
            "no_provider",
            route.error,
        )
        result.failed += 1
        return
    if hold is None and not to:
        hold_status, reason = MessageStatus.SUPPRESSED, f"no_address:{message.channel}"
        message.status, message.reason = hold_status, reason
        result.suppressed[reason] += 1
        return
    if hold is not None:
        message.status, message.reason = hold.status, hold.reason
        if hold.status == MessageStatus.DEFERRED:
            message.send_after = hold.until
            result.deferred += 1
        else:
            result.suppressed[hold.reason] += 1
        return
    if message.channel == "sms" and message.attempts == 0:
        message.body = compose_sms(message.body, policies.sms_style, phone=member.phone)
    if not message.transactional:
        usage[message.member_id].daily += 1
        usage[message.member_id].weekly += 1
    message.attempts += 1
    message.provider = route.name
    message.reason = message.error = None
    if route.account is None:
        message.status = MessageStatus.DELIVERED
        message.provider_message_id = f"console-{uuid.uuid4().hex[:16]}"
        message.sent_at = message.delivered_at = now
        result.delivered += 1
        return
    message.status = MessageStatus.SENDING
    message.claimed_until, message.started_at = result.lease, None
    result.to_send.append(message.id)


def _usage(session: Session, member_ids: set[int], now: dt.datetime) -> defaultdict[int, Usage]:
    """Per member: marketing messages gone (or going) in the last day and week."""
    m = _messages.c
    day, week = now - dt.timedelta(days=1), now - dt.timedelta(days=7)
    at = func.coalesce(m.sent_at, m.updated_at)
    rows = session.execute(
        select(m.member_id, func.count().filter(at > day), func.count())
        .where(
            m.member_id.in_(member_ids),
            m.status.in_(COUNTED),
            m.transactional.is_(False),
            m.channel.in_(("sms", "push")),
            at > week,
            # Nothing older waits this long (the cap's patience is at most 30 days): lets
            # the (member_id, created_at) index do the work.
            m.created_at > now - dt.timedelta(days=40),
        )
        .group_by(m.member_id)
    )
    usage: defaultdict[int, Usage] = defaultdict(Usage)
    for member_id, daily, weekly in rows:
        usage[member_id] = Usage(daily, weekly)
    return usage


def _suppressed(session: Session, addresses: set[tuple[str, str | None]]) -> set[tuple[str, str]]:
    wanted = {a for _, a in addresses if a}
    if not wanted:
        return set()
    channels = {channel for channel, _ in addresses}
    rows = session.execute(
        select(Suppression.channel, Suppression.address).where(
            Suppression.channel.in_(channels), Suppression.address.in_(wanted)
        )
    )
    return {(channel, value) for channel, value in rows}


# -- the provider calls


def send_claimed(
    session: Session,
    claimed: DeliveryResult,
    *,
    vault: Vault,
    clock: Callable[[], dt.datetime],
    commit: Callable[[], None],
    deadline: dt.datetime | None = None,
) -> DeliveryResult:
    """Hand the messages claimed for real providers to them, a few at a time, each
    started and recorded in its own commit. Past ``deadline`` no call is started: the
    rest go back to the queue at once (not after the lease), for the next run."""
    result = DeliveryResult()
    if not claimed.to_send:
        return result
    m = _messages.c
    rows = session.execute(
        select(_messages).where(m.id.in_(claimed.to_send), m.status == MessageStatus.SENDING)
    ).all()
    member_ids = {row.member_id for row in rows}
    members = {
        row.id: row
        for row in session.execute(
            select(Member.id, Member.phone, Member.push_token, Member.external_id).where(
                Member.id.in_(member_ids)
            )
        )
    }
    keys = {row.template_key for row in rows if row.template_key}
    bound = {
        row.key: row
        for row in session.execute(
            select(
                MessageTemplate.key, MessageTemplate.sms_template_code, MessageTemplate.deep_link
            ).where(MessageTemplate.key.in_(keys))
        )
    }
    names = {row.provider for row in rows}
    account_of = {
        row.name: row
        for row in session.scalars(select(ProviderAccount).where(ProviderAccount.name.in_(names)))
    }
    for account in account_of.values():
        session.expunge(account)  # read after the commits below without a reload
    groups: dict[str, list[Any]] = defaultdict(list)
    for row in rows:
        groups[row.provider].append(row)
    for name, group in groups.items():
        account = account_of.get(name)
        try:
            if account is None:
                raise SecretUnreadable(f"the provider account {name!r} was removed")
            provider = accounts.build(account, vault)
        except SecretUnreadable as exc:
            _finish(session, [r.id for r in group], Outcome(Result.FAILED, error=str(exc)), clock())
            webhooks_out.message_statuses(session, [r.id for r in group], clock())
            commit()
            result.failed += len(group)
            continue
        step = max(1, provider.concurrency)
        for start in range(0, len(group), step):
            chunk = group[start : start + step]
            started = clock()
            if deadline is not None and started >= deadline:
                _release(session, [r.id for r in group[start:]], claimed.lease, started)
                commit()
                break
            chunk = _still_allowed(session, chunk, started, result)
            ours = set(
                session.scalars(
                    update(Message)
                    .where(
                        Message.id.in_([r.id for r in chunk]),
                        Message.status == MessageStatus.SENDING,
                        Message.started_at.is_(None),
                        Message.claimed_until == claimed.lease,
                    )
                    .values(started_at=started)
                    .returning(Message.id)
                    .execution_options(synchronize_session=False)
                )
            )
            commit()
            chunk = [r for r in chunk if r.id in ours]
            if not chunk:
                continue
            outgoing = [
                _outgoing(r, members[r.member_id], bound.get(r.template_key)) for r in chunk
            ]
            outcomes = provider.send(outgoing)
            finished = clock()
            for row, out, outcome in zip(chunk, outgoing, outcomes, strict=True):
                if outcome.uncertain and not provider.idempotent:
                    outcome = dataclasses.replace(outcome, result=Result.FAILED)
                    uncertain = True
                else:
                    uncertain = False
                _record(session, row, out, outcome, finished, result, uncertain=uncertain)
            webhooks_out.message_statuses(session, [row.id for row in chunk], finished)
            exposures.of_messages(session, [row.id for row in chunk], finished)
            commit()
    return result


def _release(session: Session, ids: list[int], lease, now: dt.datetime) -> None:
    """Unstarted messages of this claim, back to the queue."""
    session.execute(
        update(Message)
        .where(
            Message.id.in_(ids),
            Message.status == MessageStatus.SENDING,
            Message.started_at.is_(None),
            Message.claimed_until == lease,
        )
        # Never started: not an attempt.
        .values(
            status=MessageStatus.QUEUED,
            claimed_until=None,
            updated_at=now,
            attempts=Message.attempts - 1,
        )
        .execution_options(synchronize_session=False)
    )


def _still_allowed(session: Session, chunk: list[Any], now: dt.datetime, result) -> list[Any]:
    """Consent is read again just before the call: a withdrawal (a "TD" reply) since
    the claim wins, and the message is suppressed instead."""
    marketing = [row for row in chunk if not row.transactional and row.channel in CHANNEL_CONSENT]
    if not marketing:
        return chunk
    members = {
        row.id: row
        for row in session.execute(
            select(
                Member.id,
                Member.consent_sms,
                Member.consent_push,
                Member.personalised_marketing,
                Member.erased_at,
            ).where(Member.id.in_({row.member_id for row in marketing}))
        )
    }
    refused = ((row, refusal(row, members.get(row.member_id))) for row in marketing)
    stopped = [(row, reason) for row, reason in refused if reason]
    for row, reason in stopped:
        session.execute(
            update(Message)
            .where(Message.id == row.id, Message.status == MessageStatus.SENDING)
            .values(
                status=MessageStatus.SUPPRESSED, reason=reason, claimed_until=None, updated_at=now
            )
            .execution_options(synchronize_session=False)
        )
        result.suppressed[reason] += 1
    gone = {row.id for row, _ in stopped}
    return [row for row in chunk if row.id not in gone]


def _outgoing(row, member, template) -> Outgoing:
    params = dict(row.params or {})
    return Outgoing(
        message_id=row.id,
        dedup_key=row.dedup_key,
        channel=row.channel,
        to=address(row, member) or "",
        body=row.body,
        title=row.title,
        deep_link=template.deep_link if template is not None else None,
        template_code=template.sms_template_code if template is not None else None,
        params=params.get("template"),
        data={"member": member.external_id, "message": str(row.id)},
    )


def backoff(attempts: int, retry_after: float | None = None) -> dt.timedelta:
    """30 s, 1 min, 2 min... up to an hour, with a little jitter so that a provider
    coming back is not hit by every message at once; never sooner than it asked."""
    wait = min(BACKOFF_FIRST * 2 ** max(attempts - 1, 0), BACKOFF_MOST)
    wait *= random.uniform(0.8, 1.2)  # noqa: S311  (jitter, not a secret)
    if retry_after and math.isfinite(retry_after):
        # A provider asking for more than a day is not taken at its word.
        wait = max(wait, dt.timedelta(seconds=min(retry_after, RETRY_AFTER_MOST)))
    return wait


def _record(session, row, out: Outgoing, outcome: Outcome, now, result, *, uncertain=False):
    # Providers' words may quote the number ("The 'To' number +86... is not valid").
    outcome = dataclasses.replace(outcome, error=mask_phones(outcome.error or "") or None)
    values: dict[str, Any] = {"updated_at": now, "claimed_until": None}
    if outcome.result in (Result.SENT, Result.DELIVERED):
        values.update(
            status=MessageStatus(outcome.result.value),
            provider_message_id=outcome.provider_message_id,
            sent_at=now,
            reason=None,
            error=None,
        )
        if outcome.result == Result.DELIVERED:
            values["delivered_at"] = now
            result.delivered += 1
        else:
            result.sent += 1
    elif outcome.result == Result.RETRY and row.attempts < MAX_ATTEMPTS:
        values.update(
            status=MessageStatus.DEFERRED,
            reason="retry",
            error=outcome.error,
            send_after=now + backoff(row.attempts, outcome.retry_after),
            started_at=None,
        )
        result.deferred += 1
    elif uncertain:
        # It may have gone: sending again could send it twice. A receipt may settle it.
        values.update(
            status=MessageStatus.FAILED,
            reason="uncertain",
            error=f"{outcome.error}: whether it went is unknown, and it is not sent again "
            "so that it is never sent twice (a delivery receipt may still settle it)",
        )
        result.failed += 1
    else:
        reason = "retries_exhausted" if outcome.result == Result.RETRY else "provider_error"
        values.update(status=MessageStatus.FAILED, reason=reason, error=outcome.error)
        result.failed += 1
    if outcome.token_gone:
        session.execute(
            update(Member)
            .where(Member.id == row.member_id, Member.push_token == out.to)
            .values(push_token=None)
            .execution_options(synchronize_session=False)
        )
    # Only while still sending: a receipt that came first has the last word.
    session.execute(
        update(Message)
        .where(Message.id == row.id, Message.status == MessageStatus.SENDING)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    if outcome.result == Result.FAILED:
        to = mask_phone(out.to) if out.channel == "sms" else "(token)"
        log.info("message %s to %s failed: %s", row.id, to, outcome.error)


def _finish(session: Session, ids: Iterable[int], outcome: Outcome, now: dt.datetime) -> None:
    session.execute(
        update(Message)
        .where(Message.id.in_(list(ids)))
        .values(
            status=MessageStatus.FAILED,
            reason="provider_error",
            error=mask_phones(outcome.error or ""),
            claimed_until=None,
            updated_at=now,
        )
        .execution_options(synchronize_session=False)
    )


# -- the reconciler


@dataclasses.dataclass
class Reclaimed:
    requeued: int = 0
    retried: int = 0
    interrupted: int = 0


def reclaim(session: Session, *, now: dt.datetime) -> Reclaimed:
    """Settle messages whose claim ran out (their worker died or was cut off)."""
    m = _messages.c
    query = select(m.id, m.started_at, m.provider, m.attempts).where(
        m.status == MessageStatus.SENDING, m.claimed_until < now
    )
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    rows = session.execute(query).all()
    done = Reclaimed()
    if not rows:
        return done
    idempotent = _idempotent_accounts(session, {row.provider for row in rows})
    for row in rows:
        values: dict[str, Any] = {"claimed_until": None, "updated_at": now}
        if row.started_at is None:  # never started: not an attempt
            values.update(status=MessageStatus.QUEUED, reason=None, attempts=row.attempts - 1)
            done.requeued += 1
        elif row.provider in idempotent and row.attempts < MAX_ATTEMPTS:
            values.update(
                status=MessageStatus.DEFERRED,
                reason="retry",
                error="the worker stopped during the call; sent again (the receiver "
                "de-duplicates on the webhook-id)",
                send_after=now,
                started_at=None,
            )
            done.retried += 1
        else:
            values.update(
                status=MessageStatus.FAILED,
                reason="interrupted",
                error="the worker stopped during the provider call: whether it went is "
                "unknown, and it is not sent again so that it is never sent twice (a "
                "delivery receipt may still settle it)",
            )
            done.interrupted += 1
        session.execute(
            update(Message)
            .where(Message.id == row.id, Message.status == MessageStatus.SENDING)
            .values(**values)
            .execution_options(synchronize_session=False)
        )
    settled = [row.id for row in rows if row.started_at is not None]
    webhooks_out.message_statuses(session, settled, now)
    return done


def _idempotent_accounts(session: Session, names: set[str]) -> set[str]:
    rows = session.execute(
        select(ProviderAccount.name, ProviderAccount.kind).where(ProviderAccount.name.in_(names))
    )
    return {name for name, kind in rows if providers.kind(kind).idempotent}


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
