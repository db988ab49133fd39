"""Settings pages: API keys and users. Everyone signed in reads; admins change."""

from __future__ import annotations

from flask import abort, flash, redirect, render_template, url_for
from flask_babel import gettext as _
from flask_login import current_user, login_required
from sqlalchemy import select

from app import clock
from app.auth.models import ApiKey, Role, User
from app.auth.service import (
    AuthError,
    create_api_key,
    create_user,
    revoke_api_key,
    update_user,
)
from app.auth.web import role_required
from app.extensions import db
from app.web import bp
from app.web.forms import ApiKeyForm, RevokeForm, UserForm, UserUpdateForm


def _actor() -> str:
    return f"user:{current_user.email}"


@bp.get("/settings/api-keys")
@login_required
def api_keys():
    return _render_keys(ApiKeyForm())


def _render_keys(form: ApiKeyForm, new_secret: str | None = None, status: int = 200):
    keys = db.session.scalars(select(ApiKey).order_by(ApiKey.id.desc())).all()
    return (
        render_template(
            "api_keys.html", keys=keys, form=form, revoke_form=RevokeForm(), new_secret=new_secret
        ),
        status,
        {"Cache-Control": "no-store"} if new_secret else {},
    )


@bp.post("/settings/api-keys")
@role_required(Role.ADMIN)
def create_key():
    form = ApiKeyForm()
    if not form.validate_on_submit():
        return _render_keys(form, status=400)
    try:
        key, secret = create_api_key(
            db.session,
            name=form.name.data,
            scopes=form.scopes.data,
            actor=_actor(),
            now=clock.now(),
            created_by=current_user,
        )
    except AuthError as exc:
        getattr(form, exc.field).errors.append(exc.message)
        return _render_keys(form, status=400)
    db.session.commit()
    flash(_("API key “%(name)s” created. Copy it now: it will not be shown again.", name=key.name))
    # Rendered, not redirected: the secret must not travel in a URL or the session.
    return _render_keys(ApiKeyForm(formdata=None), new_secret=secret, status=201)


@bp.post("/settings/api-keys/<id:key_id>/revoke")
@role_required(Role.ADMIN)
def revoke_key(key_id: int):
    form = RevokeForm()
    if not form.validate_on_submit():
        abort(400)
    key = db.session.get(ApiKey, key_id)
    if key is None:
        abort(404)
    if revoke_api_key(db.session, key, actor=_actor(), now=clock.now()):
        db.session.commit()
        flash(_("API key “%(name)s” revoked.", name=key.name))
    return redirect(url_for("web.api_keys"))


@bp.get("/settings/users")
@login_required
def users():
    return _render_users(UserForm())


def _render_users(form: UserForm, status: int = 200):
    rows = db.session.scalars(select(User).order_by(User.email)).all()
    edits = {u.id: UserUpdateForm(formdata=None, obj=u, prefix=f"u{u.id}") for u in rows}
    return render_template("users.html", users=rows, form=form, edits=edits), status


@bp.post("/settings/users/<id:user_id>")
@role_required(Role.ADMIN)
def update_user_page(user_id: int):
    user = db.session.get(User, user_id)
    if user is None:
        abort(404)
    form = UserUpdateForm(prefix=f"u{user_id}")
    if not form.validate_on_submit():
        flash(_("Choose a valid role."), "error")
        return redirect(url_for("web.users"))
    try:
        changed = update_user(
            db.session,
            user,
            role=form.role.data,
            active=form.active.data,
            actor=_actor(),
            now=clock.now(),
        )
    except AuthError as exc:
        db.session.rollback()
        flash(exc.message, "error")
        return _render_users(UserForm(formdata=None), status=409)
    if changed:
        db.session.commit()
        flash(_("Saved %(email)s.", email=user.email))
    return redirect(url_for("web.users"))


@bp.post("/settings/users")
@role_required(Role.ADMIN)
def create_user_page():
    form = UserForm()
    if not form.validate_on_submit():
        return _render_users(form, status=400)
    try:
        user = create_user(
            db.session,
            email=form.email.data,
            password=form.password.data,
            role=form.role.data,
            actor=_actor(),
            now=clock.now(),
        )
    except AuthError as exc:
        getattr(form, exc.field).errors.append(exc.message)
        return _render_users(form, status=400)
    db.session.commit()
    flash(_("User %(email)s created with role %(role)s.", email=user.email, role=user.role.value))
    return redirect(url_for("web.users"))
