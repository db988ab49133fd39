"""Every model of every package, imported so that Base.metadata knows all tables."""

import members.models  # noqa: F401  (every table of the membership core)
from app.auth.models import ApiKey, User
from experiments.models import Assignment, Experiment, Exposure, Variant
from journeys.models import (
    Enrollment,
    GlobalControl,
    Journey,
    JourneyCount,
    JourneyVersion,
    Message,
    MessageTemplate,
    StepRun,
    WebhookEndpoint,
)
from members.models import (
    AuditEntry,
    BenefitGrant,
    ConsentRecord,
    Event,
    Member,
    MemberFeatures,
    PointsLot,
    StageTransition,
)

__all__ = [
    "ApiKey",
    "Assignment",
    "AuditEntry",
    "BenefitGrant",
    "ConsentRecord",
    "Enrollment",
    "Event",
    "Experiment",
    "Exposure",
    "GlobalControl",
    "Journey",
    "JourneyCount",
    "JourneyVersion",
    "Member",
    "MemberFeatures",
    "Message",
    "MessageTemplate",
    "PointsLot",
    "StageTransition",
    "StepRun",
    "User",
    "Variant",
    "WebhookEndpoint",
]
