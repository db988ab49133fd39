"""A journey's report: the funnel per step, conversion against the journey's holdout
with a confidence interval, messages by status, benefits granted and redeemed, and
what the redeemed benefits cost. Aggregates in SQL; statistics from experiments."""

from __future__ import annotations

import dataclasses
from decimal import Decimal
from typing import Any

from sqlalchemy import and_, func, select
from sqlalchemy.orm import Session

from experiments.stats import Proportions, compare_proportions
from journeys import diagram, stats
from journeys.models import Enrollment, EnrollmentState, Journey, Message
from members.loyalty import BenefitGrant, BenefitKind, PointsEntry


@dataclasses.dataclass(frozen=True)
class FunnelStep:
    step: str
    kind: str
    name: str | None
    entered: int
    share: float  # of the journey's (treated) entrants
    waiting: int
    messages: int


@dataclasses.dataclass(frozen=True)
class BenefitLine:
    kind: str
    granted: int
    redeemed: int
    redeemed_value: Decimal  # face value of redeemed coupons (yuan); 0 for other kinds
    points: int = 0  # points granted (the points line only)


@dataclasses.dataclass(frozen=True)
class Report:
    totals: stats.Totals
    goal: dict[str, Any] | None
    conversion: Proportions | None
    funnel: list[FunnelStep]
    messages: dict[str, int]
    benefits: list[BenefitLine]
    cost: Decimal


def build(session: Session, journey: Journey, defn: dict[str, Any]) -> Report:
    totals = stats.totals(session, journey.id)
    counts = stats.step_counts(session, journey.id)
    treated_n = totals.entered - totals.held_out
    order = [node.step for node in diagram.layout(defn).nodes]
    order += [step for step in counts if step and step not in order]  # steps of older versions
    funnel = []
    for step in order:
        count = counts.get(step, stats.StepCounts())
        spec = defn["steps"].get(step, {})
        funnel.append(
            FunnelStep(
                step=step,
                kind=spec.get("type", "(older version)"),
                name=spec.get("name"),
                entered=count.entered,
                share=count.entered / treated_n if treated_n else 0.0,
                waiting=count.waiting,
                messages=count.messages,
            )
        )
    e = Enrollment
    held = e.state == EnrollmentState.HELD_OUT
    converted = e.converted_at.is_not(None)
    ours = e.journey_id == journey.id
    groups = dict(
        session.execute(
            select(held, func.count().filter(converted)).where(ours).group_by(held)
        ).all()
    )
    conversion = None
    if defn.get("goal"):
        conversion = compare_proportions(
            groups.get(False, 0), treated_n, groups.get(True, 0), totals.held_out
        )
    messages = dict(
        session.execute(
            select(Message.status, func.count())
            .join(e, e.id == Message.enrollment_id)
            .where(ours)
            .group_by(Message.status)
        ).all()
    )
    benefits, cost = _benefits(session, journey)
    return Report(
        totals=totals,
        goal=defn.get("goal"),
        conversion=conversion,
        funnel=funnel,
        messages={status.value: n for status, n in messages.items()},
        benefits=benefits,
        cost=cost,
    )


def _benefits(session: Session, journey: Journey) -> tuple[list[BenefitLine], Decimal]:
    g = BenefitGrant
    ours = and_(
        g.source == "journey_step", g.source_ref.startswith(f"{journey.key}:", autoescape=True)
    )
    redeemed = g.redeemed_at.is_not(None)
    lines, cost = [], Decimal(0)
    for kind, granted, used, value in session.execute(
        select(
            g.kind,
            func.count(),
            func.count().filter(redeemed),
            func.coalesce(func.sum(g.value).filter(redeemed), 0),
        )
        .where(ours)
        .group_by(g.kind)
    ):
        value = Decimal(value) if kind == BenefitKind.COUPON else Decimal(0)
        lines.append(BenefitLine(kind.value, granted, used, value))
        cost += value
    p = PointsEntry
    granted, total = session.execute(
        select(func.count(), func.coalesce(func.sum(p.points), 0)).where(
            p.source == "journey", p.reason.startswith(f"journey {journey.key}:", autoescape=True)
        )
    ).one()
    if granted:
        lines.append(BenefitLine("points", granted, 0, Decimal(0), points=int(total)))
    return lines, cost
