"""The simulator's side of the wire: members and events into Tenure through the same
code as the API (profiles.upsert_many, ingest.ingest), Tenure's periodic work at the
simulated instant, and what Tenure did (benefits, messages, assignments, enrollments)
read back for the members to react to.

Members of a simulation have external ids ``sim-0000042`` (member number 42).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
from collections import Counter
from collections.abc import Iterator
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from experiments.models import Assignment, Experiment
from journeys import delivery
from journeys import engine as journey_engine
from journeys.channel_models import ProviderAccount
from journeys.models import (
    Enrollment,
    EnrollmentState,
    Journey,
    JourneyVersion,
    Message,
    MessageStatus,
)
from journeys.webhook_models import WebhookEndpoint
from members import bulk, ingest, lifecycle_run, points, profiles
from members.loyalty import BenefitGrant
from members.member import Channel, Member
from simulator import model
from simulator.model import Events, Membership

PREFIX = "sim-"
INGEST_BATCH = 5_000
SIGNUP = "signup_form"


def external_id(index: int) -> str:
    return f"{PREFIX}{index:07d}"


def index_of(external: str) -> int | None:
    if not external.startswith(PREFIX):
        return None
    try:
        return int(external[len(PREFIX) :])
    except ValueError:
        return None


class Refused(Exception):
    """The instance cannot host a simulation (the message says why)."""


def check_instance(session: Session) -> None:
    """Simulated members must never reach a real phone or a real system: no provider
    accounts, no webhook endpoints."""
    accounts = session.scalar(select(func.count()).select_from(ProviderAccount))
    if accounts:
        raise Refused(
            f"this instance has {accounts} provider account(s): simulated members must not "
            "reach a real provider; simulate on an instance of its own"
        )
    endpoints = session.scalar(select(func.count()).select_from(WebhookEndpoint))
    if endpoints:
        raise Refused(
            f"this instance has {endpoints} webhook endpoint(s): simulated members must not "
            "reach a real system; simulate on an instance of its own"
        )


@dataclasses.dataclass
class Clock:
    """Simulated days <-> instants: day 0.0 is programme midnight of the first day."""

    origin: dt.datetime  # aware, UTC

    @classmethod
    def starting(cls, day: dt.date, zone: str) -> Clock:
        """Day 0.0 at midnight of ``day`` in the programme's time zone."""
        return cls(dt.datetime.combine(day, dt.time(0), ZoneInfo(zone)).astimezone(dt.UTC))

    def at(self, t: float) -> dt.datetime:
        return self.origin + dt.timedelta(days=t)

    def days(self, at: dt.datetime) -> float:
        return (at - self.origin).total_seconds() / 86400


JOIN_BATCH = 10_000


def join(session: Session, sim: Membership, first: int, upto: int, clock: Clock, now) -> None:
    """Sign members ``first``..``upto``-1 up, a batch at a time: their profiles through
    the API's upsert, then their consents."""
    for start in range(first, upto, JOIN_BATCH):
        _join(session, sim, start, min(start + JOIN_BATCH, upto), clock, now)


def _join(session: Session, sim: Membership, first: int, upto: int, clock: Clock, now) -> None:
    from simulator import population

    traits = sim.traits
    items = []
    for i in range(first, upto):
        fields = population.profile(sim.params, traits, i, sim.seed)
        fields["joined_at"] = clock.at(float(traits.joined[i]))
        items.append((external_id(i), fields))
    profiles.upsert_many(session, items, now)
    ids = _ids(session, range(first, upto))
    changes = []
    for i in range(first, upto):
        member_id = ids[i]
        changes.append((member_id, Channel.SMS, bool(traits.sms[i])))
        if traits.app[i]:
            changes.append((member_id, Channel.PUSH, bool(traits.push[i])))
            changes.append((member_id, Channel.CROSS_BORDER, bool(traits.cross_border[i])))
        if not traits.personalised[i]:
            changes.append((member_id, Channel.PERSONALISED_MARKETING, False))
    profiles.record_consents(session, changes, source=SIGNUP, now=now)


