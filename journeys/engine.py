"""The enrollment engine: members in (intake and entry rules), members along (the tick).

**Intake** turns what happened into enrollments: lifecycle triggers (stage entered,
tier changed), events received, schedules and date attributes, and API calls. Each
candidate passes the journey's entry rules (erased member, global control group,
audience, re-entry policy, entry key, daily cap); those held out by the journey's
holdout are enrolled as ``held_out``: recorded, not messaged, and converted like the
others so that they stay comparable. What did not enter is counted per reason.

**The tick** claims due enrollments in batches (``FOR UPDATE SKIP LOCKED`` on
PostgreSQL, so that workers share the work) and walks each through its steps until it
waits or leaves. Every step executed is a ``journey_step_runs`` row, unique per
(enrollment, seq), and every effect of a step (a message, a grant, a webhook call) is
keyed by the same pair; all of a batch is written in one transaction. So a retry, a
second tick, a second worker or a worker killed mid-batch can never double an effect:
either the batch committed and the enrollment has moved on, or nothing of it did.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import logging
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal
from types import SimpleNamespace
from typing import Any
from zoneinfo import ZoneInfo

from croniter import croniter
from sqlalchemy import and_, extract, func, or_, select, update
from sqlalchemy.orm import Session

from experiments import assignment, benefits, manage
from experiments.models import Experiment
from journeys import (
    audience,
    conditions,
    control,
    definition,
    graph,
    render,
    templates,
    webhooks_out,
)
from journeys.models import (
    Enrollment,
    EnrollmentState,
    Journey,
    JourneyCount,
    JourneyStatus,
    JourneyVersion,
    Message,
    MessageStatus,
    MessageTemplate,
    StepRun,
)
from members import bulk, ingest, points, programme
from members.db import try_transaction_lock
from members.event import Event
from members.lifecycle import MemberFeatures, TierChange, Trigger
from members.loyalty import BenefitGrant, PointsLot
from members.member import Member
from members.tiers import SETTING as LADDER
from members.tiers import next_tier

_enrollments, _runs, _messages = Enrollment.__table__, StepRun.__table__, Message.__table__
_grants, _triggers, _events = BenefitGrant.__table__, Trigger.__table__, Event.__table__
_members, _member_features = Member.__table__, MemberFeatures.__table__
INSIDE = (EnrollmentState.ACTIVE, EnrollmentState.WAITING)
DUE = (*INSIDE, EnrollmentState.HELD_OUT)
BATCH = 1000
# A member passes at most this many steps in one go (a graph has no loop without a wait).
STEPS_PER_RUN = graph.MAX_STEPS
TRIGGERS_PER_PASS = 10_000
EVENTS_PER_PASS = 50_000
CANDIDATES_PER_PASS = 5000
INTAKE_LOCK = 0x7465_6E75_7265_4A49  # "tenureJI"
EVENTS_CURSOR = "journeys.events"
BUCKETS = assignment.BUCKETS
log = logging.getLogger(__name__)
# What the engine keeps in an enrollment's context; an API caller's context may not.
RESERVED_CONTEXT = frozenset({"outcomes", "benefit", "coupon", "event", "experiment"})


@dataclasses.dataclass
class TickResult:
    enrolled: int = 0
    held_out: int = 0
    skipped: Counter = dataclasses.field(default_factory=Counter)
    advanced: int = 0  # enrollments claimed and moved
    steps: int = 0  # step executions
    messages: int = 0
    grants: int = 0
    converted: int = 0
    batches: int = 0

    def add(self, other: TickResult) -> None:
        for field in dataclasses.fields(self):
            if field.name == "skipped":
                self.skipped.update(other.skipped)
            else:
                setattr(self, field.name, getattr(self, field.name) + getattr(other, field.name))


@dataclasses.dataclass(frozen=True)
class Live:
    """A journey that takes members: its live version's definition."""

    journey_id: int
    key: str
    version_id: int
    definition: Mapping[str, Any]
    status: JourneyStatus

    @property
    def trigger(self) -> Mapping[str, Any]:
        return self.definition["trigger"]


@dataclasses.dataclass(frozen=True)
class Candidate:
    member_id: int
    context: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    entry_key: str | None = None


def live_journeys(session: Session) -> list[Live]:
    rows = session.execute(
        select(
            Journey.id, Journey.key, Journey.status, JourneyVersion.id, JourneyVersion.definition
        )
        .join(JourneyVersion, JourneyVersion.id == Journey.live_version_id)
        .where(Journey.status.in_((JourneyStatus.ACTIVE, JourneyStatus.PAUSED)))
        .order_by(Journey.id)
    )
    return [Live(j, key, v, d, status) for j, key, status, v, d in rows]


# --------------------------------------------------------------------------- entry


def admit(
    session: Session,
    live: Live,
    candidates: Sequence[Candidate],
    *,
    now: dt.datetime,
    timezone: str,
) -> TickResult:
    """Enroll those candidates that the journey's entry rules let in."""
    result = TickResult()
    if live.status != JourneyStatus.ACTIVE:
        result.skipped["paused"] += len(candidates)
        _tally(session, live.journey_id, result.skipped, now, timezone)
        return result
    for start in range(0, len(candidates), CANDIDATES_PER_PASS):
        _admit(
            session, live, candidates[start : start + CANDIDATES_PER_PASS], now, timezone, result
        )
    _tally(session, live.journey_id, result.skipped, now, timezone)
    return result


