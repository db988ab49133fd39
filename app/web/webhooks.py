"""Webhooks out, as admins manage them: endpoints listed with their delivery counts,
subscribed (the signing secret shown once), edited, paused, rotated, deleted; a test
event sent on demand; and each endpoint's delivery log with every attempt. Everyone
signed in reads; admins change."""

from __future__ import annotations

from types import SimpleNamespace

from flask import abort, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user, login_required
from flask_wtf import FlaskForm
from sqlalchemy import select
from wtforms import BooleanField, SelectMultipleField, StringField, URLField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, Length
from wtforms.widgets import CheckboxInput, ListWidget

from app import clock, vault
from app.auth.models import Role
from app.auth.web import role_required
from app.extensions import db
from app.web import bp
from journeys import webhook_endpoints as endpoints
from journeys import webhook_sending
from journeys.webhook_models import DeliveryStatus, WebhookEndpoint
from members.errors import InvalidFields, NotFound

LOG_ROWS = 50


class EndpointForm(FlaskForm):
    url = URLField(
        _l("Endpoint URL"),
        validators=[DataRequired(), Length(max=endpoints.MAX_URL)],
        description=_l("Where Tenure POSTs events, e.g. https://crm.example.com/webhooks/tenure"),
    )
    event_types = SelectMultipleField(
        _l("Events"),
        choices=[SelectChoice(t, t) for t in endpoints.EVENT_TYPES],
        validators=[DataRequired(message=_l("Choose at least one event type."))],
        option_widget=CheckboxInput(),
        widget=ListWidget(prefix_label=False),
    )
    description = StringField(_l("Description"), validators=[Length(max=endpoints.MAX_DESCRIPTION)])


class EditEndpointForm(EndpointForm):
    active = BooleanField(_l("Active (unticked: deliveries wait until it is ticked again)"))


class ActionForm(FlaskForm):
    """Only the CSRF token: test, rotate and delete take no other input."""


def _actor() -> str:
    return f"user:{current_user.email}"


def _endpoint_or_404(endpoint_id: int) -> WebhookEndpoint:
    try:
        return endpoints.get(db.session, endpoint_id)
    except NotFound:
        abort(404)


def _refused(form: FlaskForm, exc: InvalidFields) -> None:
    db.session.rollback()
    for name, message in exc.errors.items():
        getattr(form, name).errors = [*getattr(form, name).errors, message]


@bp.get("/settings/webhooks")
@login_required
def webhooks():
    return _render_list(EndpointForm(formdata=None))


def _render_list(form: EndpointForm, new_secret: str | None = None, status: int = 200):
    rows = db.session.scalars(select(WebhookEndpoint).order_by(WebhookEndpoint.id.desc())).all()
    counts = endpoints.status_counts(db.session, [row.id for row in rows])
    return (
        render_template(
            "webhooks.html",
            rows=rows,
            counts=counts,
            form=form,
            new_secret=new_secret,
            types_of=endpoints.types_of,
            can_edit=current_user.role == Role.ADMIN,
        ),
        status,
        {"Cache-Control": "no-store"} if new_secret else {},
    )


@bp.post("/settings/webhooks")
@role_required(Role.ADMIN)
def create_webhook():
    form = EndpointForm()
    if not form.validate_on_submit():
        return _render_list(form, status=400)
    try:
        endpoint, secret = endpoints.create(
            db.session,
            url=form.url.data,
            event_types=form.event_types.data,
            description=form.description.data,
            vault=vault.current(),
            actor=_actor(),
            now=clock.now(),
        )
    except InvalidFields as exc:
        _refused(form, exc)
        return _render_list(form, status=400)
    db.session.commit()
    flash(
        _(
            "Endpoint %(url)s subscribed. Copy its secret now: it will not be shown again.",
            url=endpoint.url,
        )
    )
    # Rendered, not redirected: the secret must not travel in a URL or the session.
    return _render_list(EndpointForm(formdata=None), new_secret=secret, status=201)


@bp.get("/settings/webhooks/<id:endpoint_id>")
@login_required
def webhook(endpoint_id: int):
    endpoint = _endpoint_or_404(endpoint_id)
    return _render_one(endpoint, EditEndpointForm(formdata=None, obj=_values(endpoint)))