def _ids(session: Session, indices) -> dict[int, int]:
    wanted = [external_id(i) for i in indices]
    rows = bulk.rows_where_in(
        session, Member.__table__, "external_id", wanted, ("external_id", "id")
    )
    return {index_of(external): member_id for external, member_id in rows}


def send_events(
    session: Session, sim: Membership, events: Events, clock: Clock, now, currency: str
) -> int:
    """Ingest the events, a batch at a time, through the API's code; how many were new."""
    accepted = 0
    for start in range(0, len(events), INGEST_BATCH):
        part = events.take(slice(start, start + INGEST_BATCH))
        outcomes = ingest.ingest(
            session, list(event_records(sim, part, clock)), now=now, default_currency=currency
        )
        accepted += sum(o.status is ingest.Status.ACCEPTED for o in outcomes)
        rejected = [o for o in outcomes if o.status is ingest.Status.REJECTED]
        if rejected:  # pragma: no cover - the model writes only good events
            first = rejected[0]
            raise AssertionError(f"event {first.event_id}: {first.field} {first.reason}")
    return accepted


def event_records(sim: Membership, events: Events, clock: Clock) -> Iterator[ingest.EventIn]:
    categories = list(sim.params.population.categories)
    seed = sim.seed
    origin = clock.origin.timestamp()
    for member, kind, at, amount, category, ref in zip(
        events.member.tolist(),
        events.kind.tolist(),
        events.time.tolist(),
        events.amount.tolist(),
        events.category.tolist(),
        events.ref.tolist(),
        strict=True,
    ):
        name = model.TYPE_NAMES[kind]
        properties: dict[str, Any] = {}
        money = None
        if kind in (model.ORDER, model.REFUND):
            money = Decimal(f"{amount:.2f}")
            properties["order_id"] = f"o{ref}"
            event_id = f"s{seed}-{name}-{ref}"
        elif kind == model.COUPON_REDEEMED:
            properties["code"] = sim.codes[ref]
            event_id = f"s{seed}-coupon-{ref}"
        elif kind in (model.REVIEW, model.SHARE):
            properties["order_id"] = f"o{ref}"
            event_id = f"s{seed}-{name}-{ref}"
        else:  # visits and referrals: one a member a day, or a message's number
            event_id = f"s{seed}-{name}-{member}-{ref}"
        yield ingest.EventIn(
            event_id=event_id,
            member=external_id(member),
            type=name,
            occurred_at=dt.datetime.fromtimestamp(origin + at * 86400, dt.UTC),
            properties=properties,
            amount=money,
            currency=None,
            category=categories[category] if category >= 0 else None,
        )


@dataclasses.dataclass
class Work:
    """What Tenure's periodic work did at one instant."""

    changed_stage: int = 0
    enrolled: int = 0
    messages: int = 0
    delivered: int = 0
    grants: int = 0
    # Where the time went, by phase (seconds).
    seconds: Counter = dataclasses.field(default_factory=Counter)

    def add(self, other: Work) -> None:
        for field in dataclasses.fields(self):
            setattr(self, field.name, getattr(self, field.name) + getattr(other, field.name))


def run_tenure(
    session: Session,
    now: dt.datetime,
    *,
    timezone: str,
    lifecycle: str | None,
    journeys: bool,
    batch: int,
    commit,
) -> Work:
    """What the worker's cron does, at ``now``: the lifecycle run (``"full"``: every
    member, ``"incremental"``, or None: not at this tick) with the points tick, and,
    once Tenure runs the programme (``journeys``), the journey tick and the delivery
    of due messages (console provider: delivered as they are claimed)."""
    work = Work()
    clock = time.perf_counter
    if lifecycle is not None:
        started = clock()
        ran = lifecycle_run.run(session, now=now, full=lifecycle == "full", timezone=timezone)
        work.changed_stage = ran.changed
        commit()
        work.seconds["lifecycle"] += clock() - started
        started = clock()
        points.tick(session, now=now, timezone=timezone)
        commit()
        work.seconds["points"] += clock() - started
    if not journeys:
        return work
    started = clock()
    ticked = journey_engine.tick(session, now=now, timezone=timezone, batch=batch, commit=commit)
    work.enrolled, work.messages, work.grants = ticked.enrolled, ticked.messages, ticked.grants
    commit()
    work.seconds["journeys"] += clock() - started
    started = clock()
    while True:
        claimed = delivery.deliver_due(session, now=now, limit=delivery.BATCH)
        commit()
        work.delivered += claimed.delivered
        if claimed.claimed < delivery.BATCH:
            break
    work.seconds["delivery"] += clock() - started
    return work


