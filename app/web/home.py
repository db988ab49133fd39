"""The overview page: what is in Tenure and whether its background jobs run."""

from __future__ import annotations

from flask import render_template
from flask_login import login_required
from redis import RedisError
from sqlalchemy import func, select

from app.extensions import db
from app.redis_client import get_redis
from app.redis_server import EmbeddedRedisError
from app.web import bp
from journeys.models import Journey, Message
from members.event import Event
from members.member import Member
from workers.heartbeat import last_heartbeat


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
        heartbeat = last_heartbeat(get_redis())
        redis_ok = True
    except (RedisError, EmbeddedRedisError, OSError):
        heartbeat, redis_ok = None, False
    return render_template("home.html", counts=counts, heartbeat=heartbeat, redis_ok=redis_ok)


def _count(model: type) -> int:
    return db.session.scalar(select(func.count()).select_from(model)) or 0
