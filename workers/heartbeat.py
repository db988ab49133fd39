"""A periodic job that proves the cron scheduler and a worker are both alive."""

from __future__ import annotations

import datetime as dt

from redis import Redis

KEY = "tenure:heartbeat:cron"


def record_heartbeat(redis: Redis, now: dt.datetime) -> None:
    redis.set(KEY, now.isoformat())


def last_heartbeat(redis: Redis) -> str | None:
    value = redis.get(KEY)
    return value.decode() if value else None
