"""Events in: a batch checked item by item, then stored set-based.

One round trip resolves the members, one creates the unknown ones, and one inserts
the events with ``ON CONFLICT (event_id) DO NOTHING RETURNING event_id``: the
unique key, not a query per event, decides what is a duplicate.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import functools
import random
import re
from collections.abc import Iterable, Sequence
from decimal import Decimal
from typing import Any

from babel.numbers import list_currencies
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from members import bulk
from members.errors import InvalidField
from members.event import Event, IngestCount
from members.fields import json_problem, parse_time
from members.member import Member

# Types Tenure knows; any other name matching CUSTOM_TYPE is a custom event.
KNOWN_TYPES = frozenset(
    {
        "order",
        "refund",
        "login",
        "app_open",
        "checkin",
        "review",
        "share",
        "referral",
        "coupon_redeemed",
    }
)
MONEY_TYPES = frozenset({"order", "refund"})
CUSTOM_TYPE = re.compile(r"^[a-z][a-z0-9_.:-]{0,63}$")
# Clocks drift; an event more than this far ahead of the server is an error, not news.
MAX_FUTURE = dt.timedelta(hours=1)
COUNTER_SHARDS = 8


class UnknownMembers(enum.StrEnum):
    CREATE = "create"
    REJECT = "reject"


class Status(enum.StrEnum):
    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"
    REJECTED = "rejected"


@dataclasses.dataclass
class EventIn:
    event_id: str
    member: str  # the member's external id
    type: str
    occurred_at: dt.datetime
    properties: dict[str, Any] = dataclasses.field(default_factory=dict)
    amount: Decimal | None = None
    currency: str | None = None
    category: str | None = None


@dataclasses.dataclass
class Outcome:
    event_id: str
    status: Status
    field: str | None = None
    reason: str | None = None


def check(event: EventIn, now: dt.datetime) -> tuple[str, str] | None:
    """The first problem with an event's meaning as (field, reason), or None."""
    if not (event.type in KNOWN_TYPES or CUSTOM_TYPE.fullmatch(event.type)):
        return "type", "use lower-case letters, digits and _ . : - (e.g. order, wishlist_add)"
    if event.occurred_at.tzinfo is None:
        return "occurred_at", "give a time zone offset (e.g. +08:00)"
    if event.occurred_at - now > MAX_FUTURE:
        return "occurred_at", "is more than an hour in the future"
    if event.amount is not None:
        if not event.amount.is_finite() or event.amount < 0:
            return "amount", "must be a number of 0 or more (a refund is its own event type)"
        if event.amount >= Decimal("1e12"):
            return "amount", "is too large"
    elif event.type in MONEY_TYPES:
        return "amount", f"an {event.type} needs an amount"
    if event.currency is not None and event.currency not in _currencies():
        return "currency", f"{event.currency!r} is not an ISO 4217 code (e.g. CNY)"
    problem = json_problem(event.properties)
    if problem:
        return "properties", problem
    return None


def ingest(
    session: Session,
    events: Sequence[EventIn],
    *,
    now: dt.datetime,
    default_currency: str,
    unknown_members: UnknownMembers = UnknownMembers.CREATE,
) -> list[Outcome]:
    """Store a batch; return one outcome per event, in order. Flushes, never commits."""
    outcomes: list[Outcome | None] = [None] * len(events)
    seen: set[str] = set()
    valid: list[int] = []
    for i, event in enumerate(events):
        problem = check(event, now)
        if problem:
            outcomes[i] = Outcome(event.event_id, Status.REJECTED, *problem)
        elif event.event_id in seen:
            outcomes[i] = Outcome(event.event_id, Status.DUPLICATE)
        else:
            seen.add(event.event_id)
            valid.append(i)

    members = _resolve_members(session, {events[i].member for i in valid}, now, unknown_members)
    rows = []
    for i in valid:
        event = events[i]
        member_id = members.get(event.member)
        if member_id is None:
            reason = (
                "is erased; identify the member again first"
                if event.member in members
                else "is not a known member"
            )
            outcomes[i] = Outcome(event.event_id, Status.REJECTED, "member", reason)
            continue
        rows.append(
            {
                "event_id": event.event_id,
                "member_id": member_id,
                "type": event.type,
                "occurred_at": event.occurred_at.astimezone(dt.UTC),
                "received_at": now,
                "properties": event.properties,
                "amount": event.amount,
                "currency": (event.currency or default_currency)
                if event.amount is not None
                else None,
                "category": event.category,
            }
        )
    stored = _insert_new(session, rows)
    for i in valid:
        if outcomes[i] is None:
            status = Status.ACCEPTED if events[i].event_id in stored else Status.DUPLICATE
            outcomes[i] = Outcome(events[i].event_id, status)
    return [o for o in outcomes if o is not None]


