"""Settings from the environment: defaults that run, bad values stopped with one line."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from config import ROOT, ConfigError, Settings


def test_defaults_run_with_zero_set_up(tmp_path):
    settings = Settings.from_env({"TENURE_INSTANCE_PATH": str(tmp_path)})
    assert settings.database_url == f"sqlite:///{tmp_path / 'tenure.db'}"
    assert settings.redis_url is None
    assert settings.timezone == "Asia/Shanghai"
    assert settings.currency == "CNY"


@pytest.mark.parametrize("given", ["postgres://u@db/t", "postgresql://u@db/t"])
def test_usual_postgres_urls_use_psycopg(tmp_path, given):
    settings = Settings.from_env({"TENURE_INSTANCE_PATH": str(tmp_path), "DATABASE_URL": given})
    assert settings.database_url == "postgresql+psycopg://u@db/t"


def test_secret_key_is_generated_once_and_kept(tmp_path):
    env = {"TENURE_INSTANCE_PATH": str(tmp_path)}
    first = Settings.from_env(env).secret_key
    assert len(first) >= 32
    assert Settings.from_env(env).secret_key == first
    assert (tmp_path / "secret_key").stat().st_mode & 0o777 == 0o600
    assert Settings.from_env({**env, "SECRET_KEY": "x" * 20}).secret_key == "x" * 20


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("DATABASE_URL", "mysql://db/tenure", "DATABASE_URL"),
        ("DATABASE_URL", "postgresql+asyncpg://db/tenure", "DATABASE_URL"),
        ("REDIS_URL", "http://redis:6379", "REDIS_URL"),
        ("SECRET_KEY", "short", "SECRET_KEY"),
        ("TENURE_TIMEZONE", "Mars/Olympus", "TENURE_TIMEZONE"),
        ("TENURE_CURRENCY", "RMB", "TENURE_CURRENCY"),
        ("TENURE_LOG_LEVEL", "LOUD", "TENURE_LOG_LEVEL"),
        ("DATABASE_URL", "postgresql+psycopg://u@db:port/tenure", "DATABASE_URL cannot be parsed"),
        ("REDIS_URL", "redis://redis:port/0", "REDIS_URL cannot be parsed"),
        ("TENURE_LOGIN_LIMIT", "lots", "TENURE_LOGIN_LIMIT"),
        ("TENURE_API_LIMIT", "fast", "TENURE_API_LIMIT"),
        ("TENURE_UNKNOWN_MEMBERS", "ignore", "TENURE_UNKNOWN_MEMBERS"),
        ("TENURE_PROXY_HOPS", "two", "TENURE_PROXY_HOPS"),
        ("TENURE_PROXY_HOPS", "9", "TENURE_PROXY_HOPS"),
    ],
)
def test_bad_values_name_the_variable(tmp_path, variable, value, message):
    with pytest.raises(ConfigError, match=message):
        Settings.from_env({"TENURE_INSTANCE_PATH": str(tmp_path), variable: value})


def _flask(args, env, stdin=None):
    return subprocess.run(
        [str(Path(sys.executable).parent / "flask"), "--app", "wsgi", *args],
        cwd=ROOT,
        env={**os.environ, **env},
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_bad_setting_stops_the_process_with_one_line(tmp_path):
    result = _flask(
        ["db", "upgrade"],
        {"TENURE_INSTANCE_PATH": str(tmp_path), "TENURE_TIMEZONE": "Nowhere/Land"},
    )
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        "tenure: configuration error: TENURE_TIMEZONE='Nowhere/Land' is not an IANA time zone "
        "(e.g. Asia/Shanghai)"
    ]
    assert not (tmp_path / "tenure.db").exists()


def test_db_upgrade_builds_an_empty_database(tmp_path):
    result = _flask(["db", "upgrade"], {"TENURE_INSTANCE_PATH": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    import sqlite3

    tables = {
        r[0]
        for r in sqlite3.connect(tmp_path / "tenure.db").execute(
            "SELECT name FROM sqlite_master WHERE type='table'"
        )
    }
    assert {"members", "events", "messages", "users", "api_keys", "audit_log"} <= tables
