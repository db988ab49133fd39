"""The SQL half of an experiment's analysis: per arm, the sums the statistics need, and
nothing per member.

One pass over the assignments joined to their members' orders and refunds (by the
``(member_id, occurred_at)`` index) writes a temporary table with one row per assigned
member; small GROUP BY queries over it give, per arm: for each metric n, Σy, Σy² and the
sums CUPED needs with the member's pre-assignment orders and spend (Σx, Σxxᵀ, Σxy);
the winsorising cap of revenue; the days to the next purchase as grouped counts for
the survival curves; and breakdowns by stage, tier and region at assignment. What
comes back into Python is bounded by arms × (metrics + days + breakdown values).

Windows: an order counts for retention at h days when it falls in (assigned_at,
assigned_at + h]; only members whose window has fully elapsed by ``as_of`` count. The
other metrics run from assignment to ``as_of``. Revenue is net of refunds.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import (
    Float,
    and_,
    case,
    cast,
    column,
    func,
    literal,
    null,
    select,
    table,
    text,
    tuple_,
)
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session
from sqlalchemy.sql.expression import ClauseElement, Executable

from experiments.assignment import HOLDOUT
from experiments.design import METRICS, RETENTION_HORIZONS
from experiments.models import Assignment, Experiment
from members.event import Event
from members.loyalty import BenefitGrant

PRE_DAYS = 90
SURVIVAL_DAYS = 90
DAY = 86_400.0
# julianday() is a float: a window's end can come out a hair early; a millisecond is
# below the precision of any time that matters here.
EPSILON = 0.001
MEANS = ("orders_per_member", "revenue_per_member", "cost_per_member", "roi_per_member")
COVARIATES = ("pre_orders", "pre_spend")
BREAKDOWNS = ("stage", "tier", "region")
HORIZON_OF = {f"retention_{h}d": h for h in RETENTION_HORIZONS}
MAX_BREAKDOWN_VALUES = 12


@dataclasses.dataclass(frozen=True)
class Sums:
    """One arm's metric over the members it counts, with the covariates' sums."""

    n: int
    y: float
    yy: float
    x: tuple[float, float]
    xx: tuple[tuple[float, float], tuple[float, float]]
    xy: tuple[float, float]


@dataclasses.dataclass(frozen=True)
class RatioSums:
    """Revenue over orders (AOV), per member: Σnum, Σden and the second moments."""

    n: int
    num: float
    den: float
    numnum: float
    denden: float
    numden: float


@dataclasses.dataclass(frozen=True)
class Arm:
    key: str  # a variant's key, or "holdout"
    n: int
    metrics: dict[str, Sums]
    aov: RatioSums
    # (day, members whose next purchase fell on it, members censored on it)
    survival: tuple[tuple[int, int, int], ...] = ()


@dataclasses.dataclass(frozen=True)
class Aggregates:
    as_of: dt.datetime
    arms: dict[str, Arm]
    winsor_cap: float | None
    # dimension -> value -> arm key -> the primary metric's sums in that slice
    breakdowns: dict[str, dict[str, dict[str, Sums]]]


def aggregate(
    session: Session,
    experiment: Experiment,
    *,
    as_of: dt.datetime,
    winsor_percentile: float = 99.0,
    primary: str = "retention_90d",
) -> Aggregates:
    keys = {v.id: v.key for v in experiment.variants}
    with _member_table(session, experiment, as_of) as per:
        cap = _cap(session, per, winsor_percentile)
        revenue = per.c.revenue if cap is None else _least(session, per.c.revenue, cap)
        outcomes = _outcomes(per, revenue, as_of)
        arms = _arms(session, per, outcomes, keys)
        survival = _survival(session, per, keys)
        for key, arm in arms.items():
            arms[key] = dataclasses.replace(arm, survival=survival.get(key, ()))
        # A ratio (AOV) has no per-member sums to slice: no breakdowns for it.
        breakdowns = (
            _breakdowns(session, per, outcomes[primary], keys)
            if primary in outcomes
            else {dimension: {} for dimension in BREAKDOWNS}
        )
    for key in [*keys.values(), HOLDOUT]:
        arms.setdefault(key, _empty(key))
    return Aggregates(as_of=as_of, arms=arms, winsor_cap=cap, breakdowns=breakdowns)


# -- the per-member table


@contextmanager
def _member_table(session: Session, experiment: Experiment, as_of: dt.datetime) -> Iterator[Any]:
    dialect = session.get_bind().dialect.name
    name = f"tenure_exp_{secrets.token_hex(4)}"
    a = Assignment.__table__
    earliest = session.scalar(
        select(func.min(a.c.assigned_at)).where(a.c.experiment_id == experiment.id)
    )
    query = _per_member(dialect, experiment, as_of, earliest or as_of)
    if dialect == "postgresql":
        # Sorts and hashes over a million members' orders fit in memory, for this
        # transaction only.
        session.execute(text("SET LOCAL work_mem = '256MB'"))
        # Compiling these few queries (JIT) costs more than it saves: a second or two.
        session.execute(text("SET LOCAL jit = off"))
    session.execute(_CreateTemporaryTableAs(name, query))
    columns = [column(c.name) for c in query.selected_columns]
    try:
        yield table(name, *columns)
    finally:
        session.execute(text(f"DROP TABLE {name}"))


class _CreateTemporaryTableAs(Executable, ClauseElement):
    """CREATE TEMPORARY TABLE name AS <query>, the query's parameters bound as its own."""

    inherit_cache = False

    def __init__(self, name: str, query: Any) -> None:
        self.name, self.query = name, query


