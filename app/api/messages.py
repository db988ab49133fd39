"""The outbox through the API (read): messages by member, journey, status and channel,
newest first, a cursor page at a time, each with the reason a policy gave when it held
the message back."""

from __future__ import annotations

import base64

from flask.views import MethodView
from flask_smorest import abort
from marshmallow import RAISE, Schema, fields, validate

from app.api.auth import BEARER_DOC, require_scope
from app.api.blueprint import Blueprint
from app.auth.models import Scope
from app.extensions import db
from journeys import delivery
from journeys.models import Message, MessageStatus
from members.fields import mask_phone

blp = Blueprint(
    "messages",
    __name__,
    url_prefix="/api/v1/messages",
    description="The outbox: every message, its status and why",
)


class MessageArgs(Schema):
    class Meta:
        unknown = RAISE

    member = fields.Str(validate=validate.Length(max=128), metadata={"description": "External id"})
    journey = fields.Str(validate=validate.Length(max=64), metadata={"description": "Journey key"})
    status = fields.Enum(MessageStatus, by_value=True)
    channel = fields.Str(validate=validate.OneOf(("sms", "push", "webhook")))
    cursor = fields.Str(validate=validate.Length(max=64))
    limit = fields.Int(load_default=100, validate=validate.Range(min=1, max=500))


class MessageOut(Schema):
    id = fields.Int()
    member = fields.Str()
    phone = fields.Str(allow_none=True, metadata={"description": "Masked"})
    journey = fields.Str(allow_none=True)
    step = fields.Str(allow_none=True)
    channel = fields.Str()
    provider = fields.Str()
    template = fields.Str(allow_none=True)
    transactional = fields.Bool()
    title = fields.Str(allow_none=True)
    body = fields.Str()
    status = fields.Str(metadata={"example": "deferred"})
    reason = fields.Str(allow_none=True, metadata={"example": "quiet_hours"})
    send_after = fields.DateTime()
    attempts = fields.Int()
    error = fields.Str(allow_none=True)
    created_at = fields.DateTime()
    sent_at = fields.DateTime(allow_none=True)
    delivered_at = fields.DateTime(allow_none=True)


class MessagePage(Schema):
    items = fields.List(fields.Nested(MessageOut))
    next_cursor = fields.Str(allow_none=True, metadata={"description": "pass as ?cursor="})


def _encode(message_id: int) -> str:
    return base64.urlsafe_b64encode(f"g{message_id}".encode()).decode().rstrip("=")


def _decode(cursor: str) -> int:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        value = int(raw[1:]) if raw.startswith("g") else -1
    except (ValueError, UnicodeDecodeError):
        value = -1
    if not 0 < value <= 2**62:
        abort(422, errors={"query": {"cursor": ["not a cursor this API gave"]}})
    return value


@blp.route("")
class Messages(MethodView):
    @require_scope(Scope.READ, Scope.WRITE)
    @blp.doc(**BEARER_DOC)
    @blp.arguments(MessageArgs, location="query")
    @blp.response(200, MessagePage)
    def get(self, args):
        """Messages, newest first, with filters."""
        query = delivery.outbox(
            member=args.get("member"),
            journey=args.get("journey"),
            status=args["status"].value if "status" in args else None,
            channel=args.get("channel"),
        ).limit(args["limit"])
        if "cursor" in args:
            query = query.where(Message.id < _decode(args["cursor"]))
        rows = db.session.execute(query).all()
        items = [
            {
                "id": message.id,
                "member": external_id,
                "phone": mask_phone(phone) if phone else None,
                "journey": journey,
                "step": message.step,
                "channel": message.channel,
                "provider": message.provider,
                "template": message.template_key,
                "transactional": message.transactional,
                "title": message.title,
                "body": message.body,
                "status": message.status.value,
                "reason": message.reason,
                "send_after": message.send_after,
                "attempts": message.attempts,
                "error": message.error,
                "created_at": message.created_at,
                "sent_at": message.sent_at,
                "delivered_at": message.delivered_at,
            }
            for message, external_id, phone, journey in rows
        ]
        full = len(rows) == args["limit"]
        return {"items": items, "next_cursor": _encode(rows[-1][0].id) if full else None}
