"""A run of the lifecycle engine: recompute RFM features, then stages, then record each
change of stage as a transition and as ``stage.exited`` / ``stage.entered`` triggers,
all set-based and in the caller's one transaction.

A **full** run covers every current member (nightly). An **incremental** run (every
minute) covers the members who could have changed since the last run:

- members with events stored since the last run (by event id: the primary key, so no
  index is added to the events table). The last run's watermark stops a minute short
  of its time, so an ingest transaction still open when it ran is seen by the next;
- members with events dated between the two runs' ``as_of`` (an event may be stored
  before the time it is dated, and counts only from then);
- members whose last order or joining date crossed a threshold of the stage rules
  between the two runs (30 days without an order makes a member dormant even though
  nothing arrived);
- members with no stage or tier yet, and members whose tier's grace period ended.

What only the full run sees: the rolling windows moving on (visit rates, 365-day
spend) and the VIP percentile moving with all members' spend (incremental runs keep
the threshold of the run before). A run after the stage rules or the tier ladder
changed is a full run.

Two runs never overlap: on PostgreSQL a second run finds the transaction-level
advisory lock taken and gives up (LifecycleBusy); on SQLite the writes of the first
run hold the database's write lock, and the second waits for it to commit.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
from collections import Counter
from collections.abc import Callable, Collection

from sqlalchemy import func, insert, literal, or_, select, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from members import features, ingest, stage_history, stages, tiers
from members.db import try_transaction_lock
from members.event import Event
from members.lifecycle import (
    LifecycleRun,
    MemberFeatures,
    RunKind,
    Stage,
    StageTransition,
    Trigger,
)
from members.member import DEFAULT_TIMEZONE, Member

# pg_try_advisory_xact_lock's key for lifecycle runs (any constant bigint).
LOCK_KEY = 0x7465_6E75_7265_4C43  # "tenureLC"

STAGE_ENTERED, STAGE_EXITED = "stage.entered", "stage.exited"
# The steps a run reports to ``progress`` as it finishes each, in order.
STEPS = ("members", "features", "tiers", "stages", "history")

_events = Event.__table__
_members = Member.__table__
_features = MemberFeatures.__table__
_transitions = StageTransition.__table__
_triggers = Trigger.__table__

Progress = Callable[[str], None]


class LifecycleBusy(RuntimeError):
    """Another lifecycle run holds the lock."""


@dataclasses.dataclass
class RunResult:
    run_id: int
    kind: RunKind
    as_of: dt.datetime
    members: int
    changed: int
    entered: Counter[Stage]
    seconds: float
    tiers_entered: Counter[str] = dataclasses.field(default_factory=Counter)


def run(
    session: Session,
    *,
    now: dt.datetime,
    as_of: dt.datetime | None = None,
    full: bool = False,
    timezone: str = DEFAULT_TIMEZONE,
    progress: Progress | None = None,
) -> RunResult:
    """One lifecycle run as of ``as_of`` (default ``now``), in the session's transaction
    (the caller commits). An incremental run with no run before it runs in full.
    ``timezone`` is the programme's, whose calendar the stage history counts in."""
    started = time.perf_counter()
    as_of = as_of or now
    if as_of.utcoffset() is None or now.utcoffset() is None:
        raise ValueError("now and as_of must be aware times")
    step = progress or (lambda _label: None)
    _lock(session)
    rules, version = stages.load(session)
    ladder, ladder_version = tiers.load(session)
    previous = session.scalars(select(LifecycleRun).order_by(LifecycleRun.id.desc())).first()
    # New rules or a new ladder apply to every member at once, not only to those in scope.
    kind = (
        RunKind.FULL
        if full
        or previous is None
        or (previous.rules_version, previous.ladder_version) != (version, ladder_version)
        else RunKind.INCREMENTAL
    )
    record = LifecycleRun(
        kind=kind,
        as_of=as_of,
        started_at=now,
        # A run for a past moment leaves the watermark: what it did not see as of then
        # is for the next run to see.
        event_watermark=_watermark(session, now, previous)
        if as_of >= now - ingest.SETTLE
        else (0 if previous is None else previous.event_watermark),
        rules_version=version,
        ladder_version=ladder_version,
    )
    session.add(record)
    session.flush()

    scope = None if kind is RunKind.FULL else _members_to_check(session, previous, as_of, rules)
    step("members")
    features.recompute(session, as_of, scope)
    step("features")
    if kind is RunKind.INCREMENTAL:
        # The percentile moves with everyone's spend: the nightly full run moves it.
        record.vip_threshold = previous.vip_threshold
    else:
        record.vip_threshold = stages.vip_threshold(session, rules)
    # Tiers first: a rule may make the top tier VIP.
    promoted = tiers.apply(
        session, run_id=record.id, as_of=as_of, ladder=ladder, chunks=_chunks(scope)
    )
    step("tiers")
    stage = stages.expression(rules, record.vip_threshold, ladder.levels[-1].key)
    for chunk in _chunks(scope):
        _record_transitions(session, record, stage, chunk)
    entered = _apply(session, record)
    step("stages")
    stage_history.record(
        session, run_id=record.id, as_of=as_of, timezone=timezone, exact=kind is RunKind.FULL
    )
    step("history")
    record.members = _count_members(session) if scope is None else len(scope)
    record.changed = sum(entered.values())
    record.seconds = round(time.perf_counter() - started, 3)
    session.flush()
    return RunResult(
        run_id=record.id,
        kind=kind,
        as_of=as_of,
        members=record.members,
        changed=record.changed,
        entered=entered,
        seconds=record.seconds,
        tiers_entered=promoted,
    )


