"""Segment-spec messages (identify, track, page, screen) turned into Tenure's members
and events. Framework-free: the /v1 endpoints parse HTTP and call ``apply``.

``userId`` is the member's external id. Calls that carry only an ``anonymousId`` are
kept on an anonymous member ``anon:<anonymousId>`` until an identify names both ids,
which moves them onto the real member.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from members import audit, ingest, profiles
from members.errors import InvalidField
from members.event import Event, TrackMapping
from members.fields import parse_time
from members.member import Member

ANON_PREFIX = "anon:"
MAX_MESSAGE_ID = 100

# Segment's e-commerce spec names -> Tenure event types; marketers override and extend
# them (track_mappings), see mapping().
DEFAULT_TRACK_MAPPING: dict[str, str] = {
    "Order Completed": "order",
    "Signed In": "login",
    "Application Opened": "app_open",
    "Product Reviewed": "review",
    "Product Shared": "share",
    "Order Refunded": "refund",
    "Coupon Applied": "coupon_redeemed",
    "Checked In": "checkin",
    "Referral Sent": "referral",
}
_DEFAULT_FOLDED = {name.casefold(): type_ for name, type_ in DEFAULT_TRACK_MAPPING.items()}
# Traits that map onto member fields; every other trait goes into attributes.
TRAIT_FIELDS = {
    "phone": "phone",
    "name": "name",
    "birthday": "birthday",
    "region": "region",
    "timezone": "timezone",
    "createdAt": "joined_at",
}


@dataclasses.dataclass
class Result:
    status: str  # accepted | duplicate | rejected | ignored
    message_id: str | None
    field: str | None = None
    reason: str | None = None


MAX_EVENT_NAME = 200


@dataclasses.dataclass
class MappingRow:
    event_name: str
    event_type: str
    origin: str  # default | changed (a default overridden) | added
    default_type: str | None
    updated_at: dt.datetime | None = None
    updated_by: str | None = None


def mapping(session: Session) -> dict[str, str]:
    """The track-name mapping in force, keyed by the case-folded name: the defaults with
    the marketers' rows on top. Names match whatever their case ("order completed")."""
    rows = session.execute(select(TrackMapping.key, TrackMapping.event_type))
    return {**_DEFAULT_FOLDED, **{key: type_ for key, type_ in rows}}


def mapping_rows(session: Session) -> list[MappingRow]:
    """Every mapping in force, defaults first in their order, then the added ones."""
    saved = {m.key: m for m in session.scalars(select(TrackMapping))}
    rows = []
    for name, default in DEFAULT_TRACK_MAPPING.items():
        own = saved.pop(name.casefold(), None)
        rows.append(
            MappingRow(name, default, "default", default)
            if own is None
            else MappingRow(
                name, own.event_type, "changed", default, own.updated_at, own.updated_by
            )
        )
    for own in sorted(saved.values(), key=lambda m: m.event_name.casefold()):
        rows.append(
            MappingRow(
                own.event_name, own.event_type, "added", None, own.updated_at, own.updated_by
            )
        )
    return rows


def set_mapping(
    session: Session, event_name: Any, event_type_: Any, *, actor: str, now: dt.datetime
) -> bool:
    """Map a track name onto a type; False when that was already the mapping."""
    name = _event_name(event_name)
    if not isinstance(event_type_, str) or not (
        event_type_ in ingest.KNOWN_TYPES or ingest.CUSTOM_TYPE.fullmatch(event_type_)
    ):
        raise InvalidField(
            "event_type",
            "use a Tenure event type (order, refund, login, app_open, checkin, review, "
            "share, referral, coupon_redeemed) or your own in lower-case letters, digits "
            "and _ . : - (e.g. wishlist_add)",
        )
    own = _own_row(session, name)
    default = _DEFAULT_FOLDED.get(name.casefold())
    before = own.event_type if own is not None else default
    if before == event_type_:
        return False
    if own is not None and event_type_ == default:
        session.delete(own)  # back to the default: no row needed
    elif own is not None:
        own.event_type, own.updated_at, own.updated_by = event_type_, now, actor
    else:
        session.add(
            TrackMapping(
                key=name.casefold(),
                event_name=name,
                event_type=event_type_,
                updated_at=now,
                updated_by=actor,
            )
        )
    audit.record(
        session,
        actor=actor,
        action="track_mapping.set",
        target_type="track_mapping",
        target_id=name,
        details={"from": before, "to": event_type_},
        now=now,
    )
    return True


