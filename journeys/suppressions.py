"""The suppression list: addresses no message may go to, added and removed by people
(the Sending page, the API), each change in the audit log with the number masked."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select
from sqlalchemy.orm import Session

from journeys.channel_models import Suppression
from members import audit
from members.errors import InvalidField, InvalidFields
from members.fields import mask_phone, normalise_phone

CHANNELS = ("sms", "push")


class AlreadyListed(Exception):
    """The address is on the list already."""


def add(
    session: Session,
    *,
    channel: str,
    address: str,
    reason: str,
    source: str,
    actor: str,
    now: dt.datetime,
) -> Suppression:
    """List an address (a phone number is stored in E.164); InvalidFields names what is
    wrong, AlreadyListed when it is there."""
    errors: dict[str, str] = {}
    address, reason = (address or "").strip(), (reason or "").strip()
    if channel not in CHANNELS:
        errors["channel"] = "sms or push"
    elif channel == "sms":
        try:
            address = normalise_phone(address)
        except InvalidField as exc:
            errors["address"] = exc.message
    elif not address or len(address) > 512:
        errors["address"] = "the device's push token"
    if not reason or len(reason) > 200:
        errors["reason"] = "say why, in at most 200 characters"
    if errors:
        raise InvalidFields(errors)
    listed = session.scalar(
        select(Suppression.id).where(Suppression.channel == channel, Suppression.address == address)
    )
    if listed is not None:
        raise AlreadyListed(address)
    row = Suppression(
        channel=channel,
        address=address,
        reason=reason,
        source=source,
        created_at=now,
        created_by=actor,
    )
    session.add(row)
    session.flush()
    _audit(session, "suppression.add", row, actor, now)
    return row


def remove(session: Session, row: Suppression, *, actor: str, now: dt.datetime) -> None:
    _audit(session, "suppression.remove", row, actor, now)
    session.delete(row)
    session.flush()


def shown(row: Suppression) -> str:
    """The address as lists show it: a phone masked, a token cut short."""
    return mask_phone(row.address) if row.channel == "sms" else row.address[:12] + "…"


def _audit(session: Session, action: str, row: Suppression, actor: str, now: dt.datetime):
    audit.record(
        session,
        actor=actor,
        action=action,
        target_type="suppression",
        target_id=row.channel,
        details={"address": shown(row), "reason": row.reason},
        now=now,
    )
