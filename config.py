"""Tenure's settings: read from the environment once, validated, then frozen.

Every setting has a default that runs with zero set-up: a SQLite file and an
embedded Redis under ``instance/``, and a secret key generated once and kept there.
Tests and tools build a ``Settings`` themselves and pass it to ``create_app``.
"""

from __future__ import annotations

import dataclasses
import os
import re
import secrets
from collections.abc import Mapping
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from babel.numbers import list_currencies
from limits import parse_many
from redis.connection import parse_url as parse_redis_url
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

ROOT = Path(__file__).resolve().parent
DEFAULT_INSTANCE = ROOT / "instance"


class ConfigError(ValueError):
    """A setting has a value Tenure cannot run with; the message names the variable."""


@dataclasses.dataclass(frozen=True)
class Settings:
    database_url: str
    redis_url: str | None  # None: the embedded Redis under instance_path
    secret_key: str
    timezone: str = "Asia/Shanghai"
    currency: str = "CNY"
    instance_path: Path = DEFAULT_INSTANCE
    login_limit: str = "10 per minute;50 per hour"
    # Requests per API key (a batch of 1,000 events is one request).
    api_limit: str = "3000 per minute"
    log_level: str = "INFO"
    # How many reverse proxies (TLS terminators, load balancers) stand in front of the
    # web processes: their X-Forwarded-* headers are trusted, and cookies are Secure.
    proxy_hops: int = 0
    # An event for an external id Tenure has never seen: create the member, or reject it.
    unknown_members: str = "create"
    # Enrollments a journey tick claims and walks on per transaction.
    journey_batch: int = 1000
    testing: bool = False

    def __post_init__(self) -> None:
        _check_database_url(self.database_url)
        if self.redis_url is not None:
            _check_redis_url(self.redis_url)
        if len(self.secret_key) < 16:
            raise ConfigError("SECRET_KEY must be at least 16 characters long")
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ConfigError(
                f"TENURE_TIMEZONE={self.timezone!r} is not an IANA time zone (e.g. Asia/Shanghai)"
            ) from None
        if self.currency not in list_currencies():
            raise ConfigError(
                f"TENURE_CURRENCY={self.currency!r} is not an ISO 4217 currency code (e.g. CNY)"
            )
        for variable, value in (
            ("TENURE_LOGIN_LIMIT", self.login_limit),
            ("TENURE_API_LIMIT", self.api_limit),
        ):
            try:
                if not parse_many(value):
                    raise ValueError
            except ValueError:
                raise ConfigError(
                    f"{variable}={value!r} is not a rate limit (e.g. '10 per minute;50 per hour')"
                ) from None
        if not 1 <= self.journey_batch <= 100_000:
            raise ConfigError("TENURE_JOURNEY_BATCH must be from 1 to 100000")
        if self.unknown_members not in ("create", "reject"):
            raise ConfigError(
                f"TENURE_UNKNOWN_MEMBERS={self.unknown_members!r} must be create or reject"
            )
        if not 0 <= self.proxy_hops <= 5:
            raise ConfigError("TENURE_PROXY_HOPS must be a number from 0 to 5")
        if self.log_level.upper() not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise ConfigError(
                f"TENURE_LOG_LEVEL={self.log_level!r} must be DEBUG, INFO, WARNING or ERROR"
            )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build the settings from environment variables, applying the defaults."""
        env = os.environ if environ is None else environ
        instance = Path(env.get("TENURE_INSTANCE_PATH") or DEFAULT_INSTANCE).resolve()
        database_url = _normalise_database_url(
            env.get("DATABASE_URL") or f"sqlite:///{instance / 'tenure.db'}"
        )
        secret_key = env.get("SECRET_KEY") or _instance_secret(instance)
        return cls(
            database_url=database_url,
            redis_url=env.get("REDIS_URL") or None,
            secret_key=secret_key,
            timezone=env.get("TENURE_TIMEZONE") or "Asia/Shanghai",
            currency=env.get("TENURE_CURRENCY") or "CNY",
            instance_path=instance,
            login_limit=env.get("TENURE_LOGIN_LIMIT") or cls.login_limit,
            api_limit=env.get("TENURE_API_LIMIT") or cls.api_limit,
            log_level=(env.get("TENURE_LOG_LEVEL") or "INFO").upper(),
            proxy_hops=_int(env, "TENURE_PROXY_HOPS", 0),
            unknown_members=env.get("TENURE_UNKNOWN_MEMBERS") or "create",
            journey_batch=_int(env, "TENURE_JOURNEY_BATCH", 1000),
        )

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


_DB_SCHEMES = re.compile(r"^(sqlite|postgresql\+psycopg)://")


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    value = env.get(name)
    if not value:
        return default
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"{name}={value!r} must be a whole number") from None


def _normalise_database_url(url: str) -> str:
    """Accept the usual postgres:// and postgresql:// forms; Tenure drives them with psycopg 3."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url.removeprefix(prefix)
    return url


def _check_database_url(url: str) -> None:
    if not _DB_SCHEMES.match(url):
        scheme = url.split("://")[0] if "://" in url else url[:20]
        raise ConfigError(
            f"DATABASE_URL must start with sqlite:/// or postgresql+psycopg:// (got {scheme!r})"
        )
    try:
        parsed = make_url(url)
        _ = parsed.port  # a non-numeric port only fails when read
    except (ArgumentError, ValueError) as exc:
        raise ConfigError(f"DATABASE_URL cannot be parsed: {exc}") from None


def _check_redis_url(url: str) -> None:
    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError("REDIS_URL must start with redis://, rediss:// or unix:// (or be unset)")
    try:
        parse_redis_url(url)
    except ValueError as exc:
        raise ConfigError(f"REDIS_URL cannot be parsed: {exc}") from None


def _instance_secret(instance: Path) -> str:
    """Return the secret key kept in instance/, generating it on first use.

    Written to a temporary file and linked into place, so that two processes
    starting at once agree on one key.
    """
    path = instance / "secret_key"
    if not path.exists():
        try:
            instance.mkdir(parents=True, exist_ok=True)
            tmp = instance / f".secret_key.{os.getpid()}"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_urlsafe(48))
            try:
                os.link(tmp, path)
            except FileExistsError:
                pass
            finally:
                tmp.unlink()
        except OSError as exc:
            raise ConfigError(f"SECRET_KEY is unset and {path} cannot be written: {exc}") from None
    return path.read_text().strip()
