"""The tier ladder: 3 to 5 levels (default 银卡 silver, 金卡 gold, 钻石卡 diamond), and the
set-based pass of the lifecycle run that promotes and demotes members.

A member qualifies for a level when, over the ladder's rolling window (30, 90 or 365
days), their net spend, or their order count, or their contributions (reviews,
shares, referrals) reach that level's threshold: any one is enough, and a threshold
left empty is not a way in. The first level is the entry level and has none: every
member holds at least it.

Promotion is immediate. A member who no longer qualifies for their level keeps it
through a grace period (default 30 days) that starts when they first fall short: a
``tier.grace_started`` trigger lets a journey tell them what it takes to keep it. If
they qualify again in time the grace ends; if not, they move down to the level they
qualify for when it expires. Every change is a ``tier_changes`` row and a
``tier.changed`` trigger.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from collections import Counter
from collections.abc import Collection, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from sqlalchemy import (
    ColumnElement,
    String,
    and_,
    case,
    func,
    insert,
    literal,
    null,
    or_,
    select,
    update,
)
from sqlalchemy.orm import Session

from members import programme
from members.errors import InvalidFields
from members.lifecycle import MemberFeatures, TierChange, Trigger
from members.member import Member

SETTING_KEY = "tier_ladder"
WINDOWS = (30, 90, 365)
MIN_LEVELS, MAX_LEVELS = 3, 5
CRITERIA = ("min_spend", "min_orders", "min_contributions")
KEY = re.compile(r"[a-z][a-z0-9_]{0,31}")
TIER_CHANGED, GRACE_STARTED = "tier.changed", "tier.grace_started"

_members = Member.__table__
_features = MemberFeatures.__table__
_changes = TierChange.__table__
_triggers = Trigger.__table__


@dataclasses.dataclass(frozen=True)
class Level:
    key: str
    name_zh: str
    name_en: str
    min_spend: Decimal | None = None
    min_orders: int | None = None
    min_contributions: int | None = None

    def as_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["min_spend"] = None if self.min_spend is None else f"{self.min_spend:.2f}"
        return data


@dataclasses.dataclass(frozen=True)
class TierLadder:
    levels: tuple[Level, ...]
    window_days: int = 365
    grace_days: int = 30

    def as_dict(self) -> dict[str, Any]:
        return {
            "levels": [level.as_dict() for level in self.levels],
            "window_days": self.window_days,
            "grace_days": self.grace_days,
        }

    def level(self, key: str | None) -> Level | None:
        return next((lv for lv in self.levels if lv.key == key), None)

    def counted(self, features: MemberFeatures | None) -> tuple[Decimal, int, int]:
        """A member's spend, orders and contributions over the ladder's window."""
        if features is None:
            return Decimal(0), 0, 0
        days = self.window_days
        return (
            getattr(features, f"spend_{days}d"),
            getattr(features, f"orders_{days}d"),
            getattr(features, f"contributions_{days}d"),
        )


DEFAULT_LADDER = TierLadder(
    levels=(
        Level("silver", "银卡", "Silver"),
        Level("gold", "金卡", "Gold", Decimal(2000), 6, 20),
        Level("diamond", "钻石卡", "Diamond", Decimal(8000), 15, 60),
    )
)


def parse(data: Mapping[str, Any]) -> TierLadder:
    """A ladder from a document; raises InvalidFields naming each wrong field, e.g.
    ``levels.2.min_spend``."""
    errors: dict[str, str] = {}
    for name in sorted(set(data) - {"levels", "window_days", "grace_days"}):
        errors[name] = "unknown setting"
    window = data.get("window_days")
    if window not in WINDOWS or isinstance(window, bool):
        errors["window_days"] = f"must be one of {', '.join(map(str, WINDOWS))} (days)"
    grace = data.get("grace_days")
    if isinstance(grace, bool) or not isinstance(grace, int) or not 0 <= grace <= 3650:
        errors["grace_days"] = "must be a whole number of days from 0 to 3650"
    raw = data.get("levels")
    levels: list[Level] = []
    if not isinstance(raw, list) or not MIN_LEVELS <= len(raw) <= MAX_LEVELS:
        errors["levels"] = f"must list {MIN_LEVELS} to {MAX_LEVELS} levels, lowest first"
    else:
        for index, item in enumerate(raw):
            level = _level(item, f"levels.{index}", errors)
            if level is not None:
                levels.append(level)
        if len(levels) == len(raw):
            _check_ladder(levels, errors)
    if errors:
        raise InvalidFields(errors)
    return TierLadder(tuple(levels), window_days=window, grace_days=grace)


def _level(item: Any, where: str, errors: dict[str, str]) -> Level | None:
    if not isinstance(item, Mapping):
        errors[where] = "must be an object with key, name_zh, name_en and thresholds"
        return None
    before = len(errors)
    for name in sorted(set(item) - {"key", "name_zh", "name_en", *CRITERIA}):
        errors[f"{where}.{name}"] = "unknown field"
    key = item.get("key")
    if not isinstance(key, str) or not KEY.fullmatch(key):
        errors[f"{where}.key"] = "lower-case letters, digits and _, starting with a letter"
    names = {}
    for name in ("name_zh", "name_en"):
        value = item.get(name)
        if not isinstance(value, str) or not value.strip() or len(value.strip()) > 32:
            errors[f"{where}.{name}"] = "required, at most 32 characters"
        else:
            names[name] = value.strip()
    spend = item.get("min_spend")
    if spend is not None:
        try:
            spend = Decimal(str(spend)) if not isinstance(spend, bool) else None
        except InvalidOperation:
            spend = None
        if spend is None or not spend.is_finite() or spend < 0 or spend > Decimal("1e11"):
            errors[f"{where}.min_spend"] = "must be an amount of at least 0, or empty"
        else:
            spend = spend.quantize(Decimal("0.01"))
    counts = {}
    for name in ("min_orders", "min_contributions"):
        value = item.get(name)
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 100_000
        ):
            errors[f"{where}.{name}"] = "must be a whole number of at least 0, or empty"
        counts[name] = value
    if len(errors) > before:
        return None
    return Level(key, names["name_zh"], names["name_en"], spend, **counts)


def _check_ladder(levels: list[Level], errors: dict[str, str]) -> None:
    keys = [level.key for level in levels]
    for index, key in enumerate(keys):
        if keys.index(key) != index:
            errors[f"levels.{index}.key"] = f"{key!r} is already the key of another level"
    entry = levels[0]
    if any(getattr(entry, c) for c in CRITERIA):
        errors["levels.0"] = (
            "the first level is where every member starts: leave its thresholds empty"
        )
    for index, level in enumerate(levels[1:], start=1):
        if all(getattr(level, c) in (None, 0) for c in CRITERIA):
            errors[f"levels.{index}"] = "give at least one way in: a spend, orders or contributions"
    for criterion in CRITERIA:
        previous: tuple[int, Any] | None = None
        for index, level in enumerate(levels[1:], start=1):
            value = getattr(level, criterion)
            if value in (None, 0):
                continue
            if previous is not None and value <= previous[1]:
                errors[f"levels.{index}.{criterion}"] = (
                    f"must be more than {previous[1]} ({levels[previous[0]].key}): "
                    "each level asks for more than the one below it"
                )
            previous = (index, value)


SETTING = programme.Document(SETTING_KEY, parse, DEFAULT_LADDER)
load, save = SETTING.load, SETTING.save


# --- the set-based pass -------------------------------------------------------------


def _window(ladder: TierLadder) -> tuple[Any, Any, Any]:
    f = _features.c
    days = ladder.window_days
    return f[f"spend_{days}d"], f[f"orders_{days}d"], f[f"contributions_{days}d"]


def _qualifies(ladder: TierLadder, level: Level) -> ColumnElement[bool]:
    spend, orders, contributions = _window(ladder)
    ways = []
    if level.min_spend:
        ways.append(spend >= level.min_spend)
    if level.min_orders:
        ways.append(orders >= level.min_orders)
    if level.min_contributions:
        ways.append(contributions >= level.min_contributions)
    return or_(*ways) if ways else literal(True)


def qualified_rank(ladder: TierLadder) -> ColumnElement[int]:
    """The index of the highest level a row of member_features qualifies for."""
    whens = [
        (_qualifies(ladder, level), index)
        for index, level in reversed(list(enumerate(ladder.levels)))
        if index > 0
    ]
    return case(*whens, else_=0)


def current_rank(ladder: TierLadder) -> ColumnElement[int]:
    """The index of a member's tier; -1 for none, or for a level no longer on the ladder."""
    m = _members.c
    return case(
        {level.key: index for index, level in enumerate(ladder.levels)}, value=m.tier, else_=-1
    )


