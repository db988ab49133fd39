"""Experiments' life: create and edit the design while a draft, start, stop; place a
member in a variant (granting its benefit package), import the assignments of an
experiment a team ran by hand, and record exposures. Every change is audited; every
refusal names the field and changes nothing.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import secrets
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from experiments import benefits
from experiments.assignment import HOLDOUT, bucket, variant_for
from experiments.design import CHANGEABLE_WHEN_RUNNING
from experiments.models import Assignment, Experiment, ExperimentStatus, Exposure, Variant
from members import audit, bulk, fields, points
from members.errors import InvalidField, InvalidFields
from members.loyalty import BenefitGrant
from members.member import Member

MAX_IMPORT = 100_000
GRANTED = "benefit_granted"
DELIVERED = "message_delivered"
EXPOSURE_KINDS = (GRANTED, DELIVERED)


class Conflict(Exception):
    """The experiment's state forbids it (409): a key taken, a stopped experiment..."""


@dataclasses.dataclass(frozen=True)
class Placement:
    """Where a member is in an experiment, and what they were given."""

    id: int  # the assignment's
    variant: str  # a variant's key or "holdout"
    assigned_at: dt.datetime
    new: bool
    benefits: list[dict[str, Any]]
    granted: int


def create(session: Session, clean: Mapping[str, Any], *, actor: str, now: dt.datetime):
    if session.scalar(select(Experiment.id).where(Experiment.key == clean["key"])):
        raise Conflict(f"an experiment called {clean['key']} exists: choose another key")
    experiment = Experiment(
        key=clean["key"], salt=secrets.token_hex(8), created_by=actor, created_at=now
    )
    _apply(experiment, clean)
    session.add(experiment)
    session.flush()
    _audit(session, experiment, "experiment.create", actor, now, {"design": _jsonable(clean)})
    return experiment


def edit(
    session: Session,
    experiment: Experiment,
    clean: Mapping[str, Any],
    *,
    actor: str,
    now: dt.datetime,
) -> None:
    """Change what the state allows: anything while a draft; once members are being
    assigned only the name, hypothesis and guardrails (a new split needs a new
    experiment: the old assignments would not fit it)."""
    if "key" in clean and clean["key"] != experiment.key:
        raise InvalidFields({"key": "an experiment's key cannot change"})
    if experiment.status != ExperimentStatus.DRAFT:
        frozen = sorted(set(clean) - CHANGEABLE_WHEN_RUNNING - {"key"})
        changed = [field for field in frozen if _current(experiment, field) != clean[field]]
        if changed:
            raise InvalidFields(
                {
                    field: f"the experiment is {experiment.status.value}: its {field} cannot "
                    "change; stop it and create a new experiment"
                    for field in changed
                }
            )
    if "variants" in clean:
        _check_removed_variants(session, experiment, {v["key"] for v in clean["variants"]})
    _apply(experiment, clean)
    session.flush()
    _audit(session, experiment, "experiment.edit", actor, now, {"changes": _jsonable(clean)})


def _check_removed_variants(session: Session, experiment: Experiment, keys: set[str]) -> None:
    """A variant members are assigned to (imported into a draft) cannot go."""
    gone = [v for v in experiment.variants if v.key not in keys]
    for variant in gone:
        if session.scalar(
            select(Assignment.id).where(Assignment.variant_id == variant.id).limit(1)
        ):
            raise InvalidFields(
                {"variants": f"members are assigned to {variant.key}: it cannot be removed"}
            )


def start(session: Session, experiment: Experiment, *, actor: str, now: dt.datetime) -> None:
    if experiment.status == ExperimentStatus.RUNNING:
        raise Conflict(f"{experiment.key} is already running")
    if experiment.status == ExperimentStatus.STOPPED:
        raise Conflict(
            f"{experiment.key} is stopped and cannot run again: its results would mix two "
            "periods; create a new experiment"
        )
    experiment.status = ExperimentStatus.RUNNING
    experiment.started_at = min(filter(None, (experiment.started_at, now)))
    _audit(session, experiment, "experiment.start", actor, now)


def stop(session: Session, experiment: Experiment, *, actor: str, now: dt.datetime) -> None:
    if experiment.status != ExperimentStatus.RUNNING:
        raise Conflict(f"{experiment.key} is {experiment.status.value}, not running")
    experiment.status = ExperimentStatus.STOPPED
    experiment.stopped_at = now
    _audit(session, experiment, "experiment.stop", actor, now)


