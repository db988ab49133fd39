"""Webhooks out: facts about members written as one delivery per subscribed endpoint,
which journeys/webhook_sending.py then posts, signed per Standard Webhooks.

``emit`` writes the deliveries of one fact in the caller's transaction (so a fact and
its webhooks commit together). Each fact has a stable key; the ``webhook-id`` is
derived from it, and (endpoint, webhook-id) is unique, so emitting the same fact twice
writes nothing the second time.

``webhook_fanout.fan_out`` emits what ``members/`` and ``experiments/`` append.

``message_statuses`` and ``journey_conversions`` are called by the code that writes
those facts (delivery, receipts, the engine's conversion), in its transaction: a
conversion's time is its event's time, which can lie in the past, so no cursor could
find it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import uuid
from collections.abc import Collection, Iterable, Sequence
from decimal import Decimal
from enum import Enum
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from journeys.models import Enrollment, Journey, Message
from journeys.webhook_endpoints import EVENT_TYPES
from journeys.webhook_models import DeliveryStatus, WebhookDelivery, WebhookEndpoint
from members.bulk import dialect_insert
from members.member import Member

_INSERT_CHUNK = 1_000  # rows per INSERT (SQLite allows 32766 variables)
_deliveries = WebhookDelivery.__table__


@dataclasses.dataclass(frozen=True)
class Fact:
    """One thing that happened, as webhooks carry it."""

    key: str  # stable: the same fact always has the same key
    data: dict[str, Any]
    at: dt.datetime | None = None  # when it happened (the payload's timestamp)


def event_id(event_type: str, key: str | None = None) -> str:
    """The ``webhook-id``: derived from the fact's key, so stable across re-emits and
    retries; a random one for a fact without a key."""
    if key is None:
        return "msg_" + uuid.uuid4().hex
    return "msg_" + hashlib.sha256(f"{event_type}\x1f{key}".encode()).hexdigest()[:32]


def iso(at: dt.datetime) -> str:
    """ISO-8601 in UTC with a Z, as Standard Webhooks payloads write times."""
    return at.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def payload(event_type: str, data: dict[str, Any], at: dt.datetime) -> dict[str, Any]:
    return {"type": event_type, "timestamp": iso(at), "data": _plain(data)}


def subscribers(session: Session) -> dict[str, list[int]]:
    """Event type -> the active endpoints subscribed to it (one small query)."""
    found: dict[str, list[int]] = {}
    query = select(WebhookEndpoint.id, WebhookEndpoint.event_types).where(
        WebhookEndpoint.active.is_(True)
    )
    for endpoint_id, types in session.execute(query.order_by(WebhookEndpoint.id)):
        for event_type in (types or {}).get("types", []):
            found.setdefault(event_type, []).append(endpoint_id)
    return found


def emit(
    session: Session,
    event_type: str,
    data: dict[str, Any],
    now: dt.datetime,
    *,
    key: str | None = None,
    at: dt.datetime | None = None,
) -> int:
    """Write one fact's delivery to each active endpoint subscribed to ``event_type``;
    the number written (0 when none subscribes, or the fact was emitted before)."""
    if event_type not in EVENT_TYPES:
        raise ValueError(f"unknown webhook event type {event_type!r}")
    endpoint_ids = subscribers(session).get(event_type, [])
    return emit_facts(
        session, event_type, [Fact(key or uuid.uuid4().hex, data, at)], endpoint_ids, now
    )


def emit_facts(
    session: Session,
    event_type: str,
    facts: Sequence[Fact],
    endpoint_ids: Collection[int],
    now: dt.datetime,
) -> int:
    """Write each fact's delivery to each of ``endpoint_ids``, skipping those written
    before; the number written."""
    if not facts or not endpoint_ids:
        return 0
    rows = []
    for fact in facts:
        body = payload(event_type, fact.data, fact.at or now)
        webhook_id = event_id(event_type, fact.key)
        rows.extend(
            {
                "endpoint_id": endpoint_id,
                "event_id": webhook_id,
                "event_type": event_type,
                "payload": body,
                "status": DeliveryStatus.PENDING.value,
                "attempts": 0,
                "next_attempt_at": now,
                "created_at": now,
            }
            for endpoint_id in endpoint_ids
        )
    insert = dialect_insert(session.get_bind().dialect.name)
    written = 0
    for start in range(0, len(rows), _INSERT_CHUNK):
        statement = (
            insert(_deliveries)
            .values(rows[start : start + _INSERT_CHUNK])
            .on_conflict_do_nothing(index_elements=["endpoint_id", "event_id"])
            .returning(_deliveries.c.id)
        )
        written += len(session.execute(statement).all())
    return written


# -- facts that their writers emit


def message_statuses(session: Session, message_ids: Iterable[int], now: dt.datetime) -> int:
    """``message.status`` for these messages as they stand now (call it after recording
    their new status, in the same transaction). A status is one fact per message; a
    deferral is one per time it was deferred to."""
    ids = list(message_ids)
    endpoint_ids = subscribers(session).get("message.status", [])
    if not ids or not endpoint_ids:
        return 0
    m = Message
    query = (
        select(m, Member.external_id, Journey.key)
        .join(Member, Member.id == m.member_id)
        .outerjoin(Enrollment, Enrollment.id == m.enrollment_id)
        .outerjoin(Journey, Journey.id == Enrollment.journey_id)
        .where(m.id.in_(ids))
    )
    facts = []
    for message, member, journey in session.execute(query):
        status = _value(message.status)
        key = f"{message.id}:{status}"
        if status == "deferred":
            key += f":{iso(message.send_after)}"
        data = {
            "message": str(message.id),
            "member": member,
            "journey": journey,
            "step": message.step,
            "channel": message.channel,
            "provider": message.provider,
            "status": status,
            "reason": message.reason,
            "error": message.error,
            "send_after": message.send_after if status == "deferred" else None,
        }
        facts.append(Fact(key, data, now))
    return emit_facts(session, "message.status", facts, endpoint_ids, now)


def journey_conversions(session: Session, enrollment_ids: Iterable[int], now: dt.datetime) -> int:
    """``journey.converted`` for these enrollments (call it after setting converted_at,
    in the same transaction); an enrollment converts once."""
    ids = list(enrollment_ids)
    endpoint_ids = subscribers(session).get("journey.converted", [])
    if not ids or not endpoint_ids:
        return 0
    e = Enrollment
    query = (
        select(e.id, e.converted_at, e.entered_at, e.entry_key, Journey.key, Member.external_id)
        .join(Journey, Journey.id == e.journey_id)
        .join(Member, Member.id == e.member_id)
        .where(e.id.in_(ids), e.converted_at.is_not(None))
    )
    facts = [
        Fact(
            str(row.id),
            {
                "member": row.external_id,
                "journey": row.key,
                "enrollment": str(row.id),
                "entry_key": row.entry_key,
                "entered_at": row.entered_at,
                "converted_at": row.converted_at,
            },
            row.converted_at,
        )
        for row in session.execute(query)
    ]
    return emit_facts(session, "journey.converted", facts, endpoint_ids, now)


def _value(value: Any) -> Any:
    return value.value if isinstance(value, Enum) else value


def _plain(value: Any) -> Any:
    """JSON for a payload: times in UTC ISO-8601, decimals as strings, enums by value."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dt.datetime):
        return iso(value)
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    return _value(value)
