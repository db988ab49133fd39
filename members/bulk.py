"""Set-based writes and reads of a whole batch, one statement and one round trip each.

On PostgreSQL each column travels as one array parameter, in binary, and ``unnest``
turns the arrays back into rows: the server parses a short statement whatever the
batch size, and psycopg neither splits a query of ten thousand placeholders nor
escapes every element in Python (those two were most of a batch's cost). Elsewhere
(SQLite) SQLAlchemy Core's executemany batches the rows into multi-row INSERTs.

Column defaults declared in the models are applied here too, so that a row inserted
by either path looks the same.
"""

from __future__ import annotations

import datetime as dt
import enum
import functools
import json
import re
from collections.abc import Collection, Sequence
from typing import Any

from sqlalchemy import JSON, Column, Table, bindparam
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from members.db import UTCDateTime

SQLITE_MAX_VARIABLES = 32766  # SQLite 3.32 and later

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def insert_ignore(
    session: Session,
    table: Table,
    rows: Sequence[dict[str, Any]],
    key: str,
    returning: str | None = None,
) -> list[Any]:
    """INSERT the rows, skipping those whose ``key`` exists (ON CONFLICT DO NOTHING);
    return the ``returning`` column of the rows inserted."""
    if not rows:
        return []
    if _is_postgresql(session):
        names = list(rows[0])
        sql, defaulted = _unnest_insert(table, tuple(names), key, returning)
        params = {f"c{i}": _column(table.c[n], [r[n] for r in rows]) for i, n in enumerate(names)}
        params.update({f"d{i}": _default(c) for i, c in enumerate(defaulted)})
        result = _execute(session, sql, params)
        return [row[0] for row in result] if returning else []
    return _sqlite_insert_ignore(session, table, rows, key, returning)


def insert_rows(session: Session, table: Table, rows: Sequence[dict[str, Any]]) -> None:
    """INSERT the rows; a row that breaks a unique constraint fails the statement (and
    so the transaction). On PostgreSQL one statement over arrays (unnest), which is
    many times faster than an executemany of single-row INSERTs."""
    if not rows:
        return
    if not _is_postgresql(session):
        session.execute(table.insert(), rows)
        return
    names = list(rows[0])
    sql, defaulted = _unnest_insert(table, tuple(names), None, None)
    params = {f"c{i}": _column(table.c[n], [r[n] for r in rows]) for i, n in enumerate(names)}
    params.update({f"d{i}": _default(c) for i, c in enumerate(defaulted)})
    _execute(session, sql, params)


def update_rows(session: Session, table: Table, key: str, rows: Sequence[dict[str, Any]]) -> None:
    """UPDATE each row found by ``key`` with the row's other values (every row carries
    the same columns). On PostgreSQL one UPDATE ... FROM unnest(arrays)."""
    if not rows:
        return
    names = [n for n in rows[0] if n != key]
    if not _is_postgresql(session):
        c = table.c
        session.execute(
            table.update()
            .where(c[key] == bindparam("_key"))
            .values({n: bindparam(f"_{n}") for n in names}),
            [{"_key": r[key], **{f"_{n}": r[n] for n in names}} for r in rows],
        )
        return
    columns = [table.c[key], *(table.c[n] for n in names)]
    arrays = ", ".join(f"CAST(%(c{i})b AS {_array_type(c)})" for i, c in enumerate(columns))
    sets = ", ".join(
        f"{_quote(c.name)} = {_cast(c, f'u.c{i}')}" for i, c in enumerate(columns) if i
    )
    sql = (
        f"UPDATE {_quote(table.name)} SET {sets} "  # noqa: S608 (identifiers of the model)
        f"FROM unnest({arrays}) AS u({', '.join(f'c{i}' for i in range(len(columns)))}) "
        f"WHERE {_quote(table.name)}.{_quote(table.c[key].name)} = u.c0"
    )
    params = {f"c{i}": _column(c, [r[c.name] for r in rows]) for i, c in enumerate(columns)}
    _execute(session, sql, params)


