"""The programme's settings through the API, so that engineers can keep them in code:
the stage rules and the tier ladder (read; write to change). Every change is a version
in the audit log."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView
from flask_smorest import abort
from marshmallow import RAISE, Schema, ValidationError, fields, validate
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from app import clock
from app.api.auth import BEARER_DOC, api_actor, require_scope
from app.api.blueprint import Blueprint, refuse
from app.auth.models import Scope
from app.extensions import db
from journeys import control, policies
from journeys.models import GlobalControl
from members import points, programme, stages, tiers
from members.errors import InvalidFields
from members.lifecycle import Stage

blp = Blueprint(
    "settings",
    __name__,
    url_prefix="/api/v1/settings",
    description="The programme's settings: stage rules, tier ladder (read; write to change)",
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
    made["vip_top_tier"] = fields.Bool(
        load_default=False,
        metadata={"description": "Members on the tier ladder's top level are VIP too"},
    )
    return made


# Every setting is PUT with the version the client edited; what GET adds besides is
# accepted back and ignored, so that a client may PUT what it read.
_VERSION_FIELDS = {
    "version": StrictInteger(
        load_default=None,
        metadata={
            "description": "The version you edited: if another was saved since, the "
            "request is refused with 409 instead of overwriting it"
        },
    ),
    "updated_at": fields.Raw(load_default=None, metadata={"description": "Ignored"}),
    "updated_by": fields.Raw(load_default=None, metadata={"description": "Ignored"}),
}


class _VersionedOut(Schema):
    version = fields.Int(metadata={"description": "0 until first changed"})
    updated_at = fields.DateTime(allow_none=True)
    updated_by = fields.Str(allow_none=True)


StageRulesIn = type(
    "StageRulesIn",
    (Schema,),
    {
        "Meta": type("Meta", (), {"unknown": RAISE}),
        **_rule_fields(required=True),
        **_VERSION_FIELDS,
    },
)

StageRulesOut = type("StageRulesOut", (_VersionedOut,), _rule_fields(required=False))

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
        return _current(stages)

    @require_scope(Scope.WRITE)
    @blp.doc(**BEARER_DOC)
    @blp.arguments(StageRulesIn, example=RULES_EXAMPLE)
    @blp.response(200, StageRulesOut)
    @blp.alt_response(409, response="CONFLICT")
    def put(self, body):
        """Replace the stage rules. They are checked as a whole: every member must get
        a stage (dormant starts no later than active ends), and every stage must be
        reachable. They apply from the next lifecycle run."""
        _save(stages.save, _parse(body), body["version"])
        return _current(stages)


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
        counts = stages.preview(db.session, rules, _top_tier())
        return {
            "members": {stage.value: count for stage, count in counts.items()},
            "vip_spend_above": stages.vip_threshold(db.session, rules),
        }


def _top_tier() -> str:
    return tiers.load(db.session)[0].levels[-1].key


def _parse(body: dict[str, Any]) -> stages.StageRules:
    document = {name: body[name] for name in (*stages.NUMBERS, "precedence", "vip_top_tier")}
    try:
        return stages.parse(document)
    except InvalidFields as exc:
        refuse(exc.errors)


def _save(save, value: Any, expected_version: int | None) -> None:
    """Store a setting as a new version (and commit), or answer 409 when someone saved
    another version since the one the client edited."""
    try:
        save(
            db.session, value, actor=api_actor(), now=clock.now(), expected_version=expected_version
        )
        db.session.commit()
    except programme.VersionConflict as exc:
        db.session.rollback()
        abort(409, message=f"{exc}: read it again")
    except IntegrityError:  # the first version saved by another request just now
        db.session.rollback()
        abort(409, message="it was changed at the same time: read it again")


def _current(owner: Any) -> dict[str, Any]:
    """A setting's document as in force, with its version (``owner``: the module that
    owns it, holding its ``SETTING``)."""
    value, version = owner.SETTING.load(db.session)
    row = owner.SETTING.row(db.session)
    return {
        **value.as_dict(),
        "version": version,
        "updated_at": None if row is None else row.updated_at,
        "updated_by": None if row is None else row.updated_by,
    }


# --- the tier ladder ---------------------------------------------------------------

LADDER_EXAMPLE: dict[str, Any] = tiers.DEFAULT_LADDER.as_dict()


class TierLevelSchema(Schema):
    class Meta:
        unknown = RAISE

    key = fields.Str(required=True, metadata={"example": "gold"})
    name_zh = fields.Str(required=True, metadata={"example": "金卡"})
    name_en = fields.Str(required=True, metadata={"example": "Gold"})
    min_spend = fields.Decimal(
        allow_none=True,
        load_default=None,
        as_string=True,
        allow_nan=False,
        metadata={
            "type": "string",
            "description": "Net spend over the window that reaches this level; null: not a way in",
            "example": "2000.00",
        },
    )
    min_orders = StrictInteger(
        allow_none=True,
        load_default=None,
        metadata={"description": "Orders over the window; null: not a way in", "example": 6},
    )
    min_contributions = StrictInteger(
        allow_none=True,
        load_default=None,
        metadata={
            "description": "Reviews, shares and referrals over the window; null: not a way in",
            "example": 20,
        },
    )


class TierLadderSchema(Schema):
    levels = fields.List(
        fields.Nested(TierLevelSchema),
        required=True,
        metadata={"description": "3 to 5 levels, lowest (the entry level) first"},
    )
    window_days = StrictInteger(
        required=True,
        validate=validate.OneOf(tiers.WINDOWS),
        metadata={"description": "The rolling window the thresholds count over"},
    )
    grace_days = StrictInteger(
        required=True,
        metadata={"description": "How long a member keeps a level they fell short of"},
    )


TierLadderIn = type(
    "TierLadderIn",
    (TierLadderSchema,),
    {"Meta": type("Meta", (), {"unknown": RAISE}), **_VERSION_FIELDS},
)


class TierLadderOut(TierLadderSchema, _VersionedOut):
    pass


@blp.route("/tier-ladder")
class TierLadderView(MethodView):
    @require_scope(Scope.READ, Scope.WRITE)
    @blp.doc(**BEARER_DOC)
    @blp.response(200, TierLadderOut)
    def get(self):
        """The tier ladder in force (银卡 / 金卡 / 钻石卡 until someone changes it)."""
        return _current(tiers)

    @require_scope(Scope.WRITE)
    @blp.doc(**BEARER_DOC)
    @blp.arguments(TierLadderIn, example=LADDER_EXAMPLE)
    @blp.response(200, TierLadderOut)
    @blp.alt_response(409, response="CONFLICT")
    def put(self, body):
        """Replace the tier ladder. Each level must ask for more than the one below it;
        the first is the entry level and asks nothing. Members move at the next
        lifecycle run; those holding a level that is gone get the one they qualify for."""
        document = {
            "levels": [
                {
                    **level,
                    "min_spend": None if level["min_spend"] is None else str(level["min_spend"]),
                }
                for level in body["levels"]
            ],
            "window_days": body["window_days"],
            "grace_days": body["grace_days"],
        }
        try:
            ladder = tiers.parse(document)
        except InvalidFields as exc:
            refuse(exc.errors)
        _save(tiers.save, ladder, body["version"])
        return _current(tiers)


# --- the points rules ----------------------------------------------------------------

POINTS_EXAMPLE: dict[str, Any] = {
    **points.PointsRules().as_dict(),
    "bonus_days": [{"day": "2026-11-11", "multiplier": 2}],
}


class BonusDaySchema(Schema):
    class Meta:
        unknown = RAISE

    day = fields.Date(required=True, metadata={"example": "2026-11-11"})
    multiplier = StrictInteger(required=True, metadata={"example": 2})


class PointsRulesSchema(Schema):
    per_yuan = fields.Decimal(
        required=True,
        as_string=True,
        allow_nan=False,
        metadata={"type": "string", "description": "Points per yuan of an order", "example": "1"},
    )
    per_event = fields.Dict(
        keys=fields.Str(metadata={"enum": list(points.EVENT_POINTS)}),
        values=StrictInteger(),
        required=True,
        metadata={"description": "Points for each review, share, check-in, referral"},
    )
    bonus_days = fields.List(
        fields.Nested(BonusDaySchema),
        required=True,
        metadata={"description": "Days (programme calendar) whose orders earn more"},
    )
    birthday_multiplier = StrictInteger(
        required=True, metadata={"description": "For orders on the member's birthday"}
    )
    expiry_months = StrictInteger(
        required=True, metadata={"description": "Lots expire this long after earning; 0: never"}
    )
    notice_days = StrictInteger(
        required=True,
        metadata={"description": "The points.expiring trigger fires this long before"},
    )


PointsRulesIn = type(
    "PointsRulesIn",
    (PointsRulesSchema,),
    {"Meta": type("Meta", (), {"unknown": RAISE}), **_VERSION_FIELDS},
)


class BonusDayOut(Schema):
    day = fields.Str(metadata={"format": "date", "example": "2026-11-11"})
    multiplier = fields.Int(metadata={"example": 2})


class PointsRulesOut(PointsRulesSchema, _VersionedOut):
    bonus_days = fields.List(fields.Nested(BonusDayOut))


@blp.route("/points-rules")
class PointsRulesView(MethodView):
    @require_scope(Scope.READ, Scope.WRITE)
    @blp.doc(**BEARER_DOC)
    @blp.response(200, PointsRulesOut)
    def get(self):
        """How members earn points, and when points expire."""
        return _current(points)

    @require_scope(Scope.WRITE)
    @blp.doc(**BEARER_DOC)
    @blp.arguments(PointsRulesIn, example=POINTS_EXAMPLE)
    @blp.response(200, PointsRulesOut)
    @blp.alt_response(409, response="CONFLICT")
    def put(self, body):
        """Replace the points rules. They apply to events stored from now on; lots
        already earned keep their expiry."""
        document = {
            "per_yuan": str(body["per_yuan"]),
            "per_event": body["per_event"],
            "bonus_days": [
                {"day": b["day"].isoformat(), "multiplier": b["multiplier"]}
                for b in body["bonus_days"]
            ],
            "birthday_multiplier": body["birthday_multiplier"],
            "expiry_months": body["expiry_months"],
            "notice_days": body["notice_days"],
        }
        try:
            rules = points.parse(document)
        except InvalidFields as exc:
            refuse(exc.errors)
        _save(points.save, rules, body["version"])
        return _current(points)


# --- the global control group ------------------------------------------------------


_CONTROL_PERCENT = dict(
    percent=fields.Float(
        required=True,
        allow_nan=False,
        validate=validate.Range(min=0, max=int(control.MAX_PERCENT)),
        metadata={
            "description": "Share of all members that no marketing journey touches (0-20)",
            "example": 5,
        },
    ),
    salt=fields.Raw(load_default=None, metadata={"description": "Ignored: it never changes"}),
    members=fields.Raw(load_default=None, metadata={"description": "Ignored"}),
)
ControlGroupIn = type(
    "ControlGroupIn",
    (Schema,),
    {"Meta": type("Meta", (), {"unknown": RAISE}), **_CONTROL_PERCENT, **_VERSION_FIELDS},
)


class ControlGroupOut(_VersionedOut):
    percent = fields.Decimal(as_string=True, metadata={"type": "string", "example": "5"})
    salt = fields.Str(metadata={"description": "What members are hashed with; fixed"})
    members = fields.Int(metadata={"description": "Members recorded in the group so far"})


def _control_group() -> dict[str, Any]:
    return {
        **_current(control),
        "members": db.session.scalar(select(func.count()).select_from(GlobalControl)) or 0,
    }


@blp.route("/global-control")
class GlobalControlView(MethodView):
    @require_scope(Scope.READ, Scope.WRITE)
    @blp.doc(**BEARER_DOC)
    @blp.response(200, ControlGroupOut)
    def get(self):
        """The programme's global control group: the share of all members no marketing
        journey touches, so that the programme's total uplift can be measured."""
        return _control_group()

    @require_scope(Scope.ADMIN)
    @blp.doc(**BEARER_DOC)
    @blp.arguments(ControlGroupIn, example={"percent": 5})
    @blp.response(200, ControlGroupOut)
    @blp.alt_response(409, response="CONFLICT")
    def put(self, body):
        """Change the share. Members already in the group stay in it: a larger share
        adds members, a smaller one only stops new members from joining."""
        group, _version = control.SETTING.load(db.session)
        try:
            changed = control.parse({"percent": body["percent"], "salt": group.salt})
        except InvalidFields as exc:
            refuse(exc.errors)
        _save(control.SETTING.save, changed, body["version"])
        return _control_group()


