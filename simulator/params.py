"""Every parameter of the virtual membership, in one place, with what it means.

The defaults describe a mid-sized Chinese online shop as DOMAIN.md's sources do: about
half of the members active in a month, heavy seasonal peaks (春节 年货节, 618, 双11),
a price-sensitive majority, and consent for marketing SMS from most members.

The ``Effects`` section is the *truth* the experiments are checked against: what each
thing Tenure does to a member changes in that member's behaviour. Its defaults make
the canonical experiment's service package (an advisor's call and a month of free
shipping) keep about 12% more members buying within 90 days than the discount package
(a coupon and double points), as the footwear shop of DOMAIN.md reported.

A parameters file (TOML) overrides any of them by section and name::

    [purchases]
    rate_mean = 0.05

    [effects.service_churn_reduction]
    service = 0.7

A name that is not a parameter, or a value of the wrong type or range, is refused with
the parameter's dotted name.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import tomllib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any


class ParamError(ValueError):
    """A parameter that does not exist or has a wrong value; the message names it."""


def _field(default: Any, doc: str, *, low: float | None = None, high: float | None = None):
    if isinstance(default, dict | list):
        return dataclasses.field(
            default_factory=lambda: type(default)(default),
            metadata={"doc": doc, "low": low, "high": high},
        )
    return dataclasses.field(default=default, metadata={"doc": doc, "low": low, "high": high})


@dataclasses.dataclass(frozen=True)
class Peak:
    """A seasonal bump (or, with a negative height, a dip) in joins and purchases."""

    name: str
    month: int  # the day it centres on; month 0 means "days relative to 春节"
    day: int
    width_days: float
    height: float


@dataclasses.dataclass(frozen=True)
class Region:
    name: str  # members.region
    timezone: str  # IANA
    country: str  # phone numbering plan: CN, HK, SG, US
    weight: float


@dataclasses.dataclass(frozen=True)
class BySensitivity:
    """One effect's size for price-sensitive and for service-sensitive members."""

    price: float
    service: float


@dataclasses.dataclass(frozen=True)
class Joining:
    initial_share: float = _field(
        0.3, "share of the members who are already members on the first day", low=0, high=1
    )
    initial_age_days: int = _field(
        540, "those joined up to this many days before the first day", low=1, high=3650
    )
    peaks: list = _field(
        [
            Peak("年货节 before 春节", 0, -14, 8, 0.8),
            Peak("春节 holiday", 0, 3, 4, -0.5),
            Peak("618", 6, 15, 5, 1.2),
            Peak("双11", 11, 9, 4, 2.0),
            Peak("双12", 12, 11, 2, 0.6),
        ],
        "seasonal peaks of joins and purchases: name, month (0: relative to 春节), day, "
        "width_days, height (a relative bump)",
    )


@dataclasses.dataclass(frozen=True)
class Population:
    price_sensitive_share: float = _field(
        0.55, "share of members who react to discounts more than to service", low=0, high=1
    )
    app_user_share: float = _field(
        0.6, "share of members with the shop's app (a push token, app opens)", low=0, high=1
    )
    consent_sms: float = _field(0.72, "share who agree to marketing SMS", low=0, high=1)
    consent_push: float = _field(
        0.55, "share of app users who agree to marketing push", low=0, high=1
    )
    refuse_personalised: float = _field(
        0.02, "share who refuse automated marketing as a whole (PIPL art. 24)", low=0, high=1
    )
    cross_border_consent: float = _field(
        0.6,
        "share of app users who let their push token leave mainland China (PIPL art. 39)",
        low=0,
        high=1,
    )
    categories: dict = _field(
        {
            "服饰": 0.22,
            "美妆": 0.16,
            "母婴": 0.12,
            "生鲜": 0.12,
            "食品饮料": 0.12,
            "家居": 0.1,
            "数码": 0.08,
            "运动鞋服": 0.08,
        },
        "each member's favourite category and its share of members",
    )
    regions: list = _field(
        [
            Region("广东", "Asia/Shanghai", "CN", 0.16),
            Region("浙江", "Asia/Shanghai", "CN", 0.11),
            Region("江苏", "Asia/Shanghai", "CN", 0.1),
            Region("上海", "Asia/Shanghai", "CN", 0.08),
            Region("北京", "Asia/Shanghai", "CN", 0.07),
            Region("山东", "Asia/Shanghai", "CN", 0.07),
            Region("四川", "Asia/Shanghai", "CN", 0.06),
            Region("湖北", "Asia/Shanghai", "CN", 0.05),
            Region("河南", "Asia/Shanghai", "CN", 0.05),
            Region("福建", "Asia/Shanghai", "CN", 0.05),
            Region("湖南", "Asia/Shanghai", "CN", 0.04),
            Region("陕西", "Asia/Shanghai", "CN", 0.04),
            Region("新疆", "Asia/Urumqi", "CN", 0.02),
            Region("香港", "Asia/Hong_Kong", "HK", 0.04),
            Region("新加坡", "Asia/Singapore", "SG", 0.03),
            Region("美国", "America/Los_Angeles", "US", 0.03),
        ],
        "regions: name, IANA timezone, phone country (CN, HK, SG or US), weight",
    )