def _admit(
    session: Session,
    live: Live,
    candidates: Sequence[Candidate],
    now: dt.datetime,
    timezone: str,
    result: TickResult,
) -> None:
    entry = live.definition["entry"]
    # One admission into a journey at a time (intake, an API call, a hand-off), so that
    # two never both read "not in yet" for the same member.
    lock_journey(session, live.journey_id)
    ids = {c.member_id for c in candidates}
    members = {m.id: m for m in session.scalars(select(Member).where(Member.id.in_(ids)))}
    features = _features(session, ids)
    condition = audience.read(entry["audience"]) if entry.get("audience") else None
    present = [(m.id, m.external_id) for m in members.values() if m.erased_at is None]
    in_control = (
        control.members_in(session, present, now) if entry.get("marketing", True) else set()
    )
    e = _enrollments.c
    history = {
        member_id: (last, inside)
        for member_id, last, inside in session.execute(
            select(
                e.member_id,
                func.max(e.entered_at),
                func.count().filter(inside_now()),
            )
            .where(e.journey_id == live.journey_id, e.member_id.in_(ids))
            .group_by(e.member_id)
        )
    }
    keys = {c.entry_key for c in candidates if c.entry_key is not None}
    used_keys = set()
    if keys:
        used_keys = set(
            session.execute(
                select(e.member_id, e.entry_key).where(
                    e.journey_id == live.journey_id, e.entry_key.in_(keys)
                )
            ).all()
        )
    room = _room_today(session, live, entry, now, timezone)
    holdout = int(Decimal(entry.get("holdout_percent") or 0) * BUCKETS / 100)
    goal = live.definition.get("goal")
    rows: list[dict[str, Any]] = []
    seen: set[tuple[int, str | None]] = set()
    for candidate in candidates:
        member = members.get(candidate.member_id)
        reason = _refusal(
            candidate, member, features, condition, in_control, history, used_keys, seen, entry, now
        )
        if reason is None and room is not None and room <= 0:
            reason = "daily_cap"
        if reason is not None:
            result.skipped[reason] += 1
            continue
        assert member is not None
        seen.add((member.id, candidate.entry_key))
        # The next candidate of this member in the same pass meets the re-entry rule.
        _, inside = history.get(member.id, (None, 0))
        history[member.id] = (now, inside + 1)
        if room is not None:
            room -= 1
        held = assignment.bucket(f"journey:{live.key}", member.external_id) < holdout
        if held:
            result.held_out += 1
            window = dt.timedelta(days=goal["within_days"]) if goal else dt.timedelta(0)
        else:
            result.enrolled += 1
        rows.append(
            {
                "journey_id": live.journey_id,
                "journey_version_id": live.version_id,
                "member_id": member.id,
                "state": EnrollmentState.HELD_OUT if held else EnrollmentState.ACTIVE,
                "current_step": None if held else live.definition["start"],
                "seq": 0,
                "step_at": now,
                "next_run_at": now + window if held else now,
                "context": dict(candidate.context),
                "entry_key": candidate.entry_key,
                "entered_at": now,
            }
        )
    if rows:
        bulk.insert_rows(session, _enrollments, rows)


ADMIT_LOCK = 0x4A45  # "JE": with the journey's id, the advisory lock of its admissions


def lock_journey(session: Session, journey_id: int) -> None:
    """Wait for the journey's admission lock until the transaction ends (PostgreSQL; a
    SQLite writer holds the database's one write lock already)."""
    connection = session.connection()
    if connection.dialect.name == "postgresql":
        connection.exec_driver_sql("SELECT pg_advisory_xact_lock(%s, %s)", (ADMIT_LOCK, journey_id))


def _refusal(
    candidate, member, features, condition, in_control, history, used_keys, seen, entry, now
):
    if member is None:
        return "unknown_member"
    if member.erased_at is not None:
        return "erased"
    if member.id in in_control:
        return "global_control"
    if (member.id, candidate.entry_key) in seen:
        return "already_in"
    if condition is not None and not conditions.holds(
        condition, audience.record(member, features.get(member.id))
    ):
        return "audience"
    if candidate.entry_key is not None and (member.id, candidate.entry_key) in used_keys:
        return "duplicate_entry_key"
    last, inside = history.get(member.id, (None, 0))
    return reentry_refusal(entry, last, inside, candidate.entry_key, now)


def reentry_refusal(
    entry: Mapping[str, Any],
    last: dt.datetime | None,
    inside: int,
    entry_key: str | None,
    now: dt.datetime,
) -> str | None:
    """Why the re-entry policy keeps out a member who last entered at ``last`` and is
    inside ``inside`` times (a member is in a journey once at a time, unless each entry
    has its own key)."""
    if last is None:
        return None
    if entry["reentry"] == "never":
        return "reentry"
    if entry["reentry"] == "after_days" and last + dt.timedelta(days=entry["reentry_days"]) > now:
        return "reentry"
    if inside and entry_key is None:
        return "already_in"
    return None


def inside_now() -> Any:
    """Enrollments still under way: walking, waiting, or held out within their window."""
    e = _enrollments.c
    return or_(
        e.state.in_(INSIDE), and_(e.state == EnrollmentState.HELD_OUT, e.exited_at.is_(None))
    )


def _room_today(
    session: Session, live: Live, entry: Mapping[str, Any], now: dt.datetime, timezone: str
) -> int | None:
    cap = entry.get("daily_cap")
    if not cap:
        return None
    local = now.astimezone(ZoneInfo(timezone))
    midnight = local.replace(hour=0, minute=0, second=0, microsecond=0)
    e = _enrollments.c
    entered = session.scalar(
        select(func.count()).where(e.journey_id == live.journey_id, e.entered_at >= midnight)
    )
    return cap - (entered or 0)


def _features(session: Session, ids: Iterable[int]) -> dict[int, MemberFeatures]:
    return {
        f.member_id: f
        for f in session.scalars(select(MemberFeatures).where(MemberFeatures.member_id.in_(ids)))
    }


def _tally(
    session: Session, journey_id: int, skipped: Counter, now: dt.datetime, timezone: str
) -> None:
    if not skipped:
        return
    day = now.astimezone(ZoneInfo(timezone)).date()
    table = JourneyCount.__table__
    statement = bulk.dialect_insert(session.get_bind().dialect.name)(table)
    session.execute(
        statement.on_conflict_do_update(
            index_elements=["journey_id", "day", "reason"],
            set_={"count": table.c["count"] + statement.excluded["count"]},
        ),
        [
            {"journey_id": journey_id, "day": day, "reason": reason, "count": count}
            for reason, count in sorted(skipped.items())
        ],
    )


def enroll(
    session: Session,
    live: Live,
    member: Member,
    *,
    context: Mapping[str, Any],
    entry_key: str | None,
    now: dt.datetime,
    timezone: str,
) -> tuple[Enrollment | None, str | None]:
    """Enroll one member (an API call or a hand-off): (the enrollment, None), or
    (None, why not)."""
    result = admit(
        session, live, [Candidate(member.id, context, entry_key)], now=now, timezone=timezone
    )
    if result.skipped:
        return None, next(iter(result.skipped))
    enrollment = session.scalar(
        select(Enrollment)
        .where(Enrollment.journey_id == live.journey_id, Enrollment.member_id == member.id)
        .order_by(Enrollment.id.desc())
        .limit(1)
    )
    return enrollment, None


# --------------------------------------------------------------------------- intake


