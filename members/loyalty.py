"""Points lots and entries, and benefit grants: the loyalty programme's ledger."""

from __future__ import annotations

import datetime as dt
import enum
from decimal import Decimal

from sqlalchemy import BigInteger, ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from members.db import Base, BigId, utcnow


class PointsLot(Base):
    """Points earned together, spent first-to-expire-first, expiring as a lot."""

    __tablename__ = "points_lots"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id", ondelete="CASCADE"))
    points: Mapped[int]
    remaining: Mapped[int]
    earned_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[dt.datetime | None]
    source: Mapped[str] = mapped_column(String(64))
    # The entry that earned it, and when its "points expiring" trigger was emitted.
    entry_id: Mapped[int | None] = mapped_column(BigInteger)
    expiry_notified_at: Mapped[dt.datetime | None]

    __table_args__ = (
        Index(None, "member_id", "expires_at"),
        Index(None, "expires_at", "remaining"),
        Index(None, "entry_id"),
    )


class PointsKind(enum.StrEnum):
    EARN = "earn"
    SPEND = "spend"
    ADJUST = "adjust"
    EXPIRE = "expire"
    REFUND = "refund"  # points of a refunded order taken back


class PointsEntry(Base):
    """One movement of a member's points, appended, never changed: the journal the
    balance and the lots can be rebuilt from."""

    __tablename__ = "points_entries"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id", ondelete="CASCADE"))
    kind: Mapped[PointsKind]
    points: Mapped[int]  # signed: earned > 0, spent or expired < 0
    reason: Mapped[str] = mapped_column(String(200))
    source: Mapped[str] = mapped_column(String(64))  # order, review, api, expiry...
    source_ref: Mapped[str | None] = mapped_column(String(128))  # e.g. the event id
    # Unique: "event:<event id>" or "api:<member id>:<client key>", so a retry is a no-op.
    dedup_key: Mapped[str | None] = mapped_column(String(300), unique=True)
    at: Mapped[dt.datetime]
    expires_at: Mapped[dt.datetime | None]  # of the lot an earning makes
    actor: Mapped[str] = mapped_column(String(320))

    __table_args__ = (Index(None, "member_id", "at"),)


class BenefitKind(enum.StrEnum):
    COUPON = "coupon"
    POINTS = "points"
    MULTIPLIER = "multiplier"
    FREE_SHIPPING = "free_shipping"
    SERVICE = "service"


class BenefitGrant(Base):
    __tablename__ = "benefit_grants"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id", ondelete="CASCADE"))
    kind: Mapped[BenefitKind]
    value: Mapped[Decimal | None]  # yuan off, points, or multiplier
    threshold: Mapped[Decimal | None]  # 满减: spend this much to use the coupon
    code: Mapped[str | None] = mapped_column(String(64))
    # What a service is ("advisor_callback"), or a benefit's wording for the member.
    detail: Mapped[str | None] = mapped_column(String(200))
    expires_at: Mapped[dt.datetime | None]
    # Where it came from: "journey_step" or "experiment_variant" and that thing's id.
    source: Mapped[str] = mapped_column(String(32))
    source_ref: Mapped[str | None] = mapped_column(String(128))
    # A journey step grants once per enrollment and step: this key is unique.
    dedup_key: Mapped[str | None] = mapped_column(String(200), unique=True)
    granted_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    # What the grant costs the shop: a coupon's value once redeemed, or the unit cost a
    # benefit package gives for free shipping, a service or points.
    cost: Mapped[Decimal | None]
    redeemed_at: Mapped[dt.datetime | None]

    # By code: a coupon_redeemed event names the coupon it used.
    __table_args__ = (Index(None, "member_id", "granted_at"), Index(None, "code"))
