"""Deterministic, sticky assignment of members to an experiment's variants.

A member's bucket is a hash of the experiment's salt and the member's external id into
10,000 buckets: the same answer on any process or machine. The first buckets, as many
as the holdout's share, are the holdout; the rest are shared out by weight. The first
answer is recorded in ``assignments`` (unique per experiment and member, by
:func:`experiments.manage.place`) and is the answer forever after.
"""

from __future__ import annotations

import hashlib
from decimal import Decimal

from experiments.models import Experiment, Variant

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