def intake(session: Session, *, now: dt.datetime, timezone: str) -> TickResult:
    """Turn the triggers, events, schedules and dates since the last intake into
    enrollments, wake members waiting for events, and convert those who reached a
    goal. One intake at a time: a second one at once returns without doing anything."""
    result = TickResult()
    if not try_transaction_lock(session, INTAKE_LOCK):
        return result
    lives = live_journeys(session)
    _intake_triggers(session, lives, now, timezone, result)
    _intake_events(session, lives, now, timezone, result)
    for live in lives:
        if live.trigger["type"] in ("schedule", "date"):
            _intake_clock(session, live, now, timezone, result)
    return result


def catch_up(session: Session, *, now: dt.datetime, timezone: str) -> None:
    """Take in the triggers and events up to ``now`` with no journey acting on them: a
    programme that computes stages over its imported history before its journeys go
    live starts them from the day they do, not from a year of old stage changes."""
    if try_transaction_lock(session, INTAKE_LOCK):
        result = TickResult()
        _intake_triggers(session, [], now, timezone, result)
        _intake_events(session, [], now, timezone, result)


def _intake_triggers(
    session: Session, lives: list[Live], now: dt.datetime, timezone: str, result: TickResult
) -> None:
    wanted = [live for live in lives if live.trigger["type"] in ("stage_entered", "tier_changed")]
    t = _triggers.c
    while True:
        rows = session.execute(
            select(t.id, t.kind, t.member_id, t.value, t.source_id)
            .where(t.processed_at.is_(None))
            .order_by(t.id)
            .limit(TRIGGERS_PER_PASS)
        ).all()
        if not rows:
            return
        ranks = _tier_moves(session, rows) if wanted else {}
        for live in wanted:
            chosen = [
                Candidate(row.member_id, {"trigger": row.kind, "value": row.value})
                for row in rows
                if _matches_trigger(live.trigger, row, ranks)
            ]
            if chosen:
                result.add(admit(session, live, chosen, now=now, timezone=timezone))
        session.execute(
            update(_triggers).where(t.id.in_([row.id for row in rows])).values(processed_at=now)
        )
        if len(rows) < TRIGGERS_PER_PASS:
            return


def _tier_moves(session: Session, rows: Sequence[Any]) -> dict[int, str]:
    """For tier.changed triggers: "up" or "down", by the ladder's order."""
    ids = [row.source_id for row in rows if row.kind == "tier.changed" and row.source_id]
    if not ids:
        return {}
    ladder, _ = LADDER.load(session)
    order = {level.key: index for index, level in enumerate(ladder.levels)}
    moves = {}
    for change_id, before, after in session.execute(
        select(TierChange.id, TierChange.from_tier, TierChange.to_tier).where(
            TierChange.id.in_(ids)
        )
    ):
        moves[change_id] = "up" if order.get(after, -1) > order.get(before, -1) else "down"
    return moves


def _matches_trigger(trigger: Mapping[str, Any], row: Any, moves: Mapping[int, str]) -> bool:
    if trigger["type"] == "stage_entered":
        return row.kind == "stage.entered" and row.value in trigger["stages"]
    if row.kind != "tier.changed":
        return False
    if trigger.get("to") is not None and row.value != trigger["to"]:
        return False
    return trigger.get("direction", "any") in ("any", moves.get(row.source_id))


def _intake_events(
    session: Session, lives: list[Live], now: dt.datetime, timezone: str, result: TickResult
) -> None:
    cursor = session.get(programme.Cursor, EVENTS_CURSOR, with_for_update=True)
    settled = ingest.settled_event_id(session, now)
    if cursor is None:
        # A new install starts from now: journeys react to what happens from here on.
        session.add(programme.Cursor(name=EVENTS_CURSOR, position=settled, updated_at=now))
        return
    triggered = [live for live in lives if live.trigger["type"] == "event"]
    goals = _goals(session)
    e = _enrollments.c
    waiting = set(
        session.scalars(
            select(e.waiting_for)
            .distinct()
            .where(e.state == EnrollmentState.WAITING, e.waiting_for.is_not(None))
        )
    )
    types = (
        {live.trigger["event"] for live in triggered}
        | waiting
        | {goal["event"] for goal in goals.values()}
    )
    while cursor.position < settled:
        upto = min(settled, cursor.position + EVENTS_PER_PASS)
        if types:
            ev = _events.c
            rows = session.execute(
                select(
                    ev.id,
                    ev.event_id,
                    ev.member_id,
                    ev.type,
                    ev.occurred_at,
                    ev.amount,
                    ev.currency,
                    ev.category,
                    ev.properties,
                )
                .where(ev.id > cursor.position, ev.id <= upto, ev.type.in_(types))
                .order_by(ev.id)
            ).all()
            _wake(session, rows, waiting, now)
            for live in triggered:
                _enroll_from_events(session, live, rows, now, timezone, result)
            _convert(session, rows, goals, now, result)
        cursor.position = upto
    cursor.updated_at = now


def event_record(row: Any) -> dict[str, Any]:
    """An event as filters see it."""
    record: dict[str, Any] = {
        "amount": row.amount,
        "currency": row.currency,
        "category": row.category,
    }
    for name, value in (row.properties or {}).items():
        record[f"properties.{name}"] = value
    return record


def _filter(text: str | None) -> conditions.Condition | None:
    return conditions.parse(text, definition.EVENT_FILTER_FIELDS) if text else None


def _passes(condition: conditions.Condition | None, row: Any) -> bool:
    return condition is None or conditions.holds(condition, event_record(row))


def _wake(session: Session, rows: Sequence[Any], waiting: set[str], now: dt.datetime) -> None:
    e = _enrollments.c
    by_type: dict[str, set[int]] = {}
    for row in rows:
        if row.type in waiting:
            by_type.setdefault(row.type, set()).add(row.member_id)
    for kind, members in by_type.items():
        member_ids = list(members)
        for start in range(0, len(member_ids), CANDIDATES_PER_PASS):
            session.execute(
                update(_enrollments)
                .where(
                    e.state == EnrollmentState.WAITING,
                    e.waiting_for == kind,
                    e.member_id.in_(member_ids[start : start + CANDIDATES_PER_PASS]),
                    e.next_run_at > now,
                )
                .values(next_run_at=now)
            )


def _enroll_from_events(
    session: Session,
    live: Live,
    rows: Sequence[Any],
    now: dt.datetime,
    timezone: str,
    result: TickResult,
) -> None:
    trigger = live.trigger
    condition = _filter(trigger.get("filter"))
    key_name = trigger.get("entry_key")
    chosen = []
    for row in rows:
        if row.type != trigger["event"] or not _passes(condition, row):
            continue
        key = None
        if key_name == "event_id":
            key = row.event_id
        elif key_name:
            value = (row.properties or {}).get(key_name)
            key = None if value is None else str(value)[:128]
        context = {"event": {"id": row.event_id, "type": row.type, **_plain(event_record(row))}}
        chosen.append(Candidate(row.member_id, context, key))
    if chosen:
        result.add(admit(session, live, chosen, now=now, timezone=timezone))