def rows_where_in(
    session: Session, table: Table, key: str, values: Collection[Any], columns: Sequence[str]
) -> list[tuple]:
    """SELECT ``columns`` of the rows whose ``key`` is one of ``values``, as the driver
    returns them (no type processing: test a time for None, do not read it)."""
    if not values:
        return []
    if _is_postgresql(session):
        # Identifiers come from the model (a KeyError for any other), quoted; values
        # are parameters.
        names = ", ".join(_quote(table.c[c].name) for c in columns)
        sql = (
            f"SELECT {names} FROM {_quote(table.name)} "  # noqa: S608
            f"WHERE {_quote(table.c[key].name)} = "
            f"ANY(CAST(%(values)b AS {_array_type(table.c[key])}))"
        )
        return [tuple(row) for row in _execute(session, sql, {"values": list(values)})]
    names = ", ".join(_quote(table.c[c].name) for c in columns)
    head = f"SELECT {names} FROM {_quote(table.name)} WHERE {_quote(table.c[key].name)} IN "  # noqa: S608
    values = list(values)
    out: list[tuple] = []
    for start in range(0, len(values), SQLITE_MAX_VARIABLES):
        chunk = values[start : start + SQLITE_MAX_VARIABLES]
        sql = head + "(" + ", ".join("?" * len(chunk)) + ")"
        out.extend(tuple(row) for row in _execute(session, sql, tuple(chunk)))
    return out


def _sqlite_insert_ignore(
    session: Session,
    table: Table,
    rows: Sequence[dict[str, Any]],
    key: str,
    returning: str | None,
) -> list[Any]:
    """Multi-row INSERTs through sqlite3 itself, values converted once per column as
    SQLAlchemy would store them (its per-parameter processing was most of a batch)."""
    dialect = session.get_bind().dialect
    names = list(rows[0])
    defaulted = _defaulted(table, names)
    columns = [table.c[n] for n in names] + defaulted
    values = [_sqlite_column(table.c[n], [r[n] for r in rows], dialect) for n in names]
    values += [[_sqlite_column(c, [_default_value(c)], dialect)[0]] * len(rows) for c in defaulted]
    per_row = len(columns)
    # Identifiers come from the model's Table (a KeyError for any other), quoted.
    head = (
        f"INSERT INTO {_quote(table.name)} ({', '.join(_quote(c.name) for c in columns)}) VALUES "  # noqa: S608
    )
    tail = f" ON CONFLICT ({_quote(table.c[key].name)}) DO NOTHING"
    if returning:
        tail += f" RETURNING {_quote(table.c[returning].name)}"
    flat_rows = list(zip(*values, strict=True))
    out: list[Any] = []
    step = SQLITE_MAX_VARIABLES // per_row
    placeholder = "(" + ", ".join("?" * per_row) + ")"
    for start in range(0, len(flat_rows), step):
        chunk = flat_rows[start : start + step]
        sql = head + ", ".join([placeholder] * len(chunk)) + tail
        result = _execute(session, sql, tuple(v for row in chunk for v in row))
        if returning:
            out.extend(row[0] for row in result)
    return out


def _sqlite_column(column: Column, values: list[Any], dialect) -> list[Any]:
    if _is_json(column):
        return [None if v is None else _dumps(v) for v in values]
    if isinstance(column.type, UTCDateTime):
        done: dict[dt.datetime | None, str | None] = {}  # received_at: one value a batch
        return [done[v] if v in done else done.setdefault(v, _sqlite_time(v)) for v in values]
    process = column.type._cached_bind_processor(dialect)
    if process is None:
        return [v.value if isinstance(v, enum.Enum) else v for v in values]
    return [process(v) for v in values]


def _sqlite_time(value: dt.datetime | None) -> str | None:
    """SQLAlchemy's storage of a UTCDateTime on SQLite: UTC, microseconds always."""
    if value is None:
        return None
    if value.utcoffset() is None:
        raise ValueError(f"naive datetime {value!r}: Tenure stores aware times only")
    return value.astimezone(dt.UTC).replace(tzinfo=None).isoformat(" ", "microseconds")


