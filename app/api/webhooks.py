"""Webhooks out through the API: endpoints subscribed to event types (created with a
signing secret shown once), rotated secrets, a test event sent on demand, and each
endpoint's delivery log. Admin scope writes; read scope reads."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView
from flask_smorest import abort
from marshmallow import RAISE, Schema, fields, validate
from sqlalchemy import select

from app import clock, vault
from app.api.auth import BEARER_DOC, api_actor, require_scope
from app.api.blueprint import Blueprint, page_of, refuse
from app.auth.models import Scope
from app.extensions import db
from journeys import webhook_endpoints as endpoints
from journeys import webhook_sending
from journeys.webhook_models import DeliveryStatus, WebhookEndpoint
from members.errors import InvalidFields, NotFound

blp = Blueprint(
    "webhooks",
    __name__,
    url_prefix="/api/v1/webhooks",
    description="Webhooks out (Standard Webhooks): endpoints, secrets, test events, deliveries",
)

TYPES_HELP = "Event types to receive: " + ", ".join(endpoints.EVENT_TYPES)
EXAMPLE = {
    "url": "https://crm.shop.example/webhooks/tenure",
    "event_types": ["member.stage_changed", "benefit.granted"],
    "description": "CRM sync",
}
NO_STORE = {"Cache-Control": "no-store"}


class EndpointIn(Schema):
    class Meta:
        unknown = RAISE

    url = fields.Str(
        required=True,
        validate=validate.Length(min=1, max=endpoints.MAX_URL),
        metadata={"description": "http:// or https:// address; redirects are not followed"},
    )
    event_types = fields.List(
        fields.Str(validate=validate.OneOf(endpoints.EVENT_TYPES)),
        required=True,
        validate=validate.Length(min=1, max=len(endpoints.EVENT_TYPES)),
        metadata={"description": TYPES_HELP},
    )
    description = fields.Str(
        load_default=None, allow_none=True, validate=validate.Length(max=endpoints.MAX_DESCRIPTION)
    )


class EndpointPatch(Schema):
    class Meta:
        unknown = RAISE

    url = fields.Str(validate=validate.Length(min=1, max=endpoints.MAX_URL))
    event_types = fields.List(
        fields.Str(validate=validate.OneOf(endpoints.EVENT_TYPES)),
        validate=validate.Length(min=1, max=len(endpoints.EVENT_TYPES)),
        metadata={"description": TYPES_HELP},
    )
    description = fields.Str(
        allow_none=True, validate=validate.Length(max=endpoints.MAX_DESCRIPTION)
    )
    active = fields.Bool(
        metadata={"description": "false pauses deliveries (they wait); true resumes them"}
    )


class EndpointOut(Schema):
    id = fields.Int()
    url = fields.Str()
    description = fields.Str(allow_none=True)
    event_types = fields.Function(endpoints.types_of, metadata={"example": ["benefit.granted"]})
    active = fields.Bool()
    created_at = fields.DateTime()
    created_by = fields.Str(allow_none=True)
    disabled_at = fields.DateTime(allow_none=True)
    disabled_reason = fields.Str(allow_none=True)


class NewEndpointOut(EndpointOut):
    secret = fields.Str(
        metadata={"description": "whsec_…: verify signatures with it; shown this once, never again"}
    )


class SecretOut(Schema):
    secret = fields.Str(
        metadata={"description": "The new whsec_… secret; the old one signs too for 24 h"}
    )


class TestOut(Schema):
    delivery_id = fields.Int()
    delivered = fields.Bool(metadata={"description": "The endpoint answered 2xx"})
    status_code = fields.Int(allow_none=True)
    error = fields.Str(allow_none=True, metadata={"example": "HTTP 500: database is down"})
    duration_ms = fields.Int()


class AttemptOut(Schema):
    at = fields.DateTime()
    status_code = fields.Int(allow_none=True)
    error = fields.Str(allow_none=True)
    duration_ms = fields.Int()


class DeliveryOut(Schema):
    id = fields.Int()
    event_id = fields.Str(metadata={"description": "The webhook-id header"})
    event_type = fields.Str()
    status = fields.Str(metadata={"example": "pending"})
    attempts = fields.Int()
    next_attempt_at = fields.DateTime(allow_none=True)
    last_status_code = fields.Int(allow_none=True)
    last_error = fields.Str(allow_none=True)
    created_at = fields.DateTime()
    delivered_at = fields.DateTime(allow_none=True)
    payload = fields.Dict()
    attempt_log = fields.List(fields.Nested(AttemptOut))


class DeliveryArgs(Schema):
    status = fields.Enum(DeliveryStatus, by_value=True)


class EventTypesOut(Schema):
    event_types = fields.List(fields.Str())


def _endpoint_or_404(endpoint_id: int) -> WebhookEndpoint:
    try:
        return endpoints.get(db.session, endpoint_id)
    except NotFound:
        abort(404, message=f"no webhook endpoint with id {endpoint_id}")


def _change(action) -> Any:
    """Run a change and commit it; the domain's refusals become a 422 naming the field."""
    try:
        result = action()
    except InvalidFields as exc:
        db.session.rollback()
        refuse(exc.errors)
    db.session.commit()
    return result