@compiles(_CreateTemporaryTableAs)
def _create_temporary_table_as(element: _CreateTemporaryTableAs, compiler: Any, **kw: Any) -> str:
    return f"CREATE TEMPORARY TABLE {element.name} AS {compiler.process(element.query, **kw)}"


def _least(session: Session, value: Any, bound: float) -> Any:
    """The smaller of the two: LEAST on PostgreSQL, SQLite's two-argument min()."""
    if session.get_bind().dialect.name == "postgresql":
        return func.least(value, bound)
    return func.min(value, bound)


def _seconds(dialect: str, start: Any, end: Any) -> Any:
    """Seconds from ``start`` to ``end``, signed."""
    if dialect == "postgresql":
        # date_part is a double; EXTRACT is numeric since PostgreSQL 14, and slow.
        return func.date_part("epoch", end - start)
    return (func.julianday(end) - func.julianday(start)) * DAY


def _per_member(
    dialect: str, experiment: Experiment, as_of: dt.datetime, earliest: dt.datetime
) -> Any:
    a, e, g = Assignment.__table__, Event.__table__, BenefitGrant.__table__
    ours = and_(a.c.experiment_id == experiment.id, a.c.assigned_at <= as_of)
    # Each order or refund once, with its seconds since the member's assignment.
    joined = (
        select(
            a.c.id.label("assignment_id"),
            e.c.type,
            cast(e.c.amount, Float).label("amount"),  # float sums are cheaper
            _seconds(dialect, a.c.assigned_at, e.c.occurred_at).label("since"),
        )
        .select_from(
            a.join(
                e,
                and_(
                    e.c.member_id == a.c.member_id,
                    e.c.type.in_(("order", "refund")),
                    e.c.occurred_at > earliest - dt.timedelta(days=PRE_DAYS),
                    e.c.occurred_at <= as_of,
                ),
            )
        )
        .where(ours)
        .subquery()
    )
    since, order = joined.c.since, joined.c.type == "order"
    signed = case((order, joined.c.amount), else_=-joined.c.amount)
    after = since > 0
    before = and_(since <= 0, since > -PRE_DAYS * DAY)
    events = (
        select(
            joined.c.assignment_id,
            func.count().filter(and_(order, after)).label("orders"),
            func.sum(signed).filter(after).label("revenue"),
            func.min(since).filter(and_(order, after)).label("first_order"),
            func.count().filter(and_(order, before)).label("pre_orders"),
            func.sum(signed).filter(before).label("pre_spend"),
        )
        .group_by(joined.c.assignment_id)
        .subquery()
    )
    redeemed = and_(g.c.redeemed_at.is_not(None), g.c.redeemed_at <= as_of)
    # A coupon costs its value once redeemed; the other benefits cost what the package
    # says when granted (points, a service, free shipping or a multiplier given).
    incurred = case((g.c.kind == "coupon", redeemed), else_=True)
    grants = (
        select(
            g.c.member_id,
            func.max(case((redeemed, 1), else_=0)).label("redeemed"),
            func.sum(case((incurred, g.c.cost), else_=0)).label("cost"),
        )
        .where(
            g.c.source == "experiment_variant",
            g.c.source_ref.startswith(f"{experiment.key}:", autoescape=True),
            g.c.granted_at <= as_of,
        )
        .group_by(g.c.member_id)
        .subquery()
    )
    return (
        select(
            a.c.variant_id.label("arm"),
            a.c.stage,
            a.c.tier,
            a.c.region,
            cast(
                _seconds(dialect, a.c.assigned_at, literal(as_of, a.c.assigned_at.type)), Float
            ).label("elapsed"),
            # The longest retention window that has closed for the member (0: none).
            case(
                *[
                    (a.c.assigned_at <= as_of - dt.timedelta(days=h), h)
                    for h in sorted(RETENTION_HORIZONS, reverse=True)
                ],
                else_=0,
            ).label("horizon"),
            # Floats throughout: PostgreSQL sums integers as numeric, much slower.
            cast(func.coalesce(events.c.orders, 0), Float).label("orders"),
            cast(func.coalesce(events.c.revenue, 0), Float).label("revenue"),
            cast(events.c.first_order, Float).label("first_order"),
            cast(func.coalesce(events.c.pre_orders, 0), Float).label("pre_orders"),
            cast(func.coalesce(events.c.pre_spend, 0), Float).label("pre_spend"),
            func.coalesce(grants.c.redeemed, 0).label("redeemed"),
            cast(func.coalesce(grants.c.cost, 0), Float).label("cost"),
        )
        .select_from(
            a.outerjoin(events, events.c.assignment_id == a.c.id).outerjoin(
                grants, grants.c.member_id == a.c.member_id
            )
        )
        .where(ours)
    )


