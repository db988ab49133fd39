"""Message templates through the API: list, create, read, update, and preview a text
(rendered for a member or a sample one, with the SMS's length in segments). A template
that does not lint is refused with the line of the problem."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView
from flask_smorest import abort
from marshmallow import RAISE, Schema, fields, validate
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from app import clock, vault
from app.api.auth import BEARER_DOC, api_actor, api_key_identity, require_scope
from app.api.blueprint import Blueprint, page_of, refuse
from app.api.members import member_or_404
from app.auth.models import Scope
from app.extensions import db, limiter
from journeys import engine, policies, render, templates, trial
from journeys.definition import CHANNELS
from journeys.models import MessageTemplate
from members import audit
from members.errors import InvalidFields

blp = Blueprint(
    "templates",
    __name__,
    url_prefix="/api/v1/templates",
    description="Message templates: SMS and push texts that journeys send",
)

BODY_HELP = (
    "Jinja2 text. Variables: member.(" + ", ".join(templates.MEMBER) + "), benefit.(…), "
    "coupon.(" + ", ".join(templates.BENEFIT) + "), context.<anything>; filters money "
    "and date. SMS get the signature and opt-out text added when sent."
)
EXAMPLE = {
    "key": "winback_50",
    "name": "Win-back 50",
    "channel": "sms",
    "body": "{{ member.name }}，为您保留的{{ coupon.value|money }}券"
    "（满{{ coupon.threshold|money }}可用）{{ coupon.expires_at|date }}到期，"
    "券码 {{ coupon.code }}",
}


class TemplateIn(Schema):
    class Meta:
        unknown = RAISE

    name = fields.Str(required=True, validate=validate.Length(min=1, max=200))
    channel = fields.Str(required=True, validate=validate.OneOf(CHANNELS))
    body = fields.Str(required=True, metadata={"description": BODY_HELP})
    title = fields.Str(load_default=None, allow_none=True, validate=validate.Length(max=200))
    deep_link = fields.Str(load_default=None, allow_none=True, validate=validate.Length(max=2000))
    transactional = fields.Bool(
        load_default=False,
        metadata={"description": "Service messages (statements, notices): no marketing rules"},
    )
    priority = fields.Int(
        load_default=0,
        validate=validate.Range(min=0, max=2),
        metadata={
            "description": "Under a tight frequency cap the higher goes first: "
            "0 promotion, 1 reminder (points expiring), 2 care (VIP care)"
        },
    )
    sms_template_code = fields.Str(
        load_default=None,
        allow_none=True,
        validate=validate.Length(max=64),
        metadata={
            "description": "Alibaba SMS: the approved template's code",
            "example": "SMS_154950909",
        },
    )
    sms_approved_text = fields.Str(
        load_default=None,
        allow_none=True,
        validate=validate.Length(max=500),
        metadata={"description": "The approved text with ${variables}, as Alibaba shows it"},
    )
    sms_params = fields.Dict(
        keys=fields.Str(validate=validate.Length(min=1, max=32)),
        values=fields.Str(validate=validate.Length(max=500)),
        load_default=None,
        allow_none=True,
        metadata={
            "description": "Each ${variable} of the approved text and its template expression",
            "example": {"name": "{{ member.name }}", "amount": "{{ coupon.value }}"},
        },
    )


class TemplateCreate(TemplateIn):
    key = fields.Str(
        required=True,
        metadata={"description": "Lower-case letters, digits and _", "example": "winback_50"},
    )


class TemplateOut(Schema):
    key = fields.Str()
    name = fields.Str()
    channel = fields.Str()
    body = fields.Str()
    title = fields.Str(allow_none=True)
    deep_link = fields.Str(allow_none=True)
    transactional = fields.Bool()
    priority = fields.Int()
    sms_template_code = fields.Str(allow_none=True)
    sms_approved_text = fields.Str(allow_none=True)
    sms_params = fields.Dict(allow_none=True)
    length = fields.Dict(metadata={"description": "The sample SMS: characters, encoding, segments"})
    updated_at = fields.DateTime()
    updated_by = fields.Str(allow_none=True)


class PreviewIn(Schema):
    class Meta:
        unknown = RAISE

    channel = fields.Str(required=True, validate=validate.OneOf(CHANNELS))
    body = fields.Str(required=True)
    title = fields.Str(load_default=None, allow_none=True)
    member = fields.Str(
        load_default=None,
        allow_none=True,
        metadata={"description": "A member's external id; a sample member when absent"},
    )
    sms_approved_text = fields.Str(
        load_default=None, allow_none=True, validate=validate.Length(max=500)
    )
    sms_params = fields.Dict(
        keys=fields.Str(validate=validate.Length(min=1, max=32)),
        values=fields.Str(validate=validate.Length(max=500)),
        load_default=None,
        allow_none=True,
    )


class PreviewOut(Schema):
    text = fields.Str()
    title = fields.Str(allow_none=True)
    characters = fields.Int()
    encoding = fields.Str(allow_none=True, metadata={"example": "UCS-2"})
    segments = fields.Int(allow_none=True)


def _refuse(problems: list[templates.LintError], field: str) -> None:
    abort(422, errors={"json": {field: [str(problem) for problem in problems]}})


def _checked(body: dict[str, Any]) -> None:
    found = templates.problems(body["channel"], body["body"], body.get("title"))
    found.update(
        templates.binding_problems(
            body.get("sms_template_code"), body.get("sms_approved_text"), body.get("sms_params")
        )
    )
    if body.get("sms_template_code") and body["channel"] != "sms":
        found["sms_template_code"] = "only SMS templates are bound to approved templates"
    if found:
        refuse(found)


def _out(template: MessageTemplate) -> dict[str, Any]:
    sample = templates.preview(template.body, channel="sms")
    return {
        "key": template.key,
        "name": template.name,
        "channel": template.channel,
        "body": template.body,
        "title": template.title,
        "deep_link": template.deep_link,
        "transactional": template.transactional,
        "priority": template.priority,
        "sms_template_code": template.sms_template_code,
        "sms_approved_text": template.sms_approved_text,
        "sms_params": template.sms_params,
        "length": {k: sample[k] for k in ("characters", "encoding", "segments")},
        "updated_at": template.updated_at,
        "updated_by": template.updated_by,
    }


def _template_or_404(key: str) -> MessageTemplate:
    found = db.session.scalar(select(MessageTemplate).where(MessageTemplate.key == key))
    if found is None:
        abort(404, message=f"no template {key!r}")
    return found


def _audit(action: str, template: MessageTemplate) -> None:
    audit.record(
        db.session,
        actor=api_actor(),
        action=action,
        target_type="message_template",
        target_id=template.key,
        details={"body": template.body, "title": template.title},
        now=clock.now(),
    )


@blp.route("")
class Templates(MethodView):
    @require_scope(Scope.READ, Scope.WRITE)
    @blp.doc(**BEARER_DOC)
    @blp.response(200, TemplateOut(many=True))
    @blp.paginate()
    def get(self, pagination_parameters):
        """Templates by key."""
        query = select(MessageTemplate).order_by(MessageTemplate.key)
        return [_out(row) for row in page_of(db.session, query, pagination_parameters)]

    @require_scope(Scope.WRITE)
    @blp.doc(**BEARER_DOC)
    @blp.arguments(TemplateCreate, example=EXAMPLE)
    @blp.response(201, TemplateOut)
    def post(self, body):
        """Create a template. It is linted: a syntax error, an unknown variable or
        filter is refused with its line."""
        if not templates.KEY.fullmatch(body["key"]):
            abort(422, errors={"json": {"key": ["lower-case letters, digits and _"]}})
        _checked(body)
        template = MessageTemplate(**body, updated_by=api_actor())
        db.session.add(template)
        try:
            db.session.flush()
        except IntegrityError:
            db.session.rollback()
            abort(422, errors={"json": {"key": [f"a template {body['key']!r} exists already"]}})
        _audit("template.created", template)
        db.session.commit()
        return _out(template)


@blp.route("/<key>")
class TemplateByKey(MethodView):
    @require_scope(Scope.READ, Scope.WRITE)
    @blp.doc(**BEARER_DOC)
    @blp.response(200, TemplateOut)
    def get(self, key: str):
        """One template, with its sample SMS length."""
        return _out(_template_or_404(key))

    @require_scope(Scope.WRITE)
    @blp.doc(**BEARER_DOC)
    @blp.arguments(TemplateIn, example={k: v for k, v in EXAMPLE.items() if k != "key"})
    @blp.response(200, TemplateOut)
    def put(self, body, key: str):
        """Replace a template (messages already written keep their text)."""
        template = _template_or_404(key)
        _checked(body)
        for name, value in body.items():
            setattr(template, name, value)
        template.updated_by = api_actor()
        template.updated_at = clock.now()
        _audit("template.updated", template)
        db.session.commit()
        return _out(template)


@blp.route("/preview")
class Preview(MethodView):
    @require_scope(Scope.READ, Scope.WRITE)
    @blp.doc(**BEARER_DOC)
    @blp.arguments(PreviewIn, example={"channel": "sms", "body": EXAMPLE["body"]})
    @blp.response(200, PreviewOut)
    def post(self, body):
        """The text as a member would get it (a sample member unless one is named),
        with an SMS's length and segments; a template that does not lint is a 422
        naming the line."""
        member = member_or_404(body["member"]) if body["member"] else None
        variables = engine.preview_variables(db.session, member, clock.now())
        phone = member.phone if member is not None else "+8613800000000"
        approved = None
        if body["sms_approved_text"]:
            found = templates.binding_problems(
                "SMS_000", body["sms_approved_text"], body["sms_params"] or {}
            )
            if found:
                refuse(found)
            approved = (body["sms_approved_text"], body["sms_params"] or {})
        try:
            return templates.preview(
                body["body"],
                channel=body["channel"],
                variables=variables,
                title=body["title"],
                phone=phone,
                style=policies.SETTING.load(db.session)[0].sms_style,
                approved=approved,
            )
        except templates.TemplateProblems as exc:
            _refuse(exc.problems, "body")
        except render.RenderError as exc:
            abort(422, errors={"json": {"body": [str(exc)]}})


class TestSendIn(Schema):
    class Meta:
        unknown = RAISE

    phone = fields.Str(
        load_default=None,
        allow_none=True,
        validate=validate.Length(max=32),
        metadata={"description": "For an SMS template", "example": "+8613800138000"},
    )
    push_token = fields.Str(load_default=None, allow_none=True, validate=validate.Length(max=512))
    member = fields.Str(
        load_default=None,
        allow_none=True,
        metadata={"description": "Whose variables to use; a sample member when absent"},
    )


class TestSendOut(Schema):
    provider = fields.Str(metadata={"example": "console"})
    result = fields.Str(metadata={"description": "sent, delivered, retry or failed"})
    provider_message_id = fields.Str(allow_none=True)
    error = fields.Str(allow_none=True)
    text = fields.Str()


@blp.route("/<key>/test-send")
class TestSend(MethodView):
    # Each test is a real, billed SMS to any number: a few an hour per key.
    decorators = (limiter.limit("30 per hour", key_func=api_key_identity),)

    @require_scope(Scope.WRITE)
    @blp.doc(**BEARER_DOC)
    @blp.arguments(TestSendIn, example={"phone": "+8613800138000"})
    @blp.response(200, TestSendOut)
    def post(self, body, key: str):
        """Send the template to a phone (or push token) now, through the provider that
        would carry it, and answer what the provider said. Nothing goes to the outbox."""
        template = _template_or_404(key)
        return send_test(template, body, actor=api_actor())


def send_test(template: MessageTemplate, body: dict[str, Any], *, actor: str) -> dict[str, Any]:
    """A test send of ``template``; 422 naming the field."""
    member = member_or_404(body["member"]) if body.get("member") else None
    to = body.get("phone") if template.channel == "sms" else body.get("push_token")
    try:
        answer = trial.send_template(
            db.session,
            vault.current(),
            template,
            to=to or "",
            member=member,
            actor=actor,
            now=clock.now(),
        )
    except InvalidFields as exc:
        refuse(exc.errors)
    db.session.commit()
    return answer