def place(
    session: Session,
    experiment: Experiment,
    member: Member,
    *,
    now: dt.datetime,
    grant: bool = True,
) -> Placement:
    """The member's variant, assigned on first asking while the experiment runs (its
    bucket decides, the same on any machine) and recorded forever; with ``grant`` the
    variant's benefit package is granted once, each grant an exposure."""
    return place_many(session, experiment, [member], now=now, grant=grant)[member.id]


def place_many(
    session: Session,
    experiment: Experiment,
    members: Iterable[Any],
    *,
    now: dt.datetime,
    grant: bool = True,
) -> dict[int, Placement]:
    """place() for many members in a few statements (a journey tick splits a batch at
    once); by member id. Members are rows or entities with id, external_id, stage, tier
    and region."""
    members = list({m.id: m for m in members}.values())
    recorded = _recorded(session, experiment.id, [m.id for m in members])
    missing = [m for m in members if m.id not in recorded]
    fresh: set[int] = set()
    if missing:
        if experiment.status != ExperimentStatus.RUNNING:
            raise Conflict(f"{experiment.key} is {experiment.status.value}: it assigns no one")
        rows = []
        for member in missing:
            number = bucket(experiment.salt, member.external_id)
            variant = variant_for(experiment, number)
            rows.append(
                {
                    "experiment_id": experiment.id,
                    "member_id": member.id,
                    "variant_id": None if variant is None else variant.id,
                    "bucket": number,
                    "source": "hash",
                    "assigned_at": now,
                    "stage": str(member.stage) if member.stage else None,
                    "tier": member.tier,
                    "region": member.region,
                }
            )
        # Two processes asking at once: the first insert wins, both read it back.
        table = Assignment.__table__
        insert = bulk.dialect_insert(session.get_bind().dialect.name)(table)
        for start in range(0, len(rows), 500):
            statement = insert.values(rows[start : start + 500]).on_conflict_do_nothing()
            fresh.update(session.scalars(statement.returning(table.c.member_id)))
        recorded.update(_recorded(session, experiment.id, [m.id for m in missing]))
    variants = {v.id: v for v in experiment.variants}
    packages = {}
    for member in members:
        variant = variants.get(recorded[member.id].variant_id)
        packages[member.id] = (variant, package_of(variant))
    granted: dict[int, int] = {}
    if grant and experiment.status == ExperimentStatus.RUNNING:
        granted = _grant(session, experiment, members, recorded, packages, now)
    return {
        member.id: Placement(
            id=recorded[member.id].id,
            variant=HOLDOUT if packages[member.id][0] is None else packages[member.id][0].key,
            assigned_at=recorded[member.id].assigned_at,
            new=member.id in fresh,
            benefits=packages[member.id][1],
            granted=granted.get(member.id, 0),
        )
        for member in members
    }


def package_of(variant: Variant | None) -> list[dict[str, Any]]:
    return [] if variant is None else list(variant.benefits.get("benefits", []))


def recorded_assignment(session: Session, experiment_id: int, member_id: int) -> Any:
    """The member's assignment (``id``, ``variant_id``, ``assigned_at``), or None. A
    plain row, not an entity: a journey tick asks once per member it splits, and an ORM
    query would flush the tick's pending work first."""
    return _recorded(session, experiment_id, [member_id]).get(member_id)


def _recorded(session: Session, experiment_id: int, member_ids: list[int]) -> dict[int, Any]:
    a = Assignment.__table__.c
    found = {}
    for start in range(0, len(member_ids), 1000):
        rows = session.execute(
            select(a.id, a.member_id, a.variant_id, a.assigned_at).where(
                a.experiment_id == experiment_id,
                a.member_id.in_(member_ids[start : start + 1000]),
            )
        )
        found.update({row.member_id: row for row in rows})
    return found


