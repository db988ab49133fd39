"""Stage rules: which lifecycle stage a member is in, read from their RFM features.

The default rules (DOMAIN.md), every number editable by marketers:

- **new**: joined within ``new_days`` (30) with at most ``new_max_orders`` (1) orders;
- **active**: a purchase within ``active_days`` (30);
- **at_risk**: still active by purchase, but the last order is ``at_risk_days`` (20) or
  more days old and the member's visits (logins, app opens) over the last 14 days fell
  below ``at_risk_visit_percent`` (50%) of their own daily rate over the 42 days
  before: the member is compared with their own past, not with others;
- **dormant**: no purchase for ``dormant_days`` (30) or more days (a member who never
  bought counts from the day they joined); **lapsed**, the deep end of dormant, from
  ``lapsed_days`` (90);
- **vip**: the top ``vip_top_percent`` (10%) of current members by spend over the last
  365 days: a percentile recomputed on every run, not a fixed amount (at most that
  share: members tied at the edge are left out together); and, with ``vip_top_tier``,
  every member on the tier ladder's highest level.

When several rules match, the first stage in ``precedence`` wins. The default order,
vip > at_risk > active > new > dormant, and why:

- **vip first**: the best customers get VIP care (service, early access), never the
  win-back discounts the other stages' journeys send;
- **at_risk before active**: at-risk members are active members showing churn signals,
  and the rescue journey has to reach them before they lapse;
- **active before new**: a new member who bought has made the first purchase that the
  welcome journey works towards; "new" is for members who joined and have not bought;
- **new before dormant**: a member who joined last week and has not bought yet is being
  onboarded, not asleep;
- **dormant last**: it is the catch-all, everyone without a purchase in the window.

Coverage: every member either bought within ``active_days`` (active matches) or did
not, and then dormant matches as long as dormant starts no later than active ends
(``dormant_days <= active_days``). That is the one condition that leaves no gap, and
:func:`parse` refuses rules that break it. Other overlaps are settled by precedence.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from sqlalchemy import String, and_, case, func, literal, or_, select
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from members import programme
from members.errors import InvalidFields
from members.features import EARLIER_VISITS, RECENT_VISITS
from members.lifecycle import MemberFeatures, Stage
from members.member import Member

SETTING_KEY = "stage_rules"
# The stages precedence orders; lapsed is part of dormant and follows it.
RANKED = (Stage.VIP, Stage.AT_RISK, Stage.ACTIVE, Stage.NEW, Stage.DORMANT)
MAX_DAYS = 3650

_features = MemberFeatures.__table__
_members = Member.__table__


@dataclasses.dataclass(frozen=True)
class StageRules:
    new_days: int = 30
    new_max_orders: int = 1
    active_days: int = 30
    at_risk_days: int = 20
    at_risk_visit_percent: int = 50
    dormant_days: int = 30
    lapsed_days: int = 90
    vip_top_percent: int = 10
    # DOMAIN.md: "top 10% by spend (or highest tier)": members on the ladder's top
    # level are VIP too.
    vip_top_tier: bool = False
    precedence: tuple[Stage, ...] = RANKED

    def as_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["precedence"] = [stage.value for stage in self.precedence]
        return data


NUMBERS = tuple(
    f.name for f in dataclasses.fields(StageRules) if f.name not in ("precedence", "vip_top_tier")
)
# The largest value each number may take, beside the general limit on days.
LIMITS = {"new_max_orders": 1000, "at_risk_visit_percent": 100, "vip_top_percent": 50}


def parse(data: Mapping[str, Any]) -> StageRules:
    """Stage rules from a document (a form or an API body), every field present;
    raises InvalidFields naming each field that is wrong, and why."""
    errors: dict[str, str] = {}
    unknown = sorted(set(data) - {*NUMBERS, "precedence", "vip_top_tier"})
    for name in unknown:
        errors[name] = "unknown setting"
    values: dict[str, Any] = {}
    for name in NUMBERS:
        value = data.get(name)
        limit = LIMITS.get(name, MAX_DAYS)
        if value is None:
            errors[name] = "required"
        elif isinstance(value, bool) or not isinstance(value, int):
            errors[name] = "must be a whole number"
        elif value < 0:
            errors[name] = "must not be negative"
        elif value > limit:
            errors[name] = f"must be at most {limit}"
        else:
            values[name] = value
    precedence = _precedence(data.get("precedence"), errors)
    top_tier = data.get("vip_top_tier", False)  # absent from documents saved before it
    if not isinstance(top_tier, bool):
        errors["vip_top_tier"] = "must be true or false"
    if not errors:
        _check_coverage(values, errors)
    if errors:
        raise InvalidFields(errors)
    return StageRules(**values, precedence=precedence, vip_top_tier=top_tier)


def _precedence(value: Any, errors: dict[str, str]) -> tuple[Stage, ...]:
    names = ", ".join(s.value for s in RANKED)
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        errors["precedence"] = f"must list the stages {names}, the one that wins first"
        return RANKED
    stages = [Stage(v) if v in set(RANKED) else v for v in value]
    unknown = [v for v in stages if v not in RANKED]
    missing = [s.value for s in RANKED if s not in stages]
    if unknown:
        errors["precedence"] = f"unknown stage {unknown[0]!r}: the stages are {names}"
    elif missing or len(stages) != len(RANKED):
        repeated = sorted({s.value for s in stages if stages.count(s) > 1})
        what = f"{', '.join(missing)} missing" if missing else f"{', '.join(repeated)} twice"
        errors["precedence"] = f"must name each of {names} once ({what})"
    return tuple(stages) if not errors.get("precedence") else RANKED


def _check_coverage(v: dict[str, int], errors: dict[str, str]) -> None:
    """The rules must give every member a stage, and every stage must be reachable."""
    for name in ("new_days", "active_days", "dormant_days", "lapsed_days"):
        if v[name] == 0:
            errors[name] = "must be at least 1 day"
    if errors:
        return
    if v["dormant_days"] > v["active_days"]:
        errors["dormant_days"] = (
            f"must be at most {v['active_days']} (where active ends): members whose last "
            f"order is {v['active_days']} to {v['dormant_days'] - 1} days old would have "
            "no stage"
        )
    if v["lapsed_days"] <= v["dormant_days"]:
        errors["lapsed_days"] = (
            f"must be more than {v['dormant_days']} days: lapsed is the deep end of dormant"
        )
    if v["at_risk_days"] >= v["active_days"]:
        errors["at_risk_days"] = (
            f"must be less than {v['active_days']} (where active ends): at risk applies "
            "to members still active by purchase, and no member could be at risk"
        )


SETTING = programme.Document(SETTING_KEY, parse, StageRules())
# The rules in force and their version; save() stores new rules, which apply from the
# next lifecycle run.
load, save = SETTING.load, SETTING.save


def vip_threshold(session: Session, rules: StageRules) -> Decimal | None:
    """The 365-day spend that members must exceed to be in the top ``vip_top_percent``
    of current members, or None when the share is 0. Members tied at the edge are all
    left out when taking them in would exceed the share: at most the share are VIP."""
    if rules.vip_top_percent == 0:
        return None
    f, m = _features.c, _members.c
    current = _features.join(_members, m.id == f.member_id)
    total = session.scalar(select(func.count()).select_from(current).where(m.erased_at.is_(None)))
    share = math.floor((total or 0) * rules.vip_top_percent / 100)
    # The spend of the first member outside the share; everyone above it is in.
    first_out = session.scalar(
        select(f.spend_365d)
        .select_from(current)
        .where(m.erased_at.is_(None), f.spend_365d > 0)
        .order_by(f.spend_365d.desc())
        .offset(share)
        .limit(1)
    )
    return Decimal(0) if first_out is None else first_out


def expression(
    rules: StageRules, vip_threshold: Decimal | None, top_tier: str | None = None
) -> ColumnElement[str]:
    """The stage of a row of member_features joined to its member, as one SQL CASE in
    precedence order (``top_tier``: the key of the ladder's highest level)."""
    f, m = _features.c, _members.c
    since_order = f.days_since_last_order
    # Visits in the last 14 days, as a daily rate, below the set share of the member's
    # own daily rate over the 42 days before; in integers: 14d * 42 * 100 < pct * 42d * 14.
    visits_fell = f.logins_14d * (EARLIER_VISITS * 100) < (
        f.logins_prev_42d * (rules.at_risk_visit_percent * RECENT_VISITS)
    )
    matches = {
        Stage.VIP: or_(
            literal(False)
            if vip_threshold is None
            else and_(f.spend_365d > vip_threshold, f.spend_365d > 0),
            m.tier == top_tier if rules.vip_top_tier and top_tier else literal(False),
        ),
        Stage.AT_RISK: and_(
            since_order >= rules.at_risk_days, since_order < rules.active_days, visits_fell
        ),
        Stage.ACTIVE: since_order < rules.active_days,
        Stage.NEW: and_(
            f.days_since_joined < rules.new_days, f.lifetime_orders <= rules.new_max_orders
        ),
        Stage.DORMANT: or_(since_order.is_(None), since_order >= rules.dormant_days),
    }
    dormant = case(
        (
            func.coalesce(since_order, f.days_since_joined) >= rules.lapsed_days,
            _value(Stage.LAPSED),
        ),
        else_=_value(Stage.DORMANT),
    )
    whens = [
        (matches[stage], dormant if stage is Stage.DORMANT else _value(stage))
        for stage in rules.precedence
    ]
    # The rules cover every member (parse checks it), so the ELSE is never taken.
    return case(*whens, else_=dormant)


def _value(stage: Stage) -> ColumnElement[str]:
    return literal(stage.value, String(32))


def preview(session: Session, rules: StageRules, top_tier: str | None = None) -> dict[Stage, int]:
    """How many current members each stage would hold under ``rules``, from the
    features and tiers of the last run (nothing is written)."""
    stage = expression(rules, vip_threshold(session, rules), top_tier).label("stage")
    f, m = _features.c, _members.c
    rows = session.execute(
        select(stage, func.count())
        .select_from(_features.join(_members, m.id == f.member_id))
        .where(m.erased_at.is_(None))
        .group_by(stage)
    )
    counts = dict.fromkeys(Stage, 0)
    counts.update({Stage(value): count for value, count in rows})
    return counts
