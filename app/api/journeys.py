"""Journeys through the API, so that engineers can keep them in code: create, read,
edit the draft, publish (or submit for approval), pause, resume, archive, move waiting
members onto a new version, and enroll a member by hand."""

from __future__ import annotations

from typing import Any

from flask import g
from flask.views import MethodView
from flask_smorest import abort
from marshmallow import RAISE, Schema, fields, validate
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from app import clock
from app.api.auth import BEARER_DOC, api_actor, require_scope
from app.api.blueprint import Blueprint, page_of, refuse
from app.api.members import member_or_404
from app.auth.models import Scope
from app.extensions import db
from journeys import audience, engine, report, versions
from journeys.models import Journey, JourneyStatus, JourneyVersion
from members.errors import InvalidFields, NotFound

blp = Blueprint(
    "journeys",
    __name__,
    url_prefix="/api/v1/journeys",
    description="Journeys: definitions, versions, publication, and enrolling members",
)

DEFINITION_EXAMPLE: dict[str, Any] = {
    "trigger": {"type": "stage_entered", "stage": "dormant"},
    "entry": {
        "audience": "days_since_last_order >= 30",
        "reentry": "after_days",
        "reentry_days": 90,
        "holdout_percent": 10,
        "daily_cap": 5000,
        "exit": "on_conversion",
    },
    "goal": {"event": "order", "within_days": 14},
    "start": "coupon",
    "steps": {
        "coupon": {
            "type": "grant",
            "benefit": "coupon",
            "value": 50,
            "threshold": 200,
            "expires_days": 3,
            "next": "tell",
        },
        "tell": {"type": "send", "channel": "sms", "template": "winback_50", "next": "watch"},
        "watch": {
            "type": "wait_for_event",
            "event": "order",
            "within_days": 3,
            "matched": "done",
            "timeout": "done",
        },
        "done": {"type": "exit"},
    },
}
DEFINITION_HELP = (
    "The journey as JSON. `trigger`: what enrolls a member (type stage_entered, "
    "tier_changed, event, schedule, date or api, with its fields). `entry`: audience "
    "(a condition such as `stage = 'at_risk' and spend_365d >= 500`), reentry (never, "
    "after_days with reentry_days, always), holdout_percent (0-50), daily_cap, marketing "
    "(false for service journeys that the global control group does not block), exit "
    "(never, on_conversion, when_unmatched, either). `goal`: event, filter, within_days. "
    "`start`: the first step's id. `steps`: step id -> step, each with a `type` (send, "
    "wait, wait_until, wait_for_event, branch, split, experiment_split, grant, "
    "update_attribute, webhook, handoff, exit), its fields and its exits (`next`; "
    "`matched`/`timeout`; `yes`/`no`; `branches[].next`; `variants`). Errors name the "
    "field, e.g. `definition.steps.tell.template`."
)


class DefinitionField(fields.Dict):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(
            keys=fields.Str(),
            metadata={"description": DEFINITION_HELP, "example": DEFINITION_EXAMPLE},
            **kwargs,
        )


class JourneyIn(Schema):
    class Meta:
        unknown = RAISE

    key = fields.Str(
        required=True,
        validate=validate.Length(min=1, max=64),
        metadata={"description": "Lower-case letters, digits, - and _", "example": "winback"},
    )
    name = fields.Str(required=True, metadata={"example": "Dormant win-back"})
    description = fields.Str(load_default=None, allow_none=True)
    needs_approval = fields.Bool(
        load_default=False,
        metadata={"description": "Versions go live only when an admin approves them"},
    )
    definition = DefinitionField(required=True)


class DraftIn(Schema):
    class Meta:
        unknown = RAISE

    name = fields.Str(load_default=None)
    definition = DefinitionField(required=True)
    version = fields.Int(
        load_default=None,
        strict=True,
        metadata={"description": "The latest version you read: 409 if another was made since"},
    )


class VersionOut(Schema):
    version = fields.Int()
    status = fields.Str(metadata={"example": "published"})
    definition = fields.Dict(metadata={"example": DEFINITION_EXAMPLE})
    created_by = fields.Str(allow_none=True)
    created_at = fields.DateTime()
    updated_at = fields.DateTime()
    submitted_by = fields.Str(allow_none=True)
    submitted_at = fields.DateTime(allow_none=True)
    published_by = fields.Str(allow_none=True)
    published_at = fields.DateTime(allow_none=True)