def _is_postgresql(session: Session) -> bool:
    # The driver is used directly, which does not autoflush: write the session's
    # pending objects first, as a query through the session would.
    session.flush()
    return session.get_bind().dialect.name == "postgresql"


def _execute(session: Session, sql: str, params: dict[str, Any] | tuple):
    """The driver's own SQL and parameters, on the session's connection and inside its
    transaction; errors still come as SQLAlchemy's (DBAPIError, disconnects noticed)."""
    return session.connection().exec_driver_sql(sql, params)


@functools.cache
def _unnest_insert(
    table: Table, names: tuple[str, ...], key: str | None, returning: str | None
) -> tuple[str, list[Column]]:
    """The statement for rows carrying ``names``, and the other columns, which take
    their defaults."""
    given = [table.c[n] for n in names]
    defaulted = _defaulted(table, names)
    selected = [_cast(c, f"u.c{i}") for i, c in enumerate(given)]
    selected += [_cast(c, f"%(d{i})b", scalar=True) for i, c in enumerate(defaulted)]
    arrays = ", ".join(f"CAST(%(c{i})b AS {_array_type(c)})" for i, c in enumerate(given))
    # Identifiers come from the model's Table (a KeyError for any other), quoted.
    sql = (
        f"INSERT INTO {_quote(table.name)} "  # noqa: S608
        f"({', '.join(_quote(c.name) for c in given + defaulted)}) "
        f"SELECT {', '.join(selected)} "
        f"FROM unnest({arrays}) AS u({', '.join(f'c{i}' for i in range(len(given)))})"
    )
    if key is not None:
        sql += f" ON CONFLICT ({_quote(table.c[key].name)}) DO NOTHING"
    if returning:
        sql += f" RETURNING {_quote(table.c[returning].name)}"
    return sql, defaulted


def dialect_insert(dialect_name: str):
    """The INSERT construct with ON CONFLICT of PostgreSQL's or SQLite's dialect."""
    return postgresql.insert if dialect_name == "postgresql" else sqlite.insert


def _defaulted(table: Table, names: Collection[str]) -> list[Column]:
    """The columns a row without ``names`` fills from the model's defaults."""
    return [
        c for c in table.c if c.name not in names and c.default is not None and not c.primary_key
    ]


def _quote(name: str) -> str:
    return postgresql.dialect().identifier_preparer.quote(name)


def _is_json(column: Column) -> bool:
    return isinstance(column.type, JSON) or isinstance(getattr(column.type, "impl", None), JSON)


def _type(column: Column) -> str:
    compiled = column.type.compile(dialect=postgresql.dialect())
    return re.sub(r"\(.*\)", "", compiled)  # varchar[], numeric[]: no lengths in a cast


def _array_type(column: Column) -> str:
    # JSON travels as text: psycopg has no binary dumper for a list of documents.
    return "text[]" if _is_json(column) else f"{_type(column)}[]"


def _cast(column: Column, expression: str, scalar: bool = False) -> str:
    if _is_json(column):
        return f"CAST({expression} AS jsonb)"
    return f"CAST({expression} AS {_type(column)})" if scalar else expression


def _default(column: Column) -> Any:
    return _value(column, _default_value(column))


def _default_value(column: Column) -> Any:
    return column.default.arg(None) if column.default.is_callable else column.default.arg


def _column(column: Column, values: list[Any]) -> list[Any]:
    if _is_json(column):
        return [None if v is None else _dumps(v) for v in values]
    if isinstance(column.type, UTCDateTime):
        for value in values:  # PostgreSQL would read a naive time in its own zone
            if value is not None and value.utcoffset() is None:
                raise ValueError(f"naive datetime {value!r}: Tenure stores aware times only")
        return values
    if values and isinstance(next((v for v in values if v is not None), None), enum.Enum):
        return [None if v is None else v.value for v in values]
    return values


def _value(column: Column, value: Any) -> Any:
    if value is None:
        return None
    if _is_json(column):
        return _dumps(value)
    return value.value if isinstance(value, enum.Enum) else value