def _plain(record: Mapping[str, Any]) -> dict[str, Any]:
    return {
        key: str(value) if isinstance(value, Decimal) else value
        for key, value in record.items()
        if value is not None
    }


def _goals(session: Session) -> dict[int, Mapping[str, Any]]:
    """The goal of every version that has members inside or held out, by version id."""
    e = _enrollments.c
    versions = (
        select(e.journey_version_id).distinct().where(e.state.in_(DUE), e.converted_at.is_(None))
    )
    return {
        version_id: defn["goal"]
        for version_id, defn in session.execute(
            select(JourneyVersion.id, JourneyVersion.definition).where(
                JourneyVersion.id.in_(versions)
            )
        )
        if defn.get("goal")
    }


def _convert(
    session: Session,
    rows: Sequence[Any],
    goals: Mapping[int, Mapping[str, Any]],
    now: dt.datetime,
    result: TickResult,
) -> None:
    if not goals:
        return
    goal_types = {goal["event"] for goal in goals.values()}
    by_member: dict[int, list[Any]] = {}
    for row in rows:
        if row.type in goal_types:
            by_member.setdefault(row.member_id, []).append(row)
    if not by_member:
        return
    e = _enrollments.c
    filters = {version_id: _filter(goal.get("filter")) for version_id, goal in goals.items()}
    exits = _exit_modes(session, list(goals))
    member_ids = list(by_member)
    converted: list[int] = []
    for start in range(0, len(member_ids), CANDIDATES_PER_PASS):
        open_ = session.execute(
            select(e.id, e.member_id, e.journey_version_id, e.entered_at, e.state).where(
                e.member_id.in_(member_ids[start : start + CANDIDATES_PER_PASS]),
                e.converted_at.is_(None),
                e.journey_version_id.in_(list(goals)),
            )
        ).all()
        for enrollment in open_:
            goal = goals[enrollment.journey_version_id]
            until = enrollment.entered_at + dt.timedelta(days=goal["within_days"])
            hit = next(
                (
                    row
                    for row in by_member[enrollment.member_id]
                    if row.type == goal["event"]
                    and enrollment.entered_at <= row.occurred_at <= until
                    and _passes(filters[enrollment.journey_version_id], row)
                ),
                None,
            )
            if hit is None:
                continue
            values: dict[str, Any] = {"converted_at": hit.occurred_at}
            leaves = exits.get(enrollment.journey_version_id) in ("on_conversion", "either")
            if leaves and enrollment.state in INSIDE:
                values.update(
                    state=EnrollmentState.CONVERTED,
                    exited_at=now,
                    exit_reason="converted",
                    next_run_at=None,
                    waiting_for=None,
                )
            session.execute(update(_enrollments).where(e.id == enrollment.id).values(**values))
            result.converted += 1
            converted.append(enrollment.id)
    webhooks_out.journey_conversions(session, converted, now)


def _exit_modes(session: Session, version_ids: list[int]) -> dict[int, str]:
    return {
        version_id: defn.get("entry", {}).get("exit", "never")
        for version_id, defn in session.execute(
            select(JourneyVersion.id, JourneyVersion.definition).where(
                JourneyVersion.id.in_(version_ids)
            )
        )
    }


def _intake_clock(
    session: Session, live: Live, now: dt.datetime, timezone: str, result: TickResult
) -> None:
    """Schedules and date attributes: who is due between the last look and now."""
    name = f"journey.{live.journey_id}.clock"
    cursor = session.get(programme.Cursor, name, with_for_update=True)
    if cursor is None:
        session.add(programme.Cursor(name=name, position=int(now.timestamp()), updated_at=now))
        return
    since = dt.datetime.fromtimestamp(cursor.position, dt.UTC)
    if since >= now:
        return
    cursor.position, cursor.updated_at = int(now.timestamp()), now
    trigger = live.trigger
    m = Member.__table__.c
    base = [m.erased_at.is_(None)]
    text = live.definition["entry"].get("audience")
    if text:
        base.append(audience.where(audience.read(text)))
    if trigger["type"] == "schedule" and trigger.get("cron"):
        zone = ZoneInfo(timezone)
        fire = croniter(trigger["cron"], since.astimezone(zone)).get_next(dt.datetime)
        if fire <= now.astimezone(zone):
            ids = _member_ids(session, base)
            context = {"scheduled_at": fire.isoformat()}
            _admit_ids(session, live, ids, context, now, timezone, result)
        return
    at = trigger.get("daily_at") or trigger.get("at")
    for zone_name in session.scalars(select(m.timezone).distinct().where(m.erased_at.is_(None))):
        day = _crossed(at, zone_name, since, now)
        if day is None:
            continue
        where = [*base, m.timezone == zone_name]
        if trigger["type"] == "date":
            target = day + dt.timedelta(days=trigger.get("days_before") or 0)
            ids = _date_members(session, trigger["field"], target, zone_name, where)
            context = {"date": target.isoformat(), "field": trigger["field"]}
        else:
            ids = _member_ids(session, where)
            context = {"scheduled_at": f"{day.isoformat()} {at}"}
        _admit_ids(session, live, ids, context, now, timezone, result)


def _crossed(at: str, zone_name: str, since: dt.datetime, now: dt.datetime) -> dt.date | None:
    """The member-local day on which the time ``at`` fell in (since, now], if any."""
    try:
        zone = ZoneInfo(zone_name)
    except (KeyError, ValueError):
        return None
    hour, minute = map(int, at.split(":"))
    local_now = now.astimezone(zone)
    for day in (local_now.date(), local_now.date() - dt.timedelta(days=1)):
        moment = dt.datetime.combine(day, dt.time(hour, minute), zone)
        if since < moment <= now:
            return day
    return None


def _member_ids(session: Session, where: list[Any]) -> list[int]:
    m, f = Member.__table__.c, MemberFeatures.__table__.c
    return list(
        session.scalars(
            select(m.id)
            .select_from(Member.__table__.outerjoin(MemberFeatures.__table__, f.member_id == m.id))
            .where(*where)
            .order_by(m.id)
        )
    )