class VersionBrief(Schema):
    version = fields.Int()
    status = fields.Str()
    published_at = fields.DateTime(allow_none=True)


class JourneyOut(Schema):
    key = fields.Str()
    name = fields.Str()
    description = fields.Str(allow_none=True)
    status = fields.Str(metadata={"example": "active"})
    needs_approval = fields.Bool()
    live_version = fields.Int(allow_none=True)
    latest = fields.Nested(VersionOut)
    versions = fields.List(fields.Nested(VersionBrief))
    created_at = fields.DateTime()
    updated_at = fields.DateTime()


class ListArgs(Schema):
    status = fields.Str(validate=validate.OneOf([s.value for s in JourneyStatus]))


class CheckOut(Schema):
    errors = fields.Dict(
        keys=fields.Str(),
        values=fields.Str(),
        metadata={"description": "What stops the latest version from going live"},
    )
    audience_estimate = fields.Int(metadata={"description": "Members who match the audience today"})


class RejectIn(Schema):
    class Meta:
        unknown = RAISE

    reason = fields.Str(required=True, validate=validate.Length(min=1, max=500))


class MigrationIn(Schema):
    class Meta:
        unknown = RAISE

    from_version = fields.Int(required=True, strict=True, metadata={"example": 1})
    mapping = fields.Dict(
        keys=fields.Str(),
        values=fields.Str(),
        required=True,
        metadata={
            "description": "Step of the old version -> step of the live version",
            "example": {"watch": "watch"},
        },
    )


class MoveOut(Schema):
    from_version = fields.Int()
    from_step = fields.Str()
    to_step = fields.Str()
    members = fields.Int()


class MigrationOut(Schema):
    to_version = fields.Int()
    moves = fields.List(fields.Nested(MoveOut))


class EnrollIn(Schema):
    class Meta:
        unknown = RAISE

    member = fields.Str(
        required=True,
        validate=validate.Length(min=1, max=128),
        metadata={"description": "The member's external id", "example": "u-10086"},
    )
    context = fields.Dict(
        keys=fields.Str(),
        load_default=dict,
        metadata={
            "description": "Data for the journey's messages and conditions",
            "example": {"order_id": "A1001", "store": "上海徐汇店"},
        },
    )
    entry_key = fields.Str(
        load_default=None,
        allow_none=True,
        validate=validate.Length(min=1, max=128),
        metadata={"description": "Enroll once per key (e.g. an order id)", "example": "A1001"},
    )


class EnrollOut(Schema):
    enrolled = fields.Bool()
    held_out = fields.Bool(metadata={"description": "In the journey's holdout: not messaged"})
    enrollment_id = fields.Int(allow_none=True)
    version = fields.Int(allow_none=True)
    reason = fields.Str(
        allow_none=True,
        metadata={
            "description": "Why not: audience, reentry, already_in, duplicate_entry_key, "
            "global_control, daily_cap, erased"
        },
    )


def _journey_or_404(key: str) -> Journey:
    try:
        return versions.get(db.session, key)
    except NotFound:
        abort(404, message=f"no journey {key!r}")


def _out(journey: Journey) -> dict[str, Any]:
    live = versions.live(journey)
    return {
        "key": journey.key,
        "name": journey.name,
        "description": journey.description,
        "status": journey.status.value,
        "needs_approval": journey.needs_approval,
        "live_version": None if live is None else live.version,
        "latest": versions.latest(journey),
        "versions": journey.versions,
        "created_at": journey.created_at,
        "updated_at": journey.updated_at,
    }


def _invalid(exc: InvalidFields) -> None:
    db.session.rollback()
    refuse(exc.errors)


def _commit_or_abort(change) -> Any:
    """Run a change and commit it, turning the engine's refusals into 4xx answers."""
    try:
        result = change()
        db.session.commit()
        return result
    except InvalidFields as exc:
        _invalid(exc)
    except versions.NeedsApproval as exc:
        db.session.rollback()
        abort(403, message=str(exc))
    except versions.Conflict as exc:
        db.session.rollback()
        abort(409, message=str(exc))
    except NotFound as exc:
        db.session.rollback()
        abort(404, message=str(exc))
    except IntegrityError:
        db.session.rollback()
        abort(409, message="it was changed at the same time: read it again")


