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

import enum
import functools
import json
import re
from collections.abc import Collection, Sequence
from typing import Any

from sqlalchemy import JSON, Column, Table, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

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
        cursor = _execute(session, sql, params)
        return [row[0] for row in cursor.fetchall()] if returning else []
    statement = sqlite.insert(table).on_conflict_do_nothing(index_elements=[key])
    if returning is None:
        session.execute(statement, list(rows))
        return []
    return list(session.execute(statement.returning(table.c[returning]), list(rows)).scalars())


def rows_where_in(
    session: Session, table: Table, key: str, values: Collection[Any], columns: Sequence[str]
) -> list[tuple]:
    """SELECT ``columns`` of the rows whose ``key`` is one of ``values``."""
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
    statement = select(*(table.c[c] for c in columns)).where(table.c[key].in_(values))
    return [tuple(row) for row in session.execute(statement)]


def _is_postgresql(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def _execute(session: Session, sql: str, params: dict[str, Any]):
    """psycopg itself, on the session's connection and inside its transaction."""
    cursor = session.connection().connection.driver_connection.cursor()
    cursor.execute(sql, params)
    return cursor


@functools.cache
def _unnest_insert(
    table: Table, names: tuple[str, ...], key: str, returning: str | None
) -> tuple[str, list[Column]]:
    """The statement for rows carrying ``names``, and the other columns, which take
    their defaults."""
    given = [table.c[n] for n in names]
    defaulted = [
        c for c in table.c if c.name not in names and c.default is not None and not c.primary_key
    ]
    selected = [_cast(c, f"u.c{i}") for i, c in enumerate(given)]
    selected += [_cast(c, f"%(d{i})b", scalar=True) for i, c in enumerate(defaulted)]
    arrays = ", ".join(f"CAST(%(c{i})b AS {_array_type(c)})" for i, c in enumerate(given))
    # Identifiers come from the model's Table (a KeyError for any other), quoted.
    sql = (
        f"INSERT INTO {_quote(table.name)} "  # noqa: S608
        f"({', '.join(_quote(c.name) for c in given + defaulted)}) "
        f"SELECT {', '.join(selected)} "
        f"FROM unnest({arrays}) AS u({', '.join(f'c{i}' for i in range(len(given)))}) "
        f"ON CONFLICT ({_quote(table.c[key].name)}) DO NOTHING"
    )
    if returning:
        sql += f" RETURNING {_quote(table.c[returning].name)}"
    return sql, defaulted


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
    value = column.default.arg(None) if column.default.is_callable else column.default.arg
    return _value(column, value)


def _column(column: Column, values: list[Any]) -> list[Any]:
    if _is_json(column):
        return [None if v is None else _dumps(v) for v in values]
    if values and isinstance(next((v for v in values if v is not None), None), enum.Enum):
        return [None if v is None else v.value for v in values]
    return values


def _value(column: Column, value: Any) -> Any:
    if value is None:
        return None
    if _is_json(column):
        return _dumps(value)
    return value.value if isinstance(value, enum.Enum) else value
