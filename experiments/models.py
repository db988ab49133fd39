"""Experiments, their variants, the assignments of members, and exposures."""

from __future__ import annotations

import datetime as dt
import enum
from decimal import Decimal
from typing import Any

from sqlalchemy import ForeignKey, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from members.db import Base, BigId, utcnow


class ExperimentStatus(enum.StrEnum):
    DRAFT = "draft"
    RUNNING = "running"
    STOPPED = "stopped"


class Experiment(Base):
    __tablename__ = "experiments"

    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    hypothesis: Mapped[str | None] = mapped_column(Text)
    # Assignment hashes (salt, member id): a new salt reshuffles, so it never changes.
    salt: Mapped[str] = mapped_column(String(64))
    status: Mapped[ExperimentStatus] = mapped_column(default=ExperimentStatus.DRAFT)
    holdout_percent: Mapped[Decimal] = mapped_column(default=Decimal(0))
    audience: Mapped[dict[str, Any]] = mapped_column(default=dict)
    primary_metric: Mapped[str] = mapped_column(String(64), default="retention_90d")
    guardrail_metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    minimum_detectable_effect: Mapped[Decimal | None]
    # How results are read: mode (fixed, group_sequential, always_valid), planned looks,
    # alpha, power, the winsorising percentile, the multiple-testing correction.
    design: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_by: Mapped[str | None] = mapped_column(String(320))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    started_at: Mapped[dt.datetime | None]
    stopped_at: Mapped[dt.datetime | None]

    variants: Mapped[list[Variant]] = relationship(
        back_populates="experiment", order_by="Variant.id", cascade="all, delete-orphan"
    )


class Variant(Base):
    __tablename__ = "variants"

    id: Mapped[int] = mapped_column(primary_key=True)
    experiment_id: Mapped[int] = mapped_column(ForeignKey("experiments.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(64))
    weight: Mapped[int]
    is_control: Mapped[bool] = mapped_column(default=False)
    # The benefit package: a list of benefits under "benefits".
    benefits: Mapped[dict[str, Any]] = mapped_column(default=dict)

    experiment: Mapped[Experiment] = relationship(back_populates="variants")

    __table_args__ = (UniqueConstraint("experiment_id", "key"),)


class Assignment(Base):
    """A member's variant in an experiment, recorded once and never changed."""

    __tablename__ = "assignments"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    experiment_id: Mapped[int] = mapped_column(ForeignKey("experiments.id", ondelete="CASCADE"))
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id", ondelete="CASCADE"))
    variant_id: Mapped[int | None] = mapped_column(ForeignKey("variants.id"))  # None: holdout
    bucket: Mapped[int | None]
    source: Mapped[str] = mapped_column(String(16), default="hash")  # hash | import
    assigned_at: Mapped[dt.datetime]
    # Where the member stood when assigned, for breakdowns (imports leave them empty).
    stage: Mapped[str | None] = mapped_column(String(32))
    tier: Mapped[str | None] = mapped_column(String(64))
    region: Mapped[str | None] = mapped_column(String(64))

    __table_args__ = (UniqueConstraint("experiment_id", "member_id"),)


class Exposure(Base):
    """The moment an assigned member actually received their variant's treatment."""

    __tablename__ = "exposures"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    assignment_id: Mapped[int] = mapped_column(ForeignKey("assignments.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(32))  # benefit_granted | message_delivered
    ref: Mapped[str] = mapped_column(String(128), default="")  # the grant or message
    at: Mapped[dt.datetime]

    # The same grant or delivery is one exposure, however often it is reported.
    __table_args__ = (UniqueConstraint("assignment_id", "kind", "ref"),)
