"""The programme's settings through the API, so that engineers can keep them in code:
the stage rules (read; write to change). Every change is a version in the audit log."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView
from flask_smorest import abort
from marshmallow import RAISE, Schema, ValidationError, fields, validate
from sqlalchemy.exc import IntegrityError

from app import clock
from app.api.auth import BEARER_DOC, api_actor, require_scope
from app.api.blueprint import Blueprint
from app.auth.models import Scope
from app.extensions import db
from members import programme, stages
from members.errors import InvalidFields
from members.lifecycle import Stage

blp = Blueprint(
    "settings",
    __name__,
    url_prefix="/api/v1/settings",
    description="The programme's settings: stage rules (read; write to change)",
)

RULES_HELP = {
    "new_days": "New: joined within this many days...",
    "new_max_orders": "...with at most this many orders",
    "active_days": "Active: a purchase within this many days",
    "at_risk_days": "At risk: still active, but the last order is this many days old or more...",
    "at_risk_visit_percent": "...and visits over the last 14 days fell below this share (%) "
    "of the member's own daily rate over the 42 days before",
    "dormant_days": "Dormant: no purchase for this many days (at most active_days: no gap)",
    "lapsed_days": "Lapsed, the deep end of dormant: no purchase for this many days",
    "vip_top_percent": "VIP: this top share (%) of members by 365-day spend; 0 for none",
}
RULES_EXAMPLE: dict[str, Any] = stages.StageRules().as_dict()


class StrictInteger(fields.Integer):
    """A JSON integer: not a string of digits, not 30.0, not true."""

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValidationError("Not a whole number.")
        return super()._deserialize(value, attr, data, **kwargs)


def _rule_fields(required: bool) -> dict[str, fields.Field]:
    made: dict[str, fields.Field] = {
        name: StrictInteger(
            required=required,
            validate=validate.Range(min=0),
            metadata={"description": RULES_HELP[name], "example": RULES_EXAMPLE[name]},
        )
        for name in stages.NUMBERS
    }
    made["precedence"] = fields.List(
        fields.Str(validate=validate.OneOf([s.value for s in stages.RANKED])),
        required=required,
        metadata={
            "description": "The stages, the one that wins first when several match",
            "example": RULES_EXAMPLE["precedence"],
        },
    )
    return made


StageRulesIn = type(
    "StageRulesIn",
    (Schema,),
    {
        "Meta": type("Meta", (), {"unknown": RAISE}),
        **_rule_fields(required=True),
        "version": StrictInteger(
            load_default=None,
            metadata={
                "description": "The version you edited: if the rules were saved since, "
                "the request is refused with 409 instead of overwriting them"
            },
        ),
        # Sent back by clients that PUT what they read; ignored.
        "updated_at": fields.Raw(load_default=None, metadata={"description": "Ignored"}),
        "updated_by": fields.Raw(load_default=None, metadata={"description": "Ignored"}),
    },
)

StageRulesOut = type(
    "StageRulesOut",
    (Schema,),
    {
        **_rule_fields(required=False),
        "version": fields.Int(metadata={"description": "0 until first changed"}),
        "updated_at": fields.DateTime(allow_none=True),
        "updated_by": fields.Str(allow_none=True),
    },
)

StagePreviewIn = type(
    "StagePreviewIn",
    (Schema,),
    {"Meta": type("Meta", (), {"unknown": RAISE}), **_rule_fields(required=True)},
)

StagePreviewOut = type(
    "StagePreviewOut",
    (Schema,),
    {
        "members": fields.Dict(
            keys=fields.Str(),
            values=fields.Int(),
            metadata={
                "description": "Members per stage under these rules",
                "example": {s.value: 0 for s in Stage},
            },
        ),
        "vip_spend_above": fields.Decimal(
            as_string=True,
            allow_none=True,
            metadata={
                "description": "365-day spend a member must exceed to be VIP",
                "type": "string",
                "example": "3980.00",
            },
        ),
    },
)


@blp.route("/stage-rules")
class StageRulesView(MethodView):
    @require_scope(Scope.READ, Scope.WRITE)
    @blp.doc(**BEARER_DOC)
    @blp.response(200, StageRulesOut)
    def get(self):
        """The stage rules in force (the defaults until someone changes them)."""
        return _current()

    @require_scope(Scope.WRITE)
    @blp.doc(**BEARER_DOC)
    @blp.arguments(StageRulesIn, example=RULES_EXAMPLE)
    @blp.response(200, StageRulesOut)
    @blp.alt_response(409, response="CONFLICT")
    def put(self, body):
        """Replace the stage rules. They are checked as a whole: every member must get
        a stage (dormant starts no later than active ends), and every stage must be
        reachable. They apply from the next lifecycle run."""
        rules = _parse(body)
        try:
            stages.save(
                db.session,
                rules,
                actor=api_actor(),
                now=clock.now(),
                expected_version=body["version"],
            )
            db.session.commit()
        except programme.VersionConflict as exc:
            db.session.rollback()
            abort(409, message=f"{exc}: read them again")
        except IntegrityError:  # the first version saved by another request just now
            db.session.rollback()
            abort(409, message="the rules were changed at the same time: read them again")
        return _current()


@blp.route("/stage-rules/preview")
class StagePreviewView(MethodView):
    @require_scope(Scope.READ, Scope.WRITE)
    @blp.doc(**BEARER_DOC)
    @blp.arguments(StagePreviewIn, example=RULES_EXAMPLE)
    @blp.response(200, StagePreviewOut)
    def post(self, body):
        """How many members each stage would hold under these rules, from the features
        of the last lifecycle run. Nothing is saved."""
        rules = _parse(body)
        counts = stages.preview(db.session, rules)
        return {
            "members": {stage.value: count for stage, count in counts.items()},
            "vip_spend_above": stages.vip_threshold(db.session, rules),
        }


def _parse(body: dict[str, Any]) -> stages.StageRules:
    document = {name: body[name] for name in (*stages.NUMBERS, "precedence")}
    try:
        return stages.parse(document)
    except InvalidFields as exc:
        abort(422, errors={"json": {field: [message] for field, message in exc.errors.items()}})


def _current() -> dict[str, Any]:
    rules, version = stages.load(db.session)
    row = programme.load(db.session, stages.SETTING_KEY)
    return {
        **rules.as_dict(),
        "version": version,
        "updated_at": None if row is None else row.updated_at,
        "updated_by": None if row is None else row.updated_by,
    }