# --- send policies -----------------------------------------------------------------


class SendPoliciesIn(Schema):
    class Meta:
        unknown = RAISE

    quiet_start = fields.Str(required=True, metadata={"example": "21:00"})
    quiet_end = fields.Str(required=True, metadata={"example": "08:00"})
    daily_cap = StrictInteger(required=True, metadata={"example": 2})
    weekly_cap = StrictInteger(required=True, metadata={"example": 5})
    cap_patience_days = StrictInteger(required=True, metadata={"example": 3})
    paused = fields.Bool(required=True, metadata={"description": "The global pause switch"})
    signature = fields.Str(required=True, metadata={"example": "【鞋履会员】"})
    opt_out_cn = fields.Str(required=True, metadata={"example": "拒收请回复R"})
    opt_out_other = fields.Str(required=True, metadata={"example": "Reply STOP to opt out"})
    version = _VERSION_FIELDS["version"]
    updated_at = _VERSION_FIELDS["updated_at"]
    updated_by = _VERSION_FIELDS["updated_by"]


class SendPoliciesOut(_VersionedOut):
    quiet_start = fields.Str()
    quiet_end = fields.Str()
    daily_cap = fields.Int()
    weekly_cap = fields.Int()
    cap_patience_days = fields.Int()
    paused = fields.Bool()
    signature = fields.Str()
    opt_out_cn = fields.Str()
    opt_out_other = fields.Str()


@blp.route("/send-policies")
class SendPoliciesView(MethodView):
    @require_scope(Scope.READ, Scope.WRITE)
    @blp.doc(**BEARER_DOC)
    @blp.response(200, SendPoliciesOut)
    def get(self):
        """Quiet hours (member's own time zone), frequency caps, the pause switch, and
        what every SMS carries (signature, opt-out text)."""
        return _current(policies)

    @require_scope(Scope.WRITE)
    @blp.doc(**BEARER_DOC)
    @blp.arguments(SendPoliciesIn, example=policies.Policies().as_dict())
    @blp.response(200, SendPoliciesOut)
    @blp.alt_response(409, response="CONFLICT")
    def put(self, body):
        """Replace the send policies; they apply to the next delivery."""
        document = {
            k: v for k, v in body.items() if k not in ("version", "updated_at", "updated_by")
        }
        try:
            value = policies.parse(document)
        except InvalidFields as exc:
            refuse(exc.errors)
        _save(policies.SETTING.save, value, body["version"])
        return _current(policies)
