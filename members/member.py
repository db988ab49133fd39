"""Members and the record of their consent (PIPL art. 14-15)."""

from __future__ import annotations

import datetime as dt
import enum
from typing import Any

from sqlalchemy import ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from members.db import Base, BigId, utcnow
from members.lifecycle import Stage

DEFAULT_TIMEZONE = "Asia/Shanghai"


class Channel(enum.StrEnum):
    SMS = "sms"
    PUSH = "push"
    EMAIL = "email"
    WEBHOOK = "webhook"
    # Not channels but consents recorded the same way: PIPL art. 39 (a phone number or
    # push token may leave mainland China, to Twilio or FCM) and art. 24 (automated,
    # personalised marketing as a whole; granted until the member refuses it).
    CROSS_BORDER = "cross_border"
    PERSONALISED_MARKETING = "personalised_marketing"


class Member(Base):
    __tablename__ = "members"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    external_id: Mapped[str] = mapped_column(String(128), unique=True)
    phone: Mapped[str | None] = mapped_column(String(20))  # E.164
    name: Mapped[str | None] = mapped_column(String(200))
    timezone: Mapped[str] = mapped_column(String(64), default=DEFAULT_TIMEZONE)
    region: Mapped[str | None] = mapped_column(String(64))
    tier: Mapped[str | None] = mapped_column(String(32))
    tier_since: Mapped[dt.datetime | None]
    # Set while the member falls short of their tier: they move down when it passes.
    tier_grace_until: Mapped[dt.datetime | None]
    points_balance: Mapped[int] = mapped_column(default=0)
    joined_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    birthday: Mapped[dt.date | None]
    push_token: Mapped[str | None] = mapped_column(String(512))
    attributes: Mapped[dict[str, Any]] = mapped_column(default=dict)
    stage: Mapped[Stage | None]
    stage_since: Mapped[dt.datetime | None]
    # The current consent per channel; consent_log holds how it came to be.
    consent_sms: Mapped[bool] = mapped_column(default=False)
    consent_push: Mapped[bool] = mapped_column(default=False)
    consent_email: Mapped[bool] = mapped_column(default=False)
    consent_webhook: Mapped[bool] = mapped_column(default=False)
    # PIPL art. 24: the member may refuse automated, personalised marketing as a whole.
    personalised_marketing: Mapped[bool] = mapped_column(default=True)
    # PIPL art. 39: separate consent before a phone number or push token leaves China.
    cross_border_consent: Mapped[bool] = mapped_column(default=False)
    erased_at: Mapped[dt.datetime | None]
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    __table_args__ = (Index(None, "stage"), Index(None, "phone"))

    def __repr__(self) -> str:
        return f"<Member {self.external_id}>"


class ConsentRecord(Base):
    """One grant or withdrawal of consent for one channel, appended, never changed."""

    __tablename__ = "consent_log"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id", ondelete="CASCADE"))
    channel: Mapped[str] = mapped_column(String(32))
    granted: Mapped[bool]
    source: Mapped[str] = mapped_column(String(64))
    at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    note: Mapped[str | None] = mapped_column(String(500))

    __table_args__ = (Index(None, "member_id", "at"),)
