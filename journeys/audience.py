"""Who a journey is for: conditions on a member's stage, tier, region, attributes and
RFM features (``stage = 'at_risk' and spend_365d >= 500``), read by
:mod:`journeys.conditions` and answered two ways: on one member's record in the engine
(:func:`record`, then ``conditions.holds``) and over the whole membership in SQL
(:func:`where`, for the builder's estimate of how many members match today).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from decimal import Decimal
from typing import Any, ClassVar

from sqlalchemy import ColumnElement, Numeric, String, and_, false, func, or_, select
from sqlalchemy import type_coerce as coerce
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session
from sqlalchemy.sql.expression import ColumnElement as _Element
from sqlalchemy.sql.visitors import InternalTraversal

from journeys.conditions import (
    COMPARE,
    All,
    Any_,
    Compare,
    Condition,
    ConditionError,
    Kind,
    parse,
)
from members.lifecycle import MemberFeatures, Stage
from members.member import Member

_members, _features = Member.__table__, MemberFeatures.__table__

TEXT_FIELDS = ("stage", "tier", "region")
MEMBER_NUMBERS = ("points_balance",)
FEATURE_NUMBERS = (
    "days_since_last_order",
    "days_since_joined",
    "orders_30d",
    "orders_90d",
    "orders_365d",
    "spend_30d",
    "spend_90d",
    "spend_365d",
    "lifetime_orders",
    "lifetime_spend",
    "average_order_value",
    "logins_14d",
    "logins_prev_42d",
    "contributions_30d",
    "contributions_90d",
    "contributions_365d",
)
ATTRIBUTE = "attributes."
STAGES = tuple(stage.value for stage in Stage)


class Fields(Mapping[str, Kind]):
    """The fields an audience may name: the fixed ones, and ``attributes.<name>``
    for any attribute, whose kind the value compared with decides."""

    def __init__(self, extra: Mapping[str, Kind] | None = None) -> None:
        self.fixed: dict[str, Kind] = {name: "text" for name in TEXT_FIELDS}
        self.fixed.update({name: "number" for name in (*MEMBER_NUMBERS, *FEATURE_NUMBERS)})
        self.fixed.update(extra or {})

    def __getitem__(self, name: str) -> Kind:
        if name.startswith(ATTRIBUTE) and len(name) > len(ATTRIBUTE):
            return "any"
        return self.fixed[name]

    def __iter__(self) -> Iterator[str]:
        return iter([*self.fixed, f"{ATTRIBUTE}<name>"])

    def __len__(self) -> int:
        return len(self.fixed) + 1


FIELDS = Fields()


def read(text: str, fields: Mapping[str, Kind] = FIELDS) -> Condition:
    """An audience condition from its text; ConditionError says what and where."""
    condition = parse(text, fields)
    for compare in _compares(condition):
        if compare.field == "stage":
            values = compare.value if isinstance(compare.value, tuple) else (compare.value,)
            for value in values:
                if value not in STAGES:
                    position = text.find(value)
                    raise ConditionError(
                        f"no stage {value!r} (stages: {', '.join(STAGES)})", max(position, 0)
                    )
    return condition


def problem(text: str) -> str | None:
    """What is wrong with an audience condition's text, or None (experiments' designs
    take their audience reader in this shape)."""
    try:
        read(text)
    except ConditionError as error:
        return str(error)
    return None


def _compares(condition: Condition) -> Iterator[Compare]:
    if isinstance(condition, Compare):
        yield condition
    else:
        for part in condition.parts:
            yield from _compares(part)


def record(member: Member, features: MemberFeatures | None) -> dict[str, Any]:
    """A member as the conditions see them."""
    data: dict[str, Any] = {
        "stage": member.stage.value if member.stage else None,
        "tier": member.tier,
        "region": member.region,
        "points_balance": member.points_balance,
    }
    for name in FEATURE_NUMBERS:
        data[name] = getattr(features, name) if features is not None else None
    for name, value in (member.attributes or {}).items():
        data[f"{ATTRIBUTE}{name}"] = value
    return data


def where(condition: Condition) -> ColumnElement[bool]:
    """The condition in SQL over ``members`` left-joined to ``member_features``."""
    if isinstance(condition, All):
        return and_(*(where(part) for part in condition.parts))
    if isinstance(condition, Any_):
        return or_(*(where(part) for part in condition.parts))
    column = _column(condition)
    if column is None:
        return false()
    if condition.op == "in":
        return column.in_(condition.value)
    if condition.op == "not in":
        return column.not_in(condition.value)
    return COMPARE[condition.op](column, condition.value)


def _column(compare: Compare) -> Any:
    field = compare.field
    numeric = isinstance(compare.value, Decimal) or (
        isinstance(compare.value, tuple) and isinstance(compare.value[0], Decimal)
    )
    if field.startswith(ATTRIBUTE):
        name = field[len(ATTRIBUTE) :]
        if numeric:
            return _AttributeNumber(name)
        return _members.c.attributes[name].as_string()
    if field in TEXT_FIELDS:
        return coerce(_members.c[field], String)
    if field in MEMBER_NUMBERS:
        return _members.c[field]
    if field in FEATURE_NUMBERS:
        return coerce(_features.c[field], Numeric)
    return None


def count(session: Session, condition: Condition | None) -> int:
    """How many members (not erased) the condition matches today."""
    query = (
        select(func.count())
        .select_from(_members.outerjoin(_features, _features.c.member_id == _members.c.id))
        .where(_members.c.erased_at.is_(None))
    )
    if condition is not None:
        query = query.where(where(condition))
    return session.scalar(query) or 0


class _AttributeNumber(_Element[Decimal]):
    """A member attribute's value when it is a JSON number, else NULL (so that text
    in a field compared with a number matches nothing instead of failing the query)."""

    type = Numeric()
    inherit_cache = True
    _traverse_internals: ClassVar = [("name", InternalTraversal.dp_string)]

    def __init__(self, name: str) -> None:
        self.name = name


@compiles(_AttributeNumber)
def _attribute_number_sqlite(element: _AttributeNumber, compiler: Any, **kw: Any) -> str:
    path = compiler.process(func.json_quote(element.name), **kw)
    path = f"'$.' || {path}"
    return (
        f"CASE WHEN json_type(members.attributes, {path}) IN ('integer', 'real')"
        f" THEN json_extract(members.attributes, {path}) END"
    )


@compiles(_AttributeNumber, "postgresql")
def _attribute_number_postgresql(element: _AttributeNumber, compiler: Any, **kw: Any) -> str:
    name = compiler.process(coerce(element.name, String), **kw)
    return (
        f"CASE WHEN jsonb_typeof(members.attributes -> {name}) = 'number'"
        f" THEN (members.attributes ->> {name})::numeric END"
    )
