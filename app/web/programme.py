"""What the programme settings pages (stages, tiers, points) share: who may edit them,
how a saved version is announced, and the full run that puts new rules in force."""

from __future__ import annotations

from flask import flash
from flask_babel import gettext as _
from flask_login import current_user
from redis import RedisError
from rq import Queue

from app import clock
from app.auth.models import Role
from app.extensions import db
from app.redis_client import get_redis
from app.redis_server import EmbeddedRedisError
from members import programme
from workers import jobs, queues

EDITORS = (Role.ADMIN, Role.MARKETER)


def can_edit() -> bool:
    return current_user.role in EDITORS


def save(setting: programme.Document, value, *, rerun: bool) -> None:
    """Store a new version as the signed-in user, commit, and say so. With ``rerun``,
    queue a full lifecycle run so that members move under the new rules at once."""
    saved = setting.save(db.session, value, actor=f"user:{current_user.email}", now=clock.now())
    db.session.commit()
    if saved is None:
        flash(_("Nothing changed: this is what is in force."), "info")
    elif not rerun:
        flash(_("Saved as version %(v)d. It applies from now on.", v=saved.version), "success")
    elif _enqueue_full_run():
        flash(
            _(
                "Saved as version %(v)d. A full lifecycle run has been queued: members "
                "move under the new rules within minutes.",
                v=saved.version,
            ),
            "success",
        )
    else:
        flash(
            _(
                "Saved as version %(v)d. The background workers cannot be reached: it "
                "applies from the next lifecycle run.",
                v=saved.version,
            ),
            "warning",
        )


def _enqueue_full_run() -> bool:
    try:
        Queue(queues.LOW, connection=get_redis()).enqueue(
            jobs.lifecycle_full, job_timeout=jobs.FULL_RUN_TIMEOUT
        )
    except (RedisError, EmbeddedRedisError, OSError):
        return False
    return True
