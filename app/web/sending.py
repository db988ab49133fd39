"""Sending settings: the send policies (quiet hours, caps, the pause switch, what every
SMS carries), the provider accounts (admins; secrets never shown back) and the
suppression list. Everyone signed in reads; the forms say who may change what."""

from __future__ import annotations

from typing import Any

from flask import abort, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_login import current_user, login_required
from sqlalchemy import select

from app import clock, vault
from app.auth.models import Role
from app.auth.web import role_required
from app.extensions import db
from app.web import bp, programme
from journeys import accounts, policies, providers, suppressions
from journeys.channel_models import ProviderAccount, Suppression
from members.errors import InvalidFields

NUMBERS = ("daily_cap", "weekly_cap", "cap_patience_days")
TEXTS = ("quiet_start", "quiet_end", "signature", "opt_out_cn", "opt_out_other")


def _actor() -> str:
    return f"user:{current_user.email}"


@bp.route("/settings/sending", methods=["GET", "POST"])
@login_required
def sending():
    current, version = policies.SETTING.load(db.session)
    values: dict[str, Any] = current.as_dict()
    errors: dict[str, str] = {}
    if request.method == "POST":
        if not programme.can_edit():
            abort(403)
        form = request.form
        values = {name: (form.get(name) or "").strip() for name in TEXTS}
        for name in NUMBERS:
            raw = (form.get(name) or "").strip()
            # Plain ASCII digits only (not ² or ٣), and short: parse names what is wrong.
            values[name] = int(raw) if raw.isascii() and raw.isdigit() and len(raw) <= 6 else raw
        values["paused"] = form.get("paused") == "on"
        try:
            chosen = policies.parse(values)
        except InvalidFields as exc:
            errors = exc.errors
        else:
            programme.save(policies.SETTING, chosen, rerun=False)
            return redirect(url_for("web.sending"))
    return (
        render_template(
            "sending.html",
            values=values,
            errors=errors,
            version=version,
            can_edit=programme.can_edit(),
        ),
        400 if errors else 200,
    )


@bp.get("/settings/providers")
@login_required
def provider_accounts():
    return _render_providers()


def _render_providers(suppression_errors: dict[str, str] | None = None, status: int = 200):
    rows = db.session.scalars(select(ProviderAccount).order_by(ProviderAccount.name)).all()
    listed = db.session.scalars(select(Suppression).order_by(Suppression.id.desc()).limit(200))
    kinds = [(name, providers.kind(name)) for name in providers.ACCOUNT_KINDS]
    return (
        render_template(
            "providers.html",
            accounts=[accounts.describe(row) for row in rows],
            kinds=kinds,
            suppressions=[(row, suppressions.shown(row)) for row in listed],
            suppression_errors=suppression_errors or {},
            form=request.form if suppression_errors else {},
            is_admin=current_user.role == Role.ADMIN,
            can_edit=programme.can_edit(),
            root=request.url_root.rstrip("/"),
        ),
        status,
    )


@bp.route("/settings/providers/new", methods=["GET", "POST"])
@bp.route("/settings/providers/<string(maxlength=64):name>", methods=["GET", "POST"])
@role_required(Role.ADMIN)
def edit_provider(name: str | None = None):
    account = None
    if name is not None:
        account = db.session.scalar(select(ProviderAccount).where(ProviderAccount.name == name))
        if account is None:
            abort(404)
    kind = account.kind if account else request.values.get("kind", "")
    if kind not in providers.ACCOUNT_KINDS:
        abort(404)
    cls = providers.kind(kind)
    values: dict[str, Any] = {
        "name": account.name if account else "",
        "scope": account.scope if account else "all",
        "active": account.active if account else True,
        "settings": dict(account.settings) if account else {},
    }
    errors: dict[str, str] = {}
    if request.method == "POST":
        form = request.form
        if form.get("action") == "delete" and account is not None:
            return _delete_provider(account)
        values = {
            "name": (form.get("name") or "").strip() if account is None else account.name,
            "kind": kind,
            "scope": form.get("scope", "all"),
            "active": form.get("active") == "on",
            "settings": {f.name: form.get(f"setting_{f.name}", "") for f in cls.fields},
        }
        try:
            saved = accounts.save(
                db.session,
                vault.current(),
                values,
                actor=_actor(),
                now=clock.now(),
                account=account,
            )
        except InvalidFields as exc:
            db.session.rollback()
            errors = exc.errors
        else:
            db.session.commit()
            flash(_("Provider account %(name)s saved.", name=saved.name), "success")
            return redirect(url_for("web.provider_accounts"))
        # Secrets typed in are not echoed back into the page.
        values["settings"] = {
            f.name: values["settings"].get(f.name, "") for f in cls.fields if not f.secret
        }
    return (
        render_template(
            "provider_edit.html",
            account=account,
            cls=cls,
            kind=kind,
            values=values,
            errors=errors,
            scopes=accounts.SCOPES,
            stored=accounts.describe(account) if account else None,
            root=request.url_root.rstrip("/"),
        ),
        400 if errors else 200,
    )


def _delete_provider(account: ProviderAccount):
    accounts.remove(db.session, account, actor=_actor(), now=clock.now())
    db.session.commit()
    flash(_("Provider account %(name)s removed.", name=account.name), "success")
    return redirect(url_for("web.provider_accounts"))


@bp.post("/settings/suppressions")
@login_required
def add_suppression():
    if not programme.can_edit():
        abort(403)
    form = request.form
    try:
        suppressions.add(
            db.session,
            channel=form.get("channel", "sms"),
            address=form.get("address", ""),
            reason=form.get("reason", ""),
            source="page",
            actor=_actor(),
            now=clock.now(),
        )
    except InvalidFields as exc:
        db.session.rollback()
        return _render_providers(exc.errors, status=400)
    except suppressions.AlreadyListed:
        db.session.rollback()
        return _render_providers({"address": _("this address is on the list already")}, 409)
    db.session.commit()
    flash(_("Added to the suppression list."), "success")
    return redirect(url_for("web.provider_accounts"))


@bp.post("/settings/suppressions/<id:suppression_id>/delete")
@login_required
def remove_suppression(suppression_id: int):
    if not programme.can_edit():
        abort(403)
    row = db.session.get(Suppression, suppression_id)
    if row is None:
        abort(404)
    suppressions.remove(db.session, row, actor=_actor(), now=clock.now())
    db.session.commit()
    flash(_("Removed from the suppression list."), "success")
    return redirect(url_for("web.provider_accounts"))