def _key_of(rank: ColumnElement[int], ladder: TierLadder) -> ColumnElement[str]:
    return case(
        {index: level.key for index, level in enumerate(ladder.levels)},
        value=rank,
        else_=ladder.levels[0].key,
    ).cast(String(32))


def apply(
    session: Session,
    *,
    run_id: int,
    as_of: dt.datetime,
    ladder: TierLadder,
    chunks: list[list[int] | None],
) -> Counter[str]:
    """Promote, demote and start or end grace periods for the members in ``chunks``
    (None: all), from their features; returns the members moved into each tier."""
    m, f = _members.c, _features.c
    qualified, current = qualified_rank(ladder), current_rank(ladder)
    expired = literal(True) if ladder.grace_days == 0 else m.tier_grace_until <= as_of
    moves = or_(current < 0, qualified > current, and_(qualified < current, expired))
    for chunk in chunks:
        changed = (
            select(
                m.id,
                m.tier,
                _key_of(qualified, ladder),
                literal(as_of, _changes.c.at.type),
                literal(run_id, _changes.c.run_id.type),
            )
            .select_from(_members.join(_features, f.member_id == m.id))
            .where(m.erased_at.is_(None), moves, *_within(chunk))
        )
        columns = ["member_id", "from_tier", "to_tier", "at", "run_id"]
        session.execute(insert(_changes).from_select(columns, changed))

    t = _changes.c
    ours = t.run_id == run_id
    session.execute(
        update(_members)
        .where(m.id == t.member_id, ours)
        .values(tier=t.to_tier, tier_since=t.at, tier_grace_until=None, updated_at=m.updated_at)
    )
    session.execute(
        insert(_triggers).from_select(
            ["kind", "member_id", "at", "value", "source_type", "source_id"],
            select(
                literal(TIER_CHANGED), t.member_id, t.at, t.to_tier, literal("tier_change"), t.id
            )
            .where(ours)
            .order_by(t.id),
        )
    )
    _grace(session, ladder, as_of, chunks)
    counts = session.execute(select(t.to_tier, func.count()).where(ours).group_by(t.to_tier))
    return Counter(dict(counts.all()))


