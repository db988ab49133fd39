"""Members in and out: upsert by external id, read, list with a cursor, consent.

Callers validate shapes (types, lengths) at their edge; this module checks meaning
(phone, time zone) and writes. It flushes, never commits.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from sqlalchemy import and_, select, update
from sqlalchemy.orm import Session

from members import audit, bulk
from members.errors import InvalidField, NotFound
from members.event import Event
from members.fields import check_timezone, json_problem, normalise_phone
from members.lifecycle import Stage
from members.member import Channel, ConsentRecord, Member

# Fields a client may set; everything else on the row is Tenure's own.
PROFILE_FIELDS = (
    "phone",
    "name",
    "timezone",
    "region",
    "birthday",
    "joined_at",
    "push_token",
    "attributes",
)


@dataclasses.dataclass(frozen=True)
class UpsertResult:
    external_id: str
    created: bool
    member: Member


def clean_profile(fields: Mapping[str, Any]) -> dict[str, Any]:
    """Check and normalise the meaning of profile fields; raise InvalidField."""
    clean = {k: v for k, v in fields.items() if k in PROFILE_FIELDS}
    if clean.get("phone"):
        clean["phone"] = normalise_phone(clean["phone"])
    if clean.get("timezone"):
        clean["timezone"] = check_timezone(clean["timezone"])
    elif "timezone" in clean:
        raise InvalidField("timezone", "must not be empty")
    problem = json_problem(clean.get("attributes"))
    if problem:
        raise InvalidField("attributes", problem)
    joined = clean.get("joined_at")
    if joined is not None:
        if joined.tzinfo is None:
            raise InvalidField("joined_at", "give a time zone offset (e.g. +08:00)")
        clean["joined_at"] = joined.astimezone(dt.UTC)
    return clean


def upsert(
    session: Session, external_id: str, fields: Mapping[str, Any], now: dt.datetime
) -> UpsertResult:
    """Create the member or update the fields given (absent fields are kept).

    An identify of an erased member brings it back as a new profile (PIPL: the
    member chose to return); attributes given are merged into the existing ones.
    """
    clean = clean_profile(fields)
    member = session.scalar(select(Member).where(Member.external_id == external_id))
    member, created = _apply(session, member, external_id, clean, now)
    session.flush()
    return UpsertResult(external_id, created, member)


UPSERT_CHUNK = 1000


def upsert_many(
    session: Session,
    items: Iterable[tuple[str, Mapping[str, Any]]],
    now: dt.datetime,
    written: Callable[[int], None] = lambda n: None,
) -> tuple[int, int]:
    """upsert() for many members, a thousand a round trip (one lookup, one flush),
    calling ``written`` with the size of each chunk once flushed; return (created,
    updated). A member named twice gets both changes, in order."""
    created = updated = 0
    chunk: list[tuple[str, dict[str, Any]]] = []

    def write() -> None:
        nonlocal created, updated
        ids = {external_id for external_id, _ in chunk}
        found = {
            m.external_id: m
            for m in session.scalars(select(Member).where(Member.external_id.in_(ids)))
        }
        for external_id, clean in chunk:
            member, is_new = _apply(session, found.get(external_id), external_id, clean, now)
            found[external_id] = member
            created += is_new
            updated += not is_new
        session.flush()
        written(len(chunk))
        chunk.clear()

    for external_id, fields in items:
        chunk.append((external_id, clean_profile(fields)))
        if len(chunk) == UPSERT_CHUNK:
            write()
    if chunk:
        write()
    return created, updated


def _apply(
    session: Session, member: Member | None, external_id: str, clean: dict[str, Any], now
) -> tuple[Member, bool]:
    created = member is None
    clean = dict(clean)
    if member is None:
        member = Member(
            external_id=external_id,
            joined_at=clean.pop("joined_at", None) or now,
            attributes={},
            created_at=now,
            updated_at=now,
        )
        session.add(member)
    elif member.erased_at is not None:
        member.erased_at = None  # consent stays withdrawn until given again
    attributes = clean.pop("attributes", None)
    for name, value in clean.items():
        setattr(member, name, value)
    if attributes:
        member.attributes = {**(member.attributes or {}), **attributes}
    member.updated_at = now
    return member, created


def get(session: Session, external_id: str) -> Member:
    member = session.scalar(select(Member).where(Member.external_id == external_id))
    if member is None:
        raise NotFound("member", external_id)
    return member


@dataclasses.dataclass(frozen=True)
class MemberFilter:
    stage: Stage | None = None
    tier: str | None = None
    region: str | None = None
    joined_after: dt.datetime | None = None
    joined_before: dt.datetime | None = None
    attributes: Mapping[str, str] = dataclasses.field(default_factory=dict)
    include_erased: bool = False


def list_page(
    session: Session, filters: MemberFilter, after_id: int | None, limit: int
) -> tuple[list[Member], int | None]:
    """One page of members in id order, and the id to continue after (None at the end).

    Keyset pagination: stable while members are added, and as fast on page 1,000 as
    on page 1.
    """
    query = select(Member).order_by(Member.id).limit(limit + 1)
    conditions = []
    if after_id is not None:
        conditions.append(Member.id > after_id)
    if filters.stage is not None:
        conditions.append(Member.stage == filters.stage)
    if filters.tier is not None:
        conditions.append(Member.tier == filters.tier)
    if filters.region is not None:
        conditions.append(Member.region == filters.region)
    if filters.joined_after is not None:
        conditions.append(Member.joined_at >= filters.joined_after)
    if filters.joined_before is not None:
        conditions.append(Member.joined_at < filters.joined_before)
    if not filters.include_erased:
        conditions.append(Member.erased_at.is_(None))
    for key, value in filters.attributes.items():
        conditions.append(Member.attributes[key].as_string() == value)
    if conditions:
        query = query.where(and_(*conditions))
    rows = list(session.scalars(query))
    if len(rows) > limit:
        return rows[:limit], rows[limit - 1].id
    return rows, None


CONSENT_COLUMNS = {
    Channel.SMS: "consent_sms",
    Channel.PUSH: "consent_push",
    Channel.EMAIL: "consent_email",
    Channel.WEBHOOK: "consent_webhook",
    Channel.CROSS_BORDER: "cross_border_consent",
    Channel.PERSONALISED_MARKETING: "personalised_marketing",
}


def set_consent(
    session: Session,
    member: Member,
    changes: Iterable[tuple[Channel, bool]],
    *,
    source: str,
    now: dt.datetime,
    note: str | None = None,
) -> list[ConsentRecord]:
    """Grant or withdraw consent per channel; every change is appended to consent_log.

    Repeating the current state is recorded too: the log is evidence of what the
    member said and when (PIPL art. 14), not only of changes.
    """
    if member.erased_at is not None:
        raise InvalidField("member", "this member was erased; identify them again first")
    records = []
    order = list(Channel)
    for channel, granted in sorted(changes, key=lambda change: order.index(change[0])):
        setattr(member, CONSENT_COLUMNS[channel], granted)
        record = ConsentRecord(
            member_id=member.id,
            channel=channel.value,
            granted=granted,
            source=source,
            at=now,
            note=note,
        )
        session.add(record)
        records.append(record)
    member.updated_at = now
    session.flush()
    return records


def record_consents(
    session: Session,
    changes: Iterable[tuple[int, Channel, bool]],
    *,
    source: str,
    now: dt.datetime,
) -> int:
    """set_consent() for many members at once, set-based: (member id, channel, granted)
    triples, each appended to consent_log; for sign-ups that arrive in bulk (an import,
    the simulator). Returns how many were recorded."""
    changes = list(changes)
    by_change: dict[tuple[Channel, bool], list[int]] = {}
    for member_id, channel, granted in changes:
        by_change.setdefault((channel, granted), []).append(member_id)
    for (channel, granted), ids in by_change.items():
        column = getattr(Member, CONSENT_COLUMNS[channel])
        for start in range(0, len(ids), bulk.SQLITE_MAX_VARIABLES):
            chunk = ids[start : start + bulk.SQLITE_MAX_VARIABLES]
            session.execute(
                update(Member)
                .where(Member.id.in_(chunk), Member.erased_at.is_(None))
                .values({column: granted, Member.updated_at: now})
                .execution_options(synchronize_session=False)
            )
    rows = [
        {
            "member_id": member_id,
            "channel": channel.value,
            "granted": granted,
            "source": source,
            "at": now,
            "note": None,
        }
        for member_id, channel, granted in changes
    ]
    bulk.insert_rows(session, ConsentRecord.__table__, rows)
    return len(rows)


def consent_of(member: Member) -> dict[str, bool]:
    return {channel.value: getattr(member, column) for channel, column in CONSENT_COLUMNS.items()}


def erase(session: Session, member: Member, *, actor: str, now: dt.datetime) -> bool:
    """Erase a member's personal data on request (PIPL art. 47); False if already erased.

    Wiped: phone, name, birthday, push token, attributes, and the properties of their
    events (free-form, so possibly personal). Kept, de-identified: the external id as a
    tombstone (so a late event cannot re-create the member without a new identify),
    coarse fields (time zone, region, tier, stage) and each event's type, time and
    amount, which running experiments aggregate. All consent is withdrawn.
    """
    if member.erased_at is not None:
        return False
    member.phone = member.name = member.birthday = member.push_token = None
    member.attributes = {}
    for column in CONSENT_COLUMNS.values():
        setattr(member, column, False)
    member.personalised_marketing = False
    member.cross_border_consent = False
    member.erased_at = member.updated_at = now
    session.execute(
        update(Event).where(Event.member_id == member.id).values(properties={}, category=None)
    )
    audit.record(
        session,
        actor=actor,
        action="member.erased",
        target_type="member",
        target_id=member.id,
        now=now,
    )
    session.flush()
    return True
