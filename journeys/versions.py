"""Journeys and their versions: create, edit a draft, submit, approve, publish, pause,
resume, archive, and move waiting members from one version to another.

A published version never changes: an edit after publication makes a new draft, and
members keep the version they entered with unless a marketer migrates them with a
mapping of steps. Every change goes into the audit log. Functions work in the
caller's transaction and take ``now``; the caller commits.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from collections.abc import Mapping
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from experiments.models import Experiment, Variant
from journeys import audience, definition
from journeys.models import (
    Enrollment,
    EnrollmentState,
    Journey,
    JourneyStatus,
    JourneyVersion,
    MessageTemplate,
    VersionStatus,
)
from members import audit, tiers
from members.errors import InvalidFields, NotFound

KEY = re.compile(r"[a-z][a-z0-9_-]{0,63}")
INSIDE = (EnrollmentState.ACTIVE, EnrollmentState.WAITING)
WAITS = ("wait", "wait_until", "wait_for_event")


class Conflict(RuntimeError):
    """The change does not fit the journey's state (HTTP 409)."""


class NeedsApproval(Conflict):
    """A marketer tried to publish a journey that an admin must approve."""


def known(session: Session, *, but: str | None = None) -> definition.Known:
    """What a definition may refer to, read from the database."""
    templates = dict(session.execute(select(MessageTemplate.key, MessageTemplate.channel)).all())
    experiments: dict[str, list[str]] = {}
    for experiment, variant, holdout in session.execute(
        select(Experiment.key, Variant.key, Experiment.holdout_percent).join(
            Variant, Variant.experiment_id == Experiment.id
        )
    ):
        keys = experiments.setdefault(experiment, ["holdout"] if holdout else [])
        keys.append(variant)
    journeys = frozenset(
        session.scalars(
            select(Journey.key).where(Journey.key != (but or ""), Journey.status != "archived")
        )
    )
    ladder, _ = tiers.SETTING.load(session)
    return definition.Known(
        templates=templates,
        experiments={key: tuple(values) for key, values in experiments.items()},
        journeys=journeys,
        tiers=tuple(level.key for level in ladder.levels),
    )


def get(session: Session, key: str) -> Journey:
    journey = session.scalar(select(Journey).where(Journey.key == key))
    if journey is None:
        raise NotFound("journey", key)
    return journey


def latest(journey: Journey) -> JourneyVersion:
    return journey.versions[-1]


def version(journey: Journey, number: int) -> JourneyVersion:
    for candidate in journey.versions:
        if candidate.version == number:
            return candidate
    raise NotFound("version", f"{journey.key} v{number}")


def live(journey: Journey) -> JourneyVersion | None:
    return next((v for v in journey.versions if v.id == journey.live_version_id), None)


def _checked(session: Session, data: Any, key: str) -> dict[str, Any]:
    clean, errors = definition.check(data, known(session, but=key), key=key)
    if errors:
        raise InvalidFields(_under_definition(errors))
    return clean


def create(
    session: Session,
    *,
    key: str,
    name: str,
    definition_data: Any,
    actor: str,
    now: dt.datetime,
    description: str | None = None,
    needs_approval: bool = False,
    template: str | None = None,
) -> Journey:
    """A new journey with its definition as draft version 1."""
    errors = {}
    if not isinstance(key, str) or not KEY.fullmatch(key):
        errors["key"] = "lower-case letters, digits, - and _, starting with a letter"
    elif session.scalar(select(Journey.id).where(Journey.key == key)) is not None:
        errors["key"] = f"a journey {key!r} exists already"
    if not isinstance(name, str) or not name.strip() or len(name) > 200:
        errors["name"] = "give a name of at most 200 characters"
    if errors:
        raise InvalidFields(errors)
    clean = _checked(session, definition_data, key)
    journey = Journey(
        key=key,
        name=name.strip(),
        description=description,
        needs_approval=needs_approval,
        template=template,
        created_by=actor,
        created_at=now,
        updated_at=now,
    )
    journey.versions.append(
        JourneyVersion(
            version=1, definition=clean, created_by=actor, created_at=now, updated_at=now
        )
    )
    session.add(journey)
    session.flush()
    _audit(session, journey, "journey.created", actor, now, version=1)
    return journey