def _lock(session: Session) -> None:
    if not try_transaction_lock(session, LOCK_KEY):
        raise LifecycleBusy("another lifecycle run is in progress")


def is_busy(error: BaseException) -> bool:
    """Whether an error means the database was locked by another run (SQLite)."""
    return isinstance(error, OperationalError) and "locked" in str(error.orig)


def _watermark(session: Session, now: dt.datetime, previous: LifecycleRun | None) -> int:
    """How far this run has seen the events: those received a minute before it; the
    next run looks at any later ones again."""
    before = 0 if previous is None else previous.event_watermark
    return max(ingest.settled_event_id(session, now), before)


def _members_to_check(
    session: Session, previous: LifecycleRun, as_of: dt.datetime, rules: stages.StageRules
) -> list[int]:
    """The members an incremental run looks at (see the module's docstring)."""
    e, m, f = _events.c, _members.c, _features.c
    with_events = select(e.member_id).where(e.id > previous.event_watermark)
    counted = e.type.in_(features.COUNTED_TYPES)
    # Members without a stage or a tier yet.
    unplaced = [m.stage.is_(None), m.tier.is_(None)]
    queries = [with_events]
    if previous.as_of < as_of:
        # A threshold of d days was crossed by the members whose date lies in
        # (previous as_of - d, as_of - d]; a grace period ended in (previous, as_of].
        def crossed(column, days: int):
            delta = dt.timedelta(days=days)
            return column.between(previous.as_of - delta, as_of - delta)

        # Events stored before but dated after the last run's as_of (up to an hour
        # ahead is accepted) count from this run on; found by the (type, occurred_at) index.
        queries.append(
            select(e.member_id).where(
                counted, e.occurred_at > previous.as_of, e.occurred_at <= as_of
            )
        )
        order_days = {rules.at_risk_days, rules.active_days, rules.dormant_days, rules.lapsed_days}
        queries.append(
            select(f.member_id).where(or_(*(crossed(f.last_order_at, d) for d in order_days)))
        )
        unplaced.extend(crossed(m.joined_at, d) for d in {rules.new_days, rules.lapsed_days})
        unplaced.append(m.tier_grace_until.between(previous.as_of, as_of))
    queries.append(select(m.id).where(m.erased_at.is_(None), or_(*unplaced)))
    ids: set[int] = set()
    for query in queries:
        ids.update(session.scalars(query))
    return sorted(ids)


def _chunks(scope: list[int] | None) -> list[list[int] | None]:
    if scope is None:
        return [None]
    size = features.IDS_PER_STATEMENT
    return [scope[i : i + size] for i in range(0, len(scope), size)]


def _record_transitions(
    session: Session, record: LifecycleRun, stage, members: Collection[int] | None
) -> None:
    """A transition row for every member in scope whose stage differs from ``stage``."""
    m, f = _members.c, _features.c
    changed = (
        select(
            m.id,
            m.stage,
            stage,
            literal(record.as_of, _transitions.c.at.type),
            literal(record.id, _transitions.c.run_id.type),
        )
        .select_from(_members.join(_features, f.member_id == m.id))
        .where(m.erased_at.is_(None), or_(m.stage.is_(None), m.stage != stage))
    )
    if members is not None:
        changed = changed.where(m.id.in_(members))
    columns = ["member_id", "from_stage", "to_stage", "at", "run_id"]
    session.execute(insert(_transitions).from_select(columns, changed))


def _apply(session: Session, record: LifecycleRun) -> Counter[Stage]:
    """Emit the run's transitions as triggers (every member's exit before their
    entry) and move the members to their new stage."""
    t = _transitions.c
    ours = t.run_id == record.id
    source = [literal("stage_transition"), t.id]
    columns = ["kind", "member_id", "at", "value", "source_type", "source_id"]
    exited = select(literal(STAGE_EXITED), t.member_id, t.at, t.from_stage, *source).where(
        ours, t.from_stage.is_not(None)
    )
    entered = select(literal(STAGE_ENTERED), t.member_id, t.at, t.to_stage, *source).where(ours)
    for query in (exited, entered):
        session.execute(insert(_triggers).from_select(columns, query.order_by(t.id)))
    session.execute(
        update(_members)
        .where(_members.c.id == t.member_id, ours)
        # updated_at is the profile's: a new stage is not a profile change.
        .values(stage=t.to_stage, stage_since=t.at, updated_at=_members.c.updated_at)
    )
    counts = session.execute(select(t.to_stage, func.count()).where(ours).group_by(t.to_stage))
    return Counter({Stage(stage): count for stage, count in counts})


def _count_members(session: Session) -> int:
    m = _members.c
    return session.scalar(select(func.count()).where(m.erased_at.is_(None))) or 0