def tally(
    session: Session,
    outcomes: Iterable[tuple[str, str | None, str | None, str | None]],
    *,
    source: str,
    day: dt.date,
    now: dt.datetime,
) -> None:
    """Add a batch's outcomes (status, field, reason, example id) to the day's counters:
    one statement, in the caller's transaction."""
    counts: dict[tuple[str, str, str], list] = {}
    for status, field, reason, example in outcomes:
        key = (status, (field or "")[:64], _without_values(reason or "")[:200])
        entry = counts.setdefault(key, [0, None])
        entry[0] += 1
        if example is not None:
            entry[1] = example[:100]
    if not counts:
        return
    shard = random.randrange(COUNTER_SHARDS)  # noqa: S311 (spreads rows; not a secret)
    rows = [
        {
            "day": day,
            "source": source,
            "status": status,
            "field": field,
            "reason": reason,
            "shard": shard,
            "count": count,
            "example": example,
            "last_at": now,
        }
        # Sorted, so that two batches lock the same rows in the same order (PostgreSQL).
        for (status, field, reason), (count, example) in sorted(counts.items())
    ]
    insert = bulk.dialect_insert(session.get_bind().dialect.name)(IngestCount.__table__)
    session.execute(
        insert.on_conflict_do_update(
            index_elements=["day", "source", "status", "field", "reason", "shard"],
            set_={
                "count": IngestCount.__table__.c["count"] + insert.excluded["count"],
                "example": func.coalesce(insert.excluded.example, IngestCount.__table__.c.example),
                "last_at": insert.excluded.last_at,
            },
        ),
        rows,
    )


def purge_counts(session: Session, before: dt.date) -> int:
    """Delete the counters of days before ``before``; return how many rows went."""
    return session.execute(delete(IngestCount).where(IngestCount.day < before)).rowcount


# A rejected value quoted in a reason ('010-1234567' is not a mobile number): counters
# group by the reason without it, and never keep personal data.
_QUOTED = re.compile(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"")


def _without_values(reason: str) -> str:
    return _QUOTED.sub("…", reason)


def _resolve_members(
    session: Session, external_ids: set[str], now: dt.datetime, unknown: UnknownMembers
) -> dict[str, int | None]:
    """external id -> member id (None for an erased member); unknown ids are created
    or left out."""
    if not external_ids:
        return {}
    found = _lookup(session, external_ids)
    missing = external_ids - found.keys()
    if missing and unknown is UnknownMembers.CREATE:
        bulk.insert_ignore(
            session,
            Member.__table__,
            [
                {
                    "external_id": x,
                    "joined_at": now,
                    "attributes": {},
                    "created_at": now,
                    "updated_at": now,
                }
                for x in sorted(missing)
            ],
            "external_id",
        )
        found.update(_lookup(session, missing))
    return found


def _lookup(session: Session, external_ids: set[str]) -> dict[str, int | None]:
    rows = bulk.rows_where_in(
        session, Member.__table__, "external_id", external_ids, ("external_id", "id", "erased_at")
    )
    return {x: (None if erased else member_id) for x, member_id, erased in rows}


def _insert_new(session: Session, rows: list[dict[str, Any]]) -> set[str]:
    """Insert the events whose event_id is new; return those event ids."""
    return set(bulk.insert_ignore(session, Event.__table__, rows, "event_id", returning="event_id"))


@functools.cache
def _currencies() -> frozenset[str]:
    return frozenset(list_currencies())


_EVENT_FIELDS = frozenset(
    {"event_id", "member", "type", "occurred_at", "properties", "amount", "currency", "category"}
)
_MAX_LENGTH = {"event_id": 100, "member": 128, "type": 64, "category": 64}


