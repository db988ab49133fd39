"""The outbox's invariants with real RQ worker processes, the real Redis, and a real
provider speaking HTTP to a local server: no message sent twice and none lost, under
two workers at once, a worker SIGKILLed in the middle of a batch, and Redis flushed in
the middle of a run.

The provider is Twilio's (the official SDK, pointed at the local server by the
account's base_url setting). It is not idempotent: a message whose worker died during
the provider call must end ``failed`` as ``interrupted``, never be sent again. The
fake server counts the requests per message: each SMS carries its dedup key.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import datetime as dt
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from flask import Flask
from rq import Queue
from sqlalchemy import func, insert, select
from werkzeug.serving import WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

from app import create_app, redis_server, vault
from app.extensions import db
from app.redis_client import get_redis
from journeys import accounts, delivery
from journeys.models import Message, MessageStatus
from journeys.providers.twilio import TwilioSms
from members.member import Member
from workers import jobs, queues

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
ACCOUNT_SID = "AC" + "7" * 32
AUTH_TOKEN = "test-auth-token-0123456789"
KEY = re.compile(r"dk-\d+")
BATCH = "50"  # messages per claim in the workers: a few hundred make many claims


class FakeTwilio:
    """Twilio's Messages endpoint: checks the credentials, answers after ``delay``
    seconds, and counts the requests per message (its dedup key, found in the body).

    ``at(n, action)`` runs ``action`` when the n-th request arrives, before answering
    it: a kill then lands while that provider call is surely in flight."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.seen: collections.Counter[str] = collections.Counter()
        self.lock = threading.Lock()
        self.url = ""
        self.trigger: tuple[int, Callable[[], object]] | None = None
        self.triggered = threading.Event()

    def at(self, count: int, action: Callable[[], object]) -> None:
        self.trigger = (count, action)

    def total(self) -> int:
        with self.lock:
            return sum(self.seen.values())

    def __call__(self, environ, start_response):
        request = Request(environ)
        auth = request.authorization
        path = f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json"
        if request.path != path or not auth or auth.password != AUTH_TOKEN:
            return Response("{}", 401, mimetype="application/json")(environ, start_response)
        found = KEY.search(request.form.get("Body", ""))
        key = found.group() if found else "?"
        with self.lock:
            self.seen[key] += 1
            fire = self.trigger is not None and sum(self.seen.values()) == self.trigger[0]
        if fire:
            self.trigger[1]()
            self.triggered.set()
        time.sleep(self.delay)
        sid = "SM" + key.replace("-", "")
        body = json.dumps({"sid": sid, "account_sid": ACCOUNT_SID, "status": "queued"})
        return Response(body, 201, mimetype="application/json")(environ, start_response)


class _Quiet(WSGIRequestHandler):
    def log_request(self, *args, **kwargs) -> None:
        pass  # a line per message otherwise


