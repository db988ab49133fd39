"""GET /healthz: is this process able to reach its database and its Redis?"""

from __future__ import annotations

import logging

from flask import Blueprint, jsonify
from redis import RedisError
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from app.extensions import db, limiter
from app.redis_client import get_redis
from app.redis_server import EmbeddedRedisError
from workers.heartbeat import last_heartbeat

log = logging.getLogger(__name__)
bp = Blueprint("health", __name__)


@bp.get("/healthz")
@limiter.exempt
def healthz():
    """200 when the database and Redis both answer, 503 (naming which failed) when not."""
    checks = {"database": _check_database(), "redis": _check_redis()}
    healthy = all(v == "ok" for v in checks.values())
    body = {"status": "ok" if healthy else "unavailable", **checks}
    if checks["redis"] == "ok":
        body["last_cron_heartbeat"] = last_heartbeat(get_redis())
    return jsonify(body), 200 if healthy else 503


def _check_database() -> str:
    try:
        with db.engine.connect() as connection:
            connection.execution_options(read_only=True).execute(text("SELECT 1"))
    except SQLAlchemyError as exc:
        log.warning("healthz: database unavailable: %s", exc.__class__.__name__)
        return "unavailable"
    return "ok"


def _check_redis() -> str:
    try:
        get_redis().ping()
    except (RedisError, EmbeddedRedisError, OSError) as exc:
        log.warning("healthz: redis unavailable: %s", exc.__class__.__name__)
        return "unavailable"
    return "ok"
