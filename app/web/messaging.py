"""Message templates and the outbox, as marketers see them: templates listed and edited
with a preview and the SMS counter (refused with the line when they do not lint), and
messages searched by member, journey and status, with why one was held back."""

from __future__ import annotations

from typing import Any

from flask import abort, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_login import current_user, login_required
from sqlalchemy import select

from app import clock, vault
from app.extensions import db
from app.web import bp
from app.web.programme import EDITORS
from journeys import delivery, engine, policies, render, templates, trial
from journeys.definition import CHANNELS
from journeys.models import Journey, MessageStatus, MessageTemplate
from members import audit
from members.errors import InvalidFields
from members.fields import mask_phone
from members.member import Member

REASONS = {
    "erased": "the member was erased",
    "no_consent:sms": "no consent to marketing SMS",
    "no_consent:push": "no consent to marketing push",
    "refused_personalised_marketing": "refused automated personalised marketing (PIPL art. 24)",
    "no_cross_border_consent": "no consent to send the number or token abroad (PIPL art. 39)",
    "suppression_list": "the address is on the suppression list",
    "no_address:sms": "the member has no phone number",
    "no_address:push": "the member has no push token",
    "paused": "sending is paused",
    "quiet_hours": "quiet hours in the member's time zone",
    "frequency_cap:daily": "the member's daily frequency cap (a higher priority message "
    "may have gone first)",
    "frequency_cap:weekly": "the member's weekly frequency cap",
    "retry": "the provider failed for now; tried again at the time shown",
    "retries_exhausted": "the provider kept failing; gave up",
    "provider_error": "the provider refused it",
    "no_provider": "no provider account serves this member",
    "interrupted": "the worker stopped during the provider call; not sent again",
    "uncertain": "the provider did not answer in time; not sent again, so as never to send twice",
    "undelivered": "the provider reported it undelivered",
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
        "priority": found.priority if found else 0,
        "sms_template_code": (found.sms_template_code or "") if found else "",
        "sms_approved_text": (found.sms_approved_text or "") if found else "",
        "sms_params": _params_text(found.sms_params if found else None),
    }
    errors: dict[str, str] = {}
    shown = test_result = None
    if request.method == "POST":
        if current_user.role not in EDITORS:
            abort(403)
        form = request.form
        values.update(
            {name: (form.get(name) or "").strip() for name in ("name", "channel", "title")},
            body=form.get("body") or "",
            deep_link=(form.get("deep_link") or "").strip(),
            transactional=form.get("transactional") == "on",
            priority=_priority(form.get("priority", "0")),
            sms_template_code=(form.get("sms_template_code") or "").strip(),
            sms_approved_text=(form.get("sms_approved_text") or "").strip(),
            sms_params=form.get("sms_params") or "",
        )
        if found is None:
            values["key"] = (form.get("key") or "").strip()
        errors = _check(values, creating=found is None)
        if not errors:
            try:
                shown = _preview(values, form.get("preview_member", ""))
            except LookupError as exc:
                errors["preview_member"] = str(exc)
            except render.RenderError as exc:
                errors["body"] = str(exc)
        if not errors and form.get("action") == "save":
            saved = _store(found, values)
            flash(_("Template %(key)s saved.", key=saved.key), "success")
            return redirect(url_for("web.message_templates"))
        if not errors and form.get("action") == "test" and found is not None:
            if values != _stored_values(found):
                errors["test_phone"] = _("save the template first: the test sends what is saved")
            else:
                test_result = _test_send(found, form.get("test_phone") or "", errors)
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
            priorities=policies.PRIORITIES,
            test_result=test_result,
            variables=templates.VARIABLES,
            can_edit=current_user.role in EDITORS,
        ),
        400 if errors else 200,
    )


