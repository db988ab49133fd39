"""Every model of the membership core, imported in one place for the metadata."""

from members.audit import AuditEntry
from members.event import Event, IngestCount, TrackMapping
from members.lifecycle import (
    LifecycleRun,
    MemberFeatures,
    Stage,
    StageDay,
    StageFlow,
    StageTransition,
    TierChange,
    Trigger,
)
from members.loyalty import BenefitGrant, BenefitKind, PointsEntry, PointsKind, PointsLot
from members.member import Channel, ConsentRecord, Member
from members.programme import Cursor, ProgrammeSetting

__all__ = [
    "AuditEntry",
    "BenefitGrant",
    "BenefitKind",
    "Channel",
    "ConsentRecord",
    "Cursor",
    "Event",
    "IngestCount",
    "LifecycleRun",
    "Member",
    "MemberFeatures",
    "PointsEntry",
    "PointsKind",
    "PointsLot",
    "ProgrammeSetting",
    "Stage",
    "StageDay",
    "StageFlow",
    "StageTransition",
    "TierChange",
    "TrackMapping",
    "Trigger",
]