def _date_members(
    session: Session, field: str, target: dt.date, zone_name: str, where: list[Any]
) -> list[int]:
    m = Member.__table__.c
    if field == "points_expiry":
        zone = ZoneInfo(zone_name)
        start = dt.datetime.combine(target, dt.time(0), zone)
        lot = PointsLot.__table__.c
        expiring = select(lot.member_id).where(
            lot.remaining > 0,
            lot.expires_at >= start,
            lot.expires_at < start + dt.timedelta(days=1),
        )
        return _member_ids(session, [*where, m.id.in_(expiring)])
    column = m.birthday if field == "birthday" else _local_time(session, m.joined_at, zone_name)
    days = [target.day]
    if (target.month, target.day) == (2, 28) and not _leap(target.year):
        days.append(29)  # a 29 February birthday is kept on the 28th in other years
    same_day = [extract("month", column) == target.month, extract("day", column).in_(days)]
    if field == "joined":
        same_day.append(extract("year", column) < target.year)
    return _member_ids(session, [*where, column.is_not(None), *same_day])


def _local_time(session: Session, column: Any, zone_name: str) -> Any:
    """A stored UTC time as the wall-clock time in ``zone_name`` (for its local date)."""
    if session.get_bind().dialect.name == "postgresql":
        return func.timezone(zone_name, column)
    # SQLite keeps UTC text: shift it by the zone's offset today (a DST zone's offset
    # on the day itself may differ by an hour; only near midnight does the date move).
    offset = dt.datetime.now(ZoneInfo(zone_name)).utcoffset() or dt.timedelta(0)
    return func.datetime(column, f"{int(offset.total_seconds()):+d} seconds")


def _leap(year: int) -> bool:
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)


def _admit_ids(
    session: Session,
    live: Live,
    ids: list[int],
    context: Mapping[str, Any],
    now: dt.datetime,
    timezone: str,
    result: TickResult,
) -> None:
    if ids:
        candidates = [Candidate(member_id, context) for member_id in ids]
        result.add(admit(session, live, candidates, now=now, timezone=timezone))


# --------------------------------------------------------------------------- the tick


def tick(
    session: Session,
    *,
    now: dt.datetime,
    timezone: str,
    batch: int = BATCH,
    commit: Any = None,
    max_batches: int | None = None,
) -> TickResult:
    """Intake, then advance every due enrollment, a batch per transaction (``commit``
    is called after each; the caller commits the last)."""
    result = intake(session, now=now, timezone=timezone)
    if commit is not None:
        commit()
    result.add(
        advance_all(
            session,
            now=now,
            timezone=timezone,
            batch=batch,
            commit=commit,
            max_batches=max_batches,
        )
    )
    return result


def advance_all(
    session: Session,
    *,
    now: dt.datetime,
    timezone: str,
    batch: int = BATCH,
    commit: Any = None,
    max_batches: int | None = None,
) -> TickResult:
    """Advance due enrollments batch by batch until none is left (or ``max_batches``)."""
    result = TickResult()
    versions: dict[int, Mapping[str, Any]] = {}
    while max_batches is None or result.batches < max_batches:
        done = advance(session, now=now, timezone=timezone, limit=batch, versions=versions)
        result.add(done)
        if commit is not None:
            commit()
        if done.advanced < batch:
            break
    return result


def due_count(session: Session, now: dt.datetime) -> int:
    """How many enrollments are due: the backlog that helper jobs may share."""
    e = _enrollments.c
    return session.scalar(select(func.count()).where(e.state.in_(DUE), e.next_run_at <= now)) or 0


def advance(
    session: Session,
    *,
    now: dt.datetime,
    timezone: str,
    limit: int = BATCH,
    versions: dict[int, Mapping[str, Any]] | None = None,
) -> TickResult:
    """Claim up to ``limit`` due enrollments and walk each until it waits or leaves."""
    result = TickResult()
    lives = {live.journey_id: live for live in live_journeys(session)}
    active = [j for j, live in lives.items() if live.status == JourneyStatus.ACTIVE]
    if not active:
        return result
    e = _enrollments.c
    query = (
        select(_enrollments)
        .where(e.state.in_(DUE), e.next_run_at <= now, e.journey_id.in_(active))
        .order_by(e.next_run_at, e.id)
        .limit(limit)
    )
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(of=_enrollments, skip_locked=True)
    rows = [dict(row._mapping) for row in session.execute(query)]
    if not rows:
        return result
    result.batches = 1
    result.advanced = len(rows)
    _Batch(
        session, rows, now, timezone, lives, versions if versions is not None else {}, result
    ).run()
    return result


