"""A worker process for bench/messaging.py: a real RQ worker (forking a work horse per
job, as ``flask --app wsgi worker`` does) on the app of the environment, which also
counts what its jobs ask of the database.

It loads the app, answers "ready" on its standard output, and once it reads a line on
its standard input it works the queues, waiting for jobs as a production worker does,
until SIGTERM (RQ's warm shutdown). A work horse adds its counts to Redis when its job
ends: statements (calls to the driver, an executemany counting once), executions (an
executemany counting each of its rows), commits, claims (deliver_due's claiming
query), and the seconds spent in jobs and, of those, waiting on the driver.
"""

from __future__ import annotations

import sys
import time

from rq import Worker
from sqlalchemy import event

from app import create_app
from app.extensions import db
from app.redis_client import get_redis
from workers import queues, runtime

KEY = "bench:delivery"
_counts = {"statements": 0, "executions": 0, "commits": 0, "claims": 0}
_seconds = {"jobs": 0.0, "database": 0.0}


def _before(conn, cursor, statement, parameters, context, executemany) -> None:
    _counts["statements"] += 1
    _counts["executions"] += len(parameters) if executemany else 1
    if "ORDER BY messages.priority DESC" in statement:
        _counts["claims"] += 1  # deliver_due claiming a batch
    conn.info["bench_started"] = time.perf_counter()


def _after(conn, cursor, statement, parameters, context, executemany) -> None:
    _seconds["database"] += time.perf_counter() - conn.info.pop("bench_started")


def _commit(conn) -> None:
    _counts["commits"] += 1


class CountingWorker(Worker):
    def perform_job(self, job, queue, execution):
        """Runs in the work horse (forked with zero counts): report them after the job."""
        started = time.perf_counter()
        try:
            return super().perform_job(job, queue, execution)
        finally:
            _seconds["jobs"] += time.perf_counter() - started
            pipe = self.connection.pipeline()
            for name, value in _counts.items():
                pipe.hincrby(KEY, name, value)
            for name, value in _seconds.items():
                pipe.hincrbyfloat(KEY, name, value)
            pipe.execute()


def main() -> None:
    app = create_app()
    runtime.use_app(app)  # before RQ forks: each work horse inherits the app
    engine = db.state(app).engine
    event.listen(engine, "before_cursor_execute", _before)
    event.listen(engine, "after_cursor_execute", _after)
    event.listen(engine, "commit", _commit)
    print("ready", flush=True)
    sys.stdin.readline()
    CountingWorker(list(queues.ALL), connection=get_redis(app)).work()


if __name__ == "__main__":
    main()
