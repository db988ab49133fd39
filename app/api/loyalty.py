"""A member's standing in the loyalty programme through the API (read): their tier and
what it takes to reach the next, for the shop's app to show "spend ¥200 more to reach
Gold"."""

from __future__ import annotations

from flask.views import MethodView
from marshmallow import Schema, fields

from app.api.auth import BEARER_DOC, require_scope
from app.api.blueprint import Blueprint
from app.api.members import member_or_404
from app.auth.models import Scope
from app.extensions import db
from members import tiers
from members.lifecycle import MemberFeatures

blp = Blueprint(
    "loyalty",
    __name__,
    url_prefix="/api/v1/members",
    description="A member's tier and points (read)",
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
        days = ladder.window_days
        upcoming = tiers.next_tier(ladder, member.tier, features)
        return {
            "external_id": member.external_id,
            "tier": ladder.level(member.tier),
            "since": member.tier_since,
            "grace_until": member.tier_grace_until,
            "window_days": days,
            "spend": getattr(features, f"spend_{days}d", 0) if features else 0,
            "orders": getattr(features, f"orders_{days}d", 0) if features else 0,
            "contributions": getattr(features, f"contributions_{days}d", 0) if features else 0,
            "next": None
            if upcoming is None
            else {
                **upcoming.level.as_dict(),
                "spend_more": upcoming.spend_more,
                "orders_more": upcoming.orders_more,
                "contributions_more": upcoming.contributions_more,
            },
        }