def save_draft(
    session: Session,
    journey: Journey,
    definition_data: Any,
    *,
    actor: str,
    now: dt.datetime,
    name: str | None = None,
    expected_version: int | None = None,
) -> JourneyVersion:
    """Store an edit: into the open draft, or a new draft after the latest version."""
    _not_archived(journey)
    clean = _checked(session, definition_data, journey.key)
    current = latest(journey)
    if expected_version is not None and expected_version != current.version:
        raise Conflict(
            f"version {expected_version} is not the latest ({current.version}): reload and retry"
        )
    if name is not None:
        if not name.strip() or len(name) > 200:
            raise InvalidFields({"name": "give a name of at most 200 characters"})
        journey.name = name.strip()
    if current.status in (VersionStatus.DRAFT, VersionStatus.PENDING_APPROVAL):
        draft = current
        draft.definition = clean
        draft.status = VersionStatus.DRAFT  # an edit withdraws a submission
        draft.submitted_at = draft.submitted_by = None
        draft.updated_at = now
    else:
        draft = JourneyVersion(
            version=current.version + 1,
            definition=clean,
            created_by=actor,
            created_at=now,
            updated_at=now,
        )
        journey.versions.append(draft)
    journey.updated_at = now
    session.flush()
    _audit(session, journey, "journey.draft_saved", actor, now, version=draft.version)
    return draft


def editable(journey: Journey, number: int) -> JourneyVersion:
    """The version, if it may still be edited; Conflict for a published one."""
    found = version(journey, number)
    if found.status in (VersionStatus.PUBLISHED, VersionStatus.SUPERSEDED):
        raise Conflict(f"version {number} is {found.status.value}: edits make a new draft")
    return found


def publish_errors(session: Session, journey: Journey, draft: JourneyVersion) -> dict[str, str]:
    """What stops a draft from going live, beyond the checks made at every save."""
    clean, errors = definition.check(draft.definition, known(session, but=journey.key))
    problems = _under_definition(errors)
    text = clean.get("entry", {}).get("audience")
    if text and not problems and audience.count(session, audience.read(text)) == 0:
        problems["definition.entry.audience"] = "matches no member today"
    return problems


def submit(session: Session, journey: Journey, *, actor: str, now: dt.datetime) -> JourneyVersion:
    """Ask an admin to approve the open draft."""
    _not_archived(journey)
    draft = _open_draft(journey)
    problems = publish_errors(session, journey, draft)
    if problems:
        raise InvalidFields(problems)
    draft.status = VersionStatus.PENDING_APPROVAL
    draft.submitted_by, draft.submitted_at = actor, now
    session.flush()
    _audit(session, journey, "journey.submitted", actor, now, version=draft.version)
    return draft


def publish(
    session: Session,
    journey: Journey,
    *,
    actor: str,
    now: dt.datetime,
    approver: bool,
) -> JourneyVersion:
    """Make the open draft (or the version awaiting approval) the live version.

    ``approver``: the actor may approve (an admin). A journey that needs approval
    is published only by an approver: a version a marketer submitted (the approval),
    or the approver's own draft, which needs no second pair of eyes by this rule."""
    _not_archived(journey)
    draft = _open_draft(journey)
    if journey.needs_approval and not approver:
        raise NeedsApproval("this journey needs an admin's approval: submit it for approval")
    problems = publish_errors(session, journey, draft)
    if problems:
        raise InvalidFields(problems)
    previous = live(journey)
    if previous is not None:
        previous.status = VersionStatus.SUPERSEDED
    pending = draft.status == VersionStatus.PENDING_APPROVAL
    action = "journey.approved" if pending and approver else None
    draft.status = VersionStatus.PUBLISHED
    draft.published_by, draft.published_at = actor, now
    journey.live_version_id = draft.id
    if journey.status == JourneyStatus.DRAFT:
        journey.status = JourneyStatus.ACTIVE
    journey.updated_at = now
    session.flush()
    if action:
        _audit(session, journey, action, actor, now, version=draft.version)
    _audit(session, journey, "journey.published", actor, now, version=draft.version)
    return draft


def reject(
    session: Session, journey: Journey, *, actor: str, now: dt.datetime, reason: str
) -> JourneyVersion:
    """Send a submitted version back to draft, with the admin's reason."""
    draft = latest(journey)
    if draft.status != VersionStatus.PENDING_APPROVAL:
        raise Conflict("no version is waiting for approval")
    draft.status = VersionStatus.DRAFT
    draft.submitted_at = draft.submitted_by = None
    session.flush()
    _audit(session, journey, "journey.rejected", actor, now, version=draft.version, reason=reason)
    return draft


