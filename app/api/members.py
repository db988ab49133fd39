"""Members through the API: upsert one or a batch, read, list with a cursor, patch, consent."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterator
from typing import ClassVar

from flask import Response, current_app
from flask.views import MethodView
from flask_smorest import abort
from marshmallow import RAISE, Schema, ValidationError, fields, validate
from sqlalchemy import select

from app import clock
from app.api.auth import BEARER_DOC, api_actor, require_scope
from app.api.blueprint import Blueprint
from app.auth.models import Scope
from app.errors import field_errors
from app.extensions import db
from journeys.models import Message
from members import csv_import, profiles
from members.errors import InvalidField, NotFound
from members.event import Event
from members.lifecycle import Stage
from members.member import Channel, Member

blp = Blueprint(
    "members",
    __name__,
    url_prefix="/api/v1/members",
    description="Members: profiles, consent (scopes: ingest or write to change, read to read)",
)

MAX_BATCH = 1000
CONSENT_SOURCES = validate.Length(min=1, max=64)


class AwareDateTime(fields.AwareDateTime):
    """ISO 8601 with an offset; a naive time is refused, not guessed."""

    default_error_messages: ClassVar[dict[str, str]] = {
        "invalid_awareness": "Give a time zone offset, e.g. 2026-11-23T10:00:00+08:00.",
    }


# Request examples: the interactive docs send them as they are, so they must work.
MEMBER_EXAMPLE = {
    "external_id": "u-1",
    "phone": "13800138000",
    "name": "李娜",
    "timezone": "Asia/Shanghai",
    "region": "上海",
    "birthday": "1990-05-20",
    "attributes": {"channel": "tmall"},
}


class MemberInSchema(Schema):
    class Meta:
        unknown = RAISE

    phone = fields.Str(
        allow_none=True, validate=validate.Length(max=32), metadata={"example": "+8613800138000"}
    )
    name = fields.Str(
        allow_none=True, validate=validate.Length(max=200), metadata={"example": "李娜"}
    )
    timezone = fields.Str(
        validate=validate.Length(min=1, max=64), metadata={"example": "Asia/Shanghai"}
    )
    region = fields.Str(
        allow_none=True, validate=validate.Length(max=64), metadata={"example": "上海"}
    )
    birthday = fields.Date(allow_none=True, metadata={"example": "1990-05-20"})
    joined_at = AwareDateTime(metadata={"example": "2026-01-15T10:00:00+08:00"})
    push_token = fields.Str(allow_none=True, validate=validate.Length(max=512))
    attributes = fields.Dict(
        keys=fields.Str(validate=validate.Length(min=1, max=64)),
        metadata={"example": {"favourite_category": "美妆"}},
    )


class MemberUpsertSchema(MemberInSchema):
    external_id = fields.Str(
        required=True, validate=validate.Length(min=1, max=128), metadata={"example": "u-10001"}
    )


class BatchSchema(Schema):
    class Meta:
        unknown = RAISE

    members = fields.List(
        fields.Dict(), required=True, validate=validate.Length(min=1, max=MAX_BATCH)
    )


class EventBriefSchema(Schema):
    event_id = fields.Str()
    type = fields.Str()
    occurred_at = fields.DateTime()
    # Sent as a string ("199.00"): a JSON number would lose the exact cents.
    amount = fields.Decimal(
        as_string=True, allow_none=True, metadata={"type": "string", "example": "199.00"}
    )
    currency = fields.Str(allow_none=True)


class MemberSchema(Schema):
    external_id = fields.Str()
    phone = fields.Str(allow_none=True)
    name = fields.Str(allow_none=True)
    timezone = fields.Str()
    region = fields.Str(allow_none=True)
    birthday = fields.Date(allow_none=True)
    joined_at = fields.DateTime()
    push_token = fields.Str(allow_none=True)
    attributes = fields.Dict()
    stage = fields.Enum(Stage, by_value=True, allow_none=True)
    stage_since = fields.DateTime(allow_none=True)
    tier = fields.Str(allow_none=True)
    points_balance = fields.Int()
    consent = fields.Function(profiles.consent_of)
    personalised_marketing = fields.Bool()
    erased_at = fields.DateTime(allow_none=True)
    created_at = fields.DateTime()
    updated_at = fields.DateTime()


class MessageBriefSchema(Schema):
    id = fields.Int()
    channel = fields.Str()
    template_key = fields.Str(allow_none=True, data_key="template")
    priority = fields.Int()
    status = fields.Str(metadata={"example": "deferred"})
    reason = fields.Str(
        allow_none=True,
        metadata={"description": "Why a policy held it back", "example": "frequency_cap:daily"},
    )
    send_after = fields.DateTime()
    created_at = fields.DateTime()


class MemberDetailSchema(MemberSchema):
    last_events = fields.List(fields.Nested(EventBriefSchema))
    last_messages = fields.List(
        fields.Nested(MessageBriefSchema),
        metadata={"description": "The last 10 messages, with why one was held back"},
    )


class UpsertResultSchema(Schema):
    index = fields.Int()
    external_id = fields.Str(allow_none=True)
    status = fields.Str(metadata={"description": "created, updated or rejected"})
    errors = fields.List(fields.Dict(), metadata={"description": "for rejected items"})


class BatchResultSchema(Schema):
    results = fields.List(fields.Nested(UpsertResultSchema))
    counts = fields.Dict(keys=fields.Str(), values=fields.Int())


class ListArgsSchema(Schema):
    class Meta:
        unknown = RAISE

    stage = fields.Enum(Stage, by_value=True)
    tier = fields.Str(validate=validate.Length(max=32))
    region = fields.Str(validate=validate.Length(max=64))
    joined_after = AwareDateTime()
    joined_before = AwareDateTime()
    attribute = fields.List(
        fields.Str(
            validate=validate.Regexp(r"^[^:]{1,64}:.{0,200}$", error="Write attribute=key:value.")
        ),
        metadata={"description": "key:value, repeatable; members whose attribute equals it"},
    )
    cursor = fields.Str(validate=validate.Length(max=64))
    limit = fields.Int(load_default=100, validate=validate.Range(min=1, max=500))


class MemberPageSchema(Schema):
    items = fields.List(fields.Nested(MemberSchema))
    next_cursor = fields.Str(allow_none=True, metadata={"description": "pass as ?cursor="})


class ConsentInSchema(Schema):
    class Meta:
        unknown = RAISE

    channels = fields.Dict(
        keys=fields.Enum(Channel, by_value=True),
        values=fields.Bool(),
        required=True,
        validate=validate.Length(min=1),
        metadata={"example": {"sms": True, "push": False}},
    )
    source = fields.Str(
        required=True, validate=CONSENT_SOURCES, metadata={"example": "app_privacy_settings"}
    )
    note = fields.Str(validate=validate.Length(max=500))


class ConsentOutSchema(Schema):
    external_id = fields.Str()
    consent = fields.Dict(keys=fields.Str(), values=fields.Bool())


def _invalid(exc: InvalidField):
    abort(422, errors={"json": {exc.field: [exc.message]}})


@blp.route("")
class Members(MethodView):
    @require_scope(Scope.INGEST, Scope.WRITE)
    @blp.doc(**BEARER_DOC)
    @blp.arguments(MemberUpsertSchema, example=MEMBER_EXAMPLE)
    @blp.response(200, MemberSchema, description="Updated")
    @blp.alt_response(201, schema=MemberSchema, description="Created")
    def post(self, body):
        """Create or update one member by external_id (fields not sent are kept)."""
        external_id = body.pop("external_id")
        try:
            result = profiles.upsert(db.session, external_id, body, clock.now())
        except InvalidField as exc:
            _invalid(exc)
        db.session.commit()
        return result.member, 201 if result.created else 200

    @require_scope(Scope.READ)
    @blp.doc(**BEARER_DOC)
    @blp.arguments(ListArgsSchema, location="query")
    @blp.response(200, MemberPageSchema)
    def get(self, args):
        """List members in a stable order, filtered; follow next_cursor for the next page."""
        filters = _filters(args)
        after = _decode_cursor(args["cursor"]) if "cursor" in args else None
        items, last = profiles.list_page(db.session, filters, after, args["limit"])
        return {"items": items, "next_cursor": _encode_cursor(last) if last else None}


@blp.route("/export.csv")
class MemberExport(MethodView):
    @require_scope(Scope.READ)
    @blp.doc(**BEARER_DOC)
    @blp.arguments(ListArgsSchema, location="query")
    @blp.response(
        200, description="text/csv, UTF-8 with BOM (opens in Excel)", content_type="text/csv"
    )
    def get(self, args):
        """The members matching the list filters, as CSV, streamed."""
        stream = export_stream(current_app._get_current_object(), _filters(args))
        response = Response(stream, mimetype="text/csv")
        response.headers["Content-Disposition"] = 'attachment; filename="members.csv"'
        return response


def export_stream(app, filters: profiles.MemberFilter) -> Iterator[str]:
    """The member export, UTF-8 with BOM (Excel), on a session of its own: the stream
    outlives the request (and its context), and a stream never read to its end holds
    no context open. Read-only, so that on SQLite a slow download blocks no writer."""
    yield "\ufeff"  # before the session starts: a stream closed here touched nothing
    session = db.state(app).sessionmaker()
    try:
        session.connection(execution_options={"read_only": True})
        yield from csv_import.export_members(session, filters)
    finally:
        session.close()


def _filters(args) -> profiles.MemberFilter:
    return profiles.MemberFilter(
        stage=args.get("stage"),
        tier=args.get("tier"),
        region=args.get("region"),
        joined_after=args.get("joined_after"),
        joined_before=args.get("joined_before"),
        attributes=dict(a.split(":", 1) for a in args.get("attribute", [])),
    )


@blp.route("/batch")
class MemberBatch(MethodView):
    @require_scope(Scope.INGEST, Scope.WRITE)
    @blp.doc(**BEARER_DOC)
    @blp.arguments(
        BatchSchema,
        example={"members": [MEMBER_EXAMPLE, {"external_id": "u-2", "name": "王芳"}]},
    )
    @blp.response(200, BatchResultSchema)
    def post(self, body):
        """Upsert up to 1,000 members; each item is answered on its own, and good items
        are stored even when others are rejected."""
        now = clock.now()
        results = []
        item_schema = MemberUpsertSchema()
        for index, raw in enumerate(body["members"]):
            external_id = (
                raw.get("external_id") if isinstance(raw.get("external_id"), str) else None
            )
            try:
                item = item_schema.load(raw)
                with db.session.begin_nested():
                    result = profiles.upsert(db.session, item.pop("external_id"), item, now)
            except ValidationError as exc:
                results.append(_rejected(index, external_id, exc.messages))
                continue
            except InvalidField as exc:
                results.append(_rejected(index, external_id, {exc.field: [exc.message]}))
                continue
            status = "created" if result.created else "updated"
            results.append({"index": index, "external_id": external_id, "status": status})
        db.session.commit()
        counts = {
            s: sum(r["status"] == s for r in results) for s in ("created", "updated", "rejected")
        }
        return {"results": results, "counts": counts}


def _rejected(index: int, external_id: str | None, messages) -> dict:
    return {
        "index": index,
        "external_id": external_id,
        "status": "rejected",
        "errors": field_errors({"json": messages}),
    }


@blp.route("/<string(maxlength=128):external_id>")
class MemberById(MethodView):
    @require_scope(Scope.READ)
    @blp.doc(**BEARER_DOC)
    @blp.response(200, MemberDetailSchema)
    def get(self, external_id: str):
        """One member: profile, stage, tier, points, consent, the last 10 events and the
        last 10 messages (with why one was deferred or suppressed)."""
        member = member_or_404(external_id)
        member.last_events = db.session.scalars(
            select(Event)
            .where(Event.member_id == member.id)
            .order_by(Event.occurred_at.desc())
            .limit(10)
        ).all()
        member.last_messages = db.session.scalars(
            select(Message)
            .where(Message.member_id == member.id)
            .order_by(Message.id.desc())
            .limit(10)
        ).all()
        return member

    @require_scope(Scope.INGEST, Scope.WRITE)
    @blp.doc(**BEARER_DOC)
    @blp.arguments(MemberInSchema, example={"region": "北京", "attributes": {"vip_card": "yes"}})
    @blp.response(200, MemberSchema)
    def patch(self, body, external_id: str):
        """Change some fields of an existing member."""
        member_or_404(external_id)
        try:
            result = profiles.upsert(db.session, external_id, body, clock.now())
        except InvalidField as exc:
            _invalid(exc)
        db.session.commit()
        return result.member

    @require_scope(Scope.INGEST, Scope.WRITE)
    @blp.doc(**BEARER_DOC)
    @blp.response(204)
    def delete(self, external_id: str):
        """Erase the member's personal data (PIPL): phone, name, birthday, push token,
        attributes and event properties are wiped, consent withdrawn; the external id
        stays as a tombstone so late events cannot re-create the member. A new
        identify (POST /members) brings the member back. Erasing twice changes nothing."""
        member = member_or_404(external_id)
        profiles.erase(db.session, member, actor=api_actor(), now=clock.now())
        db.session.commit()


@blp.route("/<string(maxlength=128):external_id>/consent")
class MemberConsent(MethodView):
    @require_scope(Scope.INGEST, Scope.WRITE)
    @blp.doc(**BEARER_DOC)
    @blp.arguments(
        ConsentInSchema,
        example={"channels": {"sms": True, "push": False}, "source": "app_privacy_settings"},
    )
    @blp.response(200, ConsentOutSchema)
    def post(self, body, external_id: str):
        """Grant or withdraw consent per channel; every change goes to the consent log."""
        member = member_or_404(external_id)
        try:
            profiles.set_consent(
                db.session,
                member,
                body["channels"].items(),
                source=body["source"],
                note=body.get("note"),
                now=clock.now(),
            )
        except InvalidField as exc:
            _invalid(exc)
        db.session.commit()
        return {"external_id": member.external_id, "consent": profiles.consent_of(member)}


def member_or_404(external_id: str) -> Member:
    try:
        return profiles.get(db.session, external_id)
    except NotFound:
        abort(404, message=f"no member with external_id {external_id!r}")


def _encode_cursor(member_id: int) -> str:
    return base64.urlsafe_b64encode(f"m{member_id}".encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> int:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        if not raw.startswith("m"):
            raise ValueError
        value = int(raw[1:])
        if value < 0 or value > 2**62:
            raise ValueError
        return value
    except (ValueError, binascii.Error, UnicodeDecodeError):
        abort(422, errors={"query": {"cursor": ["Not a cursor from this API."]}})