def _cap(session: Session, per: Any, percentile: float) -> float | None:
    """The revenue at the percentile (nearest rank, pooled over the arms), above which
    a member's revenue is cut to it; None when nothing is cut."""
    if percentile >= 100:
        return None
    n = session.scalar(select(func.count()).select_from(per)) or 0
    if n == 0:
        return None
    rank = int(percentile / 100 * (n - 1))
    value = session.scalar(select(per.c.revenue).order_by(per.c.revenue).offset(rank).limit(1))
    # Early on, fewer than one member in a hundred has bought: a cap of 0 would cut
    # every member's revenue to nothing, so nothing is cut.
    return float(value) if value is not None and value > 0 else None


# -- sums per arm


def _outcomes(per: Any, revenue: Any, as_of: dt.datetime) -> dict[str, tuple[Any, Any]]:
    """metric -> (the member's value, whether the member counts: None for everyone)."""
    outcomes: dict[str, tuple[Any, Any]] = {}
    for h in RETENTION_HORIZONS:
        kept = and_(per.c.first_order.is_not(None), per.c.first_order <= h * DAY + EPSILON)
        outcomes[f"retention_{h}d"] = (case((kept, 1), else_=0), per.c.horizon >= h)
    outcomes["orders_per_member"] = (per.c.orders, None)
    outcomes["revenue_per_member"] = (revenue, None)
    outcomes["cost_per_member"] = (per.c.cost, None)
    outcomes["roi_per_member"] = (revenue - per.c.cost, None)
    outcomes["redemption_rate"] = (per.c.redeemed, None)
    return outcomes


def _sum(value: Any, where: Any) -> Any:
    if where is None:
        return func.coalesce(func.sum(value), 0)
    return func.coalesce(func.sum(case((where, value), else_=0)), 0)


