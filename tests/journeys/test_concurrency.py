"""No duplicate sends: two real RQ worker processes ticking at once, and a tick killed
with SIGKILL in the middle of a batch, leave exactly one message per (enrollment, step)
and lose no enrollment."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from rq import Queue
from sqlalchemy import func, select

from app.extensions import db
from app.redis_client import get_redis
from journeys import control, engine, versions
from journeys.models import Enrollment, EnrollmentState, Message, MessageTemplate, StepRun
from members.member import Member
from workers import jobs, queues

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
MEMBERS = 240
DEFINITION = {
    "trigger": {"type": "api"},
    "entry": {"marketing": False},
    "start": "hello",
    "steps": {
        "hello": {"type": "send", "channel": "sms", "template": "hello", "next": "gift"},
        "gift": {"type": "grant", "benefit": "coupon", "value": 20, "next": "rest"},
        "rest": {"type": "wait", "days": 1, "next": "bye"},
        "bye": {"type": "exit"},
    },
}


def _arrange(app) -> dt.datetime:
    """A live journey with MEMBERS enrollments due a minute ago (committed)."""
    past = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
    with app.app_context():
        session = db.session
        control.SETTING.save(session, control.ControlGroup(percent=0), actor="t", now=past)
        session.add(MessageTemplate(key="hello", name="hello", channel="sms", body="您好"))
        journey = versions.create(
            session, key="hello", name="hello", definition_data=DEFINITION, actor="t", now=past
        )
        versions.publish(session, journey, actor="t", now=past, approver=True)
        session.add_all(Member(external_id=f"c-{i}") for i in range(MEMBERS))
        session.flush()
        live = engine.live_journeys(session)[0]
        ids = session.scalars(select(Member.id)).all()
        engine.admit(
            session, live, [engine.Candidate(i) for i in ids], now=past, timezone="Asia/Shanghai"
        )
        session.commit()
    return past


def _environment(app, **extra: str) -> dict[str, str]:
    settings = app.config["TENURE_SETTINGS"]
    return {
        **os.environ,
        "DATABASE_URL": settings.database_url,
        "REDIS_URL": settings.redis_url,
        "SECRET_KEY": settings.secret_key,
        "TENURE_INSTANCE_PATH": str(settings.instance_path),
        **extra,
    }


def _assert_each_step_once(app) -> None:
    with app.app_context():
        session = db.session
        per_enrollment = session.execute(
            select(Message.enrollment_id, func.count()).group_by(Message.enrollment_id)
        ).all()
        assert len(per_enrollment) == MEMBERS
        assert {count for _, count in per_enrollment} == {1}
        runs = session.execute(
            select(StepRun.enrollment_id, StepRun.step, func.count()).group_by(
                StepRun.enrollment_id, StepRun.step
            )
        ).all()
        assert len(runs) == 2 * MEMBERS and {count for *_, count in runs} == {1}
        states = session.execute(
            select(Enrollment.state, Enrollment.current_step, func.count()).group_by(
                Enrollment.state, Enrollment.current_step
            )
        ).all()
        assert states == [(EnrollmentState.WAITING, "rest", MEMBERS)]
        grants = session.scalar(
            select(func.count()).select_from(db.metadata.tables["benefit_grants"])
        )
        assert grants == MEMBERS


def test_two_worker_processes_ticking_at_once_send_each_message_once(committed_app):
    _arrange(committed_app)
    redis = get_redis(committed_app)
    queue = Queue(queues.HIGH, connection=redis)
    queue.empty()
    enqueued = [queue.enqueue(jobs.journeys_tick) for _ in range(6)]
    env = _environment(committed_app, TENURE_JOURNEY_BATCH="7")
    command = [
        sys.executable,
        "-m",
        "flask",
        "--app",
        "wsgi",
        "worker",
        "--burst",
        "--queue",
        "high",
    ]
    workers = [
        subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        for _ in range(2)
    ]
    outputs = [worker.communicate(timeout=240)[0].decode() for worker in workers]
    assert [worker.returncode for worker in workers] == [0, 0], outputs
    statuses = [job.get_status(refresh=True) for job in enqueued]
    assert statuses == ["finished"] * 6, outputs
    _assert_each_step_once(committed_app)


KILLED_TICK = textwrap.dedent(
    """
    import datetime as dt, sys, time
    from pathlib import Path
    from app import create_app
    from app.extensions import db
    from journeys import engine

    ready = Path(sys.argv[1])
    write = engine._Batch.write

    def write_then_hang(self, rows):
        write(self, rows)  # the batch's messages, grants and moves, not yet committed
        ready.write_text("written")
        time.sleep(300)

    engine._Batch.write = write_then_hang
    app = create_app()
    with app.app_context():
        now = dt.datetime.now(dt.UTC)
        engine.tick(
            db.session, now=now, timezone="Asia/Shanghai", batch=100, commit=db.session.commit
        )
    """
)


def test_a_tick_killed_mid_batch_loses_nothing_and_doubles_nothing(committed_app, tmp_path):
    _arrange(committed_app)
    ready = tmp_path / "ready"
    victim = subprocess.Popen(
        [sys.executable, "-c", KILLED_TICK, str(ready)],
        cwd=ROOT,
        env=_environment(committed_app),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 120
    while not ready.exists():
        assert victim.poll() is None, victim.communicate()[0].decode()
        assert time.monotonic() < deadline, "the tick never reached its first write"
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)
    victim.communicate(timeout=30)
    with committed_app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Message)) == 0
        result = engine.tick(
            db.session,
            now=dt.datetime.now(dt.UTC),
            timezone="Asia/Shanghai",
            batch=100,
            commit=db.session.commit,
        )
        db.session.commit()
        assert result.advanced == MEMBERS
    _assert_each_step_once(committed_app)


def test_a_retried_batch_writes_its_effects_once(committed_app):
    """A batch that fails before its commit (a lost connection, a timeout) and is run
    again writes its messages once."""
    _arrange(committed_app)
    now = dt.datetime.now(dt.UTC)
    with committed_app.app_context():
        engine.advance(db.session, now=now, timezone="Asia/Shanghai", limit=MEMBERS)
        db.session.rollback()
        engine.tick(db.session, now=now, timezone="Asia/Shanghai", commit=db.session.commit)
        db.session.commit()
        engine.tick(db.session, now=now, timezone="Asia/Shanghai", commit=db.session.commit)
        db.session.commit()
    _assert_each_step_once(committed_app)