@blp.route("")
class Journeys(MethodView):
    @require_scope(Scope.READ, Scope.WRITE)
    @blp.doc(**BEARER_DOC)
    @blp.arguments(ListArgs, location="query")
    @blp.response(200, JourneyOut(many=True))
    @blp.paginate()
    def get(self, args, pagination_parameters):
        """Journeys, newest first (archived ones only when asked with status=archived)."""
        query = select(Journey).order_by(Journey.id.desc())
        if args.get("status"):
            query = query.where(Journey.status == args["status"])
        else:
            query = query.where(Journey.status != JourneyStatus.ARCHIVED)
        return [_out(journey) for journey in page_of(db.session, query, pagination_parameters)]

    @require_scope(Scope.WRITE)
    @blp.doc(**BEARER_DOC)
    @blp.arguments(
        JourneyIn,
        example={"key": "winback", "name": "Dormant win-back", "definition": DEFINITION_EXAMPLE},
    )
    @blp.response(201, JourneyOut)
    def post(self, body):
        """Create a journey; its definition becomes draft version 1. The definition is
        checked whole: every step reachable, every path ending in an exit, no loop
        without a wait, templates, experiments and fields that exist."""
        journey = _commit_or_abort(
            lambda: versions.create(
                db.session,
                key=body["key"],
                name=body["name"],
                description=body["description"],
                needs_approval=body["needs_approval"],
                definition_data=body["definition"],
                actor=api_actor(),
                now=clock.now(),
            )
        )
        return _out(journey)


@blp.route("/<key>")
class JourneyByKey(MethodView):
    @require_scope(Scope.READ, Scope.WRITE)
    @blp.doc(**BEARER_DOC)
    @blp.response(200, JourneyOut)
    def get(self, key: str):
        """A journey, its versions and its latest definition."""
        return _out(_journey_or_404(key))


@blp.route("/<key>/draft")
class Draft(MethodView):
    @require_scope(Scope.WRITE)
    @blp.doc(**BEARER_DOC)
    @blp.arguments(DraftIn, example={"definition": DEFINITION_EXAMPLE, "version": 1})
    @blp.response(200, VersionOut)
    @blp.alt_response(409, response="CONFLICT")
    def put(self, body, key: str):
        """Save the draft: into the open draft, or as a new version after a published
        one (published versions never change)."""
        journey = _journey_or_404(key)
        return _commit_or_abort(
            lambda: versions.save_draft(
                db.session,
                journey,
                body["definition"],
                actor=api_actor(),
                now=clock.now(),
                name=body["name"],
                expected_version=body["version"],
            )
        )


@blp.route("/<key>/versions/<int(min=1, max=2147483647):number>")
class VersionView(MethodView):
    @require_scope(Scope.READ, Scope.WRITE)
    @blp.doc(**BEARER_DOC)
    @blp.response(200, VersionOut)
    def get(self, key: str, number: int):
        """One version of a journey."""
        journey = _journey_or_404(key)
        try:
            return versions.version(journey, number)
        except NotFound:
            abort(404, message=f"{key} has no version {number}")

    @require_scope(Scope.WRITE)
    @blp.doc(**BEARER_DOC)
    @blp.arguments(DraftIn, example={"definition": DEFINITION_EXAMPLE})
    @blp.response(200, VersionOut)
    @blp.alt_response(409, response="CONFLICT")
    def put(self, body, key: str, number: int):
        """Edit a version that is still a draft; a published version answers 409."""
        journey = _journey_or_404(key)

        def edit() -> JourneyVersion:
            versions.editable(journey, number)
            return versions.save_draft(
                db.session,
                journey,
                body["definition"],
                actor=api_actor(),
                now=clock.now(),
                name=body["name"],
                expected_version=number,
            )

        return _commit_or_abort(edit)


@blp.route("/<key>/check")
class Check(MethodView):
    @require_scope(Scope.READ, Scope.WRITE)
    @blp.doc(**BEARER_DOC)
    @blp.response(200, CheckOut)
    def get(self, key: str):
        """What stops the latest version from going live, and how many members its
        audience matches today. Nothing is saved."""
        journey = _journey_or_404(key)
        latest = versions.latest(journey)
        text = latest.definition.get("entry", {}).get("audience")
        return {
            "errors": versions.publish_errors(db.session, journey, latest),
            "audience_estimate": audience.count(db.session, audience.read(text) if text else None),
        }


def _action(key: str, change) -> dict[str, Any]:
    journey = _journey_or_404(key)
    _commit_or_abort(lambda: change(journey))
    return _out(journey)


def _is_admin() -> bool:
    return Scope.ADMIN in g.api_key.scope_set


