"""The overview page: what is in Tenure and whether its background jobs run."""

from __future__ import annotations

import datetime as dt

from flask import render_template
from flask_login import login_required
from redis import RedisError
from sqlalchemy import func, select

from app import clock
from app.extensions import db
from app.redis_client import get_redis
from app.redis_server import EmbeddedRedisError
from app.web import bp
from journeys.models import Journey, Message
from members.event import Event
from members.member import Member
from workers.heartbeat import last_heartbeat

# The heartbeat job runs every minute; three missed beats mean cron or the workers are down.
STALE_AFTER = dt.timedelta(minutes=3)


@bp.get("/")
@login_required
def home():
    counts = {
        "members": _count(Member),
        "events": _count(Event),
        "journeys": _count(Journey),
        "messages": _count(Message),
    }
    try:
        beat = last_heartbeat(get_redis())
        heartbeat = _parse(beat)
        redis_ok = True
    except (RedisError, EmbeddedRedisError, OSError):
        heartbeat, redis_ok = None, False
    age = (clock.now() - heartbeat) if heartbeat else None
    return render_template(
        "home.html",
        counts=counts,
        heartbeat=heartbeat,
        age=age,
        redis_ok=redis_ok,
        stale=age is not None and age > STALE_AFTER,
    )


def _count(model: type) -> int:
    return db.session.scalar(select(func.count()).select_from(model)) or 0


def _parse(value: str | None) -> dt.datetime | None:
    try:
        return dt.datetime.fromisoformat(value) if value else None
    except ValueError:
        return None