def parse(raw: Any) -> EventIn | list[tuple[str, str]]:
    """An event from its JSON form, or every (field, problem) with it.

    Hand-written rather than a marshmallow schema: it runs a thousand times a batch
    on the ingest fast path. The API documents the same shape as EventInSchema.
    """
    if not isinstance(raw, dict):
        return [("", "each event is a JSON object")]
    errors: list[tuple[str, str]] = [(k, "unknown field") for k in raw if k not in _EVENT_FIELDS]
    for name in ("event_id", "member", "type", "occurred_at"):
        value = raw.get(name)
        if value is None:
            errors.append((name, "is required"))
        elif not isinstance(value, str):
            errors.append((name, "must be a string"))
        elif not value or len(value) > _MAX_LENGTH.get(name, 64):
            errors.append((name, f"must be 1 to {_MAX_LENGTH.get(name, 64)} characters"))
    for name in ("currency", "category"):
        value = raw.get(name)
        if value is not None and not isinstance(value, str):
            errors.append((name, "must be a string"))
    currency = raw.get("currency")
    if isinstance(currency, str) and len(currency) != 3:
        errors.append(("currency", "must be a 3-letter ISO 4217 code"))
    category = raw.get("category")
    if isinstance(category, str) and len(category) > _MAX_LENGTH["category"]:
        errors.append(("category", "must be at most 64 characters"))
    properties = raw.get("properties")
    if properties is None:
        properties = {}
    elif not isinstance(properties, dict):
        errors.append(("properties", "must be an object"))
    occurred_at = None
    if isinstance(raw.get("occurred_at"), str) and raw["occurred_at"]:
        try:
            occurred_at = parse_time(raw["occurred_at"], "occurred_at")
        except InvalidField as exc:
            errors.append((exc.field, exc.message))
    amount = raw.get("amount")
    if amount is not None:
        if isinstance(amount, bool) or not isinstance(amount, (str, int, float)):
            errors.append(("amount", "must be a number"))
        else:
            try:
                amount = Decimal(str(amount))
            except ArithmeticError:
                errors.append(("amount", "must be a number"))
            else:
                if not amount.is_finite():
                    errors.append(("amount", "must be a finite number"))
    if errors:
        return errors
    return EventIn(
        event_id=raw["event_id"],
        member=raw["member"],
        type=raw["type"],
        occurred_at=occurred_at,
        properties=properties,
        amount=amount,
        currency=currency,
        category=category,
    )


@dataclasses.dataclass
class DayCounts:
    day: dt.date
    source: str
    accepted: int = 0
    duplicate: int = 0
    rejected: int = 0

    @property
    def total(self) -> int:
        return self.accepted + self.duplicate + self.rejected


@dataclasses.dataclass
class Rejection:
    source: str
    field: str
    reason: str
    count: int
    last_at: dt.datetime
    example: str | None


def counts_since(session: Session, since: dt.date) -> tuple[list[DayCounts], list[Rejection]]:
    """The counters from ``since`` on: per day and door (newest first), and the reasons
    for rejection (most frequent first, with the last example of each)."""
    days: dict[tuple[dt.date, str], DayCounts] = {}
    rejections: dict[tuple[str, str, str], Rejection] = {}
    rows = session.scalars(
        select(IngestCount).where(IngestCount.day >= since).order_by(IngestCount.last_at)
    )
    for row in rows:
        day = days.setdefault((row.day, row.source), DayCounts(row.day, row.source))
        if row.status in ("accepted", "duplicate", "rejected"):
            setattr(day, row.status, getattr(day, row.status) + row.count)
        else:  # the Segment door's "ignored" (group, alias) counts as accepted
            day.accepted += row.count
        if row.status == "rejected":
            key = (row.source, row.field, row.reason)
            seen = rejections.get(key)
            if seen is None:
                rejections[key] = Rejection(*key, row.count, row.last_at, row.example)
            else:  # rows come oldest first: the later one holds the last example
                seen.count += row.count
                seen.last_at = row.last_at
                seen.example = row.example or seen.example
    return (
        sorted(days.values(), key=lambda d: (d.day, d.source), reverse=True),
        sorted(rejections.values(), key=lambda r: (-r.count, r.source, r.field, r.reason)),
    )


# Events received less than this long ago may belong to a transaction still open.
SETTLE = dt.timedelta(minutes=1)


def settled_event_id(session: Session, now: dt.datetime) -> int:
    """The id of the newest event received at least SETTLE before ``now`` (0: none): by
    then every event with a smaller id has committed, so a pass over events by id may
    stop there and start again after it. Read backwards along the primary key."""
    e = Event.__table__.c
    newest = session.scalar(
        select(e.id).where(e.received_at <= now - SETTLE).order_by(e.id.desc()).limit(1)
    )
    return newest or 0
