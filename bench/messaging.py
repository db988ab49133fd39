"""The outbox: 100,000 due marketing SMS through the console provider (the default of
a channel without a provider account), delivered by real RQ worker processes, one and
then two, from the reconciler's job (``deliver_messages``, which shares the backlog
with helper jobs) until none is left. Prints messages per second end to end, RQ jobs
and claimed batches per second, and database round trips per message (statements and
commits, counted in the work horses), on SQLite and PostgreSQL.

BENCH_MESSAGES changes the size, BENCH_WORKERS the worker counts (default "1 2"),
BENCH_DATABASES the databases (default "sqlite postgresql").
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from flask import Flask
from rq import Queue
from sqlalchemy import func, select, update

from app.extensions import db
from app.redis_client import get_redis
from bench import delivery_worker
from bench.setup import instance
from journeys import policies
from journeys.models import Message, MessageStatus
from members import bulk
from members.member import Member
from simulator import dataset
from workers import jobs, queues

MESSAGES = int(os.environ.get("BENCH_MESSAGES", "100000"))
WORKERS = [int(n) for n in os.environ.get("BENCH_WORKERS", "1 2").split()]
CHUNK = 20_000
ROOT = Path(__file__).resolve().parents[1]


def run() -> None:
    for kind in os.environ.get("BENCH_DATABASES", "sqlite postgresql").split():
        with instance(kind) as app, app.app_context():
            _prepare()
            for count in WORKERS:
                _measure(app, kind, count)


def _prepare() -> None:
    """Members with consent for SMS, one due marketing message each; no quiet hours,
    so that the figures do not depend on the hour the bench runs at."""
    started = time.perf_counter()
    now = dt.datetime.now(dt.UTC)
    # The simulator's people (names, phones of their regions, time zones), every one
    # with consent for marketing SMS, so that each message goes out.
    dataset.members_only(db.session, MESSAGES, joined=now, seed=3, commit=db.session.commit)
    db.session.execute(update(Member).values(consent_sms=True, personalised_marketing=True))
    ids = db.session.scalars(select(Member.id).order_by(Member.id)).all()
    for start in range(0, len(ids), CHUNK):
        bulk.insert_rows(
            db.session,
            Message.__table__,
            [
                {
                    "member_id": member_id,
                    "channel": "sms",
                    "provider": "console",
                    "dedup_key": f"bench:{member_id}",
                    "transactional": False,
                    "body": "会员日全场 8 折，今晚 24 点结束",
                    "priority": 0,
                    "status": MessageStatus.QUEUED.value,
                    "attempts": 0,
                    "send_after": now - dt.timedelta(minutes=1),
                    "created_at": now,
                    "updated_at": now,
                }
                for member_id in ids[start : start + CHUNK]
            ],
        )
    no_quiet_hours = policies.Policies(quiet_start="00:00", quiet_end="00:00")
    policies.SETTING.save(db.session, no_quiet_hours, actor="bench", now=now)
    db.session.commit()
    print(f"  (prepared {MESSAGES:,} messages in {time.perf_counter() - started:.0f}s)")


def _requeue() -> None:
    """Every message due again, as it was before the first run."""
    db.session.execute(
        update(Message).values(
            status=MessageStatus.QUEUED,
            attempts=0,
            provider="console",
            provider_message_id=None,
            sent_at=None,
            delivered_at=None,
            send_after=dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1),
        )
    )
    db.session.commit()
    if db.session.get_bind().dialect.name == "postgresql":
        with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
            c.exec_driver_sql("VACUUM ANALYZE")


def _start_workers(app: Flask, count: int) -> list[subprocess.Popen]:
    """Worker processes with the app loaded, waiting for a line to start working."""
    settings = app.config["TENURE_SETTINGS"]
    env = {
        **os.environ,
        "DATABASE_URL": settings.database_url,
        "REDIS_URL": settings.redis_url,
        "SECRET_KEY": settings.secret_key,
        "TENURE_INSTANCE_PATH": str(settings.instance_path),
        "TENURE_LOG_LEVEL": "WARNING",
    }
    with (settings.instance_path / "workers.log").open("ab") as log:
        workers = [
            subprocess.Popen(
                [sys.executable, "-m", "bench.delivery_worker"],
                cwd=ROOT,
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
            )
            for _ in range(count)
        ]
    for worker in workers:
        assert worker.stdout is not None
        if worker.stdout.readline().strip() != "ready":
            raise RuntimeError(f"a bench worker did not start: see {log.name}")
    return workers


def _stop(workers: list[subprocess.Popen]) -> None:
    for worker in workers:
        worker.send_signal(signal.SIGTERM)  # RQ's warm shutdown
    for worker in workers:
        worker.wait(timeout=120)
        assert worker.stdin is not None and worker.stdout is not None
        worker.stdin.close()
        worker.stdout.close()


def _measure(app: Flask, kind: str, count: int) -> None:
    if db.session.scalar(select(func.count()).where(Message.status != MessageStatus.QUEUED)):
        _requeue()
    db.session.rollback()  # no transaction of ours open while the workers run
    redis = get_redis()
    workers = _start_workers(app, count)
    redis.delete(delivery_worker.KEY)
    queue = Queue(queues.HIGH, connection=redis)
    finished = queue.finished_job_registry
    before = finished.count
    try:
        started = time.perf_counter()
        queue.enqueue(jobs.deliver_messages)  # the reconciler, as the cron enqueues it
        for worker in workers:
            assert worker.stdin is not None
            worker.stdin.write("go\n")
            worker.stdin.flush()
        runs = 1
        while _any_queued():
            time.sleep(0.05)
            # A job stops taking batches after jobs.DELIVERY_BUDGET: the next minute's
            # reconciler run goes on.
            if not queue.count and not queue.started_job_registry.count and _any_queued():
                queue.enqueue(jobs.deliver_messages)
                runs += 1
        seconds = time.perf_counter() - started
        _until_idle(queue)
    finally:
        _stop(workers)
    failed = queue.failed_job_registry.count
    assert failed == 0, f"{failed} jobs failed: see workers.log in the instance folder"
    ran = finished.count - before
    delivered = db.session.scalar(
        select(func.count()).where(Message.status == MessageStatus.DELIVERED)
    )
    counts = {k.decode(): float(v) for k, v in redis.hgetall(delivery_worker.KEY).items()}
    claims, commits = counts.get("claims", 0), counts.get("commits", 0)
    busy, waiting = counts.get("jobs", 0), counts.get("database", 0)
    plural = "s" if count > 1 else ""
    print(
        f"{kind}, {count} worker{plural}: {delivered:,} of {MESSAGES:,} delivered in "
        f"{seconds:.1f}s: {delivered / seconds:,.0f} messages/s; {ran} jobs "
        f"({ran / seconds:.2f}/s) from {runs} reconciler run(s); {claims:,.0f} claimed "
        f"batches ({claims / seconds:.1f}/s)\n"
        f"  per message: {counts.get('statements', 0) / delivered:.3f} statements sent "
        f"({counts.get('executions', 0) / delivered:.2f} executed: an executemany counts "
        f"per row), {commits / delivered:.4f} commits; the jobs spent {waiting:.1f}s of "
        f"their {busy:.1f}s waiting on the database",
        flush=True,
    )


def _any_queued() -> bool:
    # A connection of its own, read-only: on SQLite a session's transaction would take
    # the write lock (BEGIN IMMEDIATE) and hold the workers off.
    with db.engine.connect().execution_options(read_only=True) as connection:
        query = select(Message.id).where(Message.status == MessageStatus.QUEUED).limit(1)
        return connection.scalar(query) is not None


def _until_idle(queue: Queue) -> None:
    """Until the jobs still running (helpers that found nothing left) have ended, so
    that their counts are in."""
    deadline = time.monotonic() + 120
    while (queue.count or queue.started_job_registry.count) and time.monotonic() < deadline:
        time.sleep(0.05)