@blp.route("/<key>/publish")
class Publish(MethodView):
    @require_scope(Scope.WRITE)
    @blp.doc(**BEARER_DOC)
    @blp.response(200, JourneyOut)
    @blp.alt_response(403, response="FORBIDDEN")
    @blp.alt_response(409, response="CONFLICT")
    def post(self, key: str):
        """Make the draft the live version: new members enter it, members inside stay
        on theirs. A journey that needs approval is published by an admin key only."""
        return _action(
            key,
            lambda journey: versions.publish(
                db.session, journey, actor=api_actor(), now=clock.now(), approver=_is_admin()
            ),
        )


@blp.route("/<key>/submit")
class Submit(MethodView):
    @require_scope(Scope.WRITE)
    @blp.doc(**BEARER_DOC)
    @blp.response(200, JourneyOut)
    @blp.alt_response(409, response="CONFLICT")
    def post(self, key: str):
        """Submit the draft for an admin's approval."""
        return _action(
            key,
            lambda journey: versions.submit(
                db.session, journey, actor=api_actor(), now=clock.now()
            ),
        )


@blp.route("/<key>/reject")
class Reject(MethodView):
    @require_scope(Scope.ADMIN)
    @blp.doc(**BEARER_DOC)
    @blp.arguments(RejectIn, example={"reason": "The coupon is too generous for Q4"})
    @blp.response(200, JourneyOut)
    @blp.alt_response(409, response="CONFLICT")
    def post(self, body, key: str):
        """Send a submitted version back to draft, with the reason."""
        return _action(
            key,
            lambda journey: versions.reject(
                db.session, journey, actor=api_actor(), now=clock.now(), reason=body["reason"]
            ),
        )


def _status_route(name: str, status: JourneyStatus, summary: str) -> None:
    class StatusChange(MethodView):
        @require_scope(Scope.WRITE)
        @blp.doc(**BEARER_DOC, summary=summary)
        @blp.response(200, JourneyOut)
        @blp.alt_response(409, response="CONFLICT")
        def post(self, key: str):
            return _action(
                key,
                lambda journey: versions.set_status(
                    db.session, journey, status, actor=api_actor(), now=clock.now()
                ),
            )

    StatusChange.__name__ = f"{name.title()}Journey"
    blp.route(f"/<key>/{name}", endpoint=name)(StatusChange)


_status_route("pause", JourneyStatus.PAUSED, "Pause: nobody enters or moves until resumed")
_status_route("resume", JourneyStatus.ACTIVE, "Resume a paused journey")
_status_route("archive", JourneyStatus.ARCHIVED, "Archive: members inside leave it")


@blp.route("/<key>/migration/preview")
class MigrationPreview(MethodView):
    @require_scope(Scope.READ, Scope.WRITE)
    @blp.doc(**BEARER_DOC)
    @blp.arguments(MigrationIn, example={"from_version": 1, "mapping": {"watch": "watch"}})
    @blp.response(200, MigrationOut)
    def post(self, body, key: str):
        """How many members waiting at each mapped step of an old version would
        continue at the mapped step of the live version. Nothing is moved."""
        journey = _journey_or_404(key)
        moves = _commit_or_abort(
            lambda: versions.migration_preview(
                db.session, journey, body["from_version"], body["mapping"]
            )
        )
        return {"to_version": versions.live(journey).version, "moves": moves}


@blp.route("/<key>/migration")
class Migration(MethodView):
    @require_scope(Scope.WRITE)
    @blp.doc(**BEARER_DOC)
    @blp.arguments(MigrationIn, example={"from_version": 1, "mapping": {"watch": "watch"}})
    @blp.response(200, MigrationOut)
    def post(self, body, key: str):
        """Move the members waiting at each mapped step onto the live version."""
        journey = _journey_or_404(key)
        moves = _commit_or_abort(
            lambda: versions.migrate(
                db.session,
                journey,
                body["from_version"],
                body["mapping"],
                actor=api_actor(),
                now=clock.now(),
            )
        )
        return {"to_version": versions.live(journey).version, "moves": moves}


