"""Events: orders, logins, check-ins and the rest, the largest table."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from sqlalchemy import BigInteger, ForeignKey, Index, SmallInteger, String
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


class TrackMapping(Base):
    """A marketer's mapping of a Segment ``track`` name onto a Tenure event type.

    Rows override or extend ``members.segment.DEFAULT_TRACK_MAPPING``; deleting a row
    that overrides a default restores the default.
    """

    __tablename__ = "track_mappings"

    # The name case-folded: "Order Completed" and "order completed" are one mapping.
    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    event_name: Mapped[str] = mapped_column(String(200))
    event_type: Mapped[str] = mapped_column(String(64))
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_by: Mapped[str] = mapped_column(String(320))


class IngestCount(Base):
    """What came in, per day (in the programme's time zone), door and outcome: the
    counters behind the "Data in" page. Rejections keep their field and reason (with
    the rejected value left out: it may be a phone number), and the id of the last
    message rejected for it so that an engineer can find it. Each counter is split in
    a few shards, summed when read, so that concurrent batches do not queue on one row.
    """

    __tablename__ = "ingest_counts"

    day: Mapped[dt.date] = mapped_column(primary_key=True)
    source: Mapped[str] = mapped_column(String(16), primary_key=True)  # api, segment, csv
    status: Mapped[str] = mapped_column(String(16), primary_key=True)
    field: Mapped[str] = mapped_column(String(64), primary_key=True, default="")
    reason: Mapped[str] = mapped_column(String(200), primary_key=True, default="")
    shard: Mapped[int] = mapped_column(SmallInteger, primary_key=True, default=0)
    count: Mapped[int] = mapped_column(BigInteger)
    example: Mapped[str | None] = mapped_column(String(100))
    last_at: Mapped[dt.datetime]
