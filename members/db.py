"""The one declarative base, its naming convention and the shared column types."""

from __future__ import annotations

import datetime as dt
import enum
from decimal import Decimal
from typing import Any

from sqlalchemy import JSON, BigInteger, DateTime, Integer, MetaData, Numeric
from sqlalchemy import Enum as SAEnum
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Session
from sqlalchemy.types import TypeDecorator

# Stable constraint names, so that migrations can name what they alter or drop.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[dt.datetime]):
    """A timestamp stored in UTC and read back timezone-aware.

    SQLite drops offsets silently, so naive values are refused on the way in and
    every value is normalised to UTC; values read back are marked UTC.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value!r}: Tenure stores aware times only")
        return value.astimezone(dt.UTC)

    def process_result_value(self, value: Any, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC)


# Money: exact decimals, two places; the currency lives in a sibling column.
Money = Numeric(14, 2, asdecimal=True)

# JSON that is JSONB on PostgreSQL (indexable, compact) and plain JSON elsewhere.
JSONDict = JSON().with_variant(postgresql.JSONB(), "postgresql")

# Integer primary keys that grow past 2**31 on PostgreSQL; SQLite needs INTEGER for rowid.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {  # noqa: RUF012 - SQLAlchemy reads this class attribute
        dt.datetime: UTCDateTime(),
        Decimal: Money,
        dict[str, Any]: JSONDict,
        # Enums are stored by value in a VARCHAR, so adding a member needs no migration.
        enum.Enum: SAEnum(
            enum.Enum,
            native_enum=False,
            length=32,
            values_callable=lambda e: [m.value for m in e],
            validate_strings=True,
        ),
    }


def utcnow() -> dt.datetime:
    """The wall clock in UTC, for column defaults only; engines take `now` as a parameter."""
    return dt.datetime.now(dt.UTC)


def try_transaction_lock(session: Session, key: int) -> bool:
    """Take the named lock ``key`` (any bigint) until the session's transaction ends;
    False if another transaction holds it. On PostgreSQL an advisory lock; SQLite needs
    none: a writing transaction already holds the database's one write lock."""
    connection = session.connection()
    if connection.dialect.name != "postgresql":
        return True
    taken = connection.exec_driver_sql("SELECT pg_try_advisory_xact_lock(%s)", (key,))
    return bool(taken.scalar())