@dataclasses.dataclass(frozen=True)
class Purchases:
    rate_mean: float = _field(
        0.02, "orders a day of an engaged member, on average (gamma-distributed)", low=0, high=5
    )
    rate_shape: float = _field(
        0.8, "shape of the gamma distribution of purchase rates (smaller: more unequal)", low=0.05
    )
    order_value: dict = _field(
        {
            "服饰": 260,
            "美妆": 210,
            "母婴": 240,
            "生鲜": 110,
            "食品饮料": 90,
            "家居": 320,
            "数码": 780,
            "运动鞋服": 420,
        },
        "median order value in yuan for members whose favourite is each category",
    )
    order_value_spread: float = _field(
        0.55, "sigma of the log-normal order value around the member's median", low=0, high=3
    )
    other_category: float = _field(
        0.3, "chance that an order is outside the member's favourite category", low=0, high=1
    )
    review: float = _field(0.12, "chance that an order is followed by a review", low=0, high=1)
    share: float = _field(0.03, "chance that an order is shared", low=0, high=1)
    refund: float = _field(0.02, "chance that an order is refunded", low=0, high=1)


@dataclasses.dataclass(frozen=True)
class Engagement:
    login_mean: float = _field(
        0.2,
        "chance an engaged member visits (logs in, opens the app) on a given day, on average",
        low=0,
        high=1,
    )
    app_open: float = _field(
        0.75, "chance an app user's visit is through the app (app_open, else login)", low=0, high=1
    )
    checkin_share: float = _field(
        0.1, "share of members who check in for points most days they visit", low=0, high=1
    )


@dataclasses.dataclass(frozen=True)
class Churn:
    base_hazard: float = _field(
        0.015, "daily chance that an engaged member starts to drift away", low=0, high=1
    )
    recency_slope: float = _field(
        0.6, "the hazard grows by this share for every 30 days since the last order", low=0
    )
    drift_days: float = _field(
        21, "days a drifting member takes, on average, to lapse for good", low=1, high=365
    )
    drift_purchase: float = _field(
        0.2, "purchase rate of a drifting member, as a share of their own", low=0, high=1
    )
    drift_login: float = _field(
        0.25, "visit chance of a drifting member, as a share of their own", low=0, high=1
    )
    lapsed_login: float = _field(
        0.08,
        "visit chance of a lapsed member (they still browse), as a share of their own",
        low=0,
        high=1,
    )
    return_daily: float = _field(
        0.002, "daily chance that a lapsed member comes back by themselves", low=0, high=1
    )


@dataclasses.dataclass(frozen=True)
class Effects:
    """The truth: how much what Tenure does changes what members do."""

    coupon_purchase_lift: BySensitivity = _field(
        BySensitivity(0.4, 0.1), "relative rise of the purchase rate while a coupon is valid"
    )
    coupon_return_daily: BySensitivity = _field(
        BySensitivity(0.05, 0.015),
        "daily chance that a lapsed member with a valid coupon comes back",
    )
    multiplier_purchase_lift: BySensitivity = _field(
        BySensitivity(0.3, 0.1), "relative rise of the purchase rate during extra points"
    )
    service_churn_reduction: BySensitivity = _field(
        BySensitivity(0.6, 0.9),
        "relative fall of the drifting hazard for service_days after a service benefit",
    )
    free_shipping_churn_reduction: BySensitivity = _field(
        BySensitivity(0.1, 0.25), "the same for free shipping, while it lasts"
    )
    service_days: int = _field(90, "how long a service benefit keeps its effect", low=1)
    message_purchase_lift: float = _field(
        0.25, "relative rise of the purchase rate for 2 days after a message", low=0
    )
    annoyance_withdrawal: float = _field(
        0.002, "chance that a marketing message makes its member withdraw consent", low=0, high=1
    )
    quiet_hours_withdrawal: float = _field(
        0.08, "the same for a message that arrives between 21:00 and 08:00", low=0, high=1
    )
    over_cap_withdrawal: float = _field(
        0.03, "the same for a member's fourth or later message in 7 days", low=0, high=1
    )
    points_reminder_redemption: float = _field(
        0.35, "chance that a points expiry reminder makes its member spend points", low=0, high=1
    )
    referral_after_invite: float = _field(
        0.04, "chance that an invitation to refer a friend brings a referral", low=0, high=1
    )


