"""Event ingest through HTTP as in production: gunicorn with 2 workers, a concurrent
client posting batches of 1,000 (events/s, p50/p99 batch latency, worker memory).

PostgreSQL runs with its durable defaults (fsync, synchronous commit), SQLite in WAL
with synchronous=NORMAL, as the app configures it. BENCH_EVENTS sets the run's size
(default 100,000; 1,000,000 for the memory check of issue 4), BENCH_DATABASES which
databases (default "sqlite postgresql").
"""

from __future__ import annotations

import concurrent.futures
import http.client
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from app import create_app, redis_server
from app.auth.service import create_api_key
from app.extensions import db
from config import ROOT, Settings
from simulator import dataset
from tests.services import PostgresServer, free_port

EVENTS = int(os.environ.get("BENCH_EVENTS", "100000"))
BATCH = 1000
CLIENTS = 4
MEMBERS = 20_000


def run() -> None:
    for kind in os.environ.get("BENCH_DATABASES", "sqlite postgresql").split():
        _run_one(kind)


def _run_one(kind: str) -> None:
    folder = Path(tempfile.mkdtemp(prefix="tenure-bench-ingest-", dir="/tmp"))
    pg = PostgresServer(durable=True).start() if kind == "postgresql" else None
    try:
        url = (pg.url.rsplit("/", 1)[0] + "/postgres") if pg else f"sqlite:///{folder}/b.db"
        redis_url = redis_server.ensure_running(folder)
        settings = Settings(
            database_url=url, redis_url=redis_url, secret_key="b" * 32, instance_path=folder
        )
        app = create_app(settings)
        from flask_migrate import upgrade

        with app.app_context():
            upgrade()
            _, secret = create_api_key(
                db.session, name="bench", scopes="ingest", actor="bench", now=_now()
            )
            db.session.commit()
        db.state(app).engine.dispose()
        port = free_port()
        env = {
            **os.environ,
            "DATABASE_URL": url,
            "REDIS_URL": redis_url,
            "SECRET_KEY": "b" * 32,
            "TENURE_INSTANCE_PATH": str(folder),
            "TENURE_LOG_LEVEL": "WARNING",
        }
        server = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "gunicorn"),
                "--bind",
                f"127.0.0.1:{port}",
                "--workers",
                "2",
                "--log-level",
                "warning",
                "wsgi:app",
            ],
            cwd=ROOT,
            env=env,
        )
        try:
            _wait(port)
            _measure(kind, port, secret, server, pg)
        finally:
            server.terminate()
            server.wait(30)
    finally:
        redis_server.stop(folder)
        if pg:
            pg.stop()
        shutil.rmtree(folder, ignore_errors=True)


def _now():
    import datetime as dt

    return dt.datetime.now(dt.UTC)


def _wait(port: int) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/healthz")
            if conn.getresponse().status == 200:
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError("gunicorn did not come up")


def _bodies(batches: int) -> list[bytes]:
    """What a membership sends: the simulator's members and their events (orders,
    visits, check-ins, reviews, refunds), a thousand to a batch."""
    events = dataset.api_events(batches * BATCH, members=MEMBERS, end=_now(), seed=4)
    return [
        json.dumps({"events": events[b * BATCH : (b + 1) * BATCH]}, ensure_ascii=False).encode()
        for b in range(batches)
    ]


def _cpu(processes: list[psutil.Process]) -> float:
    total = 0.0
    for process in processes:
        try:
            times = process.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def _database_processes(pg: PostgresServer | None) -> list[psutil.Process]:
    if pg is None:
        return []  # SQLite runs inside the gunicorn workers
    postmaster = int((pg.data / "postmaster.pid").read_text().split()[0])
    parent = psutil.Process(postmaster)
    return [parent, *parent.children()]


def _measure(
    kind: str, port: int, secret: str, server: subprocess.Popen, pg: PostgresServer | None
) -> None:
    batches = EVENTS // BATCH
    headers = {"Authorization": f"Bearer {secret}", "Content-Type": "application/json"}
    workers = psutil.Process(server.pid).children()
    latencies: list[float] = []
    # Worker memory after each tenth of the run: flat means no growth per batch.
    rss: list[int] = [sum(w.memory_info().rss for w in workers)]
    # Bodies are built before the clock starts: the client shares the 2 cores with the
    # server, and what is measured is the server.
    bodies = _bodies(batches)

    def client(batch_ids: list[int]) -> int:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        accepted = 0
        for b in batch_ids:
            body = bodies[b]
            start = time.perf_counter()
            conn.request("POST", "/api/v1/events", body=body, headers=headers)
            response = conn.getresponse()
            answer = json.loads(response.read())
            latencies.append(time.perf_counter() - start)
            if response.status != 200:
                raise RuntimeError(f"{response.status}: {answer}")
            accepted += answer["counts"]["accepted"]
            if len(latencies) % max(batches // 10, 1) == 0:
                rss.append(sum(w.memory_info().rss for w in workers))
        return accepted

    me = psutil.Process()
    cpu_start = (_cpu(workers), _cpu(_database_processes(pg)), _cpu([me]))
    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(CLIENTS) as pool:
        accepted = sum(pool.map(client, [list(range(c, batches, CLIENTS)) for c in range(CLIENTS)]))
    elapsed = time.perf_counter() - start
    # What bounds the run: how many of the cores each side kept busy. (PostgreSQL
    # backends that ended during the run are not counted; the pool keeps them open.)
    cpu_end = (_cpu(workers), _cpu(_database_processes(pg)), _cpu([me]))
    cpu = [(end - begin) / elapsed for begin, end in zip(cpu_start, cpu_end, strict=True)]
    rss.append(sum(w.memory_info().rss for w in workers))
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    print(
        f"{kind}: {accepted:,} events accepted in {elapsed:.1f}s = "
        f"{accepted / elapsed:,.0f} events/s; batch of {BATCH} p50 "
        f"{statistics.median(latencies) * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms; "
        f"({CLIENTS} client threads, 2 gunicorn workers)\n"
        f"  cores busy (of {psutil.cpu_count()}): gunicorn workers {cpu[0]:.2f}, "
        f"PostgreSQL {cpu[1]:.2f}, the client {cpu[2]:.2f}\n"
        f"  gunicorn workers' RSS at start, each tenth, end (MiB): "
        + " ".join(f"{r / 2**20:.0f}" for r in rss),
        flush=True,
    )
