"""The models and the migration chain describe the same schema, on SQLite and PostgreSQL."""

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

import app.models  # noqa: F401  (all tables on the metadata)
from app.database import make_engine
from members.db import Base


def test_models_match_migrations(database_url):
    engine = make_engine(database_url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            diff = compare_metadata(context, Base.metadata)
    finally:
        engine.dispose()
    assert diff == []


def test_events_have_the_indexes_ingest_and_reads_need(database_url):
    engine = make_engine(database_url)
    try:
        inspector = sa.inspect(engine)
        event_indexes = {tuple(i["column_names"]) for i in inspector.get_indexes("events")}
    finally:
        engine.dispose()
    assert ("member_id", "occurred_at") in event_indexes
    assert ("type", "occurred_at") in event_indexes


def test_the_migrations_are_one_chain():
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from config import ROOT

    config = Config()
    config.set_main_option("script_location", str(ROOT / "migrations"))
    assert len(ScriptDirectory.from_config(config).get_heads()) == 1
