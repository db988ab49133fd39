"""Exposures through messages: a member an experiment split sent down their variant's
path is exposed when a message of that path is sent or delivered. The engine keeps the
assignment in the enrollment's context at the split; the code that records a message's
new status calls :func:`of_messages` in the same transaction."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from experiments import manage
from experiments.manage import DELIVERED
from journeys.models import Enrollment, Message, MessageStatus


def of_messages(session: Session, message_ids: Iterable[int], now: dt.datetime) -> int:
    """Record an exposure for each of these messages that went out (sent or
    delivered) from an enrollment placed in an experiment; once per message."""
    ids = list(message_ids)
    if not ids:
        return 0
    rows = session.execute(
        select(Message.id, Message.sent_at, Message.delivered_at, Enrollment.context)
        .join(Enrollment, Enrollment.id == Message.enrollment_id)
        .where(
            Message.id.in_(ids),
            Message.status.in_((MessageStatus.SENT, MessageStatus.DELIVERED)),
        )
    )
    exposures = []
    for message_id, sent_at, delivered_at, context in rows:
        placed = (context or {}).get("experiment")
        if not isinstance(placed, dict) or not isinstance(placed.get("assignment"), int):
            continue
        exposures.append(
            {
                "assignment_id": placed["assignment"],
                "kind": DELIVERED,
                "ref": f"message:{message_id}",
                "at": delivered_at or sent_at or now,
            }
        )
    return manage.record_exposures(session, exposures)
