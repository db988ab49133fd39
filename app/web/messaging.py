"""Message templates and the outbox, as marketers see them: templates listed and edited
with a preview and the SMS counter (refused with the line when they do not lint), and
messages searched by member, journey and status, with why one was held back."""

from __future__ import annotations

from typing import Any

from flask import abort, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_login import current_user, login_required
from sqlalchemy import select

from app import clock
from app.extensions import db
from app.web import bp
from app.web.programme import EDITORS
from journeys import delivery, policies, render, templates
from journeys.definition import CHANNELS
from journeys.models import Journey, MessageStatus, MessageTemplate
from members import audit
from members.fields import mask_phone

REASONS = {
    "erased": "the member was erased",
    "no_consent:sms": "no consent to marketing SMS",
    "no_consent:push": "no consent to marketing push",
    "refused_personalised_marketing": "refused automated personalised marketing (PIPL art. 24)",
    "paused": "sending is paused",
    "quiet_hours": "quiet hours in the member's time zone",
    "frequency_cap": "the member's frequency cap",
}


@bp.get("/templates")
@login_required
def message_templates():
    rows = db.session.scalars(select(MessageTemplate).order_by(MessageTemplate.key)).all()
    lengths = {
        row.key: templates.preview(row.body, channel="sms")
        for row in rows
        if row.channel == "sms" and not templates.lint(row.body)
    }
    return render_template(
        "templates.html", rows=rows, lengths=lengths, can_edit=current_user.role in EDITORS
    )


@bp.route("/templates/new", methods=["GET", "POST"])
@bp.route("/templates/<key>", methods=["GET", "POST"])
@login_required
def edit_template(key: str | None = None):
    found = None
    if key is not None:
        found = db.session.scalar(select(MessageTemplate).where(MessageTemplate.key == key))
        if found is None:
            abort(404)
    values: dict[str, Any] = {
        "key": key or "",
        "name": found.name if found else "",
        "channel": found.channel if found else "sms",
        "title": (found.title or "") if found else "",
        "body": found.body if found else "",
        "deep_link": (found.deep_link or "") if found else "",
        "transactional": found.transactional if found else False,
    }
    errors: dict[str, str] = {}
    shown = None
    if request.method == "POST":
        if current_user.role not in EDITORS:
            abort(403)
        form = request.form
        values.update(
            {name: (form.get(name) or "").strip() for name in ("name", "channel", "title")},
            body=form.get("body") or "",
            deep_link=(form.get("deep_link") or "").strip(),
            transactional=form.get("transactional") == "on",
        )
        if found is None:
            values["key"] = (form.get("key") or "").strip()
        errors = _check(values, creating=found is None)
        if not errors:
            try:
                shown = templates.preview(
                    values["body"],
                    channel=values["channel"],
                    title=values["title"] or None,
                    style=policies.SETTING.load(db.session)[0].sms_style,
                )
            except render.RenderError as exc:
                errors["body"] = str(exc)
        if not errors and form.get("action") == "save":
            saved = _store(found, values)
            flash(_("Template %(key)s saved.", key=saved.key), "success")
            return redirect(url_for("web.message_templates"))
    elif values["body"]:
        shown = _sample(values)
    return (
        render_template(
            "template_edit.html",
            values=values,
            errors=errors,
            shown=shown,
            creating=found is None,
            channels=CHANNELS,
            variables=templates.VARIABLES,
            can_edit=current_user.role in EDITORS,
        ),
        400 if errors else 200,
    )


def _sample(values: dict[str, Any]) -> dict[str, Any] | None:
    try:
        return templates.preview(
            values["body"], channel=values["channel"], title=values["title"] or None
        )
    except (templates.TemplateProblems, render.RenderError):
        return None


def _check(values: dict[str, Any], *, creating: bool) -> dict[str, str]:
    errors: dict[str, str] = {}
    if creating:
        key = values["key"]
        if not templates.KEY.fullmatch(key or ""):
            errors["key"] = _("lower-case letters, digits and _, e.g. winback_50")
        elif db.session.scalar(select(MessageTemplate.id).where(MessageTemplate.key == key)):
            errors["key"] = _("a template %(key)s exists already", key=key)
    if not values["name"] or len(values["name"]) > 200:
        errors["name"] = _("give a name of at most 200 characters")
    if values["channel"] not in CHANNELS:
        errors["channel"] = _("choose SMS or app push")
    errors.update(templates.problems(values["channel"], values["body"], values["title"]))
    return errors


def _store(found: MessageTemplate | None, values: dict[str, Any]) -> MessageTemplate:
    actor = f"user:{current_user.email}"
    template = found or MessageTemplate(key=values["key"])
    template.name, template.channel, template.body = (
        values["name"],
        values["channel"],
        values["body"],
    )
    template.title = values["title"] or None
    template.deep_link = values["deep_link"] or None
    template.transactional = values["transactional"]
    template.updated_by, template.updated_at = actor, clock.now()
    if found is None:
        db.session.add(template)
    audit.record(
        db.session,
        actor=actor,
        action="template.created" if found is None else "template.updated",
        target_type="message_template",
        target_id=template.key,
        details={"body": template.body, "title": template.title},
        now=clock.now(),
    )
    db.session.commit()
    return template


@bp.get("/messages")
@login_required
def messages():
    args = request.args
    status = args.get("status", "")
    query = delivery.outbox(
        member=args.get("member", "").strip(),
        journey=args.get("journey", "").strip(),
        status=status if status in {s.value for s in MessageStatus} else None,
    ).limit(200)
    rows = [
        (message, external_id, mask_phone(phone) if phone else "", journey)
        for message, external_id, phone, journey in db.session.execute(query)
    ]
    journeys = db.session.scalars(select(Journey.key).order_by(Journey.key)).all()
    return render_template(
        "messages.html",
        rows=rows,
        args=args,
        statuses=[s.value for s in MessageStatus],
        journeys=journeys,
        reasons=REASONS,
    )
