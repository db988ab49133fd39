"""The fan-out pass: webhooks for what ``members/`` and ``experiments/`` append (stage
transitions, tier changes, benefit grants, experiment assignments), which may not
import journeys, read by id cursors.

On PostgreSQL ids are taken from a sequence before their transaction commits, so a
row with a smaller id can appear after a larger one was read. A pass therefore reads
the new rows after its ``head`` and again those since its ``settled`` position, which
only advances to the newest id seen at least SETTLE ago (every transaction holding a
smaller id has committed by then). Reading a row again is harmless: its deliveries
exist, so it emits nothing new.

Endpoints get events from about their subscription on: while no endpoint subscribes
to a type, its cursors jump to the newest row, so no backlog builds up for a later
subscriber.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from experiments.models import Assignment, Experiment, Variant
from journeys.webhooks_out import Fact, emit_facts, subscribers
from members.bulk import dialect_insert
from members.lifecycle import StageTransition, TierChange
from members.loyalty import BenefitGrant
from members.member import Member
from members.programme import Cursor

# New rows read per source and pass (a backlog is worked off over several passes).
PASS_ROWS = 5_000
# Longer than any transaction that appends to these tables stays open.
SETTLE = dt.timedelta(minutes=3)


@dataclasses.dataclass(frozen=True)
class Source:
    name: str
    event_type: str
    id_column: Any
    query: Callable[[], Select]  # rows with .id, joined to the member's external_id
    fact: Callable[[Any], Fact]


def _living(query: Select, member_id: Any) -> Select:
    """Joined to the member's external id; an erased member's facts are not sent."""
    return query.join(Member, Member.id == member_id).where(Member.erased_at.is_(None))


def _stage_query() -> Select:
    t = StageTransition
    query = select(t.id, t.from_stage, t.to_stage, t.at, Member.external_id)
    return _living(query, t.member_id)


def _tier_query() -> Select:
    t = TierChange
    query = select(t.id, t.from_tier, t.to_tier, t.at, Member.external_id)
    return _living(query, t.member_id)


def _grant_query() -> Select:
    g = BenefitGrant
    query = select(
        g.id,
        g.kind,
        g.value,
        g.threshold,
        g.code,
        g.detail,
        g.expires_at,
        g.source,
        g.source_ref,
        g.granted_at,
        Member.external_id,
    )
    return _living(query, g.member_id)


def _assignment_query() -> Select:
    a = Assignment
    query = select(
        a.id,
        a.source,
        a.assigned_at,
        Experiment.key.label("experiment"),
        Variant.key.label("variant"),
        Member.external_id,
    )
    query = query.join(Experiment, Experiment.id == a.experiment_id).outerjoin(
        Variant, Variant.id == a.variant_id
    )
    return _living(query, a.member_id)


def _grant_fact(row: Any) -> Fact:
    data = {
        "member": row.external_id,
        "grant": str(row.id),
        **{
            name: getattr(row, name)
            for name in (
                "kind",
                "value",
                "threshold",
                "code",
                "detail",
                "expires_at",
                "source",
                "source_ref",
            )
        },
    }
    return Fact(str(row.id), data, row.granted_at)


def _assignment_fact(row: Any) -> Fact:
    data = {
        "member": row.external_id,
        "experiment": row.experiment,
        "variant": row.variant,
        "holdout": row.variant is None,
        "source": row.source,
        "at": row.assigned_at,
    }
    return Fact(str(row.id), data, row.assigned_at)


def _move(row: Any, before: Any, after: Any) -> Fact:
    data = {"member": row.external_id, "from": before, "to": after, "at": row.at}
    return Fact(str(row.id), data, row.at)


SOURCES = (
    Source(
        "stage_transitions",
        "member.stage_changed",
        StageTransition.id,
        _stage_query,
        lambda r: _move(r, r.from_stage, r.to_stage),
    ),
    Source(
        "tier_changes",
        "member.tier_changed",
        TierChange.id,
        _tier_query,
        lambda r: _move(r, r.from_tier, r.to_tier),
    ),
    Source("benefit_grants", "benefit.granted", BenefitGrant.id, _grant_query, _grant_fact),
    Source(
        "assignments", "experiment.assigned", Assignment.id, _assignment_query, _assignment_fact
    ),
)


def fan_out(session: Session, *, now: dt.datetime) -> dict[str, int]:
    """One pass over every source: deliveries written per event type (the caller
    commits). Cursors are locked for the pass, so two passes at once take turns."""
    subscribed = subscribers(session)
    return {
        source.event_type: _pass(session, source, subscribed.get(source.event_type, []), now)
        for source in SOURCES
    }


def _pass(session: Session, source: Source, endpoint_ids: list[int], now: dt.datetime) -> int:
    """Read the rows after ``head`` (at most PASS_ROWS) and again those between
    ``settled`` and ``head``, which a slow transaction may have added to since; move
    ``settled`` up to what the ``mark`` (the newest id SETTLE ago) and the reading allow."""
    newest = session.scalar(select(func.max(source.id_column))) or 0
    name = f"webhooks.{source.name}"
    settled, head, mark = (
        _cursor(session, n, newest, now) for n in (name, f"{name}.head", f"{name}.mark")
    )
    if not endpoint_ids:
        # Nobody listens: no backlog for a later subscriber (events from then on).
        for cursor in (settled, head, mark):
            cursor.position, cursor.updated_at = max(cursor.position, newest), now
        return 0
    key = source.id_column
    ordered = source.query().order_by(key)
    again = session.execute(ordered.where(key > settled.position, key <= head.position)).all()
    new = session.execute(ordered.where(key > head.position).limit(PASS_ROWS)).all()
    if len(new) == PASS_ROWS:
        head.position = new[-1].id
    else:  # every row visible up to the newest was read
        head.position = max(newest, head.position, new[-1].id if new else 0)
    head.updated_at = now
    facts = [source.fact(row) for row in (*again, *new)]
    written = emit_facts(session, source.event_type, facts, endpoint_ids, now)
    if now - mark.updated_at >= SETTLE:
        # Rows up to the mark had SETTLE to commit, and were read since: done with.
        settled.position = max(settled.position, min(mark.position, head.position))
        settled.updated_at = now
        mark.position, mark.updated_at = newest, now
    return written


def _cursor(session: Session, name: str, start: int, now: dt.datetime) -> Cursor:
    insert = dialect_insert(session.get_bind().dialect.name)
    session.execute(
        insert(Cursor.__table__)
        .values(name=name, position=start, updated_at=now)
        .on_conflict_do_nothing(index_elements=["name"])
    )
    cursor = session.get(Cursor, name, with_for_update=True, populate_existing=True)
    assert cursor is not None  # inserted above when missing
    return cursor
