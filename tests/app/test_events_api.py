"""Events through POST /api/v1/events: each item answered, stored once, never a 500."""

import datetime as dt
import gzip
import json

import pytest
from sqlalchemy import func, select

from members.event import Event
from members.member import Member
from tests import factories


@pytest.fixture
def key(session):
    return factories.bearer(factories.api_key(session, "ingest,read")[1])


def _event(i, **extra):
    return {
        "event_id": f"e-{i}",
        "member": f"u-{i % 3}",
        "type": "login",
        "occurred_at": "2026-11-20T09:30:00+08:00",
        **extra,
    }


def _count(session, model=Event):
    return session.scalar(select(func.count()).select_from(model))


def _post(client, key, events, **kw):
    return client.post("/api/v1/events", json={"events": events}, headers=key, **kw)


def test_a_batch_is_stored_and_unknown_members_are_created(client, session, key):
    events = [_event(i) for i in range(5)]
    events.append(_event(9, type="order", amount="199.00", category="美妆"))
    response = _post(client, key, events)
    assert response.status_code == 200
    assert response.get_json()["counts"] == {"accepted": 6, "duplicate": 0, "rejected": 0}
    assert _count(session) == 6 and _count(session, Member) == 3
    order = session.scalar(select(Event).where(Event.event_id == "e-9"))
    assert (order.amount, order.currency, order.category) == (199, "CNY", "美妆")
    assert order.occurred_at == dt.datetime(2026, 11, 20, 1, 30, tzinfo=dt.UTC)
    detail = client.get("/api/v1/members/u-0", headers=key).get_json()
    assert [e["event_id"] for e in detail["last_events"]] == ["e-9", "e-3", "e-0"]