def go_live(session: Session, now: dt.datetime, timezone: str) -> None:
    """Journeys start from now: what happened before is history, not news."""
    journey_engine.catch_up(session, now=now, timezone=timezone)


# -- what Tenure did, read back


@dataclasses.dataclass(frozen=True)
class Grant:
    member: int
    kind: str
    at: dt.datetime
    expires_at: dt.datetime | None
    threshold: float
    code: str | None
    sources: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class Delivered:
    id: int
    member: int
    member_id: int
    channel: str
    at: dt.datetime
    sources: tuple[str, ...]
    points_reminder: bool
    waiting_for: str | None


@dataclasses.dataclass(frozen=True)
class Placed:
    id: int
    member: int
    experiment: str
    arm: str
    at: dt.datetime
    packages: dict[str, list[tuple[str, dict]]]


@dataclasses.dataclass(frozen=True)
class Entered:
    id: int
    member: int
    journey: str
    at: dt.datetime
    window_days: int


def grants_since(session: Session, after: int) -> list[tuple[int, Grant]]:
    g = BenefitGrant.__table__.c
    rows = session.execute(
        select(
            g.id,
            Member.external_id,
            g.kind,
            g.granted_at,
            g.expires_at,
            g.threshold,
            g.code,
            g.source,
            g.source_ref,
        )
        .join(Member, Member.id == g.member_id)
        .where(g.id > after)
        .order_by(g.id)
    )
    out = []
    for row in rows:
        member = index_of(row.external_id)
        if member is None:
            continue
        owner = (row.source_ref or "").split(":", 1)[0]
        tag = "experiment" if row.source == "experiment_variant" else "journey"
        out.append(
            (
                row.id,
                Grant(
                    member,
                    str(row.kind.value if hasattr(row.kind, "value") else row.kind),
                    row.granted_at,
                    row.expires_at,
                    float(row.threshold or 0),
                    row.code,
                    (f"{tag}:{owner}",),
                ),
            )
        )
    return out


def delivered_between(
    session: Session, since: dt.datetime, until: dt.datetime, known: dict
) -> list[Delivered]:
    m = Message.__table__.c
    at = func.coalesce(m.delivered_at, m.sent_at)
    rows = session.execute(
        select(
            m.id,
            Member.external_id,
            m.member_id,
            m.channel,
            at.label("at"),
            Enrollment.context,
            Enrollment.state,
            Enrollment.waiting_for,
            Journey.key,
            Enrollment.journey_version_id,
        )
        .join(Member, Member.id == m.member_id)
        .outerjoin(Enrollment, Enrollment.id == m.enrollment_id)
        .outerjoin(Journey, Journey.id == Enrollment.journey_id)
        .where(
            m.status.in_((MessageStatus.DELIVERED, MessageStatus.SENT)),
            m.transactional.is_(False),
            at > since,
            at <= until,
        )
        .order_by(m.id)
    )
    out = []
    for row in rows:
        member = index_of(row.external_id)
        if member is None:
            continue
        sources = [f"journey:{row.key}"] if row.key else []
        placed = (row.context or {}).get("experiment")
        if isinstance(placed, dict) and placed.get("key"):
            sources.append(f"experiment:{placed['key']}")
        trigger = definition(session, row.journey_version_id, known).get("trigger", {})
        out.append(
            Delivered(
                row.id,
                member,
                row.member_id,
                row.channel,
                row.at,
                tuple(sources),
                trigger.get("type") == "date" and trigger.get("field") == "points_expiry",
                row.waiting_for if row.state == EnrollmentState.WAITING else None,
            )
        )
    return out


