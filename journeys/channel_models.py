"""What messaging keeps beside the outbox: the provider accounts (credentials
encrypted), the suppression list, delivery receipts and inbound replies."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from members.db import Base, BigId, utcnow


class ProviderAccount(Base):
    """One account with a provider (Alibaba SMS, Twilio, JPush, FCM, a webhook): which
    channel it serves for which members, its settings, and its secrets, encrypted."""

    __tablename__ = "provider_accounts"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    kind: Mapped[str] = mapped_column(String(32))
    channel: Mapped[str] = mapped_column(String(16))
    # Whose messages it carries: members in mainland China ("cn"), the others
    # ("other"), or everyone ("all").
    scope: Mapped[str] = mapped_column(String(16), default="all")
    settings: Mapped[dict[str, Any]] = mapped_column(default=dict)
    secrets_encrypted: Mapped[str | None] = mapped_column(Text)
    # The unguessable part of this account's receipt and reply URLs, for providers that
    # sign nothing (Alibaba's report push).
    receipt_token: Mapped[str] = mapped_column(String(64), unique=True)
    active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    updated_by: Mapped[str | None] = mapped_column(String(320))


class Suppression(Base):
    """An address no message may go to (a complaint, a carrier's blacklist, a number
    that bounced), whatever the member's consent says."""

    __tablename__ = "suppressions"

    id: Mapped[int] = mapped_column(primary_key=True)
    channel: Mapped[str] = mapped_column(String(16))
    # An E.164 phone number for SMS, a push token for push.
    address: Mapped[str] = mapped_column(String(512))
    reason: Mapped[str] = mapped_column(String(200))
    source: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    created_by: Mapped[str | None] = mapped_column(String(320))

    __table_args__ = (UniqueConstraint("channel", "address"),)


class Receipt(Base):
    """A delivery receipt as a provider sent it; the same receipt twice is kept once."""

    __tablename__ = "message_receipts"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    provider: Mapped[str] = mapped_column(String(64))
    # The provider's own identity of this report (de-duplicates retried pushes).
    event_key: Mapped[str] = mapped_column(String(200))
    message_id: Mapped[int | None] = mapped_column(ForeignKey("messages.id", ondelete="SET NULL"))
    provider_message_id: Mapped[str | None] = mapped_column(String(128))
    status: Mapped[str] = mapped_column(String(32))
    error_code: Mapped[str | None] = mapped_column(String(64))
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)
    received_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    __table_args__ = (UniqueConstraint("provider", "event_key"), Index(None, "message_id"))


class InboundMessage(Base):
    """An SMS a member sent back (TD, 退订, STOP...): what it said and what it did."""

    __tablename__ = "inbound_messages"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    provider: Mapped[str] = mapped_column(String(64))
    provider_message_id: Mapped[str] = mapped_column(String(128))
    phone: Mapped[str] = mapped_column(String(32))
    member_id: Mapped[int | None] = mapped_column(ForeignKey("members.id", ondelete="SET NULL"))
    body: Mapped[str] = mapped_column(String(1600))
    # "opt_out": SMS consent withdrawn; "none": kept for the record.
    action: Mapped[str] = mapped_column(String(32))
    received_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    __table_args__ = (UniqueConstraint("provider", "provider_message_id"),)