def set_status(
    session: Session, journey: Journey, status: JourneyStatus, *, actor: str, now: dt.datetime
) -> Journey:
    """Pause, resume (ACTIVE) or archive a journey."""
    allowed = {
        JourneyStatus.PAUSED: (JourneyStatus.ACTIVE,),
        JourneyStatus.ACTIVE: (JourneyStatus.PAUSED,),
        JourneyStatus.ARCHIVED: (JourneyStatus.DRAFT, JourneyStatus.ACTIVE, JourneyStatus.PAUSED),
    }.get(status, ())
    if journey.status not in allowed:
        raise Conflict(f"a {journey.status.value} journey cannot become {status.value}")
    before = journey.status
    journey.status = status
    journey.updated_at = now
    if status == JourneyStatus.ARCHIVED:
        # Archiving ends the journey for everyone still inside it.
        session.execute(
            update(Enrollment)
            .where(Enrollment.journey_id == journey.id, Enrollment.state.in_(INSIDE))
            .values(
                state=EnrollmentState.EXITED,
                exited_at=now,
                exit_reason="archived",
                next_run_at=None,
            )
        )
    session.flush()
    _audit(session, journey, f"journey.{status.value}", actor, now, before=before.value)
    return journey


@dataclasses.dataclass(frozen=True)
class Move:
    from_version: int
    from_step: str
    to_step: str
    members: int


def migration_preview(
    session: Session, journey: Journey, from_number: int, mapping: Mapping[str, str]
) -> list[Move]:
    """How many members waiting at each mapped step of ``from_number`` would continue
    at the mapped step of the live version."""
    source, _target = _migration_ends(journey, from_number, mapping)
    counts = dict(
        session.execute(
            select(Enrollment.current_step, func.count())
            .where(
                Enrollment.journey_version_id == source.id,
                Enrollment.state.in_(INSIDE),
                Enrollment.current_step.in_(list(mapping)),
            )
            .group_by(Enrollment.current_step)
        ).all()
    )
    return [Move(from_number, step, to, counts.get(step, 0)) for step, to in mapping.items()]


def migrate(
    session: Session,
    journey: Journey,
    from_number: int,
    mapping: Mapping[str, str],
    *,
    actor: str,
    now: dt.datetime,
) -> list[Move]:
    """Move the members waiting at each mapped step onto the live version."""
    source, target = _migration_ends(journey, from_number, mapping)
    moves = migration_preview(session, journey, from_number, mapping)
    for step, to in mapping.items():
        moved = {"journey_version_id": target.id, "current_step": to}
        before = source.definition["steps"][step]
        after = target.definition["steps"][to]
        if before["type"] != after["type"] or before["type"] not in WAITS:
            # A different step: the member starts it now. The same kind of wait goes
            # on from when it began (a member 6 days into 7 does not wait 7 more).
            moved.update(
                state=EnrollmentState.ACTIVE, step_at=now, waiting_for=None, next_run_at=now
            )
        elif before["type"] == "wait_for_event":
            moved["waiting_for"] = after["event"]
        session.execute(
            update(Enrollment)
            .where(
                Enrollment.journey_version_id == source.id,
                Enrollment.state.in_(INSIDE),
                Enrollment.current_step == step,
            )
            .values(**moved)
        )
    session.flush()
    _audit(
        session,
        journey,
        "journey.members_migrated",
        actor,
        now,
        from_version=from_number,
        to_version=target.version,
        moves=[dataclasses.asdict(move) for move in moves],
    )
    return moves


def _migration_ends(
    journey: Journey, from_number: int, mapping: Mapping[str, str]
) -> tuple[JourneyVersion, JourneyVersion]:
    target = live(journey)
    if target is None:
        raise Conflict("publish a version before moving members onto it")
    source = version(journey, from_number)
    if source.id == target.id:
        raise Conflict(f"version {from_number} is the live version already")
    if source.status not in (VersionStatus.SUPERSEDED, VersionStatus.PUBLISHED):
        raise Conflict(f"version {from_number} was never published: nobody is on it")
    errors = {}
    if not mapping:
        errors["mapping"] = "map at least one step"
    for step, to in mapping.items():
        if step not in source.definition.get("steps", {}):
            errors[f"mapping.{step}"] = f"version {from_number} has no step {step!r}"
        elif to not in target.definition.get("steps", {}):
            errors[f"mapping.{step}"] = f"version {target.version} has no step {to!r}"
    if errors:
        raise InvalidFields(errors)
    return source, target


def _under_definition(errors: Mapping[str, str]) -> dict[str, str]:
    return {
        where if where == "definition" else f"definition.{where}": message
        for where, message in errors.items()
    }


def _open_draft(journey: Journey) -> JourneyVersion:
    draft = latest(journey)
    if draft.status not in (VersionStatus.DRAFT, VersionStatus.PENDING_APPROVAL):
        raise Conflict(f"version {draft.version} is live already: edit to make a new draft")
    return draft


def _not_archived(journey: Journey) -> None:
    if journey.status == JourneyStatus.ARCHIVED:
        raise Conflict("the journey is archived")


def _audit(
    session: Session, journey: Journey, action: str, actor: str, now: dt.datetime, **details: Any
) -> None:
    audit.record(
        session,
        actor=actor,
        action=action,
        target_type="journey",
        target_id=journey.key,
        details=details,
        now=now,
    )
