"""A throw-away instance for a benchmark: a migrated database (SQLite, or a PostgreSQL
server of its own with durable defaults), embedded Redis."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from flask import Flask

from app import create_app, redis_server
from app.extensions import db
from config import Settings


@contextlib.contextmanager
def instance(kind: str = "sqlite") -> Iterator[Flask]:
    from tests.services import PostgresServer

    folder = Path(tempfile.mkdtemp(prefix="tenure-bench-", dir="/tmp"))
    pg = PostgresServer(durable=True).start() if kind == "postgresql" else None
    try:
        settings = Settings(
            database_url=pg.url if pg else f"sqlite:///{folder / 'bench.db'}",
            redis_url=redis_server.ensure_running(folder),
            secret_key="bench-secret-key-000000",
            instance_path=folder,
            testing=True,
        )
        app = create_app(settings)
        from flask_migrate import upgrade

        with app.app_context():
            upgrade()
        yield app
        db.state(app).engine.dispose()
    finally:
        redis_server.stop(folder)
        if pg:
            pg.stop()
        shutil.rmtree(folder, ignore_errors=True)
