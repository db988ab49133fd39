"""Webhooks out through the API, as an engineer uses it: subscribe (the secret shown
once), list, change, send a test event to a real local receiver that verifies the
signature, read the delivery log, rotate, delete; bad input is a 4xx naming the
field; read keys read, only admin keys change; and the periodic jobs deliver a stage
change end to end."""

from __future__ import annotations

import datetime as dt

import pytest
from rq import Queue, SimpleWorker
from sqlalchemy import select
from standardwebhooks import Webhook

from app.redis_client import get_redis
from journeys.webhook_models import WebhookDelivery, WebhookEndpoint
from members.audit import AuditEntry
from members.lifecycle import Stage, StageTransition
from members.member import Member
from tests import factories
from tests.webhook_receiver import Receiver
from workers import jobs, queues, runtime

BASE = "/api/v1/webhooks"


@pytest.fixture
def receiver():
    server = Receiver().start()
    yield server
    server.stop()


@pytest.fixture
def admin(session):
    return factories.bearer(factories.api_key(session, "admin", name="ops")[1])


@pytest.fixture
def reader(session):
    return factories.bearer(factories.api_key(session, "read", name="dashboards")[1])


def _create(client, headers, url, types=("member.stage_changed",), **extra):
    body = {"url": url, "event_types": list(types), **extra}
    return client.post(BASE, json=body, headers=headers)


def _fields(response, status=422):
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/problem+json"
    return {error["field"] for error in response.get_json().get("errors", [])}


def test_subscribe_test_and_read_the_log(client, session, admin, reader, receiver):
    created = _create(client, admin, receiver.url, description="CRM sync")
    assert created.status_code == 201, created.get_json()
    assert created.headers["Cache-Control"] == "no-store"
    body = created.get_json()
    secret, endpoint_id = body["secret"], body["id"]
    assert secret.startswith("whsec_")
    assert body["event_types"] == ["member.stage_changed"] and body["active"] is True
    assert body["created_by"] == "api_key:ops(" + body["created_by"].split("(")[1]

    listed = client.get(BASE, headers=reader)
    assert listed.status_code == 200
    assert [e["id"] for e in listed.get_json()] == [endpoint_id]
    assert "secret" not in listed.get_json()[0] and secret not in listed.get_data(as_text=True)
    one = client.get(f"{BASE}/{endpoint_id}", headers=reader).get_json()
    assert one["url"] == receiver.url and "secret" not in one
    types = client.get(f"{BASE}/event-types", headers=reader).get_json()["event_types"]
    assert "benefit.granted" in types and "webhook.test" not in types

    tested = client.post(f"{BASE}/{endpoint_id}/test", headers=admin)
    assert tested.status_code == 200
    assert tested.get_json()["delivered"] is True and tested.get_json()["status_code"] == 204
    (got,) = receiver.received
    assert Webhook(secret).verify(got.body, got.headers)["type"] == "webhook.test"

    receiver.answer(500, "boom")
    failed = client.post(f"{BASE}/{endpoint_id}/test", headers=admin).get_json()
    assert failed["delivered"] is False and failed["error"] == "HTTP 500: boom"

    log = client.get(f"{BASE}/{endpoint_id}/deliveries", headers=reader)
    assert log.status_code == 200 and "X-Pagination" in log.headers
    rows = log.get_json()
    assert [r["status"] for r in rows] == ["failed", "delivered"]  # newest first
    assert rows[0]["attempt_log"][0]["status_code"] == 500
    assert rows[1]["event_id"] == got.headers["webhook-id"]
    assert rows[1]["payload"]["type"] == "webhook.test"
    only = client.get(f"{BASE}/{endpoint_id}/deliveries?status=delivered", headers=reader)
    assert [r["status"] for r in only.get_json()] == ["delivered"]
    assert _fields(client.get(f"{BASE}/{endpoint_id}/deliveries?status=lost", headers=reader)) == {
        "status"
    }

    rotated = client.post(f"{BASE}/{endpoint_id}/rotate-secret", headers=admin)
    assert rotated.status_code == 200 and rotated.headers["Cache-Control"] == "no-store"
    new = rotated.get_json()["secret"]
    assert new != secret and new.startswith("whsec_")
    client.post(f"{BASE}/{endpoint_id}/test", headers=admin)
    Webhook(new).verify(receiver.received[-1].body, receiver.received[-1].headers)

    changed = client.patch(
        f"{BASE}/{endpoint_id}",
        json={"event_types": ["benefit.granted", "member.tier_changed"], "active": False},
        headers=admin,
    )
    assert changed.status_code == 200, changed.get_json()
    assert changed.get_json()["event_types"] == ["member.tier_changed", "benefit.granted"]
    assert changed.get_json()["active"] is False
    assert changed.get_json()["disabled_reason"].startswith("disabled by api_key:ops")
    assert client.patch(f"{BASE}/{endpoint_id}", json={}, headers=admin).status_code == 200

    assert client.delete(f"{BASE}/{endpoint_id}", headers=admin).status_code == 204
    assert client.get(f"{BASE}/{endpoint_id}", headers=reader).status_code == 404
    assert session.scalar(select(WebhookDelivery.id)) is None
    query = select(AuditEntry.action).where(AuditEntry.target_type == "webhook_endpoint")
    actions = session.scalars(query.order_by(AuditEntry.id)).all()
    assert actions == [
        "webhook.created",
        "webhook.secret_rotated",
        "webhook.updated",  # the empty change is no change
        "webhook.deleted",
    ]


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({"url": "ftp://x.example", "event_types": ["benefit.granted"]}, {"url"}),
        ({"url": "https://", "event_types": ["benefit.granted"]}, {"url"}),
        ({"url": "https://x.example", "event_types": []}, {"event_types"}),
        ({"url": "https://x.example", "event_types": ["member.deleted"]}, {"event_types.0"}),
        ({"url": "https://x.example", "event_types": "benefit.granted"}, {"event_types"}),
        ({"url": "https://x.example"}, {"event_types"}),
        ({"event_types": ["benefit.granted"]}, {"url"}),
        (
            {"url": "https://x.example", "event_types": ["benefit.granted"], "secret": "x"},
            {"secret"},
        ),
        (
            {"url": 7, "event_types": ["benefit.granted"], "description": "x" * 501},
            {"url", "description"},
        ),
    ],
)
def test_bad_input_is_a_422_naming_the_field(client, session, admin, body, fields):
    assert _fields(client.post(BASE, json=body, headers=admin)) == fields
    assert session.scalar(select(WebhookEndpoint.id)) is None