@blp.route("")
class Endpoints(MethodView):
    @require_scope(Scope.READ)
    @blp.doc(**BEARER_DOC)
    @blp.response(200, EndpointOut(many=True))
    @blp.paginate()
    def get(self, pagination_parameters):
        """Endpoints, newest first (secrets are never shown)."""
        query = select(WebhookEndpoint).order_by(WebhookEndpoint.id.desc())
        return page_of(db.session, query, pagination_parameters)

    @require_scope(Scope.ADMIN)
    @blp.doc(**BEARER_DOC)
    @blp.arguments(EndpointIn, example=EXAMPLE)
    @blp.response(201, NewEndpointOut)
    def post(self, body):
        """Subscribe an endpoint. The answer carries its signing secret, which is never
        shown again: deliveries are signed per Standard Webhooks with it."""
        endpoint, secret = _change(
            lambda: endpoints.create(
                db.session, **body, vault=vault.current(), actor=api_actor(), now=clock.now()
            )
        )
        endpoint.secret = secret  # transient: answered once, never stored
        return endpoint, 201, NO_STORE


@blp.route("/event-types")
class EventTypes(MethodView):
    @require_scope(Scope.READ)
    @blp.doc(**BEARER_DOC)
    @blp.response(200, EventTypesOut)
    def get(self):
        """The event types an endpoint can subscribe to."""
        return {"event_types": list(endpoints.EVENT_TYPES)}


@blp.route("/<id:endpoint_id>")
class EndpointById(MethodView):
    @require_scope(Scope.READ)
    @blp.doc(**BEARER_DOC)
    @blp.response(200, EndpointOut)
    def get(self, endpoint_id: int):
        """One endpoint."""
        return _endpoint_or_404(endpoint_id)

    @require_scope(Scope.ADMIN)
    @blp.doc(**BEARER_DOC)
    @blp.arguments(EndpointPatch, example={"event_types": ["member.tier_changed"], "active": True})
    @blp.response(200, EndpointOut)
    def patch(self, body, endpoint_id: int):
        """Change an endpoint's address, event types, description, or pause/resume it."""
        endpoint = _endpoint_or_404(endpoint_id)
        return _change(
            lambda: endpoints.update(
                db.session, endpoint, **body, actor=api_actor(), now=clock.now()
            )
        )

    @require_scope(Scope.ADMIN)
    @blp.doc(**BEARER_DOC)
    @blp.response(204)
    def delete(self, endpoint_id: int):
        """Delete an endpoint with its deliveries and their log."""
        endpoint = _endpoint_or_404(endpoint_id)
        _change(lambda: endpoints.delete(db.session, endpoint, actor=api_actor(), now=clock.now()))


@blp.route("/<id:endpoint_id>/rotate-secret")
class RotateSecret(MethodView):
    @require_scope(Scope.ADMIN)
    @blp.doc(**BEARER_DOC)
    @blp.response(200, SecretOut)
    def post(self, endpoint_id: int):
        """A new signing secret, shown this once; the previous one keeps signing beside
        it for 24 hours, so receivers can switch without missing a delivery."""
        endpoint = _endpoint_or_404(endpoint_id)
        secret = _change(
            lambda: endpoints.rotate_secret(
                db.session, endpoint, vault=vault.current(), actor=api_actor(), now=clock.now()
            )
        )
        return {"secret": secret}, 200, NO_STORE


@blp.route("/<id:endpoint_id>/test")
class SendTest(MethodView):
    @require_scope(Scope.ADMIN)
    @blp.doc(**BEARER_DOC)
    @blp.response(200, TestOut)
    def post(self, endpoint_id: int):
        """Send a `webhook.test` event to the endpoint now (even a paused one) and
        answer what it said; logged among its deliveries, never retried."""
        endpoint = _endpoint_or_404(endpoint_id)
        sent = webhook_sending.send_test(
            db.session,
            endpoint.id,
            now=clock.now(),
            vault=vault.current(),
            clock=clock.now,
            commit=db.session.commit,
        )
        return {
            "delivery_id": sent.delivery_id,
            "delivered": sent.ok,
            "status_code": sent.status_code,
            "error": sent.error,
            "duration_ms": sent.duration_ms,
        }


@blp.route("/<id:endpoint_id>/deliveries")
class Deliveries(MethodView):
    @require_scope(Scope.READ)
    @blp.doc(**BEARER_DOC)
    @blp.arguments(DeliveryArgs, location="query")
    @blp.response(200, DeliveryOut(many=True))
    @blp.paginate()
    def get(self, args, endpoint_id: int, pagination_parameters):
        """The endpoint's deliveries, newest first, each with its attempts."""
        _endpoint_or_404(endpoint_id)
        query = endpoints.deliveries(endpoint_id, args.get("status"))
        rows = page_of(db.session, query, pagination_parameters)
        log = endpoints.attempts_of(db.session, [row.id for row in rows])
        for row in rows:
            row.attempt_log = log[row.id]  # transient, for the answer
        return rows
