"""API keys through the API: list, create (the secret shown once), revoke; admin scope."""

from __future__ import annotations

from flask.views import MethodView
from flask_smorest import abort
from marshmallow import RAISE, Schema, fields, validate
from sqlalchemy import select

from app import clock
from app.api.auth import BEARER_DOC, api_actor, require_scope
from app.api.blueprint import Blueprint, page_of
from app.auth.models import ApiKey, Scope
from app.auth.service import AuthError, create_api_key, revoke_api_key
from app.extensions import db

blp = Blueprint(
    "api_keys", __name__, url_prefix="/api/v1/api-keys", description="API keys (admin scope)"
)


class ApiKeySchema(Schema):
    id = fields.Int(dump_only=True)
    name = fields.Str()
    prefix = fields.Str(metadata={"description": "The visible start of the key"})
    scopes = fields.Function(lambda k: k.scopes.split(","))
    created_at = fields.DateTime()
    last_used_at = fields.DateTime(allow_none=True)
    revoked_at = fields.DateTime(allow_none=True)


class NewApiKeySchema(ApiKeySchema):
    key = fields.Str(
        attribute="secret", metadata={"description": "The secret: shown this once, never again"}
    )


class CreateApiKeySchema(Schema):
    class Meta:
        unknown = RAISE

    name = fields.Str(required=True, validate=validate.Length(min=1, max=100))
    scopes = fields.List(
        fields.Str(validate=validate.OneOf([s.value for s in Scope])),
        required=True,
        validate=validate.Length(min=1),
    )


@blp.route("")
class ApiKeys(MethodView):
    @require_scope(Scope.ADMIN)
    @blp.doc(**BEARER_DOC)
    @blp.response(200, ApiKeySchema(many=True))
    @blp.paginate()
    def get(self, pagination_parameters):
        """List API keys, newest first (secrets are never shown)."""
        query = select(ApiKey).order_by(ApiKey.id.desc())
        return page_of(db.session, query, pagination_parameters)

    @require_scope(Scope.ADMIN)
    @blp.doc(**BEARER_DOC)
    @blp.arguments(CreateApiKeySchema, example={"name": "shop backend", "scopes": ["ingest"]})
    @blp.response(201, NewApiKeySchema)
    def post(self, body):
        """Create an API key; the answer carries its secret, which is never shown again."""
        try:
            key, secret = create_api_key(
                db.session,
                name=body["name"],
                scopes=body["scopes"],
                actor=api_actor(),
                now=clock.now(),
            )
        except AuthError as exc:
            abort(422, errors={"json": {exc.field: [exc.message]}})
        db.session.commit()
        key.secret = secret  # transient: answered once, never stored
        return key, 201, {"Cache-Control": "no-store"}


@blp.route("/<id:key_id>")
class ApiKeyById(MethodView):
    @require_scope(Scope.ADMIN)
    @blp.doc(**BEARER_DOC)
    @blp.response(200, ApiKeySchema)
    def get(self, key_id: int):
        """One API key."""
        return _get_or_404(key_id)

    @require_scope(Scope.ADMIN)
    @blp.doc(**BEARER_DOC)
    @blp.response(204)
    def delete(self, key_id: int):
        """Revoke an API key: it stops working at once; revoking twice changes nothing."""
        key = _get_or_404(key_id)
        revoke_api_key(db.session, key, actor=api_actor(), now=clock.now())
        db.session.commit()


def _get_or_404(key_id: int) -> ApiKey:
    key = db.session.get(ApiKey, key_id)
    if key is None:
        abort(404, message=f"no API key with id {key_id}")
    return key