def _grant(session, experiment, members, recorded, packages, now) -> dict[int, int]:
    """Grant each member's package once (the keys make a second call a no-op); each new
    grant is an exposure. Every benefit is a grant (its cost, the package's record);
    points are also earned on the ledger. How many were new, by member."""
    wanted = []  # (member, benefit, row)
    for member in members:
        variant, package = packages[member.id]
        for index, benefit in enumerate(package):
            row = benefits.grant_row(
                benefit,
                member_id=member.id,
                key=f"experiment:{experiment.id}:{member.id}:{index}",
                source="experiment_variant",
                source_ref=f"{experiment.key}:{variant.key}",
                now=now,
            )
            wanted.append((member, benefit, row))
    if not wanted:
        return {}
    table = BenefitGrant.__table__
    rows = [row for _, _, row in wanted]
    fresh = set(bulk.insert_ignore(session, table, rows, "dedup_key", returning="dedup_key"))
    granted: dict[int, int] = {}
    exposures = []
    for member, benefit, row in wanted:
        if row["dedup_key"] not in fresh:
            continue
        granted[member.id] = granted.get(member.id, 0) + 1
        exposures.append(
            {
                "assignment_id": recorded[member.id].id,
                "kind": GRANTED,
                "ref": row["dedup_key"],
                "at": now,
            }
        )
        if benefit["benefit"] == "points":
            rules, _ = points.load(session)
            points.earn(
                session,
                session.get(Member, member.id),
                benefit["points"],
                reason=f"experiment {row['source_ref']}",
                now=now,
                rules=rules,
                actor="experiment",
                key=row["dedup_key"],
                source="experiment",
            )
    record_exposures(session, exposures)
    return granted


def expose(session: Session, recorded: Assignment, kind: str, ref: str, at: dt.datetime) -> bool:
    """Record that the member received their variant's treatment (once per ``ref``)."""
    row = {"assignment_id": recorded.id, "kind": kind, "ref": ref, "at": at}
    return bool(record_exposures(session, [row]))


def record_exposures(session: Session, rows: list[dict[str, Any]]) -> int:
    """Exposure rows (assignment_id, kind, ref, at), each once per (assignment, kind,
    ref); how many were new."""
    if not rows:
        return 0
    insert = bulk.dialect_insert(session.get_bind().dialect.name)(Exposure.__table__)
    return session.execute(insert.values(rows).on_conflict_do_nothing()).rowcount


def import_assignments(
    session: Session,
    experiment: Experiment,
    rows: Iterable[Mapping[str, Any]],
    *,
    actor: str,
    now: dt.datetime,
) -> int:
    """Record the assignments of an experiment run by hand: each row a member's
    external id, the variant's key (or "holdout") and when they were assigned (with
    its time zone). All rows or none: every problem is named by its row."""
    errors: dict[str, str] = {}
    variants = {v.key: v for v in experiment.variants}
    seen: dict[str, int] = {}
    wanted: list[tuple[int, str, Variant | None, dt.datetime]] = []
    for index, row in enumerate(rows):
        where = f"assignments.{index}"
        if index >= MAX_IMPORT:
            errors["assignments"] = f"at most {MAX_IMPORT:,} assignments at a time"
            break
        member = row.get("member")
        if not isinstance(member, str) or not member.strip():
            errors[f"{where}.member"] = "give the member's external id"
            continue
        member = member.strip()
        if member in seen:
            errors[f"{where}.member"] = f"{member} is also on row {seen[member]}"
            continue
        seen[member] = index
        key = row.get("variant")
        known = [*variants, HOLDOUT] if experiment.holdout_percent else list(variants)
        if not isinstance(key, str) or key not in known:
            shown = repr(key) if isinstance(key, str) else "given"
            errors[f"{where}.variant"] = f"no variant {shown}: one of {', '.join(known)}"
            continue
        at = _aware(row.get("assigned_at"))
        if isinstance(at, str):
            errors[f"{where}.assigned_at"] = at
            continue
        if at > now:
            errors[f"{where}.assigned_at"] = "is in the future"
            continue
        wanted.append((index, member, variants.get(key), at))
    if not wanted and not errors:
        errors["assignments"] = "give at least one assignment"
    ids = _member_ids(session, [member for _, member, _, _ in wanted])
    taken = _assigned(session, experiment.id, list(ids.values()))
    for index, member, _, _ in wanted:
        if member not in ids:
            errors.setdefault(f"assignments.{index}.member", f"no member {member}")
        elif ids[member] in taken:
            errors.setdefault(
                f"assignments.{index}.member", f"{member} is already in {experiment.key}"
            )
    if errors:
        raise InvalidFields(dict(list(errors.items())[:50]))
    records = [
        {
            "experiment_id": experiment.id,
            "member_id": ids[member],
            "variant_id": None if variant is None else variant.id,
            "bucket": None,
            "source": "import",
            "assigned_at": at,
        }
        for _, member, variant, at in wanted
    ]
    bulk.insert_rows(session, Assignment.__table__, records)
    earliest = min(at for _, _, _, at in wanted)
    experiment.started_at = min(filter(None, (experiment.started_at, earliest)))
    _audit(session, experiment, "experiment.import", actor, now, {"assignments": len(records)})
    return len(records)


