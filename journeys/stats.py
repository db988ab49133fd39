"""Live counts of a journey, per step and in total, from the enrollments, the step runs
and the outbox: what the builder's diagram and the journey's report show."""

from __future__ import annotations

import dataclasses
from collections import Counter
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from journeys.models import Enrollment, EnrollmentState, Message, StepRun

INSIDE = (EnrollmentState.ACTIVE, EnrollmentState.WAITING)
LEFT = (EnrollmentState.COMPLETED, EnrollmentState.EXITED, EnrollmentState.CONVERTED)


@dataclasses.dataclass
class StepCounts:
    entered: int = 0  # members who reached the step
    waiting: int = 0  # members at the step now
    converted: int = 0  # members who reached the goal while at the step
    exited: int = 0  # members whose journey ended at the step
    messages: int = 0  # messages the step wrote
    outcomes: Counter = dataclasses.field(default_factory=Counter)  # exit taken -> members


def step_counts(session: Session, journey_id: int) -> dict[str, StepCounts]:
    counts: dict[str, StepCounts] = {}

    def at(step: str | None) -> StepCounts:
        return counts.setdefault(step or "", StepCounts())

    e, r = Enrollment, StepRun
    ours = e.journey_id == journey_id
    for step, outcome, n in session.execute(
        select(r.step, r.outcome, func.count())
        .join(e, e.id == r.enrollment_id)
        .where(ours)
        .group_by(r.step, r.outcome)
    ):
        at(step).entered += n
        at(step).outcomes[outcome] += n
    for step, state, converted, n in session.execute(
        select(e.current_step, e.state, e.converted_at.is_not(None), func.count())
        .where(ours, e.current_step.is_not(None))
        .group_by(e.current_step, e.state, e.converted_at.is_not(None))
    ):
        if state in INSIDE:
            at(step).waiting += n
            at(step).entered += n
        elif state in LEFT and state != EnrollmentState.COMPLETED:
            at(step).exited += n  # completed ones ran their exit step: counted there
        if converted:
            at(step).converted += n
    for step, n in session.execute(
        select(Message.step, func.count())
        .join(e, e.id == Message.enrollment_id)
        .where(ours)
        .group_by(Message.step)
    ):
        at(step).messages += n
    for counted in counts.values():
        if counted.outcomes.get("exit"):
            counted.exited += counted.outcomes["exit"]
    return counts


@dataclasses.dataclass(frozen=True)
class Totals:
    entered: int
    inside: int
    held_out: int
    converted: int
    completed: int
    exited: int

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def totals(session: Session, journey_id: int) -> Totals:
    e = Enrollment
    rows = dict(
        session.execute(
            select(e.state, func.count()).where(e.journey_id == journey_id).group_by(e.state)
        ).all()
    )
    converted = session.scalar(
        select(func.count()).where(e.journey_id == journey_id, e.converted_at.is_not(None))
    )
    return Totals(
        entered=sum(rows.values()),
        inside=sum(rows.get(s, 0) for s in INSIDE),
        held_out=rows.get(EnrollmentState.HELD_OUT, 0),
        converted=converted or 0,
        completed=rows.get(EnrollmentState.COMPLETED, 0),
        exited=rows.get(EnrollmentState.EXITED, 0) + rows.get(EnrollmentState.CONVERTED, 0),
    )