class _Batch:
    """One batch of claimed enrollments: what they need read at once, their steps
    worked out in memory, and everything written at the end in a few statements."""

    def __init__(self, session, rows, now, timezone, lives, versions, result) -> None:
        self.session, self.rows, self.now, self.timezone = session, rows, now, timezone
        self.lives, self.result = lives, result
        missing = {r["journey_version_id"] for r in rows} - set(versions)
        if missing:
            versions.update(
                session.execute(
                    select(JourneyVersion.id, JourneyVersion.definition).where(
                        JourneyVersion.id.in_(missing)
                    )
                ).all()
            )
        self.versions = versions
        ids = {r["member_id"] for r in rows}
        # Plain rows, not ORM objects: a batch reads thousands and changes few.
        self.members = {
            m.id: SimpleNamespace(**m._mapping)
            for m in session.execute(select(_members).where(_members.c.id.in_(ids)))
        }
        self.features = {
            f.member_id: f
            for f in session.execute(
                select(_member_features).where(_member_features.c.member_id.in_(ids))
            )
        }
        self.attributes: dict[int, dict[str, Any]] = {}  # member -> attributes to write
        self.ladder: Any = None  # read when the first message is rendered
        self.expiring: dict[int, tuple[int, dt.datetime | None]] = {}
        self.keys = dict(session.execute(select(Journey.id, Journey.key)).all())
        self.step_runs: list[dict] = []
        self.messages: list[dict] = []
        self.grants: list[dict] = []
        self.points: list[tuple[Member, int, str, str]] = []
        self.templates: dict[str, MessageTemplate | None] = {}
        self.experiments: dict[str, Experiment | None] = {}
        self.placed: dict[tuple[int, int], manage.Placement] = {}  # placed ahead
        self.events = self._awaited_events()

    def _awaited_events(self) -> dict[int, list[Any]]:
        waiting = [
            r for r in self.rows if r["state"] == EnrollmentState.WAITING and r["waiting_for"]
        ]
        if not waiting:
            return {}
        ev = _events.c
        rows = self.session.execute(
            select(
                ev.event_id,
                ev.member_id,
                ev.type,
                ev.occurred_at,
                ev.amount,
                ev.currency,
                ev.category,
                ev.properties,
            ).where(
                ev.member_id.in_({r["member_id"] for r in waiting}),
                ev.type.in_({r["waiting_for"] for r in waiting}),
                ev.occurred_at > min(r["step_at"] for r in waiting),
                ev.occurred_at <= self.now,
            )
        ).all()
        found: dict[int, list[Any]] = {}
        for row in rows:
            found.setdefault(row.member_id, []).append(row)
        return found

    def run(self) -> None:
        self._place_ahead()
        for row in self.rows:
            try:
                self.walk(row)
            except Exception:
                # The steps done before the failure stand (their effects are written
                # with the batch); the member leaves, and the log says why.
                log.exception(
                    "journey enrollment %s failed at step %s", row["id"], row["current_step"]
                )
                self.leave(row, EnrollmentState.EXITED, "error")
        self.write(self.rows)

    def _leaving(self, row, defn, member) -> tuple[EnrollmentState, str] | None:
        """Why the enrollment leaves before its next step, if it does."""
        if member is None or member.erased_at is not None:
            return EnrollmentState.EXITED, "member_erased"
        if row["state"] == EnrollmentState.HELD_OUT:
            # Held out to the end: the state stays, so that reports compare them.
            return EnrollmentState.HELD_OUT, "holdout_window_over"
        entry = defn["entry"]
        if entry.get("exit") in ("when_unmatched", "either") and entry.get("audience"):
            record = audience.record(member, self.features.get(member.id))
            if not conditions.holds(audience.read(entry["audience"]), record):
                return EnrollmentState.EXITED, "left_audience"
        return None

    def _place_ahead(self) -> None:
        """Members about to reach an experiment split (those at one now, as when it is
        the journey's first step), placed in a few statements rather than one by one."""
        waiting: dict[str, list[Any]] = {}
        for row in self.rows:
            defn = self.versions[row["journey_version_id"]]
            step = defn["steps"].get(row["current_step"])
            if not step or step["type"] != "experiment_split":
                continue
            member = self.members.get(row["member_id"])
            if self._leaving(row, defn, member) is None:
                waiting.setdefault(step["experiment"], []).append(member)
        for key, members in waiting.items():
            found = self._experiment(key)
            if found is None or found.status != "running":
                continue
            members = [m for m in members if self._in_audience(found, m)]
            placed = manage.place_many(self.session, found, members, now=self.now)
            self.placed.update({(found.id, member_id): p for member_id, p in placed.items()})

    def _in_audience(self, experiment: Experiment, member: Any) -> bool:
        condition = experiment.audience.get("condition")
        if not condition:
            return True
        record = audience.record(member, self.features.get(member.id))
        return conditions.holds(audience.read(condition), record)

    def _experiment(self, key: str) -> Experiment | None:
        if key not in self.experiments:
            self.experiments[key] = self.session.scalar(
                select(Experiment).where(Experiment.key == key)
            )
        return self.experiments[key]

    # -- one enrollment

    def walk(self, row: dict[str, Any]) -> None:
        defn = self.versions[row["journey_version_id"]]
        member = self.members.get(row["member_id"])
        leaving = self._leaving(row, defn, member)
        if leaving is not None:
            return self.leave(row, *leaving)
        steps = defn["steps"]
        for _ in range(STEPS_PER_RUN):
            step_id = row["current_step"]
            step = steps.get(step_id)
            if step is None:  # a migration mapped members onto a step that is gone
                return self.leave(row, EnrollmentState.EXITED, "step_missing")
            outcome = self.execute(row, step_id, step, member)
            if outcome is None:
                return None  # waiting
            row["seq"] += 1
            self.step_runs.append(
                {
                    "enrollment_id": row["id"],
                    "seq": row["seq"],
                    "step": step_id,
                    "at": self.now,
                    "outcome": outcome,
                }
            )
            self.result.steps += 1
            outcomes = _outcomes(row["context"])
            outcomes[step_id] = outcome
            row["context"] = {**row["context"], "outcomes": outcomes}
            if step["type"] == "exit":
                return self.leave(row, EnrollmentState.COMPLETED, "completed")
            if step["type"] == "handoff":
                reason = "handoff" if outcome == "handoff" else f"handoff_{outcome}"
                return self.leave(row, EnrollmentState.EXITED, reason[:64])
            row.update(
                current_step=_target(step, outcome),
                state=EnrollmentState.ACTIVE,
                step_at=self.now,
                waiting_for=None,
            )
        row["next_run_at"] = self.now  # went round many steps: carry on next batch
        return None

    def leave(self, row: dict[str, Any], state: EnrollmentState, reason: str) -> None:
        row.update(
            state=state, exited_at=self.now, exit_reason=reason, next_run_at=None, waiting_for=None
        )

    def execute(self, row, step_id: str, step: Mapping[str, Any], member: Member) -> str | None:
        """Do the step; the exit taken, or None while the member waits."""
        kind = step["type"]
        if kind in ("wait", "wait_until", "wait_for_event"):
            return self.wait(row, step, member)
        key = f"enrollment:{row['id']}:{row['seq'] + 1}"
        if kind == "send":
            self.send(row, step_id, step, member, key)
        elif kind == "grant":
            self.grant(row, step_id, step, member, key)
        elif kind == "update_attribute":
            attributes = dict(member.attributes or {})
            if step["value"] is None:
                attributes.pop(step["attribute"], None)
            else:
                attributes[step["attribute"]] = step["value"]
            member.attributes = self.attributes[member.id] = attributes
        elif kind == "webhook":
            self.webhook(row, step_id, step, member, key)
        elif kind == "branch":
            return "yes" if self.branch(row, step, member) else "no"
        elif kind == "split":
            return self.split(row, step_id, step)
        elif kind == "experiment_split":
            return self.experiment(row, step, member)
        elif kind == "handoff":
            refused = self.handoff(row, step, member)
            return "handoff" if refused is None else f"refused:{refused}"
        elif kind == "exit":
            return "exit"
        return "next"

    def wait(self, row, step: Mapping[str, Any], member: Member) -> str | None:
        kind = step["type"]
        if row["state"] != EnrollmentState.WAITING:  # arriving: start waiting
            if kind == "wait":
                until = self.now + _duration(step, "")
            elif kind == "wait_until":
                until = next_local_time(step, member, self.now)
            else:
                until = self.now + _duration(step, "within_")
                row["waiting_for"] = step["event"]
            row.update(state=EnrollmentState.WAITING, step_at=self.now, next_run_at=until)
            return None
        if kind != "wait_for_event":
            return "next"
        condition = _filter(step.get("filter"))
        deadline = row["step_at"] + _duration(step, "within_")
        for event in self.events.get(member.id, []):
            if (
                event.type == step["event"]
                and row["step_at"] < event.occurred_at <= deadline
                and _passes(condition, event)
            ):
                row["context"] = {
                    **row["context"],
                    "event": {
                        "id": event.event_id,
                        "type": event.type,
                        **_plain(event_record(event)),
                    },
                }
                return "matched"
        if deadline <= self.now:
            return "timeout"
        row["next_run_at"] = deadline  # woken by an event that did not pass the filter
        return None

    def branch(self, row, step: Mapping[str, Any], member: Member) -> bool:
        record = audience.record(member, self.features.get(member.id))
        for name, value in _outcomes(row["context"]).items():
            record[f"outcome.{name}"] = value
        window = step.get("window")
        if window:
            ev = _events.c
            record["events_in_window"] = self.session.scalar(
                select(func.count()).where(
                    ev.member_id == member.id,
                    ev.type == window["event"],
                    ev.occurred_at > self.now - dt.timedelta(days=window["days"]),
                    ev.occurred_at <= self.now,
                )
            )
        fields = audience.Fields({"events_in_window": "number", **definition._outcome_fields(step)})
        return conditions.holds(audience.read(step["condition"], fields), record)

    def split(self, row, step_id: str, step: Mapping[str, Any]) -> str:
        return split_branch(row["journey_id"], step_id, row["member_id"], step)

    def experiment(self, row, step: Mapping[str, Any], member: Member) -> str:
        found = self._experiment(step["experiment"])
        if found is None or found.status != "running":
            return experiment_fallback(step, found)
        if not self._in_audience(found, member) and not manage.recorded_assignment(
            self.session, found.id, member.id
        ):
            return experiment_fallback(step, found)  # not for this experiment
        placed = self.placed.get((found.id, member.id))
        if placed is None:
            placed = manage.place(self.session, found, member, now=self.now)
        if placed.variant not in step["variants"]:
            # An arm the step has no path for (added to the experiment after the
            # journey was published): down the control's path, not as its exposure.
            return experiment_fallback(step, found)
        # The messages sent down the variant's path are exposures of this assignment.
        row["context"] = {
            **row["context"],
            "experiment": {"key": found.key, "variant": placed.variant, "assignment": placed.id},
        }
        return placed.variant

    def handoff(self, row, step: Mapping[str, Any], member: Member) -> str | None:
        """Enroll the member in the target journey; why not, if they were not."""
        target = next((x for x in self.lives.values() if x.key == step["journey"]), None)
        if target is None:
            return "not_live"
        result = admit(
            self.session,
            target,
            [Candidate(member.id, {"from": self.keys.get(row["journey_id"])})],
            now=self.now,
            timezone=self.timezone,
        )
        return next(iter(result.skipped), None)

    def member_variables(self, member: Any) -> dict[str, Any]:
        if self.ladder is None:
            self.ladder, _ = LADDER.load(self.session)
            self.expiring = expiring_points(self.session, list(self.members), self.now)
        return _variables(member, self.features.get(member.id), self.ladder, self.expiring)

    def template(self, key: str) -> MessageTemplate | None:
        if key not in self.templates:
            self.templates[key] = self.session.scalar(
                select(MessageTemplate).where(MessageTemplate.key == key)
            )
        return self.templates[key]

    def send(self, row, step_id: str, step: Mapping[str, Any], member: Member, key: str) -> None:
        template = self.template(step["template"])
        variables = {
            "member": self.member_variables(member),
            "context": row["context"],
            "benefit": (row["context"].get("benefit") or {}),
            "coupon": (row["context"].get("coupon") or {}),
        }
        error, body, title, params = None, "", None, None
        if template is None:
            error = f"template {step['template']!r} was deleted"
        else:
            try:
                body = render.render(template.body, variables)
                title = render.render(template.title, variables) if template.title else None
                if template.sms_template_code and template.sms_approved_text:
                    # Bound to a provider's approved template: its variables are what
                    # the provider sends, and its approved text is what members read.
                    values = templates.render_params(template.sms_params or {}, variables)
                    params = {"template": values}
                    body = templates.approved_text(template.sms_approved_text, values)
            except render.RenderError as exc:
                error = f"template {template.key!r}: {exc}"
        self.messages.append(
            {
                "enrollment_id": row["id"],
                "step": step_id,
                "member_id": member.id,
                "channel": step["channel"],
                "provider": "outbox",
                "dedup_key": key,
                "template_key": step["template"],
                "transactional": bool(template is not None and template.transactional),
                "priority": template.priority if template is not None else 0,
                "params": params,
                "title": title,
                "body": body,
                "status": MessageStatus.FAILED if error else MessageStatus.QUEUED,
                "error": error,
                "attempts": 0,
                "send_after": self.now,
                "created_at": self.now,
                "updated_at": self.now,
            }
        )
        self.result.messages += 1

    def webhook(self, row, step_id: str, step: Mapping[str, Any], member: Member, key: str) -> None:
        payload = {
            "type": "journey.step",
            "journey": self.keys.get(row["journey_id"]),
            "step": step_id,
            "member": member.external_id,
            "context": row["context"],
            "url": step["url"],
        }
        self.messages.append(
            {
                "enrollment_id": row["id"],
                "step": step_id,
                "member_id": member.id,
                "channel": "webhook",
                "provider": "webhook",
                "dedup_key": key,
                "template_key": None,
                "transactional": False,
                "priority": 0,
                "params": {"url": step["url"]},
                "title": step["url"][:200],
                "body": json.dumps(payload, ensure_ascii=False, default=str),
                "status": MessageStatus.QUEUED,
                "error": None,
                "attempts": 0,
                "send_after": self.now,
                "created_at": self.now,
                "updated_at": self.now,
            }
        )
        self.result.messages += 1

    def grant(self, row, step_id: str, step: Mapping[str, Any], member: Member, key: str) -> None:
        benefit = step["benefit"]
        source_ref = f"{self.keys.get(row['journey_id'])}:{step_id}"
        if benefit == "points":
            self.points.append((member, step["points"], key, source_ref))
            row["context"] = {
                **row["context"],
                "benefit": {"kind": "points", "points": step["points"]},
            }
            self.result.grants += 1
            return
        grant = benefits.grant_row(
            step,
            member_id=member.id,
            key=key,
            source="journey_step",
            source_ref=source_ref,
            now=self.now,
        )
        self.grants.append(grant)
        expires_at, code = grant["expires_at"], grant["code"]
        value = step.get("value") or step.get("multiplier")
        granted = {
            "kind": benefit,
            "value": value,
            "threshold": step.get("threshold"),
            "code": code,
            "expires_at": expires_at.isoformat() if expires_at else None,
            "service": step.get("service"),
        }
        # Messages read the last benefit granted, and the last coupon by its own name.
        row["context"] = {**row["context"], "benefit": granted}
        if benefit == "coupon":
            row["context"]["coupon"] = granted
        self.result.grants += 1

    # -- writing the batch

    def write(self, rows: list[dict[str, Any]]) -> None:
        session = self.session
        bulk.insert_rows(session, _runs, self.step_runs)
        bulk.insert_rows(session, _messages, self.messages)
        bulk.insert_rows(session, _grants, self.grants)
        if self.points:
            rules, _ = points.load(session)
            for member, amount, key, source_ref in self.points:
                points.earn(
                    session,
                    session.get(Member, member.id),
                    amount,
                    reason=f"journey {source_ref}",
                    now=self.now,
                    rules=rules,
                    actor="journey",
                    key=key,
                    source="journey",
                )
        bulk.update_rows(
            session,
            _members,
            "id",
            [{"id": member_id, "attributes": a} for member_id, a in self.attributes.items()],
        )
        columns = (
            "state",
            "current_step",
            "seq",
            "step_at",
            "waiting_for",
            "next_run_at",
            "context",
            "exited_at",
            "exit_reason",
        )
        bulk.update_rows(
            session,
            _enrollments,
            "id",
            [{"id": row["id"], **{name: row[name] for name in columns}} for row in rows],
        )
        session.flush()


