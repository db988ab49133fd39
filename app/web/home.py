"""The overview page: what is in Tenure and whether its background jobs run."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from decimal import Decimal

from flask import current_app, render_template
from flask_babel import gettext as _
from flask_login import login_required
from redis import RedisError
from sqlalchemy import func, select

from app import clock
from app.extensions import db
from app.redis_client import get_redis
from app.redis_server import EmbeddedRedisError
from app.web import bp, charts
from journeys.models import Journey, Message
from members import figures
from members.event import Event
from members.member import Member
from workers.heartbeat import last_heartbeat

# The heartbeat job runs every minute; three missed beats mean cron or the workers are down.
STALE_AFTER = dt.timedelta(minutes=3)
FIGURES_KEY = "tenure:overview:figures"
FIGURES_FOR = dt.timedelta(minutes=10)


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
    year, stages = _figures() if counts["members"] else ([], {})
    return render_template(
        "home.html",
        counts=counts,
        year=year,
        stages=stages,
        trend=_trend(year),
        heartbeat=heartbeat,
        age=age,
        redis_ok=redis_ok,
        stale=age is not None and age > STALE_AFTER,
    )


def _figures() -> tuple[list[figures.Month], dict[str, int]]:
    """The year in figures, kept in Redis for a few minutes: it reads a year of events."""
    timezone = current_app.config["TENURE_SETTINGS"].timezone
    try:
        redis = get_redis()
        cached = redis.get(FIGURES_KEY)
    except (RedisError, EmbeddedRedisError, OSError):
        redis, cached = None, None
    if cached:
        data = json.loads(cached)
        year = [
            figures.Month(
                **{**m, "start": dt.date.fromisoformat(m["start"]), "sales": Decimal(m["sales"])}
            )
            for m in data["year"]
        ]
        return year, data["stages"]
    year = figures.monthly(db.session, now=clock.now(), timezone=timezone)
    stages = figures.stage_mix(db.session)
    if redis is not None:
        data = {
            "year": [
                {**dataclasses.asdict(m), "start": m.start.isoformat(), "sales": str(m.sales)}
                for m in year
            ],
            "stages": stages,
        }
        redis.set(FIGURES_KEY, json.dumps(data), ex=int(FIGURES_FOR.total_seconds()))
    return year, stages


def _trend(year: list[figures.Month]):
    if not year:
        return None
    labels = [m.start.strftime("%Y-%m") for m in year]
    return charts.lines(
        [
            charts.Series(
                _("Monthly active rate"), [(i, m.active_rate) for i, m in enumerate(year)]
            ),
            charts.Series(
                _("Repurchase rate"), [(i, m.repurchase_rate) for i, m in enumerate(year)]
            ),
        ],
        label=_("Monthly active rate and repurchase rate, last 12 months"),
        x_label=_("Month"),
        y_label=_("Share"),
        x_marks=list(range(len(year))),
        x_fmt=lambda v: labels[int(v)] if 0 <= int(v) < len(labels) else "",
        height=260,
    )


def _count(model: type) -> int:
    return db.session.scalar(select(func.count()).select_from(model)) or 0


def _parse(value: str | None) -> dt.datetime | None:
    try:
        return dt.datetime.fromisoformat(value) if value else None
    except ValueError:
        return None
