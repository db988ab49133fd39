"""Every model of the membership core, imported in one place for the metadata."""

from members.audit import AuditEntry
from members.event import Event, IngestCount, TrackMapping
from members.lifecycle import MemberFeatures, Stage, StageTransition
from members.loyalty import BenefitGrant, BenefitKind, PointsLot, Tier
from members.member import Channel, ConsentRecord, Member

__all__ = [
    "AuditEntry",
    "BenefitGrant",
    "BenefitKind",
    "Channel",
    "ConsentRecord",
    "Event",
    "IngestCount",
    "Member",
    "MemberFeatures",
    "PointsLot",
    "Stage",
    "StageTransition",
    "Tier",
    "TrackMapping",
]