def test_retries_are_duplicates_and_stored_once(client, session, key):
    events = [_event(i) for i in range(3)]
    _post(client, key, events)
    again = _post(client, key, [*events, _event(3), _event(3)]).get_json()
    assert [r["status"] for r in again["results"]] == [
        "duplicate",
        "duplicate",
        "duplicate",
        "accepted",
        "duplicate",
    ]
    assert _count(session) == 4


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"occurred_at": "2026-11-20T09:30:00"}, "occurred_at"),
        ({"occurred_at": "last tuesday"}, "occurred_at"),
        ({"occurred_at": "2999-01-01T00:00:00+00:00"}, "occurred_at"),
        ({"type": "order"}, "amount"),
        ({"type": "order", "amount": "-5"}, "amount"),
        ({"type": "order", "amount": "lots"}, "amount"),
        ({"type": "order", "amount": "NaN"}, "amount"),
        ({"type": "order", "amount": "10", "currency": "RMB"}, "currency"),
        ({"type": "Order Completed!"}, "type"),
        (
            {"properties": {"a": {"b": {"c": {"d": {"e": {"f": {"g": {"h": {"i": 1}}}}}}}}}},
            "properties",
        ),
        ({"properties": "not an object"}, "properties"),
        ({"member": ""}, "member"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_bad_items_are_rejected_with_the_field_and_the_rest_stored(
    client, session, key, change, field
):
    response = _post(client, key, [_event(1), _event(2, **change)])
    assert response.status_code == 200
    results = response.get_json()["results"]
    assert results[0]["status"] == "accepted"
    assert results[1]["status"] == "rejected"
    assert results[1]["errors"][0]["field"] == field
    assert _count(session) == 1


def test_past_events_are_welcome(client, session, key):
    old = _event(1, occurred_at="2019-02-05T12:00:00+08:00")
    assert _post(client, key, [old]).get_json()["counts"]["accepted"] == 1


def test_unknown_members_can_be_rejected_instead(committed_app):
    import dataclasses

    from app import create_app
    from app.extensions import db

    settings = committed_app.config["TENURE_SETTINGS"]
    strict = create_app(dataclasses.replace(settings, unknown_members="reject"))
    state = db.state(strict)
    try:
        with state.sessionmaker() as s:
            _, secret = factories.api_key(s, "ingest")
            s.add(Member(external_id="u-1", joined_at=factories.NOW, attributes={}))
            s.commit()
        answer = (
            strict.test_client()
            .post(
                "/api/v1/events",
                json={"events": [_event(1), _event(2)]},
                headers=factories.bearer(secret),
            )
            .get_json()
        )
        assert [r["status"] for r in answer["results"]] == ["accepted", "rejected"]
        assert answer["results"][1]["errors"][0]["field"] == "member"
        with state.sessionmaker() as s:
            assert _count(s, Member) == 1
    finally:
        state.engine.dispose()


@pytest.mark.parametrize(
    ("body", "content_type", "status"),
    [
        (b"{not json", "application/json", 400),
        (b'{"events": []}', "application/json", 422),
        (b'{"events": "x"}', "application/json", 422),
        (b'{"events": [1, "a", null]}', "application/json", 200),
        (b"[" * 100_000 + b"]" * 100_000, "application/json", 400),
        (gzip.compress(b'{"events": []}', mtime=0), "application/json", 400),
    ],
)
def test_unreadable_bodies_are_4xx_never_500(client, session, key, body, content_type, status):
    response = client.post("/api/v1/events", data=body, content_type=content_type, headers=key)
    assert response.status_code in (status, 422 if status == 400 else status), response.get_data(
        as_text=True
    )[:300]
    assert _count(session) == 0


def test_limits_on_batch_size_and_bytes(client, session, key):
    too_many = _post(client, key, [_event(i) for i in range(1001)])
    assert too_many.status_code == 422
    assert {e["field"] for e in too_many.get_json()["errors"]} == {"events"}
    huge = json.dumps({"events": [_event(1, properties={"blob": "x" * 1_100_000})]})
    assert (
        client.post(
            "/api/v1/events", data=huge, content_type="application/json", headers=key
        ).status_code
        == 413
    )
    ten_mb = json.dumps({"events": [_event(1, properties={"blob": "x" * 10_000_000})]})
    assert (
        client.post(
            "/api/v1/events", data=ten_mb, content_type="application/json", headers=key
        ).status_code
        == 413
    )
    assert _count(session) == 0


def test_keys_without_ingest_or_revoked_are_refused(client, session):
    _, reader = factories.api_key(session, "read", name="reader")
    assert _post(client, factories.bearer(reader), [_event(1)]).status_code == 403
    assert client.post("/api/v1/events", json={"events": [_event(1)]}).status_code == 401
    assert _count(session) == 0


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b'{"events": []}', "text/plain"),
        (b"events=1", "application/x-www-form-urlencoded"),
        (b'{"events": []}', None),
    ],
)
def test_a_body_that_is_not_declared_json_is_415(client, session, key, body, content_type):
    response = client.post("/api/v1/events", data=body, content_type=content_type, headers=key)
    assert response.status_code == 415, response.get_data(as_text=True)[:300]
    assert response.mimetype == "application/problem+json"
    assert response.get_json()["errors"][0]["field"] == "Content-Type"
    assert _count(session) == 0


def test_nan_and_infinity_are_rejected_by_field_not_a_500(client, session, key):
    # Python's json writes them (allow_nan defaults to True); PostgreSQL's jsonb refuses.
    body = (
        '{"events": [{"event_id": "n-1", "member": "m-1", "type": "login", '
        '"occurred_at": "2026-11-20T10:00:00+08:00", "properties": {"score": NaN}}, '
        '{"event_id": "n-2", "member": "m-1", "type": "login", '
        '"occurred_at": "2026-11-20T10:00:00+08:00", "properties": {"a": [Infinity]}}]}'
    )
    response = client.post(
        "/api/v1/events", data=body, content_type="application/json", headers=key
    )
    assert response.status_code == 200
    results = response.get_json()["results"]
    assert [r["status"] for r in results] == ["rejected", "rejected"]
    assert {r["errors"][0]["field"] for r in results} == {"properties"}
    assert "NaN" in results[0]["errors"][0]["message"]
    assert _count(session) == 0