def reset_mapping(session: Session, event_name: Any, *, actor: str, now: dt.datetime) -> bool:
    """Remove a marketer's mapping (a default comes back); False when there was none."""
    name = _event_name(event_name)
    own = _own_row(session, name)
    if own is None:
        return False
    session.delete(own)
    audit.record(
        session,
        actor=actor,
        action="track_mapping.reset",
        target_type="track_mapping",
        target_id=name,
        details={"from": own.event_type, "to": _DEFAULT_FOLDED.get(name.casefold())},
        now=now,
    )
    return True


def _own_row(session: Session, name: str) -> TrackMapping | None:
    return session.get(TrackMapping, name.casefold())


def _event_name(value: Any) -> str:
    name = value.strip() if isinstance(value, str) else ""
    if not 0 < len(name.casefold()) <= MAX_EVENT_NAME:
        raise InvalidField(
            "event_name", f"the track call's event name, 1 to {MAX_EVENT_NAME} characters"
        )
    return name


def event_type(name: str, mapping: Mapping[str, str] | None = None) -> str:
    """'Order Completed' -> 'order' (with a mapping from mapping(), or the defaults);
    unmapped names become snake_case custom types."""
    mapped = (_DEFAULT_FOLDED if mapping is None else mapping).get(name.strip().casefold())
    if mapped is not None:
        return mapped
    slug = "".join(c if c.isalnum() else "_" for c in name.strip().lower()).strip("_")
    return "_".join(filter(None, slug.split("_")))[:64] or "custom"


def apply_batch(
    session: Session,
    messages: Sequence[Any],
    *,
    now: dt.datetime,
    default_currency: str,
    unknown_members: ingest.UnknownMembers,
    mapping: Mapping[str, str] | None = None,
) -> list[Result]:
    """Apply messages in order; one Result each. Consecutive track/page/screen calls are
    stored together, set-based; an identify first stores the events before it."""
    results: list[Result | None] = [None] * len(messages)
    pending: list[tuple[int, ingest.EventIn]] = []

    def flush() -> None:
        for anonymous in (True, False):
            group = [(i, e) for i, e in pending if e.member.startswith(ANON_PREFIX) == anonymous]
            if not group:
                continue
            policy = ingest.UnknownMembers.CREATE if anonymous else unknown_members
            outcomes = ingest.ingest(
                session,
                [e for _, e in group],
                now=now,
                default_currency=default_currency,
                unknown_members=policy,
            )
            for (i, _), outcome in zip(group, outcomes, strict=True):
                results[i] = Result(
                    outcome.status.value, outcome.event_id, outcome.field, outcome.reason
                )
        pending.clear()

    for i, message in enumerate(messages):
        message_id = message.get("messageId") if isinstance(message, Mapping) else None
        message_id = message_id if isinstance(message_id, str) else None
        try:
            if not isinstance(message, Mapping):
                raise InvalidField("", "each message is a JSON object")
            if message_id is None or not 0 < len(message_id) <= MAX_MESSAGE_ID:
                raise InvalidField("messageId", f"a string of 1 to {MAX_MESSAGE_ID} characters")
            member_key = _member_key(message)
            kind = message.get("type")
            if kind == "identify":
                flush()
                results[i] = _identify(session, message, member_key, message_id, now)
            elif kind in ("track", "page", "screen"):
                pending.append((i, _event(message, member_key, message_id, kind, now, mapping)))
            elif kind in ("group", "alias"):
                results[i] = Result(
                    "ignored", message_id, reason=f"{kind} calls are not used by Tenure"
                )
            else:
                raise InvalidField("type", "one of identify, track, page, screen, group, alias")
        except InvalidField as exc:
            results[i] = Result("rejected", message_id, exc.field or None, exc.message)
    flush()
    return [r for r in results if r is not None]


