"""The job decorator and Tenure's job functions: each a few lines around an engine call."""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from rq import Queue

from app import clock, uploads, vault
from app.extensions import db
from app.redis_client import get_redis
from journeys import delivery
from journeys import engine as journey_engine
from members import ingest, lifecycle_run, points
from workers import queues, runtime
from workers.heartbeat import record_heartbeat

COUNTS_KEPT = dt.timedelta(days=400)
# A full lifecycle run over millions of members takes minutes, not RQ's default 180 s.
FULL_RUN_TIMEOUT = 3600
# A tick works off its backlog batch by batch, each committed; a long one is cut here
# and the next tick carries on.
TICK_TIMEOUT = 600
# At most this many helper jobs share a tick's backlog (more than the workers is waste).
TICK_HELPERS = 8
# A delivery run stops taking new batches after this long; the next minute's goes on.
DELIVERY_BUDGET = dt.timedelta(seconds=50)
# At most this many helper jobs share the outbox's backlog.
DELIVERY_HELPERS = 8
P = ParamSpec("P")
R = TypeVar("R")


def job(fn: Callable[P, R]) -> Callable[P, R]:
    """Run a job in the app context with one transaction: commit on success, else roll back.

    Exceptions propagate, so RQ's failed-job registry and Retry see them.
    """

    @functools.wraps(fn)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        with runtime.current().app_context():
            try:
                result = fn(*args, **kwargs)
                db.session.commit()
                return result
            except BaseException:
                db.session.rollback()
                raise

    return run


@job
def heartbeat() -> None:
    """Record that cron enqueued and a worker ran a job just now."""
    record_heartbeat(get_redis(), clock.now())


@job
def check_upload(token: str) -> None:
    """Check an uploaded CSV file for the import page (writes nothing)."""
    uploads.check(token)


@job
def import_upload(token: str, actor: str) -> None:
    """Import an uploaded CSV file that passed its check."""
    uploads.write(token, actor)


@job
def sweep_uploads() -> None:
    """Delete uploads past their time: they hold personal data."""
    uploads.Uploads.of(runtime.current()).sweep()


@job
def lifecycle_incremental() -> str:
    """Stages of the members who may have moved since the last run (every minute)."""
    return _lifecycle(full=False)


@job
def lifecycle_full() -> str:
    """Features and stages of every member (nightly)."""
    return _lifecycle(full=True)


def _lifecycle(full: bool) -> str:
    try:
        timezone = runtime.current().config["TENURE_SETTINGS"].timezone
        result = lifecycle_run.run(db.session, now=clock.now(), full=full, timezone=timezone)
    except lifecycle_run.LifecycleBusy:
        db.session.rollback()
        return "skipped: another lifecycle run is in progress"
    return f"{result.kind.value}: {result.members} members, {result.changed} changed stage"


@job
def points_tick() -> str:
    """Points for new events, lots expired, "points expiring" reminders (every minute)."""
    timezone = runtime.current().config["TENURE_SETTINGS"].timezone
    try:
        result = points.tick(db.session, now=clock.now(), timezone=timezone)
    except points.PointsBusy:
        db.session.rollback()
        return "skipped: another points tick is in progress"
    return (
        f"{result.events} events, {result.earned} points earned, "
        f"{result.expired_lots} lots expired, {result.reminders} reminders"
    )


@job
def journeys_tick() -> str:
    """Enroll members from new triggers and walk due enrollments on (every minute), a
    batch per transaction. A backlog of several batches is shared: helper jobs on other
    workers claim their own batches (claims are made in the database)."""
    settings = runtime.current().config["TENURE_SETTINGS"]
    now = clock.now()
    result = journey_engine.intake(db.session, now=now, timezone=settings.timezone)
    db.session.commit()
    backlog = journey_engine.due_count(db.session, now) // settings.journey_batch
    helpers = min(TICK_HELPERS, backlog)
    queue = Queue(queues.HIGH, connection=get_redis())
    for _ in range(helpers):
        queue.enqueue(journeys_advance, job_timeout=TICK_TIMEOUT)
    result.add(
        journey_engine.advance_all(
            db.session,
            now=now,
            timezone=settings.timezone,
            batch=settings.journey_batch,
            commit=db.session.commit,
        )
    )
    if result.messages:
        queue.enqueue(deliver_more)  # now, rather than at the next minute
    return (
        f"{result.enrolled} enrolled, {result.advanced} advanced, {result.steps} steps, "
        f"{result.messages} messages; {helpers} helper jobs"
    )


