"""Lifecycle stages, the RFM feature snapshot they are computed from, and transitions."""

from __future__ import annotations

import datetime as dt
import enum
from decimal import Decimal

from sqlalchemy import ForeignKey, Index
from sqlalchemy.orm import Mapped, mapped_column

from members.db import Base, BigId, utcnow


class Stage(enum.StrEnum):
    NEW = "new"
    ACTIVE = "active"
    AT_RISK = "at_risk"
    DORMANT = "dormant"
    LAPSED = "lapsed"
    VIP = "vip"


class MemberFeatures(Base):
    """The RFM snapshot of one member, recomputed set-based by the lifecycle job."""

    __tablename__ = "member_features"

    member_id: Mapped[int] = mapped_column(
        ForeignKey("members.id", ondelete="CASCADE"), primary_key=True
    )
    computed_at: Mapped[dt.datetime]
    last_order_at: Mapped[dt.datetime | None]
    days_since_last_order: Mapped[int | None]
    days_since_joined: Mapped[int] = mapped_column(default=0)
    orders_30d: Mapped[int] = mapped_column(default=0)
    orders_90d: Mapped[int] = mapped_column(default=0)
    orders_365d: Mapped[int] = mapped_column(default=0)
    spend_30d: Mapped[Decimal] = mapped_column(default=Decimal(0))
    spend_90d: Mapped[Decimal] = mapped_column(default=Decimal(0))
    spend_365d: Mapped[Decimal] = mapped_column(default=Decimal(0))
    lifetime_orders: Mapped[int] = mapped_column(default=0)
    lifetime_spend: Mapped[Decimal] = mapped_column(default=Decimal(0))
    average_order_value: Mapped[Decimal | None]
    logins_14d: Mapped[int] = mapped_column(default=0)
    logins_prev_42d: Mapped[int] = mapped_column(default=0)


class StageTransition(Base):
    __tablename__ = "stage_transitions"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id", ondelete="CASCADE"))
    from_stage: Mapped[Stage | None]
    to_stage: Mapped[Stage]
    at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    __table_args__ = (Index(None, "member_id", "at"), Index(None, "to_stage", "at"))