def _within(chunk: Collection[int] | None) -> list[ColumnElement[bool]]:
    return [] if chunk is None else [_members.c.id.in_(chunk)]


def _grace(
    session: Session, ladder: TierLadder, as_of: dt.datetime, chunks: list[list[int] | None]
) -> None:
    m, f = _members.c, _features.c
    qualified, current = qualified_rank(ladder), current_rank(ladder)
    until = as_of + dt.timedelta(days=ladder.grace_days)
    falls_short = and_(m.erased_at.is_(None), qualified < current, m.tier_grace_until.is_(None))
    joined = f.member_id == m.id
    for chunk in chunks:
        # Qualifying again ends a grace period (also one left from when grace was on).
        session.execute(
            update(_members)
            .where(joined, m.tier_grace_until.is_not(None), qualified >= current, *_within(chunk))
            .values(tier_grace_until=None, updated_at=m.updated_at)
        )
        if not ladder.grace_days:
            continue  # demoted at once above
        starting = (
            select(
                literal(GRACE_STARTED),
                m.id,
                literal(as_of, _triggers.c.at.type),
                m.tier,
                null(),
                null(),
            )
            .select_from(_members.join(_features, joined))
            .where(falls_short, *_within(chunk))
        )
        session.execute(
            insert(_triggers).from_select(
                ["kind", "member_id", "at", "value", "source_type", "source_id"], starting
            )
        )
        session.execute(
            update(_members)
            .where(joined, falls_short, *_within(chunk))
            .values(tier_grace_until=until, updated_at=m.updated_at)
        )


# --- "spend X more to reach the next tier" -------------------------------------------


@dataclasses.dataclass(frozen=True)
class NextTier:
    level: Level
    spend_more: Decimal | None  # None: spend is not a way into that level
    orders_more: int | None
    contributions_more: int | None


def next_tier(
    ladder: TierLadder, tier: str | None, features: MemberFeatures | None
) -> NextTier | None:
    """What a member needs, over the ladder's window, to reach the level above theirs
    (None at the top). Each way in is given on its own: any one is enough."""
    current = ladder.level(tier)
    index = -1 if current is None else ladder.levels.index(current)
    if index + 1 >= len(ladder.levels):
        return None
    target = ladder.levels[index + 1]
    spend, orders, contributions = ladder.counted(features)
    return NextTier(
        level=target,
        spend_more=None if not target.min_spend else max(target.min_spend - spend, Decimal(0)),
        orders_more=None if not target.min_orders else max(target.min_orders - orders, 0),
        contributions_more=None
        if not target.min_contributions
        else max(target.min_contributions - contributions, 0),
    )