def _values(endpoint: WebhookEndpoint) -> SimpleNamespace:
    """The endpoint as the edit form shows it."""
    return SimpleNamespace(
        url=endpoint.url,
        event_types=endpoints.types_of(endpoint),
        description=endpoint.description or "",
        active=endpoint.active,
    )


def _render_one(
    endpoint: WebhookEndpoint,
    form: EditEndpointForm,
    new_secret: str | None = None,
    status: int = 200,
):
    wanted = request.args.get("status", "")
    chosen = DeliveryStatus(wanted) if wanted in {s.value for s in DeliveryStatus} else None
    query = endpoints.deliveries(endpoint.id, chosen).limit(LOG_ROWS)
    rows = db.session.scalars(query).all()
    return (
        render_template(
            "webhook.html",
            endpoint=endpoint,
            form=form,
            action_form=ActionForm(),
            rows=rows,
            attempts=endpoints.attempts_of(db.session, [row.id for row in rows]),
            counts=endpoints.status_counts(db.session, [endpoint.id])[endpoint.id],
            statuses=[s.value for s in DeliveryStatus],
            chosen=wanted if chosen else "",
            new_secret=new_secret,
            types_of=endpoints.types_of,
            can_edit=current_user.role == Role.ADMIN,
        ),
        status,
        {"Cache-Control": "no-store"} if new_secret else {},
    )


@bp.post("/settings/webhooks/<id:endpoint_id>")
@role_required(Role.ADMIN)
def update_webhook(endpoint_id: int):
    endpoint = _endpoint_or_404(endpoint_id)
    form = EditEndpointForm()
    if not form.validate_on_submit():
        return _render_one(endpoint, form, status=400)
    try:
        endpoints.update(
            db.session,
            endpoint,
            url=form.url.data,
            event_types=form.event_types.data,
            description=form.description.data,
            active=form.active.data,
            actor=_actor(),
            now=clock.now(),
        )
    except InvalidFields as exc:
        _refused(form, exc)
        return _render_one(_endpoint_or_404(endpoint_id), form, status=400)
    db.session.commit()
    flash(_("Saved %(url)s.", url=endpoint.url))
    return redirect(url_for("web.webhook", endpoint_id=endpoint.id))


@bp.post("/settings/webhooks/<id:endpoint_id>/test")
@role_required(Role.ADMIN)
def test_webhook(endpoint_id: int):
    if not ActionForm().validate_on_submit():
        abort(400)
    endpoint = _endpoint_or_404(endpoint_id)
    sent = webhook_sending.send_test(
        db.session,
        endpoint.id,
        now=clock.now(),
        vault=vault.current(),
        clock=clock.now,
        commit=db.session.commit,
    )
    if sent.ok:
        flash(
            _(
                "Test event delivered: HTTP %(code)s in %(ms)s ms.",
                code=sent.status_code,
                ms=sent.duration_ms,
            ),
            "success",
        )
    else:
        flash(_("Test event failed: %(error)s", error=sent.error), "error")
    return redirect(url_for("web.webhook", endpoint_id=endpoint_id))


@bp.post("/settings/webhooks/<id:endpoint_id>/rotate")
@role_required(Role.ADMIN)
def rotate_webhook_secret(endpoint_id: int):
    if not ActionForm().validate_on_submit():
        abort(400)
    endpoint = _endpoint_or_404(endpoint_id)
    secret = endpoints.rotate_secret(
        db.session, endpoint, vault=vault.current(), actor=_actor(), now=clock.now()
    )
    db.session.commit()
    flash(_("New secret made. The previous one keeps signing beside it for 24 hours."))
    form = EditEndpointForm(formdata=None, obj=_values(endpoint))
    return _render_one(endpoint, form, new_secret=secret)


@bp.post("/settings/webhooks/<id:endpoint_id>/delete")
@role_required(Role.ADMIN)
def delete_webhook(endpoint_id: int):
    if not ActionForm().validate_on_submit():
        abort(400)
    endpoint = _endpoint_or_404(endpoint_id)
    url = endpoint.url
    endpoints.delete(db.session, endpoint, actor=_actor(), now=clock.now())
    db.session.commit()
    flash(_("Endpoint %(url)s deleted with its delivery log.", url=url))
    return redirect(url_for("web.webhooks"))
