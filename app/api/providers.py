"""Provider accounts and the suppression list through the API (admins write, readers
read). Secrets go in and never come back out: an account shows only the names of the
secrets it holds."""

from __future__ import annotations

import dataclasses

from flask import g
from flask.views import MethodView
from flask_smorest import abort
from marshmallow import RAISE, Schema, fields, validate
from sqlalchemy import select

from app import clock, vault
from app.api.auth import BEARER_DOC, api_actor, require_scope
from app.api.blueprint import Blueprint, page_of, refuse
from app.auth.models import Scope
from app.extensions import db
from journeys import accounts, providers, suppressions
from journeys.channel_models import ProviderAccount, Suppression
from members.errors import InvalidFields

blp = Blueprint(
    "providers",
    __name__,
    url_prefix="/api/v1",
    description="Messaging providers (SMS, push, webhook accounts) and the suppression list",
)

EXAMPLE = {
    "name": "aliyun",
    "kind": "alibaba",
    "scope": "cn",
    "settings": {
        "access_key_id": "LTAI...",
        "access_key_secret": "(secret)",
        "sign_name": "会员中心",
    },
}


class AccountIn(Schema):
    class Meta:
        unknown = RAISE

    name = fields.Str(required=True, validate=validate.Length(min=1, max=64))
    kind = fields.Str(required=True, validate=validate.OneOf(providers.ACCOUNT_KINDS))
    scope = fields.Str(load_default="all", validate=validate.OneOf(accounts.SCOPES))
    active = fields.Bool(load_default=True)
    settings = fields.Dict(
        keys=fields.Str(validate=validate.Length(max=64)),
        values=fields.Str(allow_none=True, validate=validate.Length(max=20000)),
        load_default=dict,
        metadata={"description": "The kind's settings and secrets (see GET /providers/kinds)"},
    )


class AccountPatch(Schema):
    class Meta:
        unknown = RAISE

    scope = fields.Str(validate=validate.OneOf(accounts.SCOPES))
    active = fields.Bool()
    settings = fields.Dict(
        keys=fields.Str(validate=validate.Length(max=64)),
        values=fields.Str(allow_none=True, validate=validate.Length(max=20000)),
        metadata={"description": "Settings to change; a secret left out or blank is kept"},
    )


class AccountOut(Schema):
    name = fields.Str()
    kind = fields.Str()
    label = fields.Str()
    channel = fields.Str()
    scope = fields.Str()
    active = fields.Bool()
    cross_border = fields.Bool(metadata={"description": "Stores data outside mainland China"})
    settings = fields.Dict()
    secrets = fields.List(fields.Str(), metadata={"description": "Names of stored secrets"})
    receipt_path = fields.Str(
        allow_none=True,
        metadata={
            "description": "Append /receipts or /replies: the provider's callback URLs "
            "(admin keys only)"
        },
    )
    updated_at = fields.DateTime()
    updated_by = fields.Str(allow_none=True)


class FieldOut(Schema):
    name = fields.Str()
    label = fields.Str()
    secret = fields.Bool()
    required = fields.Bool()
    help = fields.Str()
    default = fields.Str(allow_none=True)


class KindOut(Schema):
    kind = fields.Str()
    label = fields.Str()
    channel = fields.Str()
    cross_border = fields.Bool()
    fields_ = fields.List(fields.Nested(FieldOut), data_key="fields")


def _shown(account: ProviderAccount) -> dict:
    """An account as this key may see it: the callback address (the only guard on an
    unsigned provider's receipts and replies) only for admin keys."""
    described = accounts.describe(account)
    if Scope.ADMIN not in g.api_key.scope_set:
        described["receipt_path"] = None
    return described


def _account_or_404(name: str) -> ProviderAccount:
    found = db.session.scalar(select(ProviderAccount).where(ProviderAccount.name == name))
    if found is None:
        abort(404, message=f"no provider account {name!r}")
    return found


@blp.route("/providers/kinds")
class Kinds(MethodView):
    @require_scope(Scope.READ, Scope.WRITE, Scope.ADMIN)
    @blp.doc(**BEARER_DOC)
    @blp.response(200, KindOut(many=True))
    def get(self):
        """The kinds of provider and the settings each asks for."""
        made = []
        for name in providers.ACCOUNT_KINDS:
            cls = providers.kind(name)
            made.append(
                {
                    "kind": name,
                    "label": cls.label,
                    "channel": cls.channel,
                    "cross_border": cls.cross_border,
                    "fields_": [dataclasses.asdict(f) for f in cls.fields],
                }
            )
        return made


