"""The Segment-compatible API driven by the real analytics SDKs, then read back."""

import base64
import gzip
import json
import threading

import pytest
import rudderstack.analytics as rudder
import segment.analytics as segment
from segment.analytics.request import APIError
from sqlalchemy import func, select
from werkzeug.serving import make_server

from members.event import Event
from members.member import Member
from tests import factories


@pytest.fixture
def live_url(app):
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join()


@pytest.fixture
def write_key(session):
    return factories.api_key(session, "ingest,read", name="web")[1]


@pytest.mark.parametrize("use_gzip", [False, True])
def test_segment_sdk_identify_and_track(live_url, client, write_key, use_gzip):
    sdk = segment.Client(write_key, host=live_url, sync_mode=True, gzip=use_gzip)
    sdk.identify(
        "m-1",
        {"phone": "13800138000", "name": "张伟", "tier_hint": "gold", "birthday": "1990-05-20"},
        message_id="id-1",
    )
    sdk.track(
        "m-1",
        "Order Completed",
        {"revenue": 299.5, "currency": "cny", "category": "服饰"},
        message_id="ord-1",
    )
    sdk.track("m-1", "Order Completed", {"revenue": 299.5}, message_id="ord-1")  # a retry
    sdk.track("m-1", "Signed In", message_id="login-1")
    sdk.flush()
    member = client.get("/api/v1/members/m-1", headers=factories.bearer(write_key)).get_json()
    assert member["phone"] == "+8613800138000" and member["birthday"] == "1990-05-20"
    assert member["attributes"] == {"tier_hint": "gold"}
    assert {(e["event_id"], e["type"]) for e in member["last_events"]} == {
        ("ord-1", "order"),
        ("login-1", "login"),
    }
    order = next(e for e in member["last_events"] if e["type"] == "order")
    assert (order["amount"], order["currency"]) == ("299.50", "CNY")


def test_rudderstack_sdk_sends_traits_in_context(live_url, client, write_key):
    sdk = rudder.Client(write_key, host=live_url, sync_mode=True)
    sdk.identify("m-2", {"region": "成都", "favourite": "火锅"}, message_id="r-id-1")
    sdk.track("m-2", "Product Reviewed", {"rating": 5}, message_id="r-rev-1")
    sdk.flush()
    member = client.get("/api/v1/members/m-2", headers=factories.bearer(write_key)).get_json()
    assert member["region"] == "成都" and member["attributes"]["favourite"] == "火锅"
    assert [e["type"] for e in member["last_events"]] == ["review"]


def test_a_bad_key_is_401_that_the_sdk_sees(live_url, session):
    sdk = segment.Client("tnr_bad_key", host=live_url, sync_mode=True)
    with pytest.raises(APIError) as refused:
        sdk.track("m-1", "Signed In", message_id="x-1")
    assert refused.value.status == 401


def _post(client, path, body, key=None, **headers):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    if key:
        headers["Authorization"] = "Basic " + base64.b64encode(f"{key}:".encode()).decode()
    return client.post(path, data=data, headers=headers)


def test_bad_items_are_200_with_each_rejected_and_the_good_stored(client, session, write_key):
    batch = {
        "batch": [
            {
                "type": "track",
                "userId": "m-3",
                "event": "Signed In",
                "messageId": "ok-1",
                "timestamp": "2026-11-20T10:00:00.123+08:00",
            },
            {"type": "track", "userId": "m-3", "event": "Signed In"},
            {"type": "track", "event": "Signed In", "messageId": "no-user"},
            {
                "type": "identify",
                "userId": "m-3",
                "messageId": "bad-phone",
                "traits": {"phone": "not a phone"},
            },
            {"type": "track", "userId": "m-3", "event": "Order Completed", "messageId": "no-rev"},
            {
                "type": "track",
                "userId": "m-3",
                "event": "Big",
                "messageId": "big",
                "properties": {"x": "y" * 40_000},
            },
            "not an object",
        ]
    }
    response = _post(client, "/v1/batch", batch, write_key)
    assert response.status_code == 200
    results = response.get_json()["results"]
    assert [r["status"] for r in results] == ["accepted"] + ["rejected"] * 6
    assert [r.get("field") for r in results[1:5]] == [
        "messageId",
        "userId",
        "traits.phone",
        "amount",
    ]
    stored = session.scalar(select(func.count()).select_from(Event))
    assert stored == 1


