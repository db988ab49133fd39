"""Benefits (权益) as a journey's grant step or an experiment's benefit package names
them: a coupon (满减: value, threshold), points, a points multiplier, free shipping or a
service, each with how long it lasts and, optionally, what it costs the shop.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from members.checking import Errors, choice, integer, number, text
from members.loyalty import BenefitKind

BENEFITS = ("coupon", "points", "multiplier", "free_shipping", "service")


def clean(data: Mapping, where: str, errors: Errors) -> dict[str, Any]:
    benefit = choice(data, "benefit", where, BENEFITS, errors)
    clean: dict[str, Any] = {"benefit": benefit}
    expires = {"low": 1, "high": 365}
    if benefit == "coupon":
        clean["value"] = number(
            data, "value", where, errors, low=Decimal("0.01"), high=Decimal(100_000)
        )
        if clean["value"] is None:
            errors.add(f"{where}.value", "give the coupon's value in yuan")
        clean["threshold"] = number(
            data, "threshold", where, errors, low=Decimal(0), high=Decimal(1_000_000)
        )
        clean["expires_days"] = integer(data, "expires_days", where, errors, **expires, default=7)
    elif benefit == "points":
        clean["points"] = integer(data, "points", where, errors, low=1, high=1_000_000)
        if clean["points"] is None:
            errors.add(f"{where}.points", "give how many points")
    elif benefit == "multiplier":
        clean["multiplier"] = number(
            data, "multiplier", where, errors, low=Decimal("1.1"), high=Decimal(10)
        )
        if clean["multiplier"] is None:
            errors.add(f"{where}.multiplier", "give the multiplier, e.g. 2 for double points")
        clean["expires_days"] = integer(data, "expires_days", where, errors, **expires, default=7)
    elif benefit == "free_shipping":
        clean["expires_days"] = integer(data, "expires_days", where, errors, **expires, default=7)
    elif benefit == "service":
        clean["service"] = text(data, "service", where, errors, max_len=200)
    if benefit != "coupon" and data.get("cost") not in (None, ""):
        clean["cost"] = number(data, "cost", where, errors, low=Decimal(0), high=Decimal(100_000))
    return clean


def grant_row(
    benefit: Mapping[str, Any],
    *,
    member_id: int,
    key: str,
    source: str,
    source_ref: str,
    now: dt.datetime,
) -> dict[str, Any]:
    """The ``benefit_grants`` row granting a cleaned benefit (not points, which are a
    ledger entry); ``key`` makes the grant once-only and names its coupon code."""
    kind = benefit["benefit"]
    expires = benefit.get("expires_days")
    value = benefit.get("value") or benefit.get("multiplier") or benefit.get("points")
    cost = benefit.get("value") if kind == "coupon" else benefit.get("cost")
    return {
        "member_id": member_id,
        "kind": BenefitKind(kind),
        "value": Decimal(value) if value is not None else None,
        "threshold": Decimal(benefit["threshold"]) if benefit.get("threshold") else None,
        "code": coupon_code(key) if kind == "coupon" else None,
        "detail": benefit.get("service"),
        "expires_at": now + dt.timedelta(days=expires) if expires else None,
        "cost": Decimal(cost) if cost is not None else None,
        "source": source,
        "source_ref": source_ref,
        "dedup_key": key,
        "granted_at": now,
    }


def coupon_code(key: str) -> str:
    return "TN" + hashlib.sha256(key.encode()).hexdigest()[:10].upper()
