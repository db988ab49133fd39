"""Jobs run through RQ on the real Redis: one transaction each, errors propagate."""

import pytest
from rq import Queue, SimpleWorker
from rq.cron import CronScheduler
from sqlalchemy import func, select

from app import clock
from app.extensions import db
from app.redis_client import get_redis
from members import audit
from members.audit import AuditEntry
from workers import jobs, queues, runtime
from workers.heartbeat import last_heartbeat
from workers.schedule import PERIODIC, register_all


@pytest.fixture
def redis(app):
    runtime.use_app(app)
    return get_redis(app)


@jobs.job
def writes_then_fails() -> None:
    audit.record(db.session, actor="test", action="x", target_type="y", now=clock.now())
    raise RuntimeError("the job failed")


@jobs.job
def writes() -> None:
    audit.record(db.session, actor="test", action="x", target_type="y", now=clock.now())


def _run(redis, func):
    queue = Queue(queues.DEFAULT, connection=redis)
    job = queue.enqueue(func)
    SimpleWorker([queue], connection=redis).work(burst=True)
    return job


def test_heartbeat_job_runs_on_a_worker(redis, client):
    job = _run(redis, jobs.heartbeat)
    assert job.get_status(refresh=True) == "finished"
    assert last_heartbeat(redis) is not None
    assert client.get("/healthz").get_json()["last_cron_heartbeat"] == last_heartbeat(redis)


def test_a_job_commits_its_work(redis, session):
    assert _run(redis, writes).get_status(refresh=True) == "finished"
    assert session.scalar(select(func.count()).select_from(AuditEntry)) == 1


def test_a_failing_job_rolls_back_and_lands_in_the_failed_registry(redis, session):
    job = _run(redis, writes_then_fails)
    assert job.get_status(refresh=True) == "failed"
    assert "the job failed" in job.latest_result().exc_string
    assert session.scalar(select(func.count()).select_from(AuditEntry)) == 0
    assert job.id in Queue(queues.DEFAULT, connection=redis).failed_job_registry.get_job_ids()


_EVERY = [p for p in PERIODIC if p.interval]


def test_periodic_jobs_are_registered_with_rq_cron(redis):
    scheduler = CronScheduler(connection=redis)
    register_all(scheduler)
    registered = {(j.func, j.queue_name, j.interval) for j in scheduler.get_jobs()}
    assert registered == {(p.func, p.queue, p.interval) for p in PERIODIC}
    scheduler.enqueue_jobs()
    # Jobs run at an interval are due at once; those on a cron line wait for their time.
    waiting = sum(Queue(name, connection=redis).count for name in queues.ALL)
    assert waiting == len(_EVERY)


def test_two_cron_processes_enqueue_each_tick_once(redis):
    from workers.schedule import LEADER_KEY, LeaderCronScheduler

    first, second = LeaderCronScheduler(connection=redis), LeaderCronScheduler(connection=redis)
    for scheduler in (first, second):
        register_all(scheduler)
        scheduler.register_birth()  # as start() does
    assert first.enqueue_jobs() and not second.enqueue_jobs()
    waiting = sum(Queue(name, connection=redis).count for name in queues.ALL)
    assert waiting == len(_EVERY)
    assert second.calculate_sleep_interval() > 0  # the standby keeps time, does not spin
    first.register_death()  # the leader stops: the lease is released, the standby leads
    assert redis.get(LEADER_KEY) is None
    assert second.is_leader()


def test_old_ingest_counters_are_purged_and_recent_ones_kept(redis, session):
    import datetime as dt

    from members import ingest
    from members.event import IngestCount

    today = dt.date.today()
    for day in (today - jobs.COUNTS_KEPT - dt.timedelta(days=1), today):
        ingest.tally(
            session,
            [("accepted", None, None, None)],
            source="api",
            day=day,
            now=dt.datetime.now(dt.UTC),
        )
    session.flush()
    _run(redis, jobs.purge_ingest_counts)
    assert session.scalars(select(IngestCount.day)).all() == [today]