def test_anonymous_calls_move_to_the_member_who_identifies(client, session, write_key):
    _post(
        client,
        "/v1/t",
        {"anonymousId": "anon-7", "event": "Signed In", "messageId": "a-1", "writeKey": write_key},
    )
    _post(
        client,
        "/v1/p",
        {"anonymousId": "anon-7", "name": "首页", "messageId": "a-2", "writeKey": write_key},
    )
    _post(
        client,
        "/v1/i",
        {
            "anonymousId": "anon-7",
            "userId": "m-7",
            "messageId": "a-3",
            "traits": {"name": "小明"},
            "writeKey": write_key,
        },
    )
    member = session.scalar(select(Member).where(Member.external_id == "m-7"))
    types = session.scalars(select(Event.type).where(Event.member_id == member.id)).all()
    assert sorted(types) == ["login", "page_view"]
    assert session.scalar(select(Member).where(Member.external_id == "anon:anon-7")) is None


@pytest.mark.parametrize(
    ("body", "headers", "status"),
    [
        (b"{not json", {}, 400),
        (b"not gzip at all", {"Content-Encoding": "gzip"}, 400),
        (
            gzip.compress(b'{"batch": [' + b" " * 20_000_000 + b"]}", mtime=0),
            {"Content-Encoding": "gzip"},
            400,
        ),
        (b'{"batch": []}' + b" " * 600_000, {}, 400),
        (b"[1, 2]", {}, 400),
        (b'{"batch": "x"}', {}, 400),
    ],
    ids=["bad-json", "not-gzip", "gzip-bomb", "oversize", "not-object", "batch-not-list"],
)
def test_unreadable_bodies_are_400(client, session, write_key, body, headers, status):
    response = _post(client, "/v1/batch", body, write_key, **headers)
    assert response.status_code == status
    assert session.scalar(select(func.count()).select_from(Event)) == 0


def test_text_plain_from_the_browser_library_is_read_as_json(client, session, write_key):
    response = client.post(
        "/v1/t",
        data=json.dumps(
            {"userId": "m-9", "event": "Signed In", "messageId": "b-1", "writeKey": write_key}
        ),
        content_type="text/plain",
    )
    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    assert response.get_json()["counts"] == {"accepted": 1}


def test_keys_without_ingest_are_403_and_unknown_401(client, session):
    _, reader = factories.api_key(session, "read", name="reader")
    body = {"batch": [{"type": "track", "userId": "m", "event": "x", "messageId": "k-1"}]}
    assert _post(client, "/v1/batch", body, reader).status_code == 403
    unknown = _post(client, "/v1/batch", body, "tnr_nope_nope")
    assert unknown.status_code == 401 and unknown.get_json()["code"] == "unauthorized"
    assert _post(client, "/v1/batch", body).status_code == 401


def test_nan_in_traits_or_properties_is_rejected_not_a_500(client, session, write_key):
    body = (
        b'{"batch": [{"type": "identify", "userId": "m-9", "messageId": "nan-1", '
        b'"traits": {"score": NaN}}, {"type": "track", "userId": "m-9", "event": "Signed In", '
        b'"messageId": "nan-2", "properties": {"x": -Infinity}}]}'
    )
    response = _post(client, "/v1/batch", body, write_key)
    assert response.status_code == 200
    results = response.get_json()["results"]
    assert [(r["status"], r["field"]) for r in results] == [
        ("rejected", "traits.attributes"),
        ("rejected", "properties"),
    ]
    assert session.scalar(select(func.count()).select_from(Event)) == 0
