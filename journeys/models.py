"""Journeys, their immutable versions, enrollments, the message outbox, webhooks out."""

from __future__ import annotations

import datetime as dt
import enum
from typing import Any

from sqlalchemy import ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from members.db import Base, BigId, utcnow


class JourneyStatus(enum.StrEnum):
    DRAFT = "draft"
    ACTIVE = "active"
    PAUSED = "paused"
    ARCHIVED = "archived"


class VersionStatus(enum.StrEnum):
    DRAFT = "draft"
    PENDING_APPROVAL = "pending_approval"
    PUBLISHED = "published"
    SUPERSEDED = "superseded"


class Journey(Base):
    __tablename__ = "journeys"

    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    status: Mapped[JourneyStatus] = mapped_column(default=JourneyStatus.DRAFT)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    versions: Mapped[list[JourneyVersion]] = relationship(
        back_populates="journey", order_by="JourneyVersion.version"
    )


class JourneyVersion(Base):
    """A journey's definition at one version; immutable once published."""

    __tablename__ = "journey_versions"

    id: Mapped[int] = mapped_column(primary_key=True)
    journey_id: Mapped[int] = mapped_column(ForeignKey("journeys.id", ondelete="CASCADE"))
    version: Mapped[int]
    status: Mapped[VersionStatus] = mapped_column(default=VersionStatus.DRAFT)
    # Trigger, entry rules, goal and the graph of steps.
    definition: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_by: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    published_at: Mapped[dt.datetime | None]

    journey: Mapped[Journey] = relationship(back_populates="versions")

    __table_args__ = (UniqueConstraint("journey_id", "version"),)


class EnrollmentState(enum.StrEnum):
    ACTIVE = "active"
    WAITING = "waiting"
    HELD_OUT = "held_out"
    CONVERTED = "converted"
    COMPLETED = "completed"
    EXITED = "exited"


class Enrollment(Base):
    __tablename__ = "enrollments"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    journey_version_id: Mapped[int] = mapped_column(ForeignKey("journey_versions.id"))
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id", ondelete="CASCADE"))
    state: Mapped[EnrollmentState] = mapped_column(default=EnrollmentState.ACTIVE)
    current_step: Mapped[str | None] = mapped_column(String(64))
    next_run_at: Mapped[dt.datetime | None]
    context: Mapped[dict[str, Any]] = mapped_column(default=dict)
    entered_at: Mapped[dt.datetime]
    exited_at: Mapped[dt.datetime | None]
    exit_reason: Mapped[str | None] = mapped_column(String(64))

    # The engine claims due enrollments by (state, next_run_at).
    __table_args__ = (
        Index(None, "state", "next_run_at"),
        Index(None, "member_id"),
        Index(None, "journey_version_id"),
    )


class MessageStatus(enum.StrEnum):
    QUEUED = "queued"
    DEFERRED = "deferred"
    SENDING = "sending"
    SENT = "sent"
    DELIVERED = "delivered"
    SUPPRESSED = "suppressed"
    FAILED = "failed"


class Message(Base):
    """The outbox: written in the transaction that advances an enrollment."""

    __tablename__ = "messages"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    enrollment_id: Mapped[int | None] = mapped_column(ForeignKey("enrollments.id"))
    step: Mapped[str | None] = mapped_column(String(64))
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id", ondelete="CASCADE"))
    channel: Mapped[str] = mapped_column(String(16))
    provider: Mapped[str] = mapped_column(String(32))
    # One (enrollment, step) makes at most one message: this key is unique.
    dedup_key: Mapped[str] = mapped_column(String(200), unique=True)
    template_key: Mapped[str | None] = mapped_column(String(64))
    title: Mapped[str | None] = mapped_column(String(200))
    body: Mapped[str] = mapped_column(Text)
    status: Mapped[MessageStatus] = mapped_column(default=MessageStatus.QUEUED)
    reason: Mapped[str | None] = mapped_column(String(200))
    attempts: Mapped[int] = mapped_column(default=0)
    send_after: Mapped[dt.datetime]
    provider_message_id: Mapped[str | None] = mapped_column(String(128))
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    sent_at: Mapped[dt.datetime | None]
    delivered_at: Mapped[dt.datetime | None]
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    __table_args__ = (
        Index(None, "status", "send_after"),
        Index(None, "member_id", "created_at"),
        Index(None, "provider", "provider_message_id"),
    )


class WebhookEndpoint(Base):
    __tablename__ = "webhook_endpoints"

    id: Mapped[int] = mapped_column(primary_key=True)
    url: Mapped[str] = mapped_column(String(2000))
    # whsec_... stored encrypted with the app's key, never shown back.
    secret_encrypted: Mapped[str] = mapped_column(Text)
    event_types: Mapped[dict[str, Any]] = mapped_column(default=dict)
    active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    disabled_at: Mapped[dt.datetime | None]
    disabled_reason: Mapped[str | None] = mapped_column(String(200))
