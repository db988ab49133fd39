"""An experiment's design as a marketer's form or an engineer's API call sends it: key,
name, hypothesis, audience, variants (each a weight and a benefit package, one of them
the control), the holdout, the metrics and how the results will be read.

:func:`check` returns the design cleaned with every problem keyed by its field
(``variants.1.weight``, ``holdout``), so that the page shows each message beside its
field and the API names it. The audience is a condition in the journeys' audience
language; ``experiments`` may not import ``journeys``, so the caller passes the reader.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

from experiments import benefits
from members.checking import Errors, choice, integer, number, text

RETENTION_HORIZONS = (7, 30, 60, 90)
METRICS: dict[str, str] = {
    **{
        f"retention_{h}d": f"Share of members with an order within {h} days of assignment"
        for h in RETENTION_HORIZONS
    },
    "orders_per_member": "Orders per member since assignment",
    "revenue_per_member": "Revenue per member since assignment, net of refunds (winsorised)",
    "aov": "Average order value: revenue over orders (a ratio: delta method)",
    "redemption_rate": "Share of members who redeemed a benefit of their package",
    "cost_per_member": "What the benefits cost per member (a coupon its value once redeemed)",
    "roi_per_member": "Revenue minus benefit cost per member: its lift is the incremental "
    "revenue minus the incremental cost",
}
RATES = (*(f"retention_{h}d" for h in RETENTION_HORIZONS), "redemption_rate")
MODES = ("fixed", "group_sequential", "always_valid")
CORRECTIONS = ("holm", "fdr_bh")
MAX_HOLDOUT = Decimal(50)
KEY = re.compile(r"[a-z][a-z0-9_]{0,63}")
DESIGN_DEFAULTS: dict[str, Any] = {
    "mode": "fixed",
    "looks": 5,
    "alpha": 0.05,
    "power": 0.8,
    "winsor_percentile": 99,
    "correction": "holm",
    "planned_members": None,
}
# What may change once members are being assigned: the split may not (a new experiment
# is needed), nor how the results are read: the metrics (the guardrails are the family
# the correction counts), the effect, the design (deciding them after looking is
# p-hacking).
CHANGEABLE_WHEN_RUNNING = frozenset({"name", "hypothesis"})

AudienceReader = Callable[[str], str | None]  # the condition -> what is wrong, or None


def check(
    data: Any, *, read_audience: AudienceReader, partial: bool = False
) -> tuple[dict[str, Any], dict[str, str]]:
    """(the cleaned design, {field: message}); usable only without errors. ``partial``
    reads only the fields present (an edit), with no defaults filled in."""
    errors = Errors()
    if not isinstance(data, Mapping):
        return {}, {"json": "must be an object with key, name, variants and holdout"}
    clean: dict[str, Any] = {}

    def wanted(name: str) -> bool:
        return not partial or name in data

    if wanted("key"):
        clean["key"] = text(data, "key", "", errors, pattern=KEY, max_len=64)
    if wanted("name"):
        clean["name"] = text(data, "name", "", errors, max_len=200)
    if wanted("hypothesis"):
        clean["hypothesis"] = _optional_text(data, "hypothesis", errors, 2000)
    if wanted("audience"):
        audience = _optional_text(data, "audience", errors, 2000)
        if audience is not None and (problem := read_audience(audience)):
            errors.add("audience", problem)
        clean["audience"] = audience
    if wanted("holdout"):
        holdout = number(data, "holdout", "", errors, low=Decimal(0), high=MAX_HOLDOUT)
        clean["holdout"] = Decimal(holdout or 0)
    if wanted("variants"):
        clean["variants"] = _variants(data.get("variants"), errors)
    if wanted("primary_metric"):
        clean["primary_metric"] = choice(
            data, "primary_metric", "", tuple(METRICS), errors, default="retention_90d"
        )
    if wanted("guardrail_metrics"):
        clean["guardrail_metrics"] = _metrics(data.get("guardrail_metrics"), errors)
    if wanted("minimum_detectable_effect"):
        mde = number(
            data,
            "minimum_detectable_effect",
            "",
            errors,
            low=Decimal("0.1"),
            high=Decimal(100),
            places=4,
        )
        clean["minimum_detectable_effect"] = Decimal(mde) if mde is not None else None
    if wanted("design"):
        clean["design"] = _design(data.get("design"), errors)
    return clean, {field.lstrip("."): message for field, message in errors.items()}


def _optional_text(data: Mapping, name: str, errors: Errors, max_len: int) -> str | None:
    value = data.get(name)
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if not isinstance(value, str) or len(value.strip()) > max_len:
        errors.add(name, f"must be text of at most {max_len} characters")
        return None
    return value.strip()


def _variants(value: Any, errors: Errors) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not 2 <= len(value) <= 10:
        errors.add("variants", "give 2 to 10 variants: a control and what it is tested against")
        return []
    variants: list[dict[str, Any]] = []
    for index, data in enumerate(value):
        where = f"variants.{index}"
        if not isinstance(data, Mapping):
            errors.add(where, "must be an object with key, weight, control and benefits")
            continue
        key = text(data, "key", where, errors, pattern=KEY, max_len=64)
        if key == "holdout":
            errors.add(f"{where}.key", "holdout is the members who get nothing: choose another key")
        elif key is not None and any(v["key"] == key for v in variants):
            errors.add(f"{where}.key", f"two variants are called {key}")
        weight = integer(data, "weight", where, errors, low=1, high=100)
        if weight is None and "weight" not in data:
            errors.add(f"{where}.weight", "give the variant's share of the split, 1 to 100")
        control = data.get("control", False)
        if not isinstance(control, bool):
            errors.add(f"{where}.control", "must be true or false")
            control = False
        variants.append(
            {
                "key": key,
                "name": _optional_text(data, "name", Errors(), 200) or key,
                "weight": weight,
                "control": control,
                "benefits": _package(data.get("benefits"), f"{where}.benefits", errors),
            }
        )
    if sum(v["control"] for v in variants) != 1 and len(variants) == len(value):
        errors.add("variants", "mark exactly one variant as the control (control: true)")
    weights = [v["weight"] for v in variants]
    if None not in weights and len(variants) == len(value) and sum(weights) != 100:
        errors.add("variants", f"the weights must add up to 100, not {sum(weights)}")
    return variants


def _package(value: Any, where: str, errors: Errors) -> list[dict[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, list) or len(value) > 10:
        errors.add(where, "must be a list of at most 10 benefits")
        return []
    package = []
    for index, item in enumerate(value):
        if not isinstance(item, Mapping):
            errors.add(f"{where}.{index}", "must be a benefit such as {benefit: coupon, value: 30}")
            continue
        package.append(benefits.clean(item, f"{where}.{index}", errors))
    return package


def _metrics(value: Any, errors: Errors) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(m, str) for m in value):
        errors.add("guardrail_metrics", "must be a list of metric names")
        return []
    if problem := unknown_metric(value):
        errors.add("guardrail_metrics", problem)
    return list(dict.fromkeys(m for m in value if m in METRICS))


def unknown_metric(names: list[str]) -> str | None:
    """What is wrong with a list of metric names: the first that is not a metric."""
    unknown = [name for name in names if name not in METRICS]
    if unknown:
        return f"no metric {unknown[0]!r}: choose from {', '.join(METRICS)}"
    return None


def _design(value: Any, errors: Errors) -> dict[str, Any]:
    if value is None:
        return dict(DESIGN_DEFAULTS)
    if not isinstance(value, Mapping):
        errors.add("design", "must be an object with mode, looks, alpha, power...")
        return dict(DESIGN_DEFAULTS)
    unknown = sorted(set(value) - set(DESIGN_DEFAULTS))
    if unknown:
        errors.add(f"design.{unknown[0]}", f"unknown: give {', '.join(DESIGN_DEFAULTS)}")
    merged = {**DESIGN_DEFAULTS, **value}
    where = "design"
    exact = {"errors": errors, "places": 6}
    alpha = number(merged, "alpha", where, low=Decimal("0.001"), high=Decimal("0.2"), **exact)
    power = number(merged, "power", where, low=Decimal("0.5"), high=Decimal("0.99"), **exact)
    winsor = number(merged, "winsor_percentile", where, low=Decimal(90), high=Decimal(100), **exact)
    planned = integer(merged, "planned_members", where, errors, low=100, high=100_000_000)
    mode = choice(merged, "mode", where, MODES, errors, default="fixed")
    if mode == "group_sequential" and planned is None and "design.planned_members" not in errors:
        errors.add(
            "design.planned_members",
            "planned looks are shares of the members at the last look: give that number "
            "(the power calculator suggests it)",
        )
    return {
        "mode": mode,
        "planned_members": planned,
        "looks": integer(merged, "looks", where, errors, low=2, high=20, default=5),
        "alpha": float(alpha or DESIGN_DEFAULTS["alpha"]),
        "power": float(power or DESIGN_DEFAULTS["power"]),
        "winsor_percentile": float(winsor or DESIGN_DEFAULTS["winsor_percentile"]),
        "correction": choice(merged, "correction", where, CORRECTIONS, errors, default="holm"),
    }
