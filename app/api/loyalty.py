"""A member's standing in the loyalty programme through the API: their tier and what it
takes to reach the next (for the shop's app to show "spend ¥200 more to reach Gold"),
and their points: balance, lots, what expires soon; earn, spend and adjust (write)."""

from __future__ import annotations

import datetime as dt

from flask.views import MethodView
from flask_smorest import abort
from marshmallow import RAISE, Schema, fields, validate
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from app import clock
from app.api.auth import BEARER_DOC, api_actor, require_scope
from app.api.blueprint import Blueprint
from app.api.members import AwareDateTime, member_or_404
from app.auth.models import Scope
from app.extensions import db
from members import points, tiers
from members.errors import InvalidField
from members.lifecycle import MemberFeatures
from members.loyalty import PointsEntry

RECENT_ENTRIES = 20

blp = Blueprint(
    "loyalty",
    __name__,
    url_prefix="/api/v1/members",
    description="A member's tier and points",
)


def _money(description: str, example: str) -> fields.Decimal:
    return fields.Decimal(
        as_string=True,
        allow_none=True,
        metadata={"type": "string", "description": description, "example": example},
    )


class LevelOutSchema(Schema):
    key = fields.Str(metadata={"example": "gold"})
    name_zh = fields.Str(metadata={"example": "金卡"})
    name_en = fields.Str(metadata={"example": "Gold"})


class NextTierSchema(LevelOutSchema):
    spend_more = _money("Spend this much more over the window; null: not a way in", "200.00")
    orders_more = fields.Int(allow_none=True, metadata={"example": 2})
    contributions_more = fields.Int(allow_none=True, metadata={"example": 5})


class TierStandingSchema(Schema):
    external_id = fields.Str()
    tier = fields.Nested(LevelOutSchema, allow_none=True)
    since = fields.DateTime(allow_none=True)
    grace_until = fields.DateTime(
        allow_none=True,
        metadata={"description": "Set while the member falls short of their tier"},
    )
    window_days = fields.Int(metadata={"example": 365})
    spend = _money("Net spend over the window, as of the last lifecycle run", "1800.00")
    orders = fields.Int()
    contributions = fields.Int()
    next = fields.Nested(
        NextTierSchema,
        allow_none=True,
        metadata={"description": "The level above, and each way to reach it; null at the top"},
    )


@blp.route("/<string(maxlength=128):external_id>/tier")
class MemberTier(MethodView):
    @require_scope(Scope.READ)
    @blp.doc(**BEARER_DOC)
    @blp.response(200, TierStandingSchema)
    def get(self, external_id: str):
        """The member's tier, and what they need over the ladder's window to reach the
        next one: any one of the ways is enough. Counted as of the last lifecycle run."""
        member = member_or_404(external_id)
        ladder, _ = tiers.load(db.session)
        features = db.session.get(MemberFeatures, member.id)
        upcoming = tiers.next_tier(ladder, member.tier, features)
        spend, orders, contributions = ladder.counted(features)
        return {
            "external_id": member.external_id,
            "tier": ladder.level(member.tier),
            "since": member.tier_since,
            "grace_until": member.tier_grace_until,
            "window_days": ladder.window_days,
            "spend": spend,
            "orders": orders,
            "contributions": contributions,
            "next": None
            if upcoming is None
            else {
                **upcoming.level.as_dict(),
                "spend_more": upcoming.spend_more,
                "orders_more": upcoming.orders_more,
                "contributions_more": upcoming.contributions_more,
            },
        }


class LotSchema(Schema):
    id = fields.Int()
    points = fields.Int(metadata={"description": "Earned in this lot"})
    remaining = fields.Int()
    earned_at = fields.DateTime()
    expires_at = fields.DateTime(allow_none=True)
    source = fields.Str(metadata={"example": "order"})


class EntrySchema(Schema):
    id = fields.Int()
    kind = fields.Str(metadata={"example": "spend"})
    points = fields.Int(metadata={"description": "Signed: spent and expired are negative"})
    reason = fields.Str()
    source = fields.Str()
    at = fields.DateTime()
    expires_at = fields.DateTime(allow_none=True)


class ExpiringSchema(Schema):
    points = fields.Int()
    first_expires_at = fields.DateTime(allow_none=True)
    within_days = fields.Int()


