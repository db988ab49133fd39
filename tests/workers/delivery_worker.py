"""Real RQ workers (forking, as in production) on the "high" queue, for the delivery
process tests, started in a fraction of a second.

Importing the app takes a few seconds, so this runs as a *zygote*: started once per
test process (``python -m tests.workers.delivery_worker``), it imports everything,
then forks a worker for each line on its standard input and answers the worker's pid.
A line is JSON: ``{"env": {...}, "base": "/path/worker-0"}``. The worker takes the
environment (DATABASE_URL, REDIS_URL... as for ``flask --app wsgi worker``), creates
its app, and works in rounds, told through files beside ``base``:

- ``base.log``: its output;
- ``base.control``: a line ``go`` per round (one RQ burst: the queue worked until it
  is empty), or ``end`` to exit once the rounds asked for are done;
- ``base.rounds``: the number of rounds done; ``base.exit``: its exit status.

Test knobs, from the environment:

- TEST_BATCH: messages per claim (delivery's BATCH), so that a few hundred messages
  make many claims and two workers really interleave;
- TEST_BUDGET: seconds a delivery job keeps taking batches (jobs.DELIVERY_BUDGET);
- TEST_HANG_AFTER_CLAIM: a file to write once a claim is settled and flushed but not
  committed; the job then hangs there, to be killed.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path

from rq import Worker

import journeys.providers.twilio  # noqa: F401  (imported once, here, for every worker)
from app import create_app
from app.redis_client import get_redis
from config import Settings
from journeys import delivery
from workers import jobs, queues, runtime


def _configure() -> None:
    batch = os.environ.get("TEST_BATCH")
    if batch:
        delivery.BATCH = int(batch)
        delivery.deliver_due.__kwdefaults__["limit"] = int(batch)
    budget = os.environ.get("TEST_BUDGET")
    if budget:
        jobs.DELIVERY_BUDGET = dt.timedelta(seconds=float(budget))
    ready = os.environ.get("TEST_HANG_AFTER_CLAIM")
    if ready:
        claim = delivery.deliver_due

        def claim_then_hang(*args, **kwargs):
            result = claim(*args, **kwargs)  # settled and flushed, not yet committed
            Path(ready).write_text(str(result.claimed))
            time.sleep(300)
            return result

        delivery.deliver_due = claim_then_hang


def _orders(control: Path):
    """The lines of the control file as they are written."""
    seen = 0
    while True:
        lines = control.read_text().split() if control.exists() else []
        while seen < len(lines):
            seen += 1
            yield lines[seen - 1]
        time.sleep(0.01)


def work(base: str) -> None:
    _configure()
    app = create_app()
    runtime.use_app(app)  # created before RQ forks a work horse per job (preload)
    for done, order in enumerate(_orders(Path(f"{base}.control")), start=1):
        if order == "end":
            return
        Worker([queues.HIGH], connection=get_redis(app)).work(burst=True)
        Path(f"{base}.rounds").write_text(str(done))


def _child(command: dict) -> None:
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # RQ waits for its work horses
    base = command["base"]
    output = os.open(f"{base}.log", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.dup2(output, 1)
    os.dup2(output, 2)
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
    os.environ.update(command["env"])
    status = 0
    try:
        work(base)
    except BaseException:
        traceback.print_exc()
        status = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        Path(f"{base}.exit").write_text(str(status))
        os._exit(status)


def main() -> None:
    # An app built and thrown away: what create_app imports is then loaded for all.
    create_app(
        Settings(
            database_url="sqlite://",
            redis_url="redis://127.0.0.1:1/0",
            secret_key="zygote-secret-key-000",
            instance_path=Path(tempfile.gettempdir()),
            testing=True,
        )
    )
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the kernel reaps the workers
    for line in sys.stdin:
        command = json.loads(line)
        pid = os.fork()
        if pid == 0:
            _child(command)
        print(pid, flush=True)


if __name__ == "__main__":
    main()