@dataclasses.dataclass(frozen=True)
class Clock:
    tick_hours: list = _field(
        [10, 19],
        "programme-local hours at which Tenure's periodic work runs each simulated day "
        "once the journeys are live (events that happened before are ingested first)",
    )
    full_run_every: int = _field(
        30,
        "days between full lifecycle runs, which also move the VIP line; the daily runs "
        "between look at the members who may have moved (production: a full run nightly)",
        low=1,
        high=365,
    )
    history_every: int = _field(
        30,
        "before go-live, days between lifecycle runs (events are ingested daily)",
        low=1,
        high=365,
    )


@dataclasses.dataclass(frozen=True)
class Params:
    joining: Joining = dataclasses.field(default_factory=Joining)
    population: Population = dataclasses.field(default_factory=Population)
    purchases: Purchases = dataclasses.field(default_factory=Purchases)
    engagement: Engagement = dataclasses.field(default_factory=Engagement)
    churn: Churn = dataclasses.field(default_factory=Churn)
    effects: Effects = dataclasses.field(default_factory=Effects)
    clock: Clock = dataclasses.field(default_factory=Clock)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# The 春节 (Chinese New Year) of each year; month 0 peaks are placed around it.
SPRING_FESTIVAL = {
    2020: dt.date(2020, 1, 25),
    2021: dt.date(2021, 2, 12),
    2022: dt.date(2022, 2, 1),
    2023: dt.date(2023, 1, 22),
    2024: dt.date(2024, 2, 10),
    2025: dt.date(2025, 1, 29),
    2026: dt.date(2026, 2, 17),
    2027: dt.date(2027, 2, 6),
    2028: dt.date(2028, 1, 26),
    2029: dt.date(2029, 2, 13),
    2030: dt.date(2030, 2, 3),
    2031: dt.date(2031, 1, 23),
    2032: dt.date(2032, 2, 11),
}