def test_the_lifecycle_jobs_give_members_a_stage(redis, app, session):
    import datetime as dt

    from members.lifecycle import LifecycleRun, RunKind, Stage
    from members.member import Member

    at = dt.datetime(2026, 11, 23, 12, 0, tzinfo=dt.UTC)
    app.config["TENURE_CLOCK"] = lambda: at
    session.add(Member(external_id="new-one", joined_at=at))
    session.commit()
    job = _run(redis, jobs.lifecycle_incremental)
    assert job.get_status(refresh=True) == "finished"
    assert job.return_value() == "full: 1 members, 1 changed stage"  # no run before it
    assert session.scalar(select(Member.stage)) is Stage.NEW
    assert _run(redis, jobs.lifecycle_full).return_value() == "full: 1 members, 0 changed stage"
    kinds = session.scalars(select(LifecycleRun.kind).order_by(LifecycleRun.id)).all()
    assert kinds == [RunKind.FULL, RunKind.FULL]


def test_the_points_tick_earns_for_orders(redis, app, session):
    import datetime as dt
    from decimal import Decimal

    from members.event import Event
    from members.member import Member

    at = dt.datetime(2026, 11, 23, 12, 0, tzinfo=dt.UTC)
    app.config["TENURE_CLOCK"] = lambda: at
    member = Member(external_id="buyer", joined_at=at)
    session.add(member)
    session.flush()
    session.add(
        Event(
            event_id="o-1",
            member_id=member.id,
            type="order",
            occurred_at=at - dt.timedelta(hours=1),
            received_at=at - dt.timedelta(hours=1),
            properties={},
            amount=Decimal("88.80"),
            currency="CNY",
        )
    )
    session.commit()
    job = _run(redis, jobs.points_tick)
    assert job.return_value() == "1 events, 88 points earned, 0 lots expired, 0 reminders"
    session.refresh(member)
    assert member.points_balance == 88


def test_the_journey_tick_shares_a_backlog_with_helper_jobs(redis, app, session):
    import dataclasses
    import datetime as dt

    from journeys import control, engine, versions
    from journeys.models import Enrollment, EnrollmentState, MessageTemplate
    from members.member import Member

    at = dt.datetime(2026, 11, 23, 12, 0, tzinfo=dt.UTC)
    app.config["TENURE_CLOCK"] = lambda: at
    app.config["TENURE_SETTINGS"] = dataclasses.replace(
        app.config["TENURE_SETTINGS"], journey_batch=10
    )
    control.SETTING.save(session, control.ControlGroup(percent=0), actor="t", now=at)
    session.add(MessageTemplate(key="hi", name="hi", channel="sms", body="hi"))
    definition = {
        "trigger": {"type": "api"},
        "start": "hi",
        "steps": {
            "hi": {"type": "send", "channel": "sms", "template": "hi", "next": "bye"},
            "bye": {"type": "exit"},
        },
    }
    journey = versions.create(
        session, key="hi", name="hi", definition_data=definition, actor="t", now=at
    )
    versions.publish(session, journey, actor="t", now=at, approver=True)
    session.add_all(Member(external_id=f"h-{i}") for i in range(35))
    session.flush()
    live = engine.live_journeys(session)[0]
    ids = session.scalars(select(Member.id)).all()
    engine.admit(session, live, [engine.Candidate(i) for i in ids], now=at, timezone="UTC")
    session.commit()
    high = Queue(queues.HIGH, connection=redis)
    tick = high.enqueue(jobs.journeys_tick)
    SimpleWorker([high], connection=redis).work(burst=True)
    assert tick.get_status(refresh=True) == "finished"
    assert tick.return_value().endswith("3 helper jobs")  # 35 due: three more batches
    done = session.scalar(select(func.count()).where(Enrollment.state == EnrollmentState.COMPLETED))
    assert done == 35


def test_the_delivery_job_delivers_due_messages_from_the_database(redis, app, session):
    import datetime as dt

    from journeys.models import Message, MessageStatus
    from members.member import Member

    at = dt.datetime(2026, 11, 23, 4, 0, tzinfo=dt.UTC)  # noon in Shanghai
    app.config["TENURE_CLOCK"] = lambda: at
    member = Member(external_id="reader", consent_sms=True, phone="+8613800138000")
    session.add(member)
    session.flush()
    session.add(
        Message(
            member_id=member.id,
            channel="sms",
            provider="outbox",
            dedup_key="job:1",
            body="hi",
            send_after=at,
            created_at=at,
        )
    )
    session.commit()
    # Redis knows nothing of the message (as after a FLUSHALL): the job finds it anyway.
    redis.flushdb()
    job = _run(redis, jobs.deliver_messages)
    assert job.return_value().startswith("1 claimed, 1 delivered, 0 sent, 0 deferred")
    assert session.scalar(select(Message.status)) == MessageStatus.DELIVERED
