"""Events through the API: batches of up to 1,000 (1 MB), answered item by item."""

from __future__ import annotations

import json

from flask import Response, current_app, request
from flask.views import MethodView
from flask_smorest import abort
from marshmallow import RAISE, Schema, fields, validate

from app import clock
from app.api.auth import BEARER_DOC, require_scope
from app.api.blueprint import Blueprint
from app.api.members import AwareDateTime
from app.auth.models import Scope
from app.extensions import db
from members import ingest

blp = Blueprint(
    "events",
    __name__,
    url_prefix="/api/v1/events",
    description="Events: orders, logins, check-ins... (scope: ingest)",
)

MAX_EVENTS = 1000
MAX_BYTES = 1024 * 1024


class EventInSchema(Schema):
    class Meta:
        unknown = RAISE

    event_id = fields.Str(
        required=True,
        validate=validate.Length(min=1, max=100),
        metadata={
            "description": "Your id for the event: sent twice, stored once",
            "example": "order-20261123-0001",
        },
    )
    member = fields.Str(
        required=True,
        validate=validate.Length(min=1, max=128),
        metadata={"description": "The member's external_id", "example": "u-1"},
    )
    type = fields.Str(
        required=True, validate=validate.Length(min=1, max=64), metadata={"example": "order"}
    )
    occurred_at = AwareDateTime(required=True, metadata={"example": "2026-11-23T10:00:00+08:00"})
    properties = fields.Dict(
        keys=fields.Str(validate=validate.Length(max=128)),
        load_default=dict,
        metadata={"example": {"store": "上海南京西路店"}},
    )
    amount = fields.Decimal(
        allow_nan=False, places=None, allow_none=True, metadata={"example": "199.00"}
    )
    currency = fields.Str(
        allow_none=True, validate=validate.Length(equal=3), metadata={"example": "CNY"}
    )
    category = fields.Str(
        allow_none=True, validate=validate.Length(max=64), metadata={"example": "美妆"}
    )


class EventBatchSchema(Schema):
    class Meta:
        unknown = RAISE

    # Each item is checked on its own (members.ingest.parse) so that one bad event
    # does not refuse the batch; its shape is EventIn's.
    events = fields.List(
        fields.Raw(allow_none=True, metadata={"allOf": [{"$ref": "#/components/schemas/EventIn"}]}),
        required=True,
        validate=validate.Length(min=1, max=MAX_EVENTS),
    )


class OutcomeSchema(Schema):
    index = fields.Int()
    event_id = fields.Str(allow_none=True)
    status = fields.Str(metadata={"description": "accepted, duplicate or rejected"})
    errors = fields.List(fields.Dict())


class IngestResultSchema(Schema):
    results = fields.List(fields.Nested(OutcomeSchema))
    counts = fields.Dict(keys=fields.Str(), values=fields.Int())


@blp.before_request
def refuse_oversize_batches() -> None:
    """Checked before the body is read or parsed."""
    if (request.content_length or 0) > MAX_BYTES:
        abort(413, message=f"a batch may be at most {MAX_BYTES:,} bytes")


@blp.route("")
class Events(MethodView):
    @require_scope(Scope.INGEST)
    @blp.doc(**BEARER_DOC)
    @blp.arguments(
        EventBatchSchema,
        example={
            "events": [
                {
                    "event_id": "order-20261123-0001",
                    "member": "u-1",
                    "type": "order",
                    "occurred_at": "2026-11-23T10:00:00+08:00",
                    "amount": "199.00",
                    "currency": "CNY",
                    "category": "美妆",
                    "properties": {"store": "上海南京西路店"},
                },
                {
                    "event_id": "login-20261123-0001",
                    "member": "u-1",
                    "type": "login",
                    "occurred_at": "2026-11-23T09:58:00+08:00",
                },
            ]
        },
    )
    @blp.response(200, IngestResultSchema)
    def post(self, body):
        """Store a batch of events. Each is answered: accepted, duplicate (its event_id
        was seen before) or rejected with the field and reason; accepted events are
        stored even when others in the batch are rejected."""
        settings = current_app.config["TENURE_SETTINGS"]
        results: list[dict | None] = [None] * len(body["events"])
        parsed: list[tuple[int, ingest.EventIn]] = []
        for index, raw in enumerate(body["events"]):
            event = ingest.parse(raw)
            if isinstance(event, ingest.EventIn):
                parsed.append((index, event))
                continue
            event_id = raw.get("event_id") if isinstance(raw, dict) else None
            results[index] = {
                "index": index,
                "event_id": _str(event_id),
                "status": "rejected",
                "errors": [{"field": f or None, "in": "json", "message": m} for f, m in event],
            }
        now = clock.now()
        outcomes = ingest.ingest(
            db.session,
            [e for _, e in parsed],
            now=now,
            default_currency=settings.currency,
            unknown_members=ingest.UnknownMembers(settings.unknown_members),
        )
        for (index, _), outcome in zip(parsed, outcomes, strict=True):
            result = {"index": index, "event_id": outcome.event_id, "status": outcome.status.value}
            if outcome.field:
                result["errors"] = [
                    {"field": outcome.field, "in": "json", "message": outcome.reason}
                ]
            results[index] = result
        ingest.tally(
            db.session, _tally_rows(results), source="api", day=clock.local_date(now), now=now
        )
        db.session.commit()
        counts = {s.value: sum(r["status"] == s.value for r in results) for s in ingest.Status}
        # Written directly: a thousand results through marshmallow cost more than storing
        # them. The shape is IngestResultSchema's, which documents it.
        return Response(_dumps({"results": results, "counts": counts}), mimetype="application/json")


_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def _tally_rows(results):
    for result in results:
        if result["status"] == "rejected":
            first = result["errors"][0]
            yield "rejected", first["field"], first["message"], result["event_id"]
        else:
            yield result["status"], None, None, None


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None