def test_bad_changes_and_unknown_ids(client, admin):
    endpoint_id = _create(client, admin, "https://x.example/h").get_json()["id"]
    assert _fields(client.patch(f"{BASE}/{endpoint_id}", json={"url": "x"}, headers=admin)) == {
        "url"
    }
    assert _fields(
        client.patch(f"{BASE}/{endpoint_id}", json={"active": "maybe"}, headers=admin)
    ) == {"active"}
    assert _fields(client.patch(f"{BASE}/{endpoint_id}", json={"id": 3}, headers=admin)) == {"id"}
    bad_json = client.patch(
        f"{BASE}/{endpoint_id}", data="{", content_type="application/json", headers=admin
    )
    assert bad_json.status_code == 400
    for method, path in [
        ("get", "/99999"),
        ("patch", "/99999"),
        ("delete", "/99999"),
        ("post", "/99999/test"),
        ("post", "/99999/rotate-secret"),
        ("get", "/99999/deliveries"),
    ]:
        response = client.open(BASE + path, method=method.upper(), json={}, headers=admin)
        assert response.status_code == 404, (method, path)


def test_read_keys_read_and_only_admin_keys_change(client, session, admin, reader):
    endpoint_id = _create(client, admin, "https://x.example/h").get_json()["id"]
    writer = factories.bearer(factories.api_key(session, "write", name="builder")[1])
    for headers in (reader, writer):
        assert _create(client, headers, "https://y.example/h").status_code == 403
        assert client.post(f"{BASE}/{endpoint_id}/test", headers=headers).status_code == 403
        assert (
            client.post(f"{BASE}/{endpoint_id}/rotate-secret", headers=headers).status_code == 403
        )
        assert client.delete(f"{BASE}/{endpoint_id}", headers=headers).status_code == 403
    assert client.get(BASE, headers=reader).status_code == 200
    assert client.get(BASE).status_code == 401
    ingest = factories.bearer(factories.api_key(session, "ingest", name="shop")[1])
    assert client.get(BASE, headers=ingest).status_code == 403


def test_the_jobs_deliver_a_stage_change_end_to_end(app, client, session, admin, receiver):
    runtime.use_app(app)
    redis = get_redis(app)
    secret = _create(client, admin, receiver.url).get_json()["secret"]
    queue = Queue(queues.DEFAULT, connection=redis)
    queue.enqueue(jobs.webhooks_fan_out)  # the cursors start here
    SimpleWorker([queue], connection=redis).work(burst=True)
    member = Member(external_id="u-10086")
    session.add(member)
    session.flush()
    at = dt.datetime.now(dt.UTC)
    session.add(
        StageTransition(member_id=member.id, from_stage=Stage.ACTIVE, to_stage=Stage.AT_RISK, at=at)
    )
    session.commit()
    fan_out = queue.enqueue(jobs.webhooks_fan_out)
    deliver = queue.enqueue(jobs.deliver_webhooks)
    SimpleWorker([queue], connection=redis).work(burst=True)
    assert "1 member.stage_changed" in fan_out.return_value()
    assert deliver.return_value().startswith("1 claimed, 1 delivered")
    (got,) = receiver.received
    event = Webhook(secret).verify(got.body, got.headers)
    assert event["type"] == "member.stage_changed"
    assert event["data"] == {
        "member": "u-10086",
        "from": "active",
        "to": "at_risk",
        "at": event["timestamp"],
    }