@blp.route("/providers")
class Accounts(MethodView):
    @require_scope(Scope.READ, Scope.WRITE, Scope.ADMIN)
    @blp.doc(**BEARER_DOC)
    @blp.response(200, AccountOut(many=True))
    def get(self):
        """Every provider account (a channel without one uses the console)."""
        rows = db.session.scalars(select(ProviderAccount).order_by(ProviderAccount.name))
        return [_shown(row) for row in rows]

    @require_scope(Scope.ADMIN)
    @blp.doc(**BEARER_DOC)
    @blp.arguments(AccountIn, example=EXAMPLE)
    @blp.response(201, AccountOut)
    def post(self, body):
        """Add an account; its secrets are stored encrypted and never shown back."""
        try:
            account = accounts.save(
                db.session, vault.current(), body, actor=api_actor(), now=clock.now()
            )
        except InvalidFields as exc:
            refuse(exc.errors)
        db.session.commit()
        return accounts.describe(account)


@blp.route("/providers/<string(maxlength=64):name>")
class AccountByName(MethodView):
    @require_scope(Scope.READ, Scope.WRITE, Scope.ADMIN)
    @blp.doc(**BEARER_DOC)
    @blp.response(200, AccountOut)
    def get(self, name: str):
        """One account, without its secrets."""
        return _shown(_account_or_404(name))

    @require_scope(Scope.ADMIN)
    @blp.doc(**BEARER_DOC)
    @blp.arguments(AccountPatch, example={"scope": "cn", "active": True})
    @blp.response(200, AccountOut)
    def patch(self, body, name: str):
        """Change an account's scope, switch it on or off, or change settings."""
        account = _account_or_404(name)
        data = {**body, "settings": {**account.settings, **body.get("settings", {})}}
        try:
            accounts.save(
                db.session,
                vault.current(),
                data,
                actor=api_actor(),
                now=clock.now(),
                account=account,
            )
        except InvalidFields as exc:
            refuse(exc.errors)
        db.session.commit()
        return accounts.describe(account)

    @require_scope(Scope.ADMIN)
    @blp.doc(**BEARER_DOC)
    @blp.response(204)
    def delete(self, name: str):
        """Remove an account (messages it carried keep its name)."""
        accounts.remove(db.session, _account_or_404(name), actor=api_actor(), now=clock.now())
        db.session.commit()


class SuppressionIn(Schema):
    class Meta:
        unknown = RAISE

    channel = fields.Str(required=True, validate=validate.OneOf(("sms", "push")))
    address = fields.Str(
        required=True,
        validate=validate.Length(min=1, max=512),
        metadata={"description": "A phone number for sms, a push token for push"},
    )
    reason = fields.Str(required=True, validate=validate.Length(min=1, max=200))


class SuppressionOut(Schema):
    id = fields.Int()
    channel = fields.Str()
    address = fields.Str()
    reason = fields.Str()
    source = fields.Str()
    created_at = fields.DateTime()
    created_by = fields.Str(allow_none=True)


class SuppressionArgs(Schema):
    class Meta:
        unknown = RAISE

    channel = fields.Str(validate=validate.OneOf(("sms", "push")))


@blp.route("/suppressions")
class Suppressions(MethodView):
    @require_scope(Scope.READ, Scope.WRITE, Scope.ADMIN)
    @blp.doc(**BEARER_DOC)
    @blp.arguments(SuppressionArgs, location="query")
    @blp.response(200, SuppressionOut(many=True))
    @blp.paginate()
    def get(self, args, pagination_parameters):
        """Addresses no message may go to, newest first."""
        query = select(Suppression).order_by(Suppression.id.desc())
        if "channel" in args:
            query = query.where(Suppression.channel == args["channel"])
        return page_of(db.session, query, pagination_parameters)

    @require_scope(Scope.WRITE, Scope.ADMIN)
    @blp.doc(**BEARER_DOC)
    @blp.arguments(
        SuppressionIn,
        example={"channel": "sms", "address": "+8613800138000", "reason": "complaint"},
    )
    @blp.response(201, SuppressionOut)
    def post(self, body):
        """Add an address; whatever the member's consent, nothing goes to it."""
        try:
            row = suppressions.add(
                db.session, **body, source="api", actor=api_actor(), now=clock.now()
            )
        except InvalidFields as exc:
            refuse(exc.errors)
        except suppressions.AlreadyListed:
            abort(409, message="this address is on the list already")
        db.session.commit()
        return row


@blp.route("/suppressions/<int(min=1, max=2147483647):suppression_id>")
class SuppressionById(MethodView):
    @require_scope(Scope.WRITE, Scope.ADMIN)
    @blp.doc(**BEARER_DOC)
    @blp.response(204)
    def delete(self, suppression_id: int):
        """Take an address off the list."""
        row = db.session.get(Suppression, suppression_id)
        if row is None:
            abort(404, message=f"no suppression {suppression_id}")
        suppressions.remove(db.session, row, actor=api_actor(), now=clock.now())
        db.session.commit()
