"""Deterministic, sticky assignment of members to an experiment's variants.

A member's bucket is a hash of the experiment's salt and the member's external id into
10,000 buckets: the same answer on any process or machine. The first buckets, as many
as the holdout's share, are the holdout; the rest are shared out by weight. The first
answer is recorded in ``assignments`` (unique per experiment and member) and is the
answer forever after, whatever the weights become.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.orm import Session

from experiments.models import Assignment, Experiment, Variant
from members import bulk

BUCKETS = 10_000
HOLDOUT = "holdout"


def bucket(salt: str, external_id: str) -> int:
    digest = hashlib.sha256(f"{salt}:{external_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS


def variant_for(experiment: Experiment, number: int) -> Variant | None:
    """The variant that owns bucket ``number`` (None: the holdout)."""
    holdout = int(Decimal(experiment.holdout_percent) * BUCKETS / 100)
    if number < holdout:
        return None
    variants = list(experiment.variants)
    total = sum(v.weight for v in variants)
    if not variants or total <= 0:
        return None
    position = (number - holdout) * total // (BUCKETS - holdout)
    for variant in variants:
        if position < variant.weight:
            return variant
        position -= variant.weight
    return variants[-1]


def assign(
    session: Session, experiment: Experiment, member_id: int, external_id: str, now: dt.datetime
) -> str:
    """The member's variant key (or "holdout"), recorded on first asking."""
    recorded = _recorded(session, experiment.id, member_id)
    if recorded is None:
        number = bucket(experiment.salt, external_id)
        variant = variant_for(experiment, number)
        row = {
            "experiment_id": experiment.id,
            "member_id": member_id,
            "variant_id": None if variant is None else variant.id,
            "bucket": number,
            "source": "hash",
            "assigned_at": now,
        }
        # Two processes asking at once: the first insert wins, both read it back.
        insert = bulk.dialect_insert(session.get_bind().dialect.name)(Assignment.__table__)
        session.execute(insert.values(row).on_conflict_do_nothing())
        recorded = _recorded(session, experiment.id, member_id)
    assert recorded is not None
    if recorded.variant_id is None:
        return HOLDOUT
    return next(v.key for v in experiment.variants if v.id == recorded.variant_id)


def _recorded(session: Session, experiment_id: int, member_id: int) -> Assignment | None:
    return session.scalar(
        select(Assignment).where(
            Assignment.experiment_id == experiment_id, Assignment.member_id == member_id
        )
    )