def _group(name: str, where: Any) -> str:
    """The members a metric counts, named: metrics over the same members share the
    count and the covariates' sums."""
    return "all" if where is None else f"g_{name}"


def _group_columns(group: str, where: Any, per: Any) -> list[Any]:
    x1, x2 = per.c.pre_orders, per.c.pre_spend
    return [
        _sum(1, where).label(f"{group}__n"),
        _sum(x1, where).label(f"{group}__x1"),
        _sum(x2, where).label(f"{group}__x2"),
        _sum(x1 * x1, where).label(f"{group}__x1x1"),
        _sum(x2 * x2, where).label(f"{group}__x2x2"),
        _sum(x1 * x2, where).label(f"{group}__x1x2"),
    ]


def _metric_columns(name: str, y: Any, where: Any, per: Any) -> list[Any]:
    return [
        _sum(y, where).label(f"{name}__y"),
        _sum(y * y, where).label(f"{name}__yy"),
        _sum(y * per.c.pre_orders, where).label(f"{name}__yx1"),
        _sum(y * per.c.pre_spend, where).label(f"{name}__yx2"),
    ]


def _sums_columns(outcomes: dict[str, tuple[Any, Any]], per: Any) -> list[Any]:
    columns, groups = [], set()
    for name, (y, where) in outcomes.items():
        group = _group(name, where)
        if group not in groups:
            groups.add(group)
            columns += _group_columns(group, where, per)
        columns += _metric_columns(name, y, where, per)
    return columns


def _sums_query(per: Any, outcomes: dict[str, tuple[Any, Any]]) -> Any:
    """Per arm and horizon class, the sums of every metric over all its members, with
    no condition in any sum: a retention metric is then the classes whose window has
    closed, added up in Python (a handful of rows)."""
    revenue, _ = outcomes["revenue_per_member"]
    columns = [per.c.arm, per.c.horizon, *_group_columns("all", None, per)]
    for name, (y, _) in outcomes.items():
        columns += _metric_columns(name, y, None, per)
    columns += [
        func.coalesce(func.sum(revenue * per.c.orders), 0).label("aov__numden"),
        func.coalesce(func.sum(per.c.orders * per.c.orders), 0).label("aov__denden"),
    ]
    return select(*columns).group_by(per.c.arm, per.c.horizon)


def _arms(
    session: Session, per: Any, outcomes: dict[str, tuple[Any, Any]], keys: dict[int, str]
) -> dict[str, Arm]:
    classes: dict[str, list[Any]] = {}
    for row in session.execute(_sums_query(per, outcomes)).mappings():
        classes.setdefault(keys.get(row["arm"], HOLDOUT), []).append(row)
    return {key: _arm(key, rows, outcomes) for key, rows in classes.items()}


def _total(rows: list[Any], horizon: int = 0) -> dict[str, float]:
    """The sums of the horizon classes of at least ``horizon`` days."""
    chosen = [row for row in rows if row["horizon"] >= horizon]
    names = [name for name in rows[0] if name not in ("arm", "horizon")]
    return {name: sum(float(row[name] or 0) for row in chosen) for name in names}


def _read_sums(row: Any, name: str, group: str) -> Sums:
    def read(prefix: str, part: str) -> float:
        return float(row[f"{prefix}__{part}"] or 0)

    def x(part: str) -> float:
        return read(group, part)

    return Sums(
        n=int(x("n")),
        y=read(name, "y"),
        yy=read(name, "yy"),
        x=(x("x1"), x("x2")),
        xx=((x("x1x1"), x("x1x2")), (x("x1x2"), x("x2x2"))),
        xy=(read(name, "yx1"), read(name, "yx2")),
    )


