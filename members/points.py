"""The points ledger: lots earned, spent first-to-expire-first, expiring as a whole.

Every movement is a ``points_entries`` row (earn, spend, adjust, expire, refund); every
earning is a lot with its own expiry (default 12 months after it was earned); a
member's ``points_balance`` is the sum of their live lots' remaining points, kept up
to date by each movement and by the expiry sweep. Spending takes from the lot that
expires first (then the oldest), so that points are used before they are lost.

Orders earn ``per_yuan`` points per yuan of their amount (rounded down), times the
best multiplier that applies: a bonus day of the programme's calendar (double points on
11.11) or the member's birthday. Reviews, shares, check-ins and referrals earn fixed
points. A refund takes back the points of its amount, as far as the balance goes.
Earning from events happens in a periodic tick (every minute) that walks the events
table by id from where it stopped (a cursor), once per event (the entry's key is the
event's id); the same tick expires lots and emits ``points.expiring`` reminders.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo

from dateutil.relativedelta import relativedelta
from sqlalchemy import (
    String,
    and_,
    cast,
    func,
    insert,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.orm import Session

from members import bulk, ingest, programme
from members.db import try_transaction_lock
from members.errors import InvalidField, InvalidFields
from members.event import Event
from members.lifecycle import Trigger
from members.loyalty import BenefitGrant, PointsEntry, PointsKind, PointsLot
from members.member import Member

SETTING_KEY = "points_rules"
EVENT_POINTS = ("review", "share", "checkin", "referral")
POINTS_EXPIRING = "points.expiring"
SYSTEM = "system"
MAX_POINTS = 10_000_000
LONGEST_EXPIRY = dt.timedelta(days=36_525)

_lots = PointsLot.__table__
_entries = PointsEntry.__table__
_members = Member.__table__
_triggers = Trigger.__table__


@dataclasses.dataclass(frozen=True)
class BonusDay:
    day: dt.date
    multiplier: int


@dataclasses.dataclass(frozen=True)
class PointsRules:
    per_yuan: Decimal = Decimal(1)
    per_event: tuple[tuple[str, int], ...] = (
        ("review", 10),
        ("share", 5),
        ("checkin", 1),
        ("referral", 50),
    )
    bonus_days: tuple[BonusDay, ...] = ()
    birthday_multiplier: int = 2
    expiry_months: int = 12  # 0: points never expire
    notice_days: int = 7

    def as_dict(self) -> dict[str, Any]:
        return {
            "per_yuan": str(self.per_yuan),
            "per_event": dict(self.per_event),
            "bonus_days": [
                {"day": b.day.isoformat(), "multiplier": b.multiplier} for b in self.bonus_days
            ],
            "birthday_multiplier": self.birthday_multiplier,
            "expiry_months": self.expiry_months,
            "notice_days": self.notice_days,
        }

    def expiry(self, earned_at: dt.datetime) -> dt.datetime | None:
        if self.expiry_months == 0:
            return None
        return earned_at + relativedelta(months=self.expiry_months)


def parse(data: Mapping[str, Any]) -> PointsRules:
    """Points rules from a document; raises InvalidFields naming each wrong field."""
    errors: dict[str, str] = {}
    for name in sorted(set(data) - set(PointsRules().as_dict())):
        errors[name] = "unknown setting"
    per_yuan = _decimal(data.get("per_yuan"))
    if per_yuan is None or not Decimal(0) <= per_yuan <= Decimal(1000):
        errors["per_yuan"] = "must be a number of points from 0 to 1000"
    per_event = data.get("per_event")
    events: list[tuple[str, int]] = []
    if not isinstance(per_event, Mapping):
        errors["per_event"] = f"must give points for {', '.join(EVENT_POINTS)}"
    else:
        for name, value in per_event.items():
            if name not in EVENT_POINTS:
                errors[f"per_event.{name}"] = f"not an event that earns: {', '.join(EVENT_POINTS)}"
            elif not _whole(value, 0, 100_000):
                errors[f"per_event.{name}"] = "must be a whole number from 0 to 100000"
            else:
                events.append((name, value))
    bonus = _bonus_days(data.get("bonus_days"), errors)
    numbers = {"birthday_multiplier": (1, 10), "expiry_months": (0, 120), "notice_days": (0, 90)}
    for name, (low, high) in numbers.items():
        if not _whole(data.get(name), low, high):
            errors[name] = f"must be a whole number from {low} to {high}"
    if errors:
        raise InvalidFields(errors)
    return PointsRules(
        per_yuan=per_yuan,
        per_event=tuple(sorted(events, key=lambda e: EVENT_POINTS.index(e[0]))),
        bonus_days=bonus,
        birthday_multiplier=data["birthday_multiplier"],
        expiry_months=data["expiry_months"],
        notice_days=data["notice_days"],
    )


def _whole(value: Any, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _decimal(value: Any) -> Decimal | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        return None
    return number if number.is_finite() else None


def _bonus_days(value: Any, errors: dict[str, str]) -> tuple[BonusDay, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or len(value) > 366:
        errors["bonus_days"] = "must be a list of at most 366 {day, multiplier}"
        return ()
    days: dict[dt.date, BonusDay] = {}
    for index, item in enumerate(value):
        where = f"bonus_days.{index}"
        if not isinstance(item, Mapping):
            errors[where] = "must be {day, multiplier}"
            continue
        try:
            day = dt.date.fromisoformat(str(item.get("day")))
        except ValueError:
            errors[f"{where}.day"] = "must be a date, e.g. 2026-11-11"
            continue
        if day in days:
            errors[f"{where}.day"] = f"{day} is listed twice"
        if not _whole(item.get("multiplier"), 1, 10):
            errors[f"{where}.multiplier"] = "must be a whole number from 1 to 10"
            continue
        days[day] = BonusDay(day, item["multiplier"])
    return tuple(sorted(days.values(), key=lambda b: b.day))


SETTING = programme.Document(SETTING_KEY, parse, PointsRules())
load, save = SETTING.load, SETTING.save


# --- one member's movements ---------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Outcome:
    entry: PointsEntry
    balance: int
    replayed: bool = False


class KeyReused(ValueError):
    """An idempotency key sent again with a different request."""


def live_lots(session: Session, member_id: int, now: dt.datetime) -> list[PointsLot]:
    """The member's lots with points left that have not expired, in the order spending
    takes from them: first to expire first, then oldest."""
    lot = PointsLot
    return list(
        session.scalars(
            select(lot)
            .where(
                lot.member_id == member_id,
                lot.remaining > 0,
                or_(lot.expires_at.is_(None), lot.expires_at > now),
            )
            .order_by(lot.expires_at.asc().nulls_last(), lot.earned_at, lot.id)
        )
    )


def earn(
    session: Session,
    member: Member,
    points: int,
    *,
    reason: str,
    now: dt.datetime,
    rules: PointsRules,
    actor: str,
    key: str | None = None,
    kind: PointsKind = PointsKind.EARN,
    source: str = "api",
    expires_at: dt.datetime | None = None,
) -> Outcome:
    """Add a lot of ``points`` (expiring after the rules' period unless ``expires_at``)."""
    _check_points(points)
    if expires_at is not None and expires_at <= now:
        raise InvalidField("expires_at", "is in the past: points must expire later than now")
    if expires_at is not None and expires_at > now + LONGEST_EXPIRY:
        raise InvalidField("expires_at", "is more than 100 years ahead")
    locked, replay = _begin(session, member, key, kind, points, now)
    if replay is not None:
        return replay
    expiry = expires_at if expires_at is not None else rules.expiry(now)
    entry = _entry(session, locked, kind, points, reason, source, key, now, actor, expiry)
    session.add(
        PointsLot(
            member_id=locked.id,
            points=points,
            remaining=points,
            earned_at=now,
            expires_at=expiry,
            source=source,
            entry_id=entry.id,
        )
    )
    locked.points_balance += points
    session.flush()
    return Outcome(entry, locked.points_balance)


def spend(
    session: Session,
    member: Member,
    points: int,
    *,
    reason: str,
    now: dt.datetime,
    actor: str,
    key: str | None = None,
    kind: PointsKind = PointsKind.SPEND,
    source: str = "api",
    up_to_balance: bool = False,
) -> Outcome:
    """Take ``points`` from the member's live lots, first to expire first. More than the
    balance is refused, unless ``up_to_balance`` (a refund takes what is left)."""
    _check_points(points)
    locked, replay = _begin(session, member, key, kind, -points, now)
    if replay is not None:
        return replay
    if points > locked.points_balance:
        if not up_to_balance:
            raise InvalidField(
                "points", f"{points} is more than the balance of {locked.points_balance}"
            )
        points = locked.points_balance
    left = points
    for lot in live_lots(session, locked.id, now):
        if left == 0:
            break
        taken = min(lot.remaining, left)
        lot.remaining -= taken
        left -= taken
    entry = _entry(session, locked, kind, -points, reason, source, key, now, actor, None)
    locked.points_balance -= points
    session.flush()
    return Outcome(entry, locked.points_balance)


def adjust(
    session: Session,
    member: Member,
    points: int,
    *,
    reason: str,
    now: dt.datetime,
    rules: PointsRules,
    actor: str,
    key: str | None = None,
    expires_at: dt.datetime | None = None,
) -> Outcome:
    """A correction by hand: added as a lot when positive, taken FIFO when negative."""
    if points == 0:
        raise InvalidField("points", "must not be 0")
    if points > 0:
        return earn(
            session,
            member,
            points,
            reason=reason,
            now=now,
            rules=rules,
            actor=actor,
            key=key,
            kind=PointsKind.ADJUST,
            expires_at=expires_at,
        )
    if expires_at is not None:
        raise InvalidField("expires_at", "only points added can be given an expiry")
    return spend(
        session,
        member,
        -points,
        reason=reason,
        now=now,
        actor=actor,
        key=key,
        kind=PointsKind.ADJUST,
    )


def _check_points(points: int) -> None:
    if isinstance(points, bool) or not isinstance(points, int) or not 0 < points <= MAX_POINTS:
        raise InvalidField("points", f"must be a whole number from 1 to {MAX_POINTS:,}")


def _dedup(member: Member, key: str | None) -> str | None:
    return None if key is None else f"api:{member.id}:{key}"


def _begin(
    session: Session,
    member: Member,
    key: str | None,
    kind: PointsKind,
    points: int,
    now: dt.datetime,
) -> tuple[Member, Outcome | None]:
    """The member locked for a movement, and the answer already given to its key if
    any (looked for again under the lock: a request just before may have used it)."""
    replay = _replay(session, member, key, kind, points)
    if replay is not None:
        return member, replay
    locked = _lock(session, member, now)
    return locked, _replay(session, locked, key, kind, points)


def _replay(
    session: Session, member: Member, key: str | None, kind: PointsKind, points: int
) -> Outcome | None:
    """The answer already given to this idempotency key, if any."""
    dedup = _dedup(member, key)
    if dedup is None:
        return None
    done = session.scalar(select(PointsEntry).where(PointsEntry.dedup_key == dedup))
    if done is None:
        return None
    if (done.kind, done.points) != (kind, points):
        raise KeyReused(f"idempotency_key {key!r} was used for another request")
    return Outcome(done, member.points_balance, replayed=True)


def _lock(session: Session, member: Member, now: dt.datetime) -> Member:
    """The member's row, locked for this transaction, with their due lots expired."""
    locked = session.get(Member, member.id, with_for_update=True, populate_existing=True)
    assert locked is not None
    expire_due(session, now, member_id=locked.id)
    session.refresh(locked)
    return locked


def _entry(session, member, kind, points, reason, source, key, now, actor, expiry) -> PointsEntry:
    entry = PointsEntry(
        member_id=member.id,
        kind=kind,
        points=points,
        reason=reason,
        source=source,
        dedup_key=_dedup(member, key),
        at=now,
        actor=actor,
        expires_at=expiry,
    )
    session.add(entry)
    session.flush()
    return entry


# --- set-based: expiry, reminders, earning from events --------------------------------


def expire_due(session: Session, now: dt.datetime, *, member_id: int | None = None) -> int:
    """Expire every lot (or one member's) whose time has come: an entry per lot, the
    balances lowered, the lots emptied. Returns the number of lots."""
    lot = _lots.c
    due = and_(lot.remaining > 0, lot.expires_at <= now)
    if member_id is not None:
        due = and_(due, lot.member_id == member_id)
    count = session.scalar(select(func.count()).where(due)) or 0
    if not count:
        return 0
    if member_id is None:
        # Lock the members first (in one order, against deadlocks): a spend running
        # now then finishes before the statements below read the lots (PostgreSQL
        # takes a snapshot per statement), or waits for them.
        m = _members.c
        session.execute(
            select(m.id)
            .where(m.id.in_(select(lot.member_id).where(due)))
            .order_by(m.id)
            .with_for_update()
        )
    expired = select(
        lot.member_id,
        literal(PointsKind.EXPIRE.value),
        -lot.remaining,
        literal("expired"),
        literal("expiry"),
        cast(lot.id, String(32)),
        lot.expires_at,
        literal(SYSTEM),
    ).where(due)
    columns = ["member_id", "kind", "points", "reason", "source", "source_ref", "at", "actor"]
    session.execute(insert(_entries).from_select(columns, expired))
    _add_to_balances(session, lot.member_id, -lot.remaining, due)
    session.execute(update(_lots).where(due).values(remaining=0))
    return count


def _add_to_balances(session: Session, member_id: Any, points: Any, rows: Any) -> None:
    """Add to each member's balance the sum of ``points`` over the ``rows`` that are
    theirs (one UPDATE; ``member_id`` and ``points`` are columns of those rows)."""
    m = _members.c
    total = (
        select(func.coalesce(func.sum(points), 0)).where(rows, member_id == m.id).scalar_subquery()
    )
    session.execute(
        update(_members)
        .where(m.id.in_(select(member_id).where(rows)))
        .values(points_balance=m.points_balance + total, updated_at=m.updated_at)
    )


def notify_expiring(session: Session, now: dt.datetime, notice_days: int) -> int:
    """A ``points.expiring`` trigger for each member with points expiring within
    ``notice_days`` not yet announced (value: how many points); returns how many."""
    if notice_days == 0:
        return 0
    lot = _lots.c
    soon = and_(
        lot.remaining > 0,
        lot.expires_at > now,
        lot.expires_at <= now + dt.timedelta(days=notice_days),
        lot.expiry_notified_at.is_(None),
    )
    members = (
        select(
            literal(POINTS_EXPIRING),
            lot.member_id,
            literal(now, _triggers.c.at.type),
            cast(func.sum(lot.remaining), String(64)),
            literal("points_lot"),
            func.min(lot.id),
        )
        .where(soon)
        .group_by(lot.member_id)
    )
    reminded = session.scalar(select(func.count(lot.member_id.distinct())).where(soon)) or 0
    if reminded:
        columns = ["kind", "member_id", "at", "value", "source_type", "source_id"]
        session.execute(insert(_triggers).from_select(columns, members))
        session.execute(update(_lots).where(soon).values(expiry_notified_at=now))
    return reminded


@dataclasses.dataclass(frozen=True)
class TickResult:
    events: int  # events looked at
    earned: int  # points earned from them
    expired_lots: int
    reminders: int  # points.expiring triggers


class PointsBusy(RuntimeError):
    """Another points tick holds the lock."""


CURSOR = "points.events"
LOCK_KEY = 0x7465_6E75_7265_5054  # "tenurePT"
EVENTS_PER_PASS = 50_000
EVENTS_PER_TICK = 500_000


def tick(session: Session, *, now: dt.datetime, timezone: str) -> TickResult:
    """The points programme's periodic work, in the caller's transaction: points for
    the events stored since the last tick, lots expired, reminders emitted."""
    _lock_ticks(session)
    rules, _ = load(session)
    cursor = session.get(programme.Cursor, CURSOR, with_for_update=True)
    if cursor is None:
        cursor = programme.Cursor(name=CURSOR, position=0, updated_at=now)
        session.add(cursor)
    events, earned = 0, 0
    # A backlog (the first tick after importing years of events) is worked off over
    # several ticks, each short enough to commit well within a job's time limit.
    settled = min(ingest.settled_event_id(session, now), cursor.position + EVENTS_PER_TICK)
    while cursor.position < settled:
        upto = min(settled, cursor.position + EVENTS_PER_PASS)
        seen, gained = earn_from_events(
            session, after_id=cursor.position, upto_id=upto, rules=rules, timezone=timezone, now=now
        )
        redeem_coupons(session, after_id=cursor.position, upto_id=upto)
        events, earned = events + seen, earned + gained
        cursor.position = upto
    cursor.updated_at = now
    expired = expire_due(session, now)
    reminders = notify_expiring(session, now, rules.notice_days)
    session.flush()
    return TickResult(events, earned, expired, reminders)


COUPON_CODE_PROPERTIES = ("code", "coupon_code", "coupon_id", "coupon")


def redeem_coupons(session: Session, *, after_id: int, upto_id: int) -> int:
    """Mark granted coupons redeemed by the ``coupon_redeemed`` events with ids in
    (after_id, upto_id] that name the coupon's code (``properties.code``, or Segment's
    ``coupon_id``): redemption rates and benefit costs read ``redeemed_at``. Returns
    the coupons marked."""
    e, g = Event.__table__.c, BenefitGrant.__table__
    marked = 0
    for member_id, properties, at in session.execute(
        select(e.member_id, e.properties, e.occurred_at).where(
            e.id > after_id, e.id <= upto_id, e.type == "coupon_redeemed"
        )
    ):
        code = next((properties[k] for k in COUPON_CODE_PROPERTIES if properties.get(k)), None)
        if not isinstance(code, str):
            continue
        marked += session.execute(
            update(g)
            .where(g.c.member_id == member_id, g.c.code == code, g.c.redeemed_at.is_(None))
            .values(redeemed_at=at)
        ).rowcount
    return marked


def _lock_ticks(session: Session) -> None:
    if not try_transaction_lock(session, LOCK_KEY):
        raise PointsBusy("another points tick is in progress")


def earn_from_events(
    session: Session,
    *,
    after_id: int,
    upto_id: int,
    rules: PointsRules,
    timezone: str,
    now: dt.datetime,
) -> tuple[int, int]:
    """Points for the events with ids in (after_id, upto_id]: orders, reviews, shares,
    check-ins and referrals earn, refunds take back. Each event counts once, however
    often it is looked at. Returns the events looked at and the points earned."""
    e, m = Event.__table__.c, _members.c
    per_event = dict(rules.per_event)
    kinds = ("order", "refund", *per_event)
    rows = session.execute(
        select(e.event_id, e.member_id, e.type, e.amount, e.occurred_at, m.birthday)
        .join(_members, m.id == e.member_id)
        .where(e.id > after_id, e.id <= upto_id, e.type.in_(kinds), m.erased_at.is_(None))
        .order_by(e.id)
    ).all()
    zone = ZoneInfo(timezone)
    bonus = {b.day: b.multiplier for b in rules.bonus_days}
    earned, refunds = [], []
    for event_id, member_id, type_, amount, occurred_at, birthday in rows:
        if type_ == "refund":
            if amount:
                refunds.append((event_id, member_id, _order_points(amount, rules, 1)))
            continue
        expiry = rules.expiry(occurred_at)
        if expiry is not None and expiry <= now:
            continue  # it would have expired already
        if type_ == "order":
            day = occurred_at.astimezone(zone).date()
            on_birthday = birthday is not None and (birthday.month, birthday.day) == (
                day.month,
                day.day,
            )
            multiplier = max(bonus.get(day, 1), rules.birthday_multiplier if on_birthday else 1)
            points = _order_points(amount or Decimal(0), rules, multiplier)
            reason = "order" if multiplier == 1 else f"order ×{multiplier}"
        else:
            points, reason = per_event.get(type_, 0), type_
        if points > 0:
            earned.append(
                {
                    "member_id": member_id,
                    "kind": PointsKind.EARN.value,
                    "points": points,
                    "reason": reason,
                    "source": type_,
                    "source_ref": event_id,
                    "dedup_key": f"event:{event_id}",
                    "at": occurred_at,
                    "actor": SYSTEM,
                    "expires_at": expiry,
                }
            )
    new_ids = bulk.insert_ignore(session, _entries, earned, "dedup_key", returning="id")
    total = sum(_lots_for(session, new_ids[i : i + 10_000]) for i in range(0, len(new_ids), 10_000))
    for event_id, member_id, points in refunds:
        _take_back(session, event_id, member_id, points, now)
    return len(rows), total


def _order_points(amount: Decimal, rules: PointsRules, multiplier: int) -> int:
    return max(math.floor(amount * rules.per_yuan * multiplier), 0)


def _lots_for(session: Session, entry_ids: list[int]) -> int:
    """Lots and balances for entries just earned (set-based); returns their points."""
    if not entry_ids:
        return 0
    en = _entries.c
    ours = en.id.in_(entry_ids)
    made = select(en.member_id, en.points, en.points, en.at, en.expires_at, en.source, en.id).where(
        ours
    )
    columns = ["member_id", "points", "remaining", "earned_at", "expires_at", "source", "entry_id"]
    session.execute(insert(_lots).from_select(columns, made))
    _add_to_balances(session, en.member_id, en.points, ours)
    return session.scalar(select(func.coalesce(func.sum(en.points), 0)).where(ours)) or 0


def _take_back(
    session: Session, event_id: str, member_id: int, points: int, now: dt.datetime
) -> None:
    """A refund takes back the points of its amount, as far as the balance goes."""
    dedup = f"event:{event_id}"
    if points <= 0 or session.scalar(select(PointsEntry.id).where(PointsEntry.dedup_key == dedup)):
        return
    member = session.get(Member, member_id)
    if member is None:
        return
    outcome = spend(
        session,
        member,
        points,
        reason="refund",
        now=now,
        actor=SYSTEM,
        kind=PointsKind.REFUND,
        source="refund",
        up_to_balance=True,
    )
    outcome.entry.dedup_key, outcome.entry.source_ref = dedup, event_id
    session.flush()