@bp.post("/templates/preview")
@login_required
def live_preview():
    """The editor's live preview (JSON): the text for the sample member and the SMS
    counter, or the first problem, as the marketer types."""
    form = request.form
    values = {
        "channel": form.get("channel", "sms"),
        "title": (form.get("title") or "").strip(),
        "body": form.get("body") or "",
        "sms_approved_text": (form.get("sms_approved_text") or "").strip(),
        "sms_params": form.get("sms_params") or "",
    }
    if values["channel"] not in CHANNELS:
        return {"error": _("choose SMS or app push")}
    found = templates.problems(values["channel"], values["body"], values["title"])
    if values["sms_approved_text"]:
        found.update(
            templates.binding_problems(
                "SMS_000", values["sms_approved_text"], _params(values["sms_params"])
            )
        )
    if found:
        return {"error": "; ".join(found.values())}
    try:
        shown = _preview(values, form.get("preview_member", ""))
    except (templates.TemplateProblems, render.RenderError, LookupError) as exc:
        return {"error": str(exc)}
    counter = ""
    if shown["segments"] is not None:
        counter = _(
            "%(n)d characters, %(e)s: %(s)d SMS",
            n=shown["characters"],
            e=shown["encoding"],
            s=shown["segments"],
        )
    return {"text": shown["text"], "title": shown["title"], "counter": counter}


def _preview(values: dict[str, Any], member_key: str) -> dict[str, Any]:
    """The text for the member named (by external id), or for the sample member;
    LookupError naming an unknown member."""
    member, phone = None, "+8613800000000"
    member_key = (member_key or "").strip()
    if member_key:
        member = db.session.scalar(
            select(Member).where(Member.external_id == member_key, Member.erased_at.is_(None))
        )
        if member is None:
            raise LookupError(_("no member %(m)s", m=member_key))
        phone = member.phone or phone
    variables = engine.preview_variables(db.session, member, clock.now())
    return templates.preview(
        values["body"],
        channel=values["channel"],
        variables=variables,
        title=values["title"] or None,
        phone=phone,
        style=policies.SETTING.load(db.session)[0].sms_style,
        approved=_approved(values),
    )


def _params_text(params: dict[str, str] | None) -> str:
    """An approved template's variables as the form shows them: one "name = value" a line."""
    return "\n".join(f"{name} = {value}" for name, value in (params or {}).items())


def _params(text: str) -> dict[str, str] | None:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return None
    parsed = {}
    for line in lines:
        name, sep, value = line.partition("=")
        parsed[name.strip()] = value.strip() if sep else ""
    return parsed


def _priority(raw: str | None) -> int:
    return int(raw) if raw in {str(p) for p in policies.PRIORITIES} else -1


def _approved(values: dict[str, Any]) -> tuple[str, dict[str, str]] | None:
    if values["channel"] != "sms" or not values["sms_approved_text"]:
        return None
    return values["sms_approved_text"], _params(values["sms_params"]) or {}


def _stored_values(found: MessageTemplate) -> dict[str, Any]:
    return {
        "key": found.key,
        "name": found.name,
        "channel": found.channel,
        "title": found.title or "",
        "body": found.body,
        "deep_link": found.deep_link or "",
        "transactional": found.transactional,
        "priority": found.priority,
        "sms_template_code": found.sms_template_code or "",
        "sms_approved_text": found.sms_approved_text or "",
        "sms_params": _params_text(found.sms_params),
    }


def _test_send(found: MessageTemplate, phone: str, errors: dict[str, str]) -> dict | None:
    """Send the saved template to the phone (or push token) the marketer entered."""
    try:
        answer = trial.send_template(
            db.session,
            vault.current(),
            found,
            to=phone,
            actor=f"user:{current_user.email}",
            now=clock.now(),
        )
    except InvalidFields as exc:
        db.session.rollback()
        errors["test_phone"] = "; ".join(exc.errors.values())
        return None
    db.session.commit()
    return answer


def _sample(values: dict[str, Any]) -> dict[str, Any] | None:
    try:
        return templates.preview(
            values["body"],
            channel=values["channel"],
            title=values["title"] or None,
            approved=_approved(values),
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
    if values["priority"] not in policies.PRIORITIES:
        errors["priority"] = _("choose a priority")
    params = _params(values["sms_params"])
    if params is not None and "" in params:
        errors["sms_params"] = _("write each variable as name = value, one a line")
    else:
        errors.update(
            templates.binding_problems(
                values["sms_template_code"], values["sms_approved_text"], params
            )
        )
    if values["sms_template_code"] and values["channel"] != "sms":
        errors["sms_template_code"] = _("only SMS templates are bound to approved templates")
    return {key.split(".")[0]: message for key, message in errors.items()}


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
    template.priority = values["priority"]
    template.sms_template_code = values["sms_template_code"] or None
    template.sms_approved_text = values["sms_approved_text"] or None
    template.sms_params = _params(values["sms_params"])
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
