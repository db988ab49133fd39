"""The lifecycle engine's history through the API (read): members per stage per day,
the flows between stages per week, and the runs themselves."""

from __future__ import annotations

import datetime as dt
from typing import Any

from flask.views import MethodView
from flask_smorest import abort
from marshmallow import Schema, fields, validate
from sqlalchemy import select

from app import clock
from app.api.auth import BEARER_DOC, require_scope
from app.api.blueprint import Blueprint
from app.auth.models import Scope
from app.extensions import db
from members import stage_history
from members.lifecycle import LifecycleRun

blp = Blueprint(
    "lifecycle",
    __name__,
    url_prefix="/api/v1/lifecycle",
    description="Stage history and lifecycle runs (read)",
)

MAX_DAYS = 400
MAX_WEEKS = 104
STAGE_COUNTS_EXAMPLE = {
    "new": 1200,
    "active": 30500,
    "at_risk": 2100,
    "dormant": 9800,
    "lapsed": 51000,
    "vip": 4300,
}


class RangeArgs(Schema):
    start = fields.Date(
        data_key="from",
        metadata={"description": "First day (default: 29 days before `to`)"},
    )
    end = fields.Date(
        data_key="to", metadata={"description": "Last day (default: today, programme time)"}
    )


class StageDaySchema(Schema):
    day = fields.Date()
    members = fields.Dict(
        keys=fields.Str(), values=fields.Int(), metadata={"example": STAGE_COUNTS_EXAMPLE}
    )


class StageHistorySchema(Schema):
    days = fields.List(fields.Nested(StageDaySchema))


class FlowSchema(Schema):
    week = fields.Date(metadata={"description": "The Monday of the week"})
    from_stage = fields.Str(
        data_key="from",
        allow_none=True,
        metadata={"description": "null: the member's first stage", "example": "dormant"},
    )
    to_stage = fields.Str(data_key="to", metadata={"example": "active"})
    members = fields.Int(metadata={"example": 312})


class FlowsSchema(Schema):
    flows = fields.List(fields.Nested(FlowSchema))


class RunArgs(Schema):
    limit = fields.Int(load_default=20, validate=validate.Range(min=1, max=200))


class RunSchema(Schema):
    id = fields.Int()
    kind = fields.Str(metadata={"example": "incremental"})
    as_of = fields.DateTime()
    started_at = fields.DateTime()
    seconds = fields.Float()
    members = fields.Int(metadata={"description": "Members looked at"})
    changed = fields.Int(metadata={"description": "Members who changed stage"})
    vip_threshold = fields.Decimal(
        as_string=True,
        allow_none=True,
        metadata={"type": "string", "description": "365-day spend VIPs exceeded"},
    )
    rules_version = fields.Int()


@blp.route("/stage-history")
class StageHistoryView(MethodView):
    @require_scope(Scope.READ)
    @blp.doc(**BEARER_DOC)
    @blp.arguments(RangeArgs, location="query")
    @blp.response(200, StageHistorySchema)
    def get(self, args):
        """Members per stage at the end of each day, in the programme's calendar (at
        most 400 days at a time)."""
        first, last = _range(args, default_days=30, limit=MAX_DAYS, unit="days")
        days = stage_history.daily(db.session, first, last)
        return {
            "days": [
                {"day": d.day, "members": {s.value: n for s, n in d.members.items()}} for d in days
            ]
        }


@blp.route("/transitions")
class TransitionsView(MethodView):
    @require_scope(Scope.READ)
    @blp.doc(**BEARER_DOC)
    @blp.arguments(RangeArgs, location="query")
    @blp.response(200, FlowsSchema)
    def get(self, args):
        """How many members moved from each stage to each other, per week (Monday to
        Sunday), for the weeks holding `from` to `to` (default: the last 12 weeks; at
        most 104)."""
        first, last = _range(args, default_days=7 * 12, limit=7 * MAX_WEEKS, unit="weeks")
        flows = stage_history.weekly_flows(db.session, first, last)
        return {
            "flows": [
                {
                    "week": f.week,
                    "from_stage": None if f.from_stage is None else f.from_stage.value,
                    "to_stage": f.to_stage.value,
                    "members": f.members,
                }
                for f in flows
            ]
        }


@blp.route("/runs")
class RunsView(MethodView):
    @require_scope(Scope.READ)
    @blp.doc(**BEARER_DOC)
    @blp.arguments(RunArgs, location="query")
    @blp.response(200, RunSchema(many=True))
    def get(self, args):
        """The latest lifecycle runs, newest first."""
        query = select(LifecycleRun).order_by(LifecycleRun.id.desc()).limit(args["limit"])
        return db.session.scalars(query).all()


def _range(args: dict[str, Any], *, default_days: int, limit: int, unit: str):
    today = clock.local_date(clock.now())
    last = args.get("end") or today
    first = args.get("start") or last - dt.timedelta(days=default_days - 1)
    if first > last:
        abort(422, errors={"query": {"from": ["must not be after `to`"]}})
    if (last - first).days >= limit:
        most = limit if unit == "days" else limit // 7
        abort(422, errors={"query": {"from": [f"at most {most} {unit} at a time"]}})
    return first, last