@contextlib.contextmanager
def fake_twilio(delay: float) -> Iterator[FakeTwilio]:
    fake = FakeTwilio(delay)
    server = make_server("127.0.0.1", 0, fake, threaded=True, request_handler=_Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    fake.url = f"http://127.0.0.1:{server.server_port}"
    try:
        yield fake
    finally:
        server.shutdown()
        thread.join()
        server.server_close()


def _arrange(app: Flask, count: int, twilio_url: str | None = None) -> list[str]:
    """``count`` service SMS due a minute ago by the wall clock (which the workers
    read), one per member, through a Twilio account at ``twilio_url`` (None: no
    account, so the console). Committed."""
    past = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
    keys = [f"dk-{i}" for i in range(count)]
    with app.app_context():
        session = db.session
        if twilio_url:
            settings = {
                "account_sid": ACCOUNT_SID,
                "auth_token": AUTH_TOKEN,
                "from_number": "+15017122661",
                "base_url": twilio_url,
            }
            data = {"kind": "twilio", "name": "twilio", "scope": "all", "settings": settings}
            accounts.save(session, vault.current(), data, actor="t", now=past)
        session.execute(
            insert(Member),
            # Numbers outside mainland China: Twilio stores data abroad (PIPL art. 39).
            [{"external_id": f"m-{i}", "phone": f"+1415555{i:04d}"} for i in range(count)],
        )
        ids = session.scalars(select(Member.id).order_by(Member.id)).all()
        session.execute(
            insert(Message),
            [
                {
                    "member_id": member_id,
                    "channel": "sms",
                    "provider": "console",
                    "dedup_key": key,
                    "body": f"Your statement is ready ({key})",
                    "transactional": True,  # no quiet hours: the test runs at any hour
                    "send_after": past,
                    "created_at": past,
                }
                for member_id, key in zip(ids, keys, strict=True)
            ],
        )
        session.commit()
    return keys


def kill(pid: int) -> None:
    """SIGKILL a worker and the work horse it forked (RQ puts a horse in a process group
    of its own: killing the worker's group would leave the horse running)."""
    family, index = [pid], 0
    while index < len(family):
        for children in Path(f"/proc/{family[index]}/task").glob("*/children"):
            with contextlib.suppress(OSError):
                family.extend(int(child) for child in children.read_text().split())
        index += 1
    for member in family:
        with contextlib.suppress(ProcessLookupError):
            os.kill(member, signal.SIGKILL)


def _gone(pid: int) -> bool:
    return not Path(f"/proc/{pid}").exists()


@pytest.fixture(scope="session")
def zygote() -> Iterator[subprocess.Popen]:
    """tests/workers/delivery_worker.py: the app imported once, workers forked off it."""
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.workers.delivery_worker"],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    yield process
    assert process.stdin is not None and process.stdout is not None
    process.stdin.close()
    process.wait(timeout=30)
    process.stdout.close()


@dataclasses.dataclass
class Workers:
    """Real RQ worker processes on the app's database and Redis, each with a log file.
    ``start`` forks one (which creates its app meanwhile); ``go`` has it work the queue
    until it is empty (a round); ``finish`` lets it exit once its rounds are done."""

    zygote: subprocess.Popen
    app: Flask
    folder: Path
    started: list[int] = dataclasses.field(default_factory=list)

    def _base(self, pid: int) -> Path:
        return self.folder / f"worker-{self.started.index(pid)}"

    def start(self, **extra: str) -> int:
        settings = self.app.config["TENURE_SETTINGS"]
        env = {
            "DATABASE_URL": settings.database_url,
            "REDIS_URL": settings.redis_url,
            "SECRET_KEY": settings.secret_key,
            "TENURE_INSTANCE_PATH": str(settings.instance_path),
            **extra,
        }
        base = self.folder / f"worker-{len(self.started)}"
        assert self.zygote.stdin is not None and self.zygote.stdout is not None
        self.zygote.stdin.write(json.dumps({"env": env, "base": str(base)}) + "\n")
        self.zygote.stdin.flush()
        pid = int(self.zygote.stdout.readline())
        self.started.append(pid)
        return pid

    def _order(self, pid: int, order: str) -> None:
        with Path(f"{self._base(pid)}.control").open("a") as control:
            control.write(order + "\n")

    def go(self, *pids: int) -> None:
        for pid in pids:
            self._order(pid, "go")

    def rounds(self, pid: int) -> int:
        done = Path(f"{self._base(pid)}.rounds")
        return int(done.read_text() or 0) if done.exists() else 0

    def until_round(self, pid: int, count: int) -> None:
        _until(lambda: self.rounds(pid) >= count or _gone(pid), "a worker's round")
        assert not _gone(pid), self.output()

    def finish(self, *pids: int, timeout: float = 60) -> None:
        for pid in pids:
            self._order(pid, "end")
        for pid in pids:
            _until(lambda pid=pid: _gone(pid), "a worker to exit", timeout)
            status = Path(f"{self._base(pid)}.exit")
            assert status.exists() and status.read_text() == "0", self.output()

    def kill(self, pid: int) -> None:
        kill(pid)
        _until(lambda: _gone(pid), "a killed worker to go")

    def output(self) -> str:
        return "\n".join(path.read_text() for path in sorted(self.folder.glob("worker-*.log")))

    def stop_all(self) -> None:
        for pid in self.started:
            if not _gone(pid):
                self.kill(pid)


@pytest.fixture
def workers(zygote, committed_app: Flask, tmp_path: Path) -> Iterator[Workers]:
    running = Workers(zygote, committed_app, tmp_path)
    yield running
    running.stop_all()


def _enqueue(app: Flask, func: Callable, times: int = 1) -> list:
    queue = Queue(queues.HIGH, connection=get_redis(app))
    return [queue.enqueue(func) for _ in range(times)]


def _until(condition: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def _outbox(app: Flask) -> dict[str, Message]:
    with app.app_context():
        rows = db.session.scalars(select(Message)).all()
        db.session.expunge_all()
        return {row.dedup_key: row for row in rows}


def _statuses(app: Flask) -> dict[str, int]:
    with app.app_context():
        rows = db.session.execute(
            select(Message.status, func.count()).group_by(Message.status)
        ).all()
        return {status.value: count for status, count in rows}


def _assert_each_sent_once(app: Flask, keys: list[str], fake: FakeTwilio, workers: Workers):
    outbox = _outbox(app)
    statuses = {key: row.status for key, row in outbox.items()}
    assert statuses == dict.fromkeys(keys, MessageStatus.SENT), workers.output()
    assert dict(fake.seen) == dict.fromkeys(keys, 1)
    assert {row.attempts for row in outbox.values()} == {1}
    # Each message recorded the sid the server gave for that very message.
    sids = {key: row.provider_message_id for key, row in outbox.items()}
    assert sids == {key: f"SM{key.replace('-', '')}" for key in keys}


def test_two_workers_send_one_backlog_each_message_once(committed_app, workers):
    """Two worker processes claim batches of one backlog at once (SKIP LOCKED on
    PostgreSQL, BEGIN IMMEDIATE on SQLite): every message is sent exactly once, and
    the server saw each exactly once."""
    both = [workers.start(TEST_BATCH=BATCH) for _ in range(2)]
    with fake_twilio(delay=0.005) as fake:
        keys = _arrange(committed_app, 600, fake.url)
        enqueued = _enqueue(committed_app, jobs.deliver_more, times=4)
        workers.go(*both)
        workers.finish(*both)
    assert [job.get_status(refresh=True) for job in enqueued] == ["finished"] * 4
    _assert_each_sent_once(committed_app, keys, fake, workers)
    # Both workers took part (or the test proved nothing about concurrency).
    results = [job.latest_result().return_value for job in enqueued]
    assert sum(1 for text in results if not text.startswith("0 claimed")) >= 2, results


def test_a_worker_killed_mid_batch_sends_nothing_twice(committed_app, workers):
    """SIGKILL (worker and work horse) during a provider call: once the lease has run
    out, ``reclaim`` puts the claimed but unstarted messages back in the queue and fails
    the few in the call as ``interrupted`` (Twilio is not idempotent); a second worker
    sends the rest. The server saw no message twice, and none is left unsettled."""
    victim, second = workers.start(TEST_BATCH="60"), workers.start()
    with fake_twilio(delay=0.02) as fake:
        keys = _arrange(committed_app, 200, fake.url)
        _enqueue(committed_app, jobs.deliver_more)
        fake.at(36, lambda: kill(victim))  # the 36th request: mid-batch, mid-call
        workers.go(victim)
        _until(lambda: _gone(victim), "the victim to be killed")
        assert fake.triggered.is_set(), workers.output()
        time.sleep(0.2)  # the server answers the requests in flight (to no one)
        with committed_app.app_context():
            later = dt.datetime.now(dt.UTC) + delivery.LEASE + dt.timedelta(minutes=1)
            reclaimed = delivery.reclaim(db.session, now=later)
            db.session.commit()
        assert 0 < reclaimed.interrupted <= TwilioSms.concurrency, reclaimed
        assert reclaimed.requeued > 0 and reclaimed.retried == 0, reclaimed
        _enqueue(committed_app, jobs.deliver_more)
        workers.go(second)
        workers.finish(second)
    outbox = _outbox(committed_app)
    by_status = collections.defaultdict(set)
    for key, row in outbox.items():
        by_status[row.status].add(key)
    sent, interrupted = by_status[MessageStatus.SENT], by_status[MessageStatus.FAILED]
    assert set(by_status) <= {MessageStatus.SENT, MessageStatus.FAILED}, _statuses(committed_app)
    assert len(sent) + len(interrupted) == len(keys)
    assert len(interrupted) == reclaimed.interrupted
    assert {outbox[key].reason for key in interrupted} == {"interrupted"}
    assert max(fake.seen.values()) == 1, fake.seen.most_common(3)
    assert set(fake.seen) >= sent
    # What the server saw that the outbox does not hold as sent went in the call the
    # kill cut short: those messages are among the interrupted.
    assert set(fake.seen) - sent <= interrupted


@pytest.fixture
def own_redis(zygote, committed_app: Flask, tmp_path: Path) -> Iterator[tuple[Flask, Workers]]:
    """The committed app on a Redis server of its own, and its workers: FLUSHALL must
    not empty the Redis databases of the other test processes."""
    folder = Path(tempfile.mkdtemp(prefix="tenure-flush-", dir="/tmp"))  # a short socket path
    url = redis_server.ensure_running(folder)
    settings = dataclasses.replace(committed_app.config["TENURE_SETTINGS"], redis_url=url)
    app = create_app(settings)
    running = Workers(zygote, app, tmp_path)
    try:
        yield app, running
    finally:
        running.stop_all()
        db.state(app).engine.dispose()
        # A SHUTDOWN takes seconds, and nothing here is worth saving.
        with contextlib.suppress(OSError, ValueError):
            os.kill(int((folder / "redis.pid").read_text()), signal.SIGKILL)
        shutil.rmtree(folder, ignore_errors=True)


def test_redis_flushed_mid_run_loses_and_doubles_nothing(own_redis):
    """FLUSHALL while a worker is part-way through the delivery jobs: the jobs still
    queued are gone, but the database is the truth, and the periodic reconciler
    (``deliver_messages``) sends what is left. Every message sent exactly once."""
    app, workers = own_redis
    # Each job sends for half a second only (then puts back what it did not start):
    # the backlog needs several of the ten jobs.
    worker = workers.start(TEST_BATCH=BATCH, TEST_BUDGET="0.5")
    with fake_twilio(delay=0.02) as fake:
        keys = _arrange(app, 400, fake.url)
        _enqueue(app, jobs.deliver_more, times=10)
        fake.at(40, get_redis(app).flushall)
        workers.go(worker)
        workers.until_round(worker, 1)
        assert fake.triggered.is_set()
        assert Queue(queues.HIGH, connection=get_redis(app)).count == 0
        queued = _statuses(app).get(MessageStatus.QUEUED.value, 0)
        assert queued > 0, "the worker finished before the flush: nothing was at stake"
        workers.finish(worker)
        # The next minute's reconciler, on a worker with the usual budget.
        reconciler = workers.start(TEST_BATCH=BATCH)
        _enqueue(app, jobs.deliver_messages)
        workers.go(reconciler)
        workers.finish(reconciler)
    _assert_each_sent_once(app, keys, fake, workers)


def test_console_delivery_with_two_workers_and_a_kill_delivers_each_once(committed_app, workers):
    """The console provider delivers in the claiming transaction: a worker killed after
    its batch is settled and flushed but before the commit delivers none of it. Another
    worker delivers the rest (on PostgreSQL while the victim still holds its rows), and
    then what the victim held; the reconciler finds nothing left to do twice. Each
    message delivered once (attempts == 1)."""
    ready = workers.folder / "ready"
    victim = workers.start(TEST_HANG_AFTER_CLAIM=str(ready))
    helper = workers.start()
    keys = _arrange(committed_app, 600)
    _enqueue(committed_app, jobs.deliver_more)
    workers.go(victim)
    _until(lambda: ready.exists() and ready.read_text(), "the victim to claim its batch")
    assert ready.read_text() == str(delivery.BATCH)
    (helper_job,) = _enqueue(committed_app, jobs.deliver_more)
    workers.go(helper)
    if committed_app.config["TENURE_SETTINGS"].is_sqlite:
        # The helper waits for the victim's write lock (BEGIN IMMEDIATE): kill the
        # victim once the helper is at work; the helper then claims everything.
        _until(lambda: helper_job.get_status(refresh=True) == "started", "the helper")
        workers.kill(victim)
        workers.until_round(helper, 1)
        assert helper_job.latest_result().return_value.startswith("600 claimed")
    else:
        # The helper skips the rows the victim holds (SKIP LOCKED) and delivers the
        # others; the victim's batch is back in the queue once it is killed.
        workers.until_round(helper, 1)
        assert helper_job.latest_result().return_value.startswith("100 claimed")
        workers.kill(victim)
    _enqueue(committed_app, jobs.deliver_messages)  # the reconciler
    workers.go(helper)
    workers.finish(helper)
    outbox = _outbox(committed_app)
    statuses = {key: row.status for key, row in outbox.items()}
    assert statuses == dict.fromkeys(keys, MessageStatus.DELIVERED), workers.output()
    assert {row.attempts for row in outbox.values()} == {1}
    assert {row.provider for row in outbox.values()} == {"console"}
    assert len({row.provider_message_id for row in outbox.values()}) == len(keys)


def test_a_twilio_call_that_timed_out_is_not_sent_again(app):
    """Twilio answers too late: the request reached it, so a retry could send the SMS
    twice; the message ends failed as uncertain, and the fake saw it once."""
    from journeys.channel_models import ProviderAccount

    with fake_twilio(delay=1.0) as fake, app.app_context():
        _arrange(app, 1, fake.url)
        session, now = db.session, dt.datetime.now(dt.UTC)
        account = session.scalars(select(ProviderAccount)).one()
        accounts.build(account, vault.current()).timeout = 0.3
        for at in (now, now + dt.timedelta(hours=2)):  # past any retry's backoff
            claimed = delivery.deliver_due(session, now=at)
            session.commit()
            delivery.send_claimed(
                session,
                claimed,
                vault=vault.current(),
                clock=lambda at=at: at,
                commit=session.commit,
            )
            fake.delay = 0
        message = session.scalars(select(Message)).one()
        assert (message.status, message.reason) == (MessageStatus.FAILED, "uncertain")
        assert dict(fake.seen) == {"dk-0": 1}
