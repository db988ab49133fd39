"""RFM features, computed set-based: one INSERT ... SELECT ... ON CONFLICT that
aggregates the events of every member (or of some) as of a moment.

Windows are closed at ``as_of`` and open at their start: "the last 30 days" are the
events with ``as_of - 30 days < occurred_at <= as_of``. Events after ``as_of`` are
left out, so that a run for a past moment (``--as-of``) sees what was known then.
Spend is net of refunds in the same window; order counts are not (a refunded order
was still an order, and a visit).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection
from typing import Any

from sqlalchemy import (
    Integer,
    Select,
    and_,
    bindparam,
    case,
    cast,
    column,
    func,
    literal,
    select,
    table,
    text,
    true,
)
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session
from sqlalchemy.sql.base import Executable
from sqlalchemy.sql.elements import ClauseElement, ColumnElement

from members import bulk
from members.db import UTCDateTime
from members.event import Event
from members.lifecycle import MemberFeatures
from members.member import Member

ORDER, REFUND = "order", "refund"
VISITS = ("login", "app_open")
CONTRIBUTIONS = ("review", "share", "referral")
# The event types the features read.
COUNTED_TYPES = (ORDER, REFUND, *VISITS, *CONTRIBUTIONS)
SPEND_WINDOWS = (30, 90, 365)
RECENT_VISITS = 14  # logins_14d
EARLIER_VISITS = 42  # logins_prev_42d: the 42 days before those 14

_events = Event.__table__
_members = Member.__table__
_features = MemberFeatures.__table__


# Ids of members recomputed in one statement: a list the planner can look up in the
# events' (member_id, occurred_at) index, within SQLite's limit of bound variables.
IDS_PER_STATEMENT = 10_000


def recompute(session: Session, as_of: dt.datetime, members: Collection[int] | None = None) -> None:
    """Write the features of every member not erased (or of the members with these
    ids) as of ``as_of``."""
    if as_of.utcoffset() is None:
        raise ValueError("as_of must be an aware time")
    dialect = session.get_bind().dialect.name
    params = {"as_of": as_of, **_window_starts(as_of)}
    if members is None and dialect == "postgresql":
        _recompute_all_postgresql(session, params)
        return
    if members is None:
        session.execute(_upsert(dialect, _select(dialect, None)), params)
        return
    ids = sorted(set(members))
    for start in range(0, len(ids), IDS_PER_STATEMENT):
        chunk = ids[start : start + IDS_PER_STATEMENT]
        session.execute(_upsert(dialect, _select(dialect, chunk)), params)


def _window_starts(as_of: dt.datetime) -> dict[str, dt.datetime]:
    starts = {f"since_{days}": as_of - dt.timedelta(days=days) for days in SPEND_WINDOWS}
    starts["since_visits"] = as_of - dt.timedelta(days=RECENT_VISITS)
    starts["since_earlier_visits"] = as_of - dt.timedelta(days=RECENT_VISITS + EARLIER_VISITS)
    return starts


def _param(name: str) -> Any:
    return bindparam(name, type_=UTCDateTime())


# The kind of an event, as the aggregates read it (a small number is cheaper to test
# than a type name, two dozen times per event).
ORDER_K, REFUND_K, VISIT_K, CONTRIBUTION_K = 1, 2, 3, 4


def _select(dialect: str, members: list[int] | None) -> Select:
    e = _events.c
    as_of = _param("as_of")
    kinds = {ORDER: ORDER_K, REFUND: REFUND_K}
    kinds.update(dict.fromkeys(VISITS, VISIT_K))
    kinds.update(dict.fromkeys(CONTRIBUTIONS, CONTRIBUTION_K))
    # Each event once: its kind, and its amount signed (a refund counts against spend).
    rows = select(
        e.member_id,
        e.occurred_at,
        case(kinds, value=e.type, else_=0).label("k"),
        case((e.type == ORDER, e.amount), (e.type == REFUND, -e.amount)).label("net"),
    ).where(e.occurred_at <= as_of)
    if members is None:
        # Only the types the features read: the others (check-ins...) are skipped.
        # Not for a few members: SQLite would then pick the index on type.
        rows = rows.where(e.type.in_(list(kinds)))
    else:
        rows = rows.where(e.member_id.in_(members))
    r = rows.subquery("e").c
    order = r.k == ORDER_K

    def within(days: int) -> ColumnElement[bool]:
        return r.occurred_at > _param(f"since_{days}")

    def count(condition: ColumnElement[bool]) -> Any:
        return func.count().filter(condition)

    def net_spend(window: ColumnElement[bool] | None) -> Any:
        total = func.sum(r.net) if window is None else func.sum(r.net).filter(window)
        return func.coalesce(total, 0)

    visit, contribution = r.k == VISIT_K, r.k == CONTRIBUTION_K
    recent = r.occurred_at > _param("since_visits")
    earlier = and_(r.occurred_at > _param("since_earlier_visits"), ~recent)
    columns = [
        func.max(r.occurred_at).filter(order).label("last_order_at"),
        *(count(and_(order, within(d))).label(f"orders_{d}d") for d in SPEND_WINDOWS),
        *(net_spend(within(d)).label(f"spend_{d}d") for d in SPEND_WINDOWS),
        count(order).label("lifetime_orders"),
        net_spend(None).label("lifetime_spend"),
        count(and_(visit, recent)).label("logins_14d"),
        count(and_(visit, earlier)).label("logins_prev_42d"),
        *(count(and_(contribution, within(d))).label(f"contributions_{d}d") for d in SPEND_WINDOWS),
    ]
    aggregates = select(r.member_id, *columns)
    agg = aggregates.group_by(r.member_id).subquery("agg")

    m = _members.c
    zero = literal(0)
    lifetime_orders = func.coalesce(agg.c.lifetime_orders, zero)
    lifetime_spend = func.coalesce(agg.c.lifetime_spend, zero)
    query = (
        select(
            m.id.label("member_id"),
            as_of.label("computed_at"),
            agg.c.last_order_at,
            _days(dialect, agg.c.last_order_at, as_of).label("days_since_last_order"),
            func.coalesce(_days(dialect, m.joined_at, as_of), zero).label("days_since_joined"),
            *(
                func.coalesce(agg.c[f"orders_{d}d"], zero).label(f"orders_{d}d")
                for d in SPEND_WINDOWS
            ),
            *(
                func.coalesce(agg.c[f"spend_{d}d"], zero).label(f"spend_{d}d")
                for d in SPEND_WINDOWS
            ),
            lifetime_orders.label("lifetime_orders"),
            lifetime_spend.label("lifetime_spend"),
            case((lifetime_orders > 0, lifetime_spend / lifetime_orders), else_=None).label(
                "average_order_value"
            ),
            func.coalesce(agg.c.logins_14d, zero).label("logins_14d"),
            func.coalesce(agg.c.logins_prev_42d, zero).label("logins_prev_42d"),
            *(
                func.coalesce(agg.c[f"contributions_{d}d"], zero).label(f"contributions_{d}d")
                for d in SPEND_WINDOWS
            ),
        )
        .select_from(_members.outerjoin(agg, agg.c.member_id == m.id))
        # SQLite needs a WHERE before an upsert's ON CONFLICT; erased members have none.
        .where(m.erased_at.is_(None))
    )
    if members is not None:
        query = query.where(m.id.in_(members))
    return query


def _recompute_all_postgresql(session: Session, params: dict[str, Any]) -> None:
    """PostgreSQL plans no parallel workers for the SELECT of an INSERT, but does for
    CREATE TABLE AS: aggregate on every core into a temporary table, then upsert."""
    query = _select("postgresql", None)
    session.execute(_CreateTemporaryTableAs("features_run", query), params)
    run = table("features_run", *(column(c.name) for c in query.selected_columns))
    session.execute(_upsert("postgresql", select(run).where(true())))
    session.execute(text("DROP TABLE features_run"))  # two runs may share a transaction


class _CreateTemporaryTableAs(Executable, ClauseElement):
    """CREATE TEMPORARY TABLE name ON COMMIT DROP AS <query>, parameters bound as the
    query's own (SQLAlchemy's recipe for a construct it lacks)."""

    inherit_cache = False

    def __init__(self, name: str, query: Select) -> None:
        self.name, self.query = name, query


@compiles(_CreateTemporaryTableAs)
def _create_temporary_table_as(element: _CreateTemporaryTableAs, compiler: Any, **kw: Any) -> str:
    query = compiler.process(element.query, **kw)
    return f"CREATE TEMPORARY TABLE {element.name} ON COMMIT DROP AS {query}"


def _days(dialect: str, start: Any, end: Any) -> Any:
    """Whole days from ``start`` to ``end`` (NULL when start is NULL)."""
    if dialect == "postgresql":
        return cast(func.floor(func.extract("epoch", end - start) / 86400), Integer)
    # julianday() is a float: 30 days can come out as 29.99999999; a millisecond more
    # is below the stored precision of any interval that matters here.
    return cast(func.julianday(end) - func.julianday(start) + 1 / 86_400_000, Integer)


def _upsert(dialect: str, query: Select) -> Any:
    insert = bulk.dialect_insert(dialect)(_features)
    names = [c.name for c in query.selected_columns]
    statement = insert.from_select(names, query)
    return statement.on_conflict_do_update(
        index_elements=["member_id"],
        set_={name: statement.excluded[name] for name in names if name != "member_id"},
    )