def experiment_fallback(step: Mapping[str, Any], experiment: Experiment | None) -> str:
    """Where a member goes when the experiment is not running (or assigned a variant
    the step does not map): the control variant's exit, else the first."""
    control = next(
        (v.key for v in (experiment.variants if experiment else []) if v.is_control), None
    )
    return control if control in step["variants"] else next(iter(step["variants"]))


def split_branch(journey_id: int, step_id: str, member_id: int, step: Mapping[str, Any]) -> str:
    """The branch of a random split a member takes: a hash of the journey, the step and
    the member, so that the dry run shows the branch the engine will take."""
    digest = hashlib.sha256(f"{journey_id}:{step_id}:{member_id}".encode()).digest()
    point = Decimal(int.from_bytes(digest[:8], "big") % 10_000) / 100
    total = Decimal(0)
    for index, branch in enumerate(step["branches"]):
        total += Decimal(branch["percent"])
        if point < total:
            return str(index)
    return str(len(step["branches"]) - 1)


EXPIRING_WITHIN = dt.timedelta(days=30)


def preview_variables(session: Session, member: Any | None, now: dt.datetime) -> dict[str, Any]:
    """A template's variables for a preview or a test: the sample member's, or, with
    ``member``, that member's own (benefit and context stay the sample's)."""
    variables = dict(templates.SAMPLE)
    if member is not None:
        features = session.get(MemberFeatures, member.id)
        variables["member"] = member_variables(session, member, features, now)
    return variables


