"""Authenticated API requests through the whole Flask stack, in process (requests/s)."""

from __future__ import annotations

import time

from app import clock
from app.auth.service import create_api_key
from app.extensions import db
from bench.setup import instance

REQUESTS = 2_000


def run() -> None:
    with instance() as app:
        with app.app_context():
            _, secret = create_api_key(
                db.session, name="bench", scopes="admin", actor="bench", now=clock.now()
            )
            db.session.commit()
        client = app.test_client()
        headers = {"Authorization": f"Bearer {secret}"}
        assert client.get("/api/v1/api-keys", headers=headers).status_code == 200
        start = time.perf_counter()
        for _ in range(REQUESTS):
            client.get("/api/v1/api-keys", headers=headers)
        elapsed = time.perf_counter() - start
        health_start = time.perf_counter()
        for _ in range(REQUESTS):
            client.get("/healthz")
        health = time.perf_counter() - health_start
    print(
        f"GET /api/v1/api-keys (Bearer, SQLite): {REQUESTS / elapsed:,.0f} requests/s, "
        f"{elapsed / REQUESTS * 1000:.2f} ms each, one process"
    )
    print(f"GET /healthz (database + Redis ping): {REQUESTS / health:,.0f} requests/s")