def _arm(key: str, rows: list[Any], outcomes: dict[str, Any]) -> Arm:
    everyone = _total(rows)
    metrics = {
        name: _read_sums(
            _total(rows, HORIZON_OF[name]) if name in HORIZON_OF else everyone, name, "all"
        )
        for name in outcomes
    }
    revenue, orders = metrics["revenue_per_member"], metrics["orders_per_member"]
    n = int(everyone["all__n"])
    aov = RatioSums(
        n=n,
        num=revenue.y,
        den=orders.y,
        numnum=revenue.yy,
        denden=everyone["aov__denden"],
        numden=everyone["aov__numden"],
    )
    return Arm(key=key, n=n, metrics=metrics, aov=aov)


def _empty(key: str) -> Arm:
    zero = Sums(0, 0.0, 0.0, (0.0, 0.0), ((0.0, 0.0), (0.0, 0.0)), (0.0, 0.0))
    return Arm(key, 0, {name: zero for name in METRICS}, RatioSums(0, 0, 0, 0, 0, 0))


# -- survival and breakdowns


def _survival(session: Session, per: Any, keys: dict[int, str]) -> dict[str, tuple]:
    """Per arm, (day, events, censored) as :class:`survival.Grouped` reads them: the
    whole days from assignment to a member's next purchase (0 = within the first 24
    hours), or to the end of their watch without one (``as_of``, at most SURVIVAL_DAYS)."""
    bought = and_(per.c.first_order.is_not(None), per.c.first_order < SURVIVAL_DAYS * DAY)
    watched = _least(session, per.c.elapsed, SURVIVAL_DAYS * DAY)
    day = case(
        (bought, cast(func.floor(per.c.first_order / DAY), Float)),
        else_=cast(func.floor((watched + EPSILON) / DAY), Float),
    )
    query = (
        select(
            per.c.arm,
            day.label("day"),
            func.sum(case((bought, 1), else_=0)),
            func.sum(case((bought, 0), else_=1)),
        )
        .group_by(per.c.arm, day)
        .order_by(per.c.arm, day)
    )
    grouped: dict[str, list[tuple[int, int, int]]] = {}
    for arm, day_, events, censored in session.execute(query):
        grouped.setdefault(keys.get(arm, HOLDOUT), []).append(
            (int(day_), int(events), int(censored))
        )
    return {key: tuple(rows) for key, rows in grouped.items()}


def _breakdowns(
    session: Session, per: Any, outcome: tuple[Any, Any], keys: dict[int, str]
) -> dict[str, dict[str, dict[str, Sums]]]:
    """The primary metric's sums per arm and value of each of stage, tier and region:
    one pass with GROUPING SETS on PostgreSQL, a query per dimension on SQLite."""
    y, where = outcome
    values = {d: func.coalesce(per.c[d], "").label(d) for d in BREAKDOWNS}
    columns = [per.c.arm, *values.values(), *_sums_columns({"m": (y, where)}, per)]
    if session.get_bind().dialect.name == "postgresql":
        sets = [tuple_(per.c.arm, values[d]) for d in BREAKDOWNS]
        queries = [select(*columns).group_by(func.grouping_sets(*sets))]
    else:
        queries = [
            select(
                per.c.arm,
                *(values[d] if d == dimension else null().label(d) for d in BREAKDOWNS),
                *columns[len(BREAKDOWNS) + 1 :],
            ).group_by(per.c.arm, values[dimension])
            for dimension in BREAKDOWNS
        ]
    slices: dict[str, dict[str, dict[str, Sums]]] = {d: {} for d in BREAKDOWNS}
    for query in queries:
        for row in session.execute(query).mappings():
            sums = _read_sums(row, "m", _group("m", where))
            dimension = next(d for d in BREAKDOWNS if row[d] is not None)
            if sums.n:
                value = row[dimension] or "(none)"
                slices[dimension].setdefault(value, {})[keys.get(row["arm"], HOLDOUT)] = sums
    return {dimension: _largest(found) for dimension, found in slices.items()}


def _largest(slices: dict[str, dict[str, Sums]]) -> dict[str, dict[str, Sums]]:
    largest = sorted(slices, key=lambda v: -sum(s.n for s in slices[v].values()))
    return {v: slices[v] for v in largest[:MAX_BREAKDOWN_VALUES]}
