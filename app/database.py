"""The database extension: one engine per app, sessions scoped to the app context.

Flask-SQLAlchemy picks its engine in ``Session.get_bind`` and ignores a session bound
to a connection, which the tests need for rolled-back transactions; this small
extension keeps the models plain (``members.db.Base``) and the session configurable.
"""

from __future__ import annotations

import dataclasses
import os
import weakref
from typing import Any

from flask import Flask, current_app
from flask.globals import app_ctx
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, scoped_session, sessionmaker

from members.db import Base


@dataclasses.dataclass
class _State:
    engine: Engine
    sessionmaker: sessionmaker[Session]


def _ctx_id() -> int:
    return id(app_ctx._get_current_object())


class Database:
    metadata = Base.metadata

    def __init__(self) -> None:
        self.session: scoped_session[Session] = scoped_session(self._new_session, _ctx_id)

    def init_app(self, app: Flask, url: str, **engine_options: Any) -> None:
        engine = make_engine(url, **engine_options)
        app.extensions["tenure_db"] = _State(engine, sessionmaker(engine, expire_on_commit=False))
        # RQ forks a work horse per job: pooled connections must not cross the fork.
        ref = weakref.ref(engine)
        os.register_at_fork(after_in_child=lambda: (e := ref()) and e.dispose(close=False))
        app.teardown_appcontext(self._remove)

    @staticmethod
    def state(app: Flask | None = None) -> _State:
        return (app or current_app).extensions["tenure_db"]

    @property
    def engine(self) -> Engine:
        return self.state().engine

    def _new_session(self) -> Session:
        return self.state().sessionmaker()

    def _remove(self, exc: BaseException | None) -> None:
        self.session.remove()


def make_engine(url: str, **options: Any) -> Engine:
    """Create an engine with Tenure's settings for SQLite or PostgreSQL."""
    if url.startswith("sqlite"):
        options.setdefault("connect_args", {"timeout": 30})
        engine = create_engine(url, **options)
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    options.setdefault("pool_pre_ping", True)
    options.setdefault("connect_args", {"connect_timeout": 5})
    return create_engine(url, **options)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # pysqlite's own transaction handling breaks SAVEPOINT; SQLAlchemy emits BEGIN instead.
    dbapi_connection.isolation_level = None
    # WAL lets the web process, workers and cron read while one of them writes.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def _sqlite_begin(connection: Any) -> None:
    # IMMEDIATE: a transaction that reads and then writes would otherwise fail at once
    # with "database is locked" when another process wrote in between (busy_timeout
    # cannot help a deferred transaction upgrade its lock). Readers are not blocked in WAL.
    # A connection that only reads may say so with execution_options(read_only=True).
    read_only = connection.get_execution_options().get("read_only", False)
    connection.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")