@blp.route("/<key>/enroll")
class Enroll(MethodView):
    @require_scope(Scope.WRITE)
    @blp.doc(**BEARER_DOC)
    @blp.arguments(
        EnrollIn,
        example={"member": "u-10086", "context": {"order_id": "A1001"}, "entry_key": "A1001"},
    )
    @blp.response(202, EnrollOut)
    @blp.alt_response(409, response="CONFLICT")
    def post(self, body, key: str):
        """Enroll a member now, if the journey's entry rules allow: the answer says
        whether they entered (or were held out) and, if not, why. The journey's next
        tick walks them on."""
        journey = _journey_or_404(key)
        member = member_or_404(body["member"])
        live = next(
            (x for x in engine.live_journeys(db.session) if x.journey_id == journey.id), None
        )
        if live is None or journey.status != JourneyStatus.ACTIVE:
            abort(409, message=f"journey {key!r} is {journey.status.value}: it takes no members")
        reserved = sorted(set(body["context"]) & engine.RESERVED_CONTEXT)
        if reserved:
            abort(
                422,
                errors={
                    "json": {
                        f"context.{reserved[0]}": [
                            f"{', '.join(reserved)}: the journey's own, choose another name"
                        ]
                    }
                },
            )
        timezone = _timezone()
        enrollment, reason = engine.enroll(
            db.session,
            live,
            member,
            context=body["context"],
            entry_key=body["entry_key"],
            now=clock.now(),
            timezone=timezone,
        )
        try:
            db.session.commit()
        except IntegrityError:  # the same entry key enrolled by a request just now
            db.session.rollback()
            enrollment, reason = None, "duplicate_entry_key"
        return {
            "enrolled": enrollment is not None and enrollment.state.value != "held_out",
            "held_out": enrollment is not None and enrollment.state.value == "held_out",
            "enrollment_id": None if enrollment is None else enrollment.id,
            "version": None if enrollment is None else versions.live(journey).version,
            "reason": reason,
        }


def _timezone() -> str:
    from flask import current_app

    return current_app.config["TENURE_SETTINGS"].timezone


class ProportionsOut(Schema):
    treated = fields.Int(metadata={"description": "Converted members in the journey"})
    treated_n = fields.Int(metadata={"description": "Members in the journey (not held out)"})
    control = fields.Int(metadata={"description": "Converted members of the holdout"})
    control_n = fields.Int(metadata={"description": "Members held out"})
    treated_rate = fields.Float()
    control_rate = fields.Float()
    absolute_lift = fields.Float(metadata={"description": "Difference of the rates"})
    absolute_ci = fields.List(fields.Float(), metadata={"description": "95% CI (Newcombe)"})
    relative_lift = fields.Float(allow_none=True)
    relative_ci = fields.List(
        fields.Float(), allow_none=True, metadata={"description": "95% CI (log ratio)"}
    )
    p_value = fields.Float(metadata={"description": "Two-proportion z-test"})


class FunnelStepOut(Schema):
    step = fields.Str()
    kind = fields.Str()
    name = fields.Str(allow_none=True)
    entered = fields.Int()
    share = fields.Float()
    waiting = fields.Int()
    messages = fields.Int()


class BenefitLineOut(Schema):
    kind = fields.Str()
    granted = fields.Int()
    redeemed = fields.Int()
    redeemed_value = fields.Decimal(as_string=True, metadata={"type": "string"})
    points = fields.Int()


class ReportOut(Schema):
    version = fields.Int()
    totals = fields.Dict(keys=fields.Str(), values=fields.Int())
    goal = fields.Dict(allow_none=True)
    conversion = fields.Nested(ProportionsOut, allow_none=True)
    funnel = fields.List(fields.Nested(FunnelStepOut))
    messages = fields.Dict(keys=fields.Str(), values=fields.Int())
    benefits = fields.List(fields.Nested(BenefitLineOut))
    cost = fields.Decimal(as_string=True, metadata={"type": "string"})


@blp.route("/<key>/report")
class ReportView(MethodView):
    @require_scope(Scope.READ, Scope.WRITE)
    @blp.doc(**BEARER_DOC)
    @blp.response(200, ReportOut)
    def get(self, key: str):
        """The journey's funnel per step, conversion against its holdout (lift with 95%
        intervals and a p-value), messages by status, benefits granted and redeemed."""
        journey = _journey_or_404(key)
        shown = versions.live(journey) or versions.latest(journey)
        built = report.build(db.session, journey, shown.definition)
        return {
            "version": shown.version,
            "totals": built.totals.as_dict(),
            "goal": built.goal,
            "conversion": built.conversion,
            "funnel": built.funnel,
            "messages": built.messages,
            "benefits": built.benefits,
            "cost": built.cost,
        }