def load(path: str | Path | None) -> Params:
    """The defaults, overridden by the TOML file at ``path`` if one is given."""
    if path is None:
        return Params()
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ParamError(f"--params: cannot read {path}: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ParamError(f"--params: {path} is not a TOML file: {exc}") from None
    return from_dict(data)


def from_dict(data: Mapping[str, Any]) -> Params:
    params = _build(Params, data, "")
    _check(params)
    return params


COUNTRIES = ("CN", "HK", "SG", "US")


def _check(params: Params) -> None:
    """What the types alone do not say: names that must exist and agree."""
    from zoneinfo import available_timezones

    zones = available_timezones()
    for i, region in enumerate(params.population.regions):
        where = f"population.regions[{i}]"
        if region.timezone not in zones:
            raise ParamError(f"{where}.timezone: {region.timezone!r} is not an IANA time zone")
        if region.country not in COUNTRIES:
            raise ParamError(f"{where}.country: must be one of {', '.join(COUNTRIES)}")
        if region.weight <= 0:
            raise ParamError(f"{where}.weight: must be more than 0")
    for i, peak in enumerate(params.joining.peaks):
        where = f"joining.peaks[{i}]"
        if not 0 <= peak.month <= 12:
            raise ParamError(f"{where}.month: must be 1 to 12 (0: days relative to 春节)")
        if peak.month and not 1 <= peak.day <= 31:
            raise ParamError(f"{where}.day: must be 1 to 31")
        if peak.width_days <= 0:
            raise ParamError(f"{where}.width_days: must be more than 0")
        if peak.height <= -1:
            raise ParamError(f"{where}.height: must be more than -1 (a dip cannot go below 0)")
    categories = params.population.categories
    if sum(categories.values()) <= 0:
        raise ParamError("population.categories: at least one share must be more than 0")
    missing = [c for c in categories if c not in params.purchases.order_value]
    if missing:
        raise ParamError(f"purchases.order_value.{missing[0]}: missing (a category has no value)")


def _build(cls: type, data: Any, where: str):
    if not isinstance(data, Mapping):
        raise ParamError(f"{where.rstrip('.') or 'parameters'}: must be a table of parameters")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for name in data:
        if name not in fields:
            known = ", ".join(fields)
            raise ParamError(f"{where}{name}: not a parameter (known here: {known})")
    hints = typing.get_type_hints(cls)
    values = {}
    for name, value in data.items():
        field = fields[name]
        values[name] = _value(hints[name], field, value, f"{where}{name}", cls)
    return dataclasses.replace(cls(), **values)


def _value(hint: Any, field: dataclasses.Field, value: Any, name: str, owner: type) -> Any:
    default = _default(owner, field)
    if dataclasses.is_dataclass(hint):
        if isinstance(value, Mapping) and isinstance(default, BySensitivity):
            return dataclasses.replace(default, **_numbers(value, name, BySensitivity))
        return _build(hint, value, f"{name}.")
    if hint is bool or isinstance(default, bool):
        if not isinstance(value, bool):
            raise ParamError(f"{name}: must be true or false")
        return value
    if isinstance(default, int | float):
        return _number(value, name, field, whole=isinstance(default, int))
    if isinstance(default, list):
        return _list(value, name, default)
    if isinstance(default, dict):
        if not isinstance(value, Mapping) or not value:
            raise ParamError(f"{name}: must be a table of names and numbers")
        return {str(k): _number(v, f"{name}.{k}", None, low=0) for k, v in value.items()}
    if isinstance(hint, type | types.UnionType) and not isinstance(value, str):
        raise ParamError(f"{name}: must be a string")
    return value


def _default(owner: type, field: dataclasses.Field) -> Any:
    return getattr(owner(), field.name)


def _numbers(value: Mapping[str, Any], name: str, cls: type) -> dict[str, float]:
    known = {f.name for f in dataclasses.fields(cls)}
    for key in value:
        if key not in known:
            raise ParamError(f"{name}.{key}: not a parameter (known here: {', '.join(known)})")
    return {k: _number(v, f"{name}.{k}", None, low=0) for k, v in value.items()}


def _number(
    value: Any,
    name: str,
    field: dataclasses.Field | None,
    *,
    whole: bool = False,
    low: float | None = None,
) -> float | int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ParamError(f"{name}: must be a {'whole number' if whole else 'number'}")
    if whole and not float(value).is_integer():
        raise ParamError(f"{name}: must be a whole number")
    if value != value or value in (float("inf"), float("-inf")):
        raise ParamError(f"{name}: must be a finite number")
    meta = field.metadata if field is not None else {"low": low, "high": None}
    if meta.get("low") is not None and value < meta["low"]:
        raise ParamError(f"{name}: must be at least {meta['low']} (got {value})")
    if meta.get("high") is not None and value > meta["high"]:
        raise ParamError(f"{name}: must be at most {meta['high']} (got {value})")
    return int(value) if whole else float(value)


def _list(value: Any, name: str, default: list) -> list:
    if not isinstance(value, list) or not value:
        raise ParamError(f"{name}: must be a non-empty list")
    item = default[0]
    if dataclasses.is_dataclass(item):
        return [_row(type(item), v, f"{name}[{i}]") for i, v in enumerate(value)]
    out = []
    for i, v in enumerate(value):
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= 23:
            raise ParamError(f"{name}[{i}]: must be an hour from 0 to 23")
        out.append(v)
    if len(set(out)) != len(out):
        raise ParamError(f"{name}: an hour appears twice")
    return sorted(out)


def _row(cls: type, value: Any, name: str):
    if not isinstance(value, Mapping):
        raise ParamError(f"{name}: must be a table")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    missing = [n for n in fields if n not in value]
    unknown = [n for n in value if n not in fields]
    if unknown:
        raise ParamError(f"{name}.{unknown[0]}: not a parameter (known: {', '.join(fields)})")
    if missing:
        raise ParamError(f"{name}.{missing[0]}: missing")
    hints = typing.get_type_hints(cls)
    values = {}
    for key, hint in hints.items():
        v = value[key]
        if hint is str:
            if not isinstance(v, str) or not v:
                raise ParamError(f"{name}.{key}: must be a non-empty string")
        else:
            v = _number(v, f"{name}.{key}", None, whole=hint is int)
        values[key] = v
    return cls(**values)
