"""Journeys, their immutable versions, enrollments, templates and the message outbox."""

from __future__ import annotations

import datetime as dt
import enum
from typing import Any

from sqlalchemy import BigInteger, ForeignKey, Index, String, Text, UniqueConstraint
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
    description: Mapped[str | None] = mapped_column(Text)
    status: Mapped[JourneyStatus] = mapped_column(default=JourneyStatus.DRAFT)
    # A marketer's version waits for an admin's approval before it goes live.
    needs_approval: Mapped[bool] = mapped_column(default=False)
    # The version new members enter; None until the first publication.
    live_version_id: Mapped[int | None] = mapped_column(
        ForeignKey("journey_versions.id", use_alter=True, ondelete="SET NULL")
    )
    # The ready-made template it was created from, if any.
    template: Mapped[str | None] = mapped_column(String(64))
    created_by: Mapped[str | None] = mapped_column(String(320))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    versions: Mapped[list[JourneyVersion]] = relationship(
        back_populates="journey",
        order_by="JourneyVersion.version",
        foreign_keys="JourneyVersion.journey_id",
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
    created_by: Mapped[str | None] = mapped_column(String(320))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    submitted_by: Mapped[str | None] = mapped_column(String(320))
    submitted_at: Mapped[dt.datetime | None]
    published_by: Mapped[str | None] = mapped_column(String(320))
    published_at: Mapped[dt.datetime | None]

    journey: Mapped[Journey] = relationship(back_populates="versions", foreign_keys=[journey_id])

    __table_args__ = (UniqueConstraint("journey_id", "version"),)


class EnrollmentState(enum.StrEnum):
    ACTIVE = "active"
    WAITING = "waiting"
    HELD_OUT = "held_out"
    CONVERTED = "converted"
    COMPLETED = "completed"
    EXITED = "exited"


class Enrollment(Base):
    """A member's passage through one version of a journey."""

    __tablename__ = "enrollments"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    journey_id: Mapped[int] = mapped_column(ForeignKey("journeys.id", ondelete="CASCADE"))
    journey_version_id: Mapped[int] = mapped_column(ForeignKey("journey_versions.id"))
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id", ondelete="CASCADE"))
    state: Mapped[EnrollmentState] = mapped_column(default=EnrollmentState.ACTIVE)
    current_step: Mapped[str | None] = mapped_column(String(64))
    # How many steps the member has taken: with the enrollment's id it names each step
    # execution, and so each message, grant and webhook call, exactly once.
    seq: Mapped[int] = mapped_column(default=0)
    # When the current step began (a wait for an event looks for events after it).
    step_at: Mapped[dt.datetime | None]
    # The event type a wait_for_event step is waiting for, so that intake can wake it.
    waiting_for: Mapped[str | None] = mapped_column(String(64))
    next_run_at: Mapped[dt.datetime | None]
    context: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # An event-triggered journey's entry key (e.g. the order id): one entry per key.
    entry_key: Mapped[str | None] = mapped_column(String(128))
    entered_at: Mapped[dt.datetime]
    converted_at: Mapped[dt.datetime | None]
    exited_at: Mapped[dt.datetime | None]
    exit_reason: Mapped[str | None] = mapped_column(String(64))

    __table_args__ = (
        # The engine claims due enrollments by (state, next_run_at).
        Index(None, "state", "next_run_at"),
        Index(None, "member_id", "state"),
        # (journey, member) lookups use the unique constraint's index below.
        Index(None, "journey_id", "entered_at"),
        Index(None, "journey_version_id", "state", "current_step"),
        UniqueConstraint("journey_id", "member_id", "entry_key"),
    )


class StepRun(Base):
    """One step executed for one enrollment: the funnel, the dry run's path, and the
    guard that makes each step's effect happen once (unique per enrollment and seq)."""

    __tablename__ = "journey_step_runs"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    enrollment_id: Mapped[int] = mapped_column(ForeignKey("enrollments.id", ondelete="CASCADE"))
    seq: Mapped[int]
    step: Mapped[str] = mapped_column(String(64))
    at: Mapped[dt.datetime]
    # What came of it: the exit taken ("next", "yes", "timeout", a variant's key, ...).
    outcome: Mapped[str | None] = mapped_column(String(64))

    __table_args__ = (UniqueConstraint("enrollment_id", "seq"),)


class JourneyCount(Base):
    """Triggers that did not enroll, per journey, day and reason (audience, re-entry,
    global control, daily cap, unknown or erased member, ...)."""

    __tablename__ = "journey_counts"

    journey_id: Mapped[int] = mapped_column(
        ForeignKey("journeys.id", ondelete="CASCADE"), primary_key=True
    )
    day: Mapped[dt.date] = mapped_column(primary_key=True)
    reason: Mapped[str] = mapped_column(String(32), primary_key=True)
    count: Mapped[int] = mapped_column(BigInteger, default=0)


class GlobalControl(Base):
    """Members of the programme's global control group: once in, always in."""

    __tablename__ = "global_control"

    member_id: Mapped[int] = mapped_column(
        ForeignKey("members.id", ondelete="CASCADE"), primary_key=True
    )
    bucket: Mapped[int]
    since: Mapped[dt.datetime]


class MessageTemplate(Base):
    """A message a send step names by key: SMS (body) or push (title, body, deep link)."""

    __tablename__ = "message_templates"

    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    channel: Mapped[str] = mapped_column(String(16))
    title: Mapped[str | None] = mapped_column(String(200))
    body: Mapped[str] = mapped_column(Text)
    deep_link: Mapped[str | None] = mapped_column(String(2000))
    # Transactional messages (points statements, service notices) skip marketing rules.
    transactional: Mapped[bool] = mapped_column(default=False)
    # Under a tight frequency cap the higher priority goes first (care, points expiry).
    priority: Mapped[int] = mapped_column(default=0, server_default="0")
    # An SMS sent through a provider of approved templates (Alibaba): the approved
    # template's code and text, and each of its ${variables} as a template expression.
    sms_template_code: Mapped[str | None] = mapped_column(String(64))
    sms_approved_text: Mapped[str | None] = mapped_column(Text)
    sms_params: Mapped[dict[str, Any] | None]
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    updated_by: Mapped[str | None] = mapped_column(String(320))


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
    # A service message (statement, notice): consent for marketing, quiet hours and
    # frequency caps do not hold it back.
    transactional: Mapped[bool] = mapped_column(default=False)
    title: Mapped[str | None] = mapped_column(String(200))
    body: Mapped[str] = mapped_column(Text)
    priority: Mapped[int] = mapped_column(default=0, server_default="0")
    # The approved template's variables (TemplateParam), for providers that need them.
    params: Mapped[dict[str, Any] | None]
    status: Mapped[MessageStatus] = mapped_column(default=MessageStatus.QUEUED)
    reason: Mapped[str | None] = mapped_column(String(200))
    attempts: Mapped[int] = mapped_column(default=0)
    send_after: Mapped[dt.datetime]
    # While ``sending``: the claim runs out at claimed_until; started_at is set the
    # moment the provider call begins, so that a message whose worker died before the
    # call is simply due again, and one that died during it is never sent twice.
    claimed_until: Mapped[dt.datetime | None]
    started_at: Mapped[dt.datetime | None]
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


# Delivery claims due messages in this order: an index in it (only of the due ones, a
# small part of the table) spares a sort of the whole backlog for every batch.
Index(
    "ix_messages_due",
    Message.priority.desc(),
    Message.send_after,
    Message.id,
    postgresql_where=Message.status.in_([MessageStatus.QUEUED, MessageStatus.DEFERRED]),
    sqlite_where=Message.status.in_([MessageStatus.QUEUED, MessageStatus.DEFERRED]),
)