def placed_since(session: Session, after: int) -> list[Placed]:
    a = Assignment.__table__.c
    rows = session.execute(
        select(a.id, Member.external_id, a.experiment_id, a.variant_id, a.assigned_at)
        .join(Member, Member.id == a.member_id)
        .where(a.id > after)
        .order_by(a.id)
    ).all()
    if not rows:
        return []
    packages: dict[int, dict[str, list]] = {}
    keys: dict[int, str] = {}
    names: dict[int, str] = {}
    for experiment in session.scalars(select(Experiment)):
        keys[experiment.id] = experiment.key
        arms = {}
        for variant in experiment.variants:
            names[variant.id] = variant.key
            arms[variant.key] = _package((variant.benefits or {}).get("benefits", []))
        if experiment.holdout_percent:
            arms["holdout"] = []
        packages[experiment.id] = arms
    out = []
    for row in rows:
        member = index_of(row.external_id)
        if member is None:
            continue
        arm = names.get(row.variant_id, "holdout") if row.variant_id else "holdout"
        out.append(
            Placed(
                row.id,
                member,
                keys[row.experiment_id],
                arm,
                row.assigned_at,
                packages[row.experiment_id],
            )
        )
    return out


def _package(benefits: list[dict]) -> list[tuple[str, dict]]:
    out = []
    for benefit in benefits:
        fields: dict[str, Any] = {}
        if benefit.get("threshold") is not None:
            fields["threshold"] = float(benefit["threshold"])
        if benefit.get("expires_days"):
            fields["expires_days"] = float(benefit["expires_days"])
        out.append((benefit["benefit"], fields))
    return out


def entered_since(session: Session, after: int, known: dict) -> list[Entered]:
    """Enrollments treated (not held out) by journeys with a goal and no experiment."""
    e = Enrollment.__table__.c
    rows = session.execute(
        select(e.id, Member.external_id, Journey.key, e.entered_at, e.journey_version_id)
        .join(Member, Member.id == e.member_id)
        .join(Journey, Journey.id == e.journey_id)
        .where(e.id > after, e.state != EnrollmentState.HELD_OUT)
        .order_by(e.id)
    )
    out = []
    for row in rows:
        member = index_of(row.external_id)
        steps = definition(session, row.journey_version_id, known)
        goal = steps.get("goal") or {}
        splits = any(
            step.get("type") == "experiment_split" for step in steps.get("steps", {}).values()
        )
        if member is None or goal.get("event") != "order" or splits:
            continue
        out.append(Entered(row.id, member, row.key, row.entered_at, int(goal["within_days"])))
    return out


def definition(session: Session, version_id: int | None, known: dict) -> dict[str, Any]:
    """A journey version's definition, read once into ``known`` (a published version
    never changes)."""
    if version_id is None:
        return {}
    if version_id not in known:
        known[version_id] = (
            session.scalar(select(JourneyVersion.definition).where(JourneyVersion.id == version_id))
            or {}
        )
    return known[version_id]


def withdraw(session: Session, member_id: int, channel: str, now: dt.datetime) -> None:
    member = session.get(Member, member_id)
    if member is None or member.erased_at is not None:
        return
    profiles.set_consent(
        session,
        member,
        [(Channel(channel), False)],
        source="sms_reply" if channel == "sms" else "app_settings",
        now=now,
        note="simulated member: too many or untimely messages",
    )


def redeem_points(session: Session, member_id: int, share: float, now, key: str) -> int:
    """The member spends ``share`` of their points on an order; how many."""
    member = session.get(Member, member_id)
    if member is None or member.points_balance <= 0:
        return 0
    spend = max(1, int(member.points_balance * share))
    points.spend(
        session,
        member,
        spend,
        reason="points used on an order",
        now=now,
        actor="simulator",
        key=key,
        source="simulator",
    )
    return spend
