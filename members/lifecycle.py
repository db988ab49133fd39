"""Lifecycle stages, the RFM feature snapshot they are computed from, and transitions."""

from __future__ import annotations

import datetime as dt
import enum
from decimal import Decimal

from sqlalchemy import BigInteger, ForeignKey, Index, String
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
    # Reviews, shares and referrals: a way up the tier ladder.
    contributions_30d: Mapped[int] = mapped_column(default=0)
    contributions_90d: Mapped[int] = mapped_column(default=0)
    contributions_365d: Mapped[int] = mapped_column(default=0)


class RunKind(enum.StrEnum):
    FULL = "full"
    INCREMENTAL = "incremental"


class LifecycleRun(Base):
    """One pass of the lifecycle engine: what it covered and what it changed."""

    __tablename__ = "lifecycle_runs"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    kind: Mapped[RunKind]
    as_of: Mapped[dt.datetime]
    started_at: Mapped[dt.datetime]
    seconds: Mapped[float] = mapped_column(default=0.0)
    # Events up to this id had been seen by the run; the next incremental pass looks at
    # members with events after it.
    event_watermark: Mapped[int] = mapped_column(BigInteger, default=0)
    members: Mapped[int] = mapped_column(default=0)
    changed: Mapped[int] = mapped_column(default=0)
    vip_threshold: Mapped[Decimal | None]
    rules_version: Mapped[int] = mapped_column(default=0)  # of the stage rules
    ladder_version: Mapped[int] = mapped_column(default=0)  # of the tier ladder


class StageTransition(Base):
    __tablename__ = "stage_transitions"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id", ondelete="CASCADE"))
    from_stage: Mapped[Stage | None]
    to_stage: Mapped[Stage]
    at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    run_id: Mapped[int | None] = mapped_column(ForeignKey("lifecycle_runs.id", ondelete="SET NULL"))

    __table_args__ = (
        Index(None, "member_id", "at"),
        Index(None, "to_stage", "at"),
        Index(None, "run_id", "member_id"),
        Index(None, "at"),
    )


class TierChange(Base):
    """A member's move on the tier ladder (from_tier None: their first tier)."""

    __tablename__ = "tier_changes"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id", ondelete="CASCADE"))
    from_tier: Mapped[str | None] = mapped_column(String(32))
    to_tier: Mapped[str] = mapped_column(String(32))
    at: Mapped[dt.datetime]
    run_id: Mapped[int | None] = mapped_column(ForeignKey("lifecycle_runs.id", ondelete="SET NULL"))

    __table_args__ = (Index(None, "member_id", "at"), Index(None, "run_id", "member_id"))


class Trigger(Base):
    """Something that happened to a member and that journeys may react to: a stage
    entered or left, a tier changed, points about to expire. Producers append rows;
    the journeys engine reads them (and marks them processed) on its own schedule, so
    that neither calls the other."""

    __tablename__ = "triggers"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))  # stage.entered, stage.exited, ...
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id", ondelete="CASCADE"))
    at: Mapped[dt.datetime]
    # What was entered, left or reached: a stage, a tier key, a points lot id.
    value: Mapped[str | None] = mapped_column(String(64))
    # The row it comes from, e.g. ("stage_transition", 1234).
    source_type: Mapped[str | None] = mapped_column(String(32))
    source_id: Mapped[int | None] = mapped_column(BigInteger)
    processed_at: Mapped[dt.datetime | None]

    __table_args__ = (Index(None, "processed_at", "id"), Index(None, "member_id", "at"))


class StageDay(Base):
    """Members per stage at the end of a day of the programme's calendar: a rollup the
    lifecycle runs keep, so that the dashboard's history is a read of a few rows."""

    __tablename__ = "stage_days"

    day: Mapped[dt.date] = mapped_column(primary_key=True)
    stage: Mapped[str] = mapped_column(String(32), primary_key=True)
    members: Mapped[int]


class StageFlow(Base):
    """Members who moved from one stage to another in a week (Monday to Sunday of the
    programme's calendar); from_stage "" is a member's first stage."""

    __tablename__ = "stage_flows"

    week: Mapped[dt.date] = mapped_column(primary_key=True)
    from_stage: Mapped[str] = mapped_column(String(32), primary_key=True)
    to_stage: Mapped[str] = mapped_column(String(32), primary_key=True)
    members: Mapped[int]