def counts(session: Session, experiment: Experiment) -> dict[str, int]:
    """Members assigned per variant key (and "holdout")."""
    keys = {v.id: v.key for v in experiment.variants}
    found = session.execute(
        select(Assignment.variant_id, func.count())
        .where(Assignment.experiment_id == experiment.id)
        .group_by(Assignment.variant_id)
    )
    result = {key: 0 for key in [*keys.values(), HOLDOUT]}
    for variant_id, n in found:
        result[keys.get(variant_id, HOLDOUT)] = n
    return result


def _aware(value: Any) -> dt.datetime | str:
    """The timestamp in UTC, or what is wrong with it: it must say its time zone, since
    a naive one would be read in whatever zone the server happens to run."""
    if not isinstance(value, str):
        return "must be an ISO 8601 time with its zone, e.g. 2026-03-01T10:00:00+08:00"
    try:
        stamp = fields.parse_time(value.strip(), "assigned_at")
    except InvalidField as error:
        return error.message
    try:
        return stamp.astimezone(dt.UTC)
    except OverflowError:
        return "is not a time Tenure can store"


def _member_ids(session: Session, external_ids: list[str]) -> dict[str, int]:
    """The ids of the members with these external ids (erased members are gone)."""
    rows = bulk.rows_where_in(
        session, Member.__table__, "external_id", external_ids, ["external_id", "id", "erased_at"]
    )
    return {external_id: id_ for external_id, id_, erased_at in rows if erased_at is None}


def _assigned(session: Session, experiment_id: int, member_ids: list[int]) -> set[int]:
    taken: set[int] = set()
    for start in range(0, len(member_ids), 5000):
        taken.update(
            session.scalars(
                select(Assignment.member_id).where(
                    Assignment.experiment_id == experiment_id,
                    Assignment.member_id.in_(member_ids[start : start + 5000]),
                )
            )
        )
    return taken


def _apply(experiment: Experiment, clean: Mapping[str, Any]) -> None:
    simple = {
        "name": "name",
        "hypothesis": "hypothesis",
        "holdout": "holdout_percent",
        "primary_metric": "primary_metric",
        "minimum_detectable_effect": "minimum_detectable_effect",
        "design": "design",
    }
    for field, column in simple.items():
        if field in clean:
            setattr(experiment, column, clean[field])
    if "audience" in clean:
        experiment.audience = {"condition": clean["audience"]} if clean["audience"] else {}
    if "guardrail_metrics" in clean:
        experiment.guardrail_metrics = {"metrics": list(clean["guardrail_metrics"])}
    if "variants" in clean:
        # Rows keep their ids by key (a new row under an old key would collide with
        # the old one before the old one is deleted).
        rows = {v.key: v for v in experiment.variants}
        kept = []
        for v in clean["variants"]:
            row = rows.get(v["key"]) or Variant(key=v["key"])
            row.weight, row.is_control = v["weight"], v["control"]
            row.benefits = {"name": v["name"], "benefits": v["benefits"]}
            kept.append(row)
        experiment.variants = kept


def _current(experiment: Experiment, field: str) -> Any:
    """The experiment's ``field`` as :func:`design.check` would clean it."""
    return describe(experiment)[field]


def describe(experiment: Experiment) -> dict[str, Any]:
    """The design in the shape :func:`design.check` accepts (and the API shows)."""
    return {
        "key": experiment.key,
        "name": experiment.name,
        "hypothesis": experiment.hypothesis,
        "audience": experiment.audience.get("condition"),
        "holdout": Decimal(experiment.holdout_percent),
        "variants": [
            {
                "key": v.key,
                "name": v.benefits.get("name") or v.key,
                "weight": v.weight,
                "control": v.is_control,
                "benefits": list(v.benefits.get("benefits", [])),
            }
            for v in experiment.variants
        ],
        "primary_metric": experiment.primary_metric,
        "guardrail_metrics": list(experiment.guardrail_metrics.get("metrics", [])),
        "minimum_detectable_effect": experiment.minimum_detectable_effect,
        "design": dict(experiment.design),
    }


def _audit(session, experiment, action, actor, now, details=None) -> None:
    audit.record(
        session,
        actor=actor,
        action=action,
        target_type="experiment",
        target_id=experiment.key,
        details=details,
        now=now,
    )


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, Decimal):
        return str(value)
    return value