def _member_key(message: Mapping[str, Any]) -> str:
    user_id, anonymous_id = message.get("userId"), message.get("anonymousId")
    if isinstance(user_id, (int, float)) and not isinstance(user_id, bool):
        user_id = str(user_id)
    if isinstance(user_id, str) and user_id.strip():
        if len(user_id) > 128:
            raise InvalidField("userId", "at most 128 characters")
        return user_id
    if isinstance(anonymous_id, str) and anonymous_id.strip():
        return ANON_PREFIX + anonymous_id[:120]
    raise InvalidField("userId", "give userId or anonymousId")


def _identify(session, message, external_id, message_id, now) -> Result:
    traits = message.get("traits")
    if not isinstance(traits, Mapping):  # RudderStack sends them only in context.traits
        traits = (message.get("context") or {}).get("traits") or {}
    if not isinstance(traits, Mapping):
        raise InvalidField("traits", "must be an object")
    fields: dict[str, Any] = {}
    attributes: dict[str, Any] = {}
    for key, value in traits.items():
        if key in TRAIT_FIELDS and value not in (None, ""):
            fields[TRAIT_FIELDS[key]] = value
        elif key not in ("userId", "id"):
            attributes[str(key)[:64]] = value
    if "birthday" in fields:
        fields["birthday"] = _date(fields["birthday"], "traits.birthday")
    if "joined_at" in fields:
        fields["joined_at"] = _time(fields["joined_at"], "traits.createdAt")
    for key in ("phone", "name", "region", "timezone"):
        if key in fields:
            fields[key] = str(fields[key])
    if attributes:
        fields["attributes"] = attributes
    try:
        with session.begin_nested():
            profiles.upsert(session, external_id, fields, now)
            anonymous_id = message.get("anonymousId")
            if isinstance(anonymous_id, str) and not external_id.startswith(ANON_PREFIX):
                _merge_anonymous(session, ANON_PREFIX + anonymous_id[:120], external_id)
    except InvalidField as exc:
        raise InvalidField(f"traits.{exc.field}", exc.message) from None
    return Result("accepted", message_id)


def _merge_anonymous(session: Session, anon_id: str, external_id: str) -> None:
    """Move what an anonymous visitor did onto the member who just identified."""
    anon = session.scalar(select(Member.id).where(Member.external_id == anon_id))
    if anon is None:
        return
    real = session.scalar(select(Member.id).where(Member.external_id == external_id))
    session.execute(update(Event).where(Event.member_id == anon).values(member_id=real))
    session.execute(delete(Member).where(Member.id == anon))


def _event(message, external_id, message_id, kind, now, mapping) -> ingest.EventIn:
    properties = message.get("properties") or {}
    if not isinstance(properties, Mapping):
        raise InvalidField("properties", "must be an object")
    name = message.get("event") if kind == "track" else message.get("name")
    if kind == "track":
        if not isinstance(name, str) or not name.strip():
            raise InvalidField("event", "a track call needs an event name")
        type_ = event_type(name, mapping)
    else:
        type_ = "page_view" if kind == "page" else "screen_view"
    amount = _amount(properties) if type_ in ingest.MONEY_TYPES else None
    currency = properties.get("currency")
    extra = {"name": name} if kind != "track" and isinstance(name, str) else {}
    return ingest.EventIn(
        event_id=message_id,
        member=external_id,
        type=type_,
        occurred_at=_time(message.get("timestamp") or message.get("sentAt") or now, "timestamp"),
        properties={**properties, **extra},
        amount=amount,
        currency=currency.upper() if isinstance(currency, str) else None,
        category=str(properties["category"])[:64] if properties.get("category") else None,
    )


def _amount(properties: Mapping[str, Any]) -> Decimal | None:
    for key in ("revenue", "total", "value", "price"):
        if properties.get(key) is not None:
            try:
                return Decimal(str(properties[key]))
            except InvalidOperation:
                raise InvalidField(f"properties.{key}", "must be a number") from None
    return None


def _time(value: Any, field: str) -> dt.datetime:
    return value if isinstance(value, dt.datetime) else parse_time(str(value), field)


def _date(value: Any, field: str) -> dt.date:
    try:
        return dt.date.fromisoformat(str(value)[:10])
    except ValueError:
        raise InvalidField(field, "a date like 1990-05-20") from None