@job
def journeys_advance() -> str:
    """A helper of the journey tick: walk due enrollments on, batch by batch."""
    settings = runtime.current().config["TENURE_SETTINGS"]
    result = journey_engine.advance_all(
        db.session,
        now=clock.now(),
        timezone=settings.timezone,
        batch=settings.journey_batch,
        commit=db.session.commit,
    )
    return f"{result.advanced} advanced, {result.steps} steps, {result.messages} messages"


@job
def deliver_messages() -> str:
    """The outbox's reconciler and first deliverer (every minute): settle claims that ran
    out, share a backlog with helper jobs, and deliver. The database is the truth: a job
    Redis lost (a restart, a FLUSHALL) only means the messages are due at this run."""
    reclaimed = delivery.reclaim(db.session, now=clock.now())
    db.session.commit()
    backlog = delivery.due_count(db.session, clock.now()) // delivery.BATCH
    helpers = min(DELIVERY_HELPERS, backlog)
    queue = Queue(queues.HIGH, connection=get_redis())
    for _ in range(helpers):
        queue.enqueue(deliver_more)
    result = _deliver()
    return (
        f"{result.summary()}; reclaimed {reclaimed.requeued} unstarted, "
        f"{reclaimed.retried} retried, {reclaimed.interrupted} interrupted; {helpers} helper jobs"
    )


@job
def deliver_more() -> str:
    """A helper of the delivery run (or of a journey tick that wrote messages)."""
    return _deliver().summary()


def _deliver() -> delivery.DeliveryResult:
    """Claim, settle and send batch after batch until the backlog or the budget ends."""
    result = delivery.DeliveryResult()
    deadline = clock.now() + DELIVERY_BUDGET
    while clock.now() < deadline:
        claimed = delivery.deliver_due(db.session, now=clock.now(), limit=delivery.BATCH)
        db.session.commit()
        result.add(claimed)
        sent = delivery.send_claimed(
            db.session,
            claimed,
            vault=vault.current(),
            clock=clock.now,
            commit=db.session.commit,
            deadline=deadline,  # well inside the job's timeout: no call is cut off
        )
        result.add(sent)
        if claimed.claimed < delivery.BATCH:
            break
    return result


@job
def purge_ingest_counts() -> None:
    """Drop the Data in page's counters older than a year and a month."""
    ingest.purge_counts(db.session, before=clock.now().date() - COUNTS_KEPT)


# -- webhooks out (imported here, not above, to keep this section self-contained)

# A webhook run stops taking new batches after this long; one endpoint call may follow.
WEBHOOK_BUDGET = dt.timedelta(seconds=50)


@job
def deliver_webhooks() -> str:
    """Post due webhook deliveries (every minute), batch after batch until the backlog
    or the budget ends; each attempt is committed and no transaction stays open while
    an endpoint answers. The database is the truth: a job Redis lost only delays them."""
    import requests

    from journeys import webhook_sending

    result = webhook_sending.SendResult()
    deadline = clock.now() + WEBHOOK_BUDGET
    with requests.Session() as http:
        while clock.now() < deadline:
            done = webhook_sending.deliver_due(
                db.session,
                now=clock.now(),
                vault=vault.current(),
                clock=clock.now,
                commit=db.session.commit,
                http=http,
                deadline=deadline,
            )
            result.add(done)
            if done.claimed < webhook_sending.BATCH:
                break
    return result.summary()


@job
def webhooks_fan_out() -> str:
    """Webhook deliveries for the stage and tier changes, benefit grants and experiment
    assignments written since the last pass (every minute)."""
    from journeys import webhook_fanout

    written = webhook_fanout.fan_out(db.session, now=clock.now())
    return ", ".join(f"{n} {event_type}" for event_type, n in written.items())