class PointsSchema(Schema):
    external_id = fields.Str()
    balance = fields.Int(metadata={"description": "The sum of the live lots"})
    lots = fields.List(
        fields.Nested(LotSchema), metadata={"description": "Live lots, in the order spent"}
    )
    expiring_soon = fields.Nested(ExpiringSchema)
    recent = fields.List(fields.Nested(EntrySchema), metadata={"description": "Last 20"})


class PointsInSchema(Schema):
    class Meta:
        unknown = RAISE

    action = fields.Str(required=True, validate=validate.OneOf(["earn", "spend", "adjust"]))
    points = fields.Int(
        required=True,
        strict=True,
        metadata={"description": "Above 0 to earn or spend; signed to adjust", "example": 100},
    )
    reason = fields.Str(
        required=True, validate=validate.Length(min=1, max=200), metadata={"example": "客服补偿"}
    )
    idempotency_key = fields.Str(
        required=True,
        validate=validate.Length(min=1, max=128),
        metadata={
            "description": "Yours, unique per member: sending it again answers the same "
            "without moving points twice",
            "example": "ticket-20261123-0042",
        },
    )
    expires_at = AwareDateTime(
        load_default=None,
        metadata={"description": "For points added: when they expire (default: the rules')"},
    )


class PointsOutcomeSchema(Schema):
    entry = fields.Nested(EntrySchema)
    balance = fields.Int()
    replayed = fields.Bool(
        metadata={"description": "True when this idempotency key was already used"}
    )


POINTS_EXAMPLE = {
    "action": "earn",
    "points": 100,
    "reason": "客服补偿",
    "idempotency_key": "ticket-20261123-0042",
}


@blp.route("/<string(maxlength=128):external_id>/points")
class MemberPoints(MethodView):
    @require_scope(Scope.READ)
    @blp.doc(**BEARER_DOC)
    @blp.response(200, PointsSchema)
    def get(self, external_id: str):
        """The member's points: balance, live lots, what expires soon, recent movements."""
        member = member_or_404(external_id)
        now = clock.now()
        rules, _ = points.load(db.session)
        lots = points.live_lots(db.session, member.id, now)
        horizon = now + dt.timedelta(days=rules.notice_days)
        soon = [lot for lot in lots if lot.expires_at is not None and lot.expires_at <= horizon]
        recent = db.session.scalars(
            select(PointsEntry)
            .where(PointsEntry.member_id == member.id)
            .order_by(PointsEntry.at.desc(), PointsEntry.id.desc())
            .limit(RECENT_ENTRIES)
        ).all()
        return {
            "external_id": member.external_id,
            "balance": sum(lot.remaining for lot in lots),
            "lots": lots,
            "expiring_soon": {
                "points": sum(lot.remaining for lot in soon),
                "first_expires_at": min((lot.expires_at for lot in soon), default=None),
                "within_days": rules.notice_days,
            },
            "recent": recent,
        }

    @require_scope(Scope.WRITE)
    @blp.doc(**BEARER_DOC)
    @blp.arguments(PointsInSchema, example=POINTS_EXAMPLE)
    @blp.response(201, PointsOutcomeSchema)
    @blp.alt_response(200, schema=PointsOutcomeSchema, description="A repeated request")
    @blp.alt_response(409, response="CONFLICT")
    def post(self, body, external_id: str):
        """Earn, spend (first to expire first) or adjust points, with a reason. Spending
        more than the balance is refused and changes nothing."""
        member = member_or_404(external_id)
        rules, _ = points.load(db.session)
        common = {
            "reason": body["reason"],
            "now": clock.now(),
            "actor": api_actor(),
            "key": body["idempotency_key"],
        }
        try:
            if body["action"] == "spend":
                if body["expires_at"] is not None:
                    raise InvalidField("expires_at", "only points added can be given an expiry")
                outcome = points.spend(db.session, member, body["points"], **common)
            else:
                move = points.earn if body["action"] == "earn" else points.adjust
                outcome = move(
                    db.session,
                    member,
                    body["points"],
                    rules=rules,
                    expires_at=body["expires_at"],
                    **common,
                )
            db.session.commit()
        except InvalidField as exc:
            db.session.rollback()
            abort(422, errors={"json": {exc.field: [exc.message]}})
        except points.KeyReused as exc:
            db.session.rollback()
            abort(409, message=str(exc))
        except IntegrityError:  # the same key sent twice at once: the other one won
            db.session.rollback()
            abort(409, message="this idempotency_key is being used right now: send it again")
        answer = {"entry": outcome.entry, "balance": outcome.balance, "replayed": outcome.replayed}
        return answer, 200 if outcome.replayed else 201
