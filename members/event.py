"""Events: orders, logins, check-ins and the rest, the largest table."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from sqlalchemy import ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from members.db import Base, BigId, utcnow


class Event(Base):
    __tablename__ = "events"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    # The client's id for the event: the idempotency key of ingest.
    event_id: Mapped[str] = mapped_column(String(100), unique=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id", ondelete="CASCADE"))
    type: Mapped[str] = mapped_column(String(64))
    occurred_at: Mapped[dt.datetime]
    received_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    properties: Mapped[dict[str, Any]] = mapped_column(default=dict)
    amount: Mapped[Decimal | None]
    currency: Mapped[str | None] = mapped_column(String(3))
    category: Mapped[str | None] = mapped_column(String(64))

    # Each index costs ingest dearly (DESIGN.md): keep only those a query needs.
    __table_args__ = (
        Index(None, "member_id", "occurred_at"),
        Index(None, "type", "occurred_at"),
    )
