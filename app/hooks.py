"""Where providers call back: delivery receipts and SMS replies, one URL pair per
provider account. The URL carries the account's unguessable token (Alibaba signs
nothing); providers that sign (Twilio) are verified by their own scheme as well."""

from __future__ import annotations

from flask import Blueprint, abort, jsonify, request

from app import clock, vault
from app.extensions import db
from journeys import accounts, receipts
from journeys.providers.base import BadSignature, Callback
from journeys.vault import SecretUnreadable

bp = Blueprint("hooks", __name__, url_prefix="/hooks/providers")


def _callback() -> Callback:
    return Callback(
        url=request.url,
        headers=dict(request.headers),
        form=request.form,
        body=request.get_data(cache=True),
    )


def _provider(token: str):
    account = receipts.account_by_token(db.session, token)
    if account is None or not account.active:
        abort(404, "no active provider account has this callback address")
    try:
        return account, accounts.build(account, vault.current())
    except SecretUnreadable as exc:
        abort(503, str(exc))


def _answer(provider):
    body, status = provider.receipt_answer()
    if isinstance(body, dict | list):
        return jsonify(body), status
    return body, status, {"Content-Type": "text/xml" if body.startswith("<") else "text/plain"}


@bp.post("/<string(maxlength=64):token>/receipts")
def provider_receipts(token: str):
    """A provider's delivery receipts for messages Tenure sent through it."""
    return _take(token, "receipts", receipts.record_reports)


@bp.post("/<string(maxlength=64):token>/replies")
def provider_replies(token: str):
    """SMS replies from members; "TD", "退订", "STOP"... withdraw SMS consent at once."""
    return _take(token, "replies", receipts.record_replies)


def _take(token: str, what: str, record):
    """Read the callback with the account's provider (403 if it is not genuine), record
    what it says, and answer as the provider expects."""
    account, provider = _provider(token)
    try:
        items = getattr(provider, what)(_callback())
    except BadSignature as exc:
        abort(403, f"not genuine {provider.label} {what}: {exc}")
    record(db.session, account, items, now=clock.now())
    db.session.commit()
    return _answer(provider)
