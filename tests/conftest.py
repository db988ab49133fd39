"""Fixtures: a real database (SQLite and PostgreSQL) and a real Redis per test session,
and one rolled-back transaction per test.

Every test that uses ``app``, ``client`` or ``session`` runs once per database in
TENURE_TEST_DATABASES (default: sqlite,postgresql). The xdist controller starts the
servers; each worker gets its own database and its own Redis db number.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient

from app import create_app, redis_server
from app.extensions import db
from config import Settings
from tests.services import PostgresServer

DATABASES = [
    name.strip()
    for name in os.environ.get("TENURE_TEST_DATABASES", "sqlite,postgresql").split(",")
    if name.strip()
]
PG_ENV = "TENURE_TEST_PG_URL"
REDIS_ENV = "TENURE_TEST_REDIS_URL"


def pytest_configure(config: pytest.Config) -> None:
    if hasattr(config, "workerinput"):
        return  # an xdist worker: the controller has started the servers
    if "postgresql" in DATABASES and not os.environ.get(PG_ENV):
        server = PostgresServer().start()
        os.environ[PG_ENV] = server.url
        config.add_cleanup(server.stop)
    if not os.environ.get(REDIS_ENV):
        folder = Path(tempfile.mkdtemp(prefix="tenure-redis-", dir="/tmp"))
        os.environ[REDIS_ENV] = redis_server.ensure_running(folder)

        def stop_redis() -> None:
            redis_server.stop(folder)
            shutil.rmtree(folder, ignore_errors=True)

        config.add_cleanup(stop_redis)


def _worker_index(request: pytest.FixtureRequest) -> int:
    worker = getattr(request.config, "workerinput", {}).get("workerid", "gw0")
    return int(worker.removeprefix("gw") or 0)


@pytest.fixture(scope="session")
def tmp_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tenure")


@pytest.fixture(scope="session")
def redis_url(request: pytest.FixtureRequest) -> str:
    # Redis has 16 numbered databases: one per xdist worker, 0 left alone.
    return f"{os.environ[REDIS_ENV]}?db={1 + _worker_index(request) % 15}"


def make_settings(database_url: str, redis_url: str, instance: Path, **kw: object) -> Settings:
    return Settings(
        database_url=database_url,
        redis_url=redis_url,
        secret_key="test-secret-key-0123456789",
        instance_path=instance,
        testing=True,
        **kw,  # type: ignore[arg-type]
    )


def new_database(kind: str, name: str, folder: Path) -> str:
    """Create an empty database of this kind and return its URL."""
    if kind == "sqlite":
        path = folder / f"{name}.db"
        path.unlink(missing_ok=True)
        return f"sqlite:///{path}"
    server_url = os.environ[PG_ENV]
    engine = sa.create_engine(server_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    engine.dispose()
    return server_url.rsplit("/", 1)[0] + f"/{name}"


def migrate(app: Flask) -> None:
    from flask_migrate import upgrade

    with app.app_context():
        upgrade()


@pytest.fixture(scope="session", params=DATABASES)
def database_url(request: pytest.FixtureRequest, tmp_root: Path, redis_url: str) -> str:
    """An empty database of each kind, migrated to head once per session."""
    name = f"tenure_test_{_worker_index(request)}"
    url = new_database(request.param, name, tmp_root)
    app = create_app(make_settings(url, redis_url, tmp_root / "instance"))
    migrate(app)
    db.state(app).engine.dispose()
    return url


@pytest.fixture
def settings(
    request: pytest.FixtureRequest, database_url: str, redis_url: str, tmp_root: Path
) -> Settings:
    """The test's settings; ``@pytest.mark.settings(api_limit=...)`` changes some."""
    marker = request.node.get_closest_marker("settings")
    changes = marker.kwargs if marker else {}
    return make_settings(database_url, redis_url, tmp_root / "instance", **changes)


@pytest.fixture
def app(settings: Settings) -> Iterator[Flask]:
    """The app on the session's database, inside a transaction rolled back after the test."""
    flask_app = create_app(settings)
    state = db.state(flask_app)
    connection = state.engine.connect()
    transaction = connection.begin()
    state.sessionmaker.configure(bind=connection, join_transaction_mode="create_savepoint")
    from app.redis_client import get_redis

    get_redis(flask_app).flushdb()
    try:
        yield flask_app
    finally:
        with flask_app.app_context():
            db.session.remove()
        transaction.rollback()
        connection.close()
        state.engine.dispose()


@pytest.fixture
def make_app(settings: Settings) -> Iterator:
    """Build extra apps from changed settings; their engines are disposed afterwards."""
    made: list[Flask] = []

    def make(**changes: object) -> Flask:
        flask_app = create_app(dataclasses.replace(settings, **changes))
        made.append(flask_app)
        return flask_app

    yield make
    for flask_app in made:
        db.state(flask_app).engine.dispose()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def session(app: Flask):
    """A session on the test's transaction, for arranging and asserting.

    Not the app's scoped session: pushing an app context here would make every
    request of the test share it (and its ``g``, where Flask-Login keeps the user).
    """
    own = db.state(app).sessionmaker()
    yield own
    own.close()


@pytest.fixture
def now() -> dt.datetime:
    return dt.datetime(2026, 11, 23, 6, 0, tzinfo=dt.UTC)


@pytest.fixture
def committed_app(
    request: pytest.FixtureRequest, database_url: str, redis_url: str, tmp_path: Path
) -> Iterator[Flask]:
    """An app on a database of its own, migrated, whose commits are real: for tests of
    several connections or processes at once. Slower than ``app``; use sparingly."""
    kind = "sqlite" if database_url.startswith("sqlite") else "postgresql"
    url = new_database(kind, f"tenure_own_{_worker_index(request)}", tmp_path)
    flask_app = create_app(make_settings(url, redis_url, tmp_path / "instance"))
    migrate(flask_app)
    yield flask_app
    db.state(flask_app).engine.dispose()
