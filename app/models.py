"""Every model of every package, imported so that Base.metadata knows all tables."""

import members.models  # noqa: F401  (every table of the membership core)
from app.auth.models import ApiKey, User
from experiments.models import Assignment, Experiment, Exposure, Variant
from journeys.channel_models import InboundMessage, ProviderAccount, Receipt, Suppression
from journeys.models import (
    Enrollment,
    GlobalControl,
    Journey,
    JourneyCount,
    JourneyVersion,
    Message,
    MessageTemplate,
    StepRun,
)
from journeys.webhook_models import WebhookAttempt, WebhookDelivery, WebhookEndpoint
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
    "InboundMessage",
    "Journey",
    "JourneyCount",
    "JourneyVersion",
    "Member",
    "MemberFeatures",
    "Message",
    "MessageTemplate",
    "PointsLot",
    "ProviderAccount",
    "Receipt",
    "StageTransition",
    "StepRun",
    "Suppression",
    "User",
    "Variant",
    "WebhookAttempt",
    "WebhookDelivery",
    "WebhookEndpoint",
]
