"""A test send: a template's text to a phone (or push token) the marketer enters, through
the provider that would carry it, there and then, with the provider's answer shown. It
writes no message to the outbox (the phone may be nobody's) but is in the audit log."""

from __future__ import annotations

import datetime as dt
import types
import uuid
from collections.abc import Mapping
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from journeys import accounts, engine, policies, render, templates
from journeys.channel_models import Suppression
from journeys.models import MessageTemplate
from journeys.providers.base import Outcome, Outgoing, Result
from journeys.vault import SecretUnreadable, Vault
from members import audit
from members.errors import InvalidField, InvalidFields
from members.fields import mask_phone, normalise_phone


def send_template(
    session: Session,
    vault: Vault,
    template: MessageTemplate,
    *,
    to: str,
    member=None,
    actor: str,
    now: dt.datetime,
) -> dict[str, Any]:
    """Test-send a saved template, rendered for ``member`` (the sample member when
    None), to the phone or push token ``to``; InvalidFields names what is wrong."""
    field = "phone" if template.channel == "sms" else "push_token"
    if not (to or "").strip():
        raise InvalidFields(
            {
                field: "the phone number to send the test to"
                if field == "phone"
                else "the device's push token"
            }
        )
    if template.channel == "sms":
        try:
            to = normalise_phone(to)
        except InvalidField as exc:
            raise InvalidFields({field: exc.message}) from None
    else:
        to = to.strip()
    variables = engine.preview_variables(session, member, now)
    approved = None
    if template.sms_template_code and template.sms_approved_text:
        approved = (template.sms_approved_text, template.sms_params or {})
    try:
        shown = templates.preview(
            template.body,
            channel=template.channel,
            variables=variables,
            title=template.title,
            phone=to if template.channel == "sms" else None,
            style=policies.SETTING.load(session)[0].sms_style,
            approved=approved,
        )
        params = templates.render_params(template.sms_params or {}, variables)
    except (templates.TemplateProblems, render.RenderError) as exc:
        raise InvalidFields({"body": str(exc)}) from None
    return send(
        session,
        vault,
        channel=template.channel,
        to=to,
        text=shown["text"],
        title=shown["title"],
        template_code=template.sms_template_code,
        params=params,
        actor=actor,
        now=now,
    )


def send(
    session: Session,
    vault: Vault,
    *,
    channel: str,
    to: str,
    text: str,
    title: str | None = None,
    template_code: str | None = None,
    params: Mapping[str, Any] | None = None,
    actor: str,
    now: dt.datetime,
) -> dict[str, Any]:
    """Send one test message; InvalidFields when nothing could carry it."""
    field = "phone" if channel == "sms" else "push_token"
    recipient = types.SimpleNamespace(
        phone=to if channel == "sms" else None, timezone="Asia/Shanghai"
    )
    route = accounts.Router(session).route(channel, recipient)
    if route.error:
        raise InvalidFields({field: route.error})
    blocked = session.scalar(
        select(Suppression.reason).where(Suppression.channel == channel, Suppression.address == to)
    )
    if blocked is not None:
        raise InvalidFields({field: f"this address is on the suppression list ({blocked})"})
    if route.cross_border and policies.in_mainland(recipient):
        raise InvalidFields(
            {
                field: "this provider stores numbers abroad: a test to a mainland number needs "
                "the owner's consent to that (PIPL art. 39), which a test send cannot record"
            }
        )
    if route.account is None:
        outcome = Outcome(Result.DELIVERED, provider_message_id=f"console-{uuid.uuid4().hex[:16]}")
    else:
        try:
            provider = accounts.build(route.account, vault)
        except SecretUnreadable as exc:
            raise InvalidFields({"provider": str(exc)}) from None
        outcome = provider.send_one(
            Outgoing(
                message_id=0,
                dedup_key=f"test-{uuid.uuid4().hex}",
                channel=channel,
                to=to,
                body=text,
                title=title,
                template_code=template_code,
                params=params,
                data={"test": "true"},
            )
        )
    answer = {
        "provider": route.name,
        "result": outcome.result.value,
        "provider_message_id": outcome.provider_message_id,
        "error": outcome.error,
        "text": text,
    }
    audit.record(
        session,
        actor=actor,
        action="message.test_send",
        target_type="provider_account",
        target_id=route.name,
        details={
            "to": mask_phone(to) if channel == "sms" else "(push token)",
            **{k: answer[k] for k in ("result", "provider_message_id", "error")},
        },
        now=now,
    )
    return answer