def member_variables(
    session: Session, member: Any, features: Any, now: dt.datetime
) -> dict[str, Any]:
    """What a template may read of one member (previews and the dry run; a tick reads
    the ladder and the points expiring once per batch)."""
    ladder, _ = LADDER.load(session)
    return _variables(member, features, ladder, expiring_points(session, [member.id], now))


def _variables(member: Any, features: Any, ladder: Any, expiring: Mapping) -> dict[str, Any]:
    return render.member_variables(
        member,
        features,
        next_level=next_tier(ladder, member.tier, features),
        expiring=expiring.get(member.id, (0, None)),
    )


def expiring_points(
    session: Session, member_ids: list[int], now: dt.datetime
) -> dict[int, tuple[int, dt.datetime | None]]:
    """Per member: the points expiring within 30 days, and when the first of them go."""
    lot = PointsLot.__table__.c
    return {
        member_id: (int(points), first)
        for member_id, points, first in session.execute(
            select(lot.member_id, func.sum(lot.remaining), func.min(lot.expires_at))
            .where(
                lot.member_id.in_(member_ids),
                lot.remaining > 0,
                lot.expires_at > now,
                lot.expires_at <= now + EXPIRING_WITHIN,
            )
            .group_by(lot.member_id)
        )
    }


def _outcomes(context: Mapping[str, Any]) -> dict[str, Any]:
    found = context.get("outcomes")
    return dict(found) if isinstance(found, Mapping) else {}


def _target(step: Mapping[str, Any], outcome: str) -> str:
    kind = step["type"]
    if kind == "split":
        return step["branches"][int(outcome)]["next"]
    if kind == "experiment_split":
        return step["variants"][outcome]
    return step[outcome]


def _duration(step: Mapping[str, Any], prefix: str) -> dt.timedelta:
    return dt.timedelta(
        days=step.get(f"{prefix}days") or 0,
        hours=step.get(f"{prefix}hours") or 0,
        minutes=step.get(f"{prefix}minutes") or 0,
    )


def next_local_time(step: Mapping[str, Any], member: Member, now: dt.datetime) -> dt.datetime:
    """The next moment after ``now`` at the step's time of day in the member's time zone
    (on the member's birthday or joining anniversary, less ``days_before``, if it names one)."""
    try:
        zone = ZoneInfo(member.timezone)
    except (KeyError, ValueError):
        zone = ZoneInfo("Asia/Shanghai")
    hour, minute = map(int, step["time"].split(":"))
    local = now.astimezone(zone)
    field = step.get("field")
    if field is None:
        moment = dt.datetime.combine(local.date(), dt.time(hour, minute), zone)
        return moment if moment > now else moment + dt.timedelta(days=1)
    source = member.birthday if field == "birthday" else member.joined_at.astimezone(zone).date()
    if source is None:
        return now  # no date to wait for: carry on
    for year in (local.year, local.year + 1):
        day = (
            min(source.day, 28)
            if (source.month, source.day) == (2, 29) and not _leap(year)
            else source.day
        )
        anniversary = dt.date(year, source.month, day) - dt.timedelta(
            days=step.get("days_before") or 0
        )
        moment = dt.datetime.combine(anniversary, dt.time(hour, minute), zone)
        if moment > now:
            return moment
    return now
