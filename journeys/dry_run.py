"""A dry run: the path one member would take through a journey's definition today, and
the messages they would get, with nothing written and nothing sent.

Waits are described, not waited for; a wait for an event assumes the event does not
come (the member takes the timeout exit), which is the path that sends the most. A
random split takes the branch the member's own hash picks, as the engine would for an
enrollment, so the preview is stable.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from experiments import assignment, manage
from experiments.models import Experiment
from journeys import audience, conditions, control, definition, engine, graph, render
from journeys.models import Enrollment, MessageTemplate
from members.event import Event
from members.lifecycle import MemberFeatures
from members.member import Member


@dataclasses.dataclass(frozen=True)
class Stop:
    step: str
    kind: str
    name: str | None
    note: str
    outcome: str | None = None
    channel: str | None = None
    message: str | None = None
    title: str | None = None


@dataclasses.dataclass(frozen=True)
class DryRun:
    member: str
    refusal: str | None  # why the member would not enter today (None: they would)
    stops: list[Stop]


def entry_refusal(
    session: Session, journey_id: int, defn: Mapping[str, Any], member: Member, now: dt.datetime
) -> str | None:
    """Why the entry rules would keep the member out today, without recording anything."""
    entry = defn["entry"]
    if member.erased_at is not None:
        return "erased"
    if entry.get("marketing", True):
        group, _ = control.SETTING.load(session)
        recorded = session.get(control.GlobalControl, member.id) is not None
        if recorded or group.holds(assignment.bucket(group.salt, member.external_id)):
            return "global_control"
    if entry.get("audience"):
        features = session.get(MemberFeatures, member.id)
        if not conditions.holds(
            audience.read(entry["audience"]), audience.record(member, features)
        ):
            return "audience"
    e = Enrollment
    last, inside = session.execute(
        select(func.max(e.entered_at), func.count().filter(engine.inside_now())).where(
            e.journey_id == journey_id, e.member_id == member.id
        )
    ).one()
    return engine.reentry_refusal(entry, last, inside, None, now)


def run(
    session: Session,
    *,
    journey_id: int,
    journey_key: str,
    defn: Mapping[str, Any],
    member: Member,
    now: dt.datetime,
) -> DryRun:
    refusal = entry_refusal(session, journey_id, defn, member, now)
    features = session.get(MemberFeatures, member.id)
    context: dict[str, Any] = {"outcomes": {}}
    stops: list[Stop] = []
    steps = defn["steps"]
    step_id = defn["start"]
    for _ in range(graph.MAX_STEPS):
        step = steps[step_id]
        stop, outcome = _visit(session, step_id, step, member, features, context, journey_id, now)
        stops.append(stop)
        if step["type"] in graph.TERMINAL:
            break
        context["outcomes"][step_id] = outcome
        step_id = _next(step, outcome)
    return DryRun(member.external_id, refusal, stops)


def _next(step: Mapping[str, Any], outcome: str) -> str:
    if step["type"] == "split":
        return step["branches"][int(outcome)]["next"]
    if step["type"] == "experiment_split":
        return step["variants"][outcome]
    return step[outcome]


def _visit(session, step_id, step, member, features, context, journey_id, now):
    kind = step["type"]
    name = step.get("name")

    def stop(note: str, outcome: str | None = None, **extra: Any) -> tuple[Stop, str]:
        return Stop(step_id, kind, name, note, outcome, **extra), outcome or "next"

    if kind == "send":
        template = session.scalar(
            select(MessageTemplate).where(MessageTemplate.key == step["template"])
        )
        if template is None:
            return stop(f"template {step['template']!r} does not exist")
        variables = {
            "member": engine.member_variables(session, member, features, now),
            "context": context,
            "benefit": context.get("benefit") or {},
            "coupon": context.get("coupon") or {},
        }
        try:
            body = render.render(template.body, variables)
            title = render.render(template.title, variables) if template.title else None
        except render.RenderError as error:
            return stop(f"the template fails: {error}")
        return stop(
            f"{step['channel'].upper()} {template.key}",
            channel=step["channel"],
            message=body,
            title=title,
        )
    if kind == "grant":
        granted = {
            "kind": step["benefit"],
            "value": step.get("value") or step.get("multiplier") or step.get("points"),
            "threshold": step.get("threshold"),
            "code": "PREVIEW",
            "service": step.get("service"),
        }
        context["benefit"] = granted
        if step["benefit"] == "coupon":
            context["coupon"] = granted
        return stop(_benefit_text(step))
    if kind == "wait":
        return stop(f"waits {_span(step, '')}")
    if kind == "wait_until":
        target = step.get("field")
        at = f"{step['time']} in the member's time zone ({member.timezone})"
        return stop(f"waits until {at}" + (f" on their {target}" if target else ""))
    if kind == "wait_for_event":
        condition = f" where {step['filter']}" if step.get("filter") else ""
        return stop(
            f"waits up to {_span(step, 'within_')} for {step['event']}{condition}; "
            f"the preview assumes it does not come",
            "timeout",
        )
    if kind == "branch":
        record = audience.record(member, features)
        for done, outcome in context["outcomes"].items():
            record[f"outcome.{done}"] = outcome
        window = step.get("window")
        if window:
            record["events_in_window"] = session.scalar(
                select(func.count()).where(
                    Event.member_id == member.id,
                    Event.type == window["event"],
                    Event.occurred_at > now - dt.timedelta(days=window["days"]),
                )
            )
        fields = audience.Fields({"events_in_window": "number", **definition._outcome_fields(step)})
        holds = conditions.holds(audience.read(step["condition"], fields), record)
        return stop(f"{step['condition']}: {'yes' if holds else 'no'}", "yes" if holds else "no")
    if kind == "split":
        chosen = engine.split_branch(journey_id, step_id, member.id, step)
        percent = step["branches"][int(chosen)]["percent"]
        return stop(f"random split: branch {int(chosen) + 1} ({percent}%)", chosen)
    if kind == "experiment_split":
        return stop(*_variant(session, step, member, features))
    if kind == "update_attribute":
        return stop(f"sets attribute {step['attribute']} to {step['value']!r}")
    if kind == "webhook":
        return stop(f"calls {step['url']}")
    if kind == "handoff":
        return stop(f"hands off to journey {step['journey']}", "handoff")
    return stop("leaves the journey", "exit")


def _variant(
    session: Session, step: Mapping[str, Any], member: Member, features
) -> tuple[str, str]:
    experiment = session.scalar(select(Experiment).where(Experiment.key == step["experiment"]))
    if experiment is None or experiment.status != "running":
        fallback = engine.experiment_fallback(step, experiment)
        return f"experiment {step['experiment']} is not running: {fallback}", fallback
    recorded = manage.recorded_assignment(session, experiment.id, member.id)
    condition = experiment.audience.get("condition")
    record = audience.record(member, features)
    if recorded is None and condition and not conditions.holds(audience.read(condition), record):
        fallback = engine.experiment_fallback(step, experiment)
        return f"not in experiment {experiment.key}'s audience: {fallback}", fallback
    if recorded is not None:
        variant = next((v for v in experiment.variants if v.id == recorded.variant_id), None)
    else:
        variant = assignment.variant_for(
            experiment, assignment.bucket(experiment.salt, member.external_id)
        )
    key = variant.key if variant is not None else assignment.HOLDOUT
    if key not in step["variants"]:
        key = engine.experiment_fallback(step, experiment)
    return f"experiment {experiment.key}: variant {key}", key


def _span(step: Mapping[str, Any], prefix: str) -> str:
    parts = [
        f"{step.get(prefix + unit)} {unit}"
        for unit in ("days", "hours", "minutes")
        if step.get(prefix + unit)
    ]
    return ", ".join(parts) or "0 minutes"


def _benefit_text(step: Mapping[str, Any]) -> str:
    kind = step["benefit"]
    if kind == "coupon":
        threshold = f"spend {step['threshold']} get " if step.get("threshold") else ""
        return f"coupon: {threshold}{step['value']} off, valid {step['expires_days']} days"
    if kind == "points":
        return f"{step['points']} points"
    if kind == "multiplier":
        return f"{step['multiplier']}x points for {step['expires_days']} days"
    if kind == "free_shipping":
        return f"free shipping for {step['expires_days']} days"
    return f"service: {step['service']}"
