"""The "Data in" page counts what the doors received and refused; marketers and
engineers edit which Segment track names become which event types."""

import base64
import json

import pytest
from sqlalchemy import select

from members.audit import AuditEntry
from members.event import Event
from tests import factories


@pytest.fixture
def keys(session):
    return {
        "ingest": factories.api_key(session, "ingest", name="shop")[1],
        "read": factories.api_key(session, "read", name="bi")[1],
        "write": factories.api_key(session, "write", name="ops")[1],
    }


def _track(client, key, name, message_id, **extra):
    body = {"type": "track", "userId": "m-1", "event": name, "messageId": message_id, **extra}
    basic = base64.b64encode(f"{key}:".encode()).decode()
    response = client.post(
        "/v1/track", data=json.dumps(body), headers={"Authorization": f"Basic {basic}"}
    )
    assert response.status_code == 200
    return response.get_json()["results"][0]


def _type_of(session, event_id):
    return session.scalar(select(Event.type).where(Event.event_id == event_id))


def test_an_engineer_maps_a_track_name_and_new_calls_follow_it(client, session, keys):
    write, read = factories.bearer(keys["write"]), factories.bearer(keys["read"])
    _track(client, keys["ingest"], "Wishlist Added", "before")
    assert _type_of(session, "before") == "wishlist_added"

    put = client.put(
        "/api/v1/track-mappings/Wishlist Added", json={"event_type": "wish"}, headers=write
    )
    assert put.status_code == 200, put.get_json()
    assert put.get_json()["origin"] == "added"
    _track(client, keys["ingest"], "wishlist added", "after")  # any case
    assert _type_of(session, "after") == "wish"
    assert _type_of(session, "before") == "wishlist_added"  # stored events keep their type

    listed = client.get("/api/v1/track-mappings", headers=read).get_json()
    assert {"event_name": "Wishlist Added", "event_type": "wish", "origin": "added"}.items() <= (
        next(r for r in listed if r["event_name"] == "Wishlist Added").items()
    )
    assert listed[0]["event_name"] == "Order Completed" and listed[0]["origin"] == "default"

    assert client.delete("/api/v1/track-mappings/Wishlist Added", headers=write).status_code == 204
    _track(client, keys["ingest"], "Wishlist Added", "again")
    assert _type_of(session, "again") == "wishlist_added"
    actions = session.scalars(select(AuditEntry.action).order_by(AuditEntry.id)).all()
    assert actions[-2:] == ["track_mapping.set", "track_mapping.reset"]


def test_overriding_a_default_and_restoring_it(client, session, keys):
    write = factories.bearer(keys["write"])
    changed = client.put(
        "/api/v1/track-mappings/Signed In", json={"event_type": "app_open"}, headers=write
    ).get_json()
    assert (changed["origin"], changed["default_type"]) == ("changed", "login")
    _track(client, keys["ingest"], "Signed In", "s-1")
    assert _type_of(session, "s-1") == "app_open"
    # Setting it back to the built-in type drops the override.
    back = client.put(
        "/api/v1/track-mappings/signed in", json={"event_type": "login"}, headers=write
    ).get_json()
    assert back["origin"] == "default"
    assert client.delete("/api/v1/track-mappings/Signed In", headers=write).status_code == 404


@pytest.mark.parametrize(
    ("path", "body", "status", "field"),
    [
        ("/api/v1/track-mappings/X", {"event_type": "Not A Type"}, 422, "event_type"),
        ("/api/v1/track-mappings/X", {"event_type": ""}, 422, "event_type"),
        ("/api/v1/track-mappings/X", {"type": "order"}, 422, "type"),
        ("/api/v1/track-mappings/" + "x" * 201, {"event_type": "order"}, 422, "event_name"),
        ("/api/v1/track-mappings/%20", {"event_type": "order"}, 422, "event_name"),
    ],
)
def test_bad_mappings_are_422_naming_the_field(client, session, keys, path, body, status, field):
    response = client.put(path, json=body, headers=factories.bearer(keys["write"]))
    assert response.status_code == status, response.get_json()
    assert field in {e["field"] for e in response.get_json()["errors"]}
    assert (
        session.scalar(select(AuditEntry.id).where(AuditEntry.target_type == "track_mapping"))
        is None
    )


def test_mappings_need_the_write_scope_to_change(client, keys):
    read = factories.bearer(keys["read"])
    assert client.get("/api/v1/track-mappings", headers=read).status_code == 200
    refused = client.put("/api/v1/track-mappings/X", json={"event_type": "order"}, headers=read)
    assert refused.status_code == 403
    assert client.get("/api/v1/track-mappings").status_code == 401


def test_a_marketer_edits_the_mapping_on_the_page(client, session, keys):
    factories.user(session, "marketer")
    factories.login(client, "marketer@shop.example")
    page = client.get("/data-in/event-mapping")
    assert page.status_code == 200 and "Order Completed" in page.get_data(as_text=True)
    token = factories.csrf_token(client, "/data-in/event-mapping")
    bad = client.post(
        "/data-in/event-mapping",
        data={"csrf_token": token, "event_name": "Coupon Claimed", "event_type": "Coupon!"},
    )
    assert bad.status_code == 400 and "lower-case" in bad.get_data(as_text=True)
    saved = client.post(
        "/data-in/event-mapping",
        data={"csrf_token": token, "event_name": "Coupon Claimed", "event_type": "coupon_claimed"},
        follow_redirects=True,
    )
    assert "now becomes coupon_claimed events" in saved.get_data(as_text=True)
    _track(client, keys["ingest"], "Coupon Claimed", "c-1")
    assert _type_of(session, "c-1") == "coupon_claimed"
    removed = client.post(
        "/data-in/event-mapping/reset",
        data={"csrf_token": token, "event_name": "Coupon Claimed"},
        follow_redirects=True,
    )
    assert "is removed" in removed.get_data(as_text=True)


def test_an_analyst_reads_the_mapping_but_cannot_change_it(client, session):
    factories.user(session, "analyst")
    factories.login(client, "analyst@shop.example")
    page = client.get("/data-in/event-mapping").get_data(as_text=True)
    assert "Save mapping" not in page
    token = factories.csrf_token(client, "/data-in/event-mapping")
    refused = client.post(
        "/data-in/event-mapping",
        data={"csrf_token": token, "event_name": "A", "event_type": "order"},
    )
    assert refused.status_code == 403


def test_the_page_counts_what_each_door_accepted_and_rejected(client, session, keys):
    ingest = factories.bearer(keys["ingest"])
    events = [
        {
            "event_id": "e-1",
            "member": "m-1",
            "type": "login",
            "occurred_at": "2026-11-20T10:00:00+08:00",
        },
        {
            "event_id": "e-1",
            "member": "m-1",
            "type": "login",
            "occurred_at": "2026-11-20T10:00:00+08:00",
        },
        {
            "event_id": "e-2",
            "member": "m-1",
            "type": "order",
            "occurred_at": "2026-11-20T10:00:00+08:00",
        },
        {
            "event_id": "e-3",
            "member": "m-1",
            "type": "order",
            "occurred_at": "2026-11-20T10:00:00+08:00",
        },
    ]
    assert client.post("/api/v1/events", json={"events": events}, headers=ingest).status_code == 200
    _track(client, keys["ingest"], "Signed In", "seg-1")
    _track(client, keys["ingest"], "Order Completed", "seg-2")  # no revenue: rejected
    factories.user(session, "analyst")
    factories.login(client, "analyst@shop.example")
    page = client.get("/data-in")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "an order needs an amount" in html
    assert "e-3" in html and "seg-2" in html  # the last example of each reason
    # API: 1 accepted + 1 duplicate + 2 rejected; Segment: 1 accepted + 1 rejected.
    tiles = [int(n.replace(",", "")) for n in _tile_numbers(html)]
    assert tiles == [2, 1, 3]


def _tile_numbers(html):
    import re

    return re.findall(r'<span class="n[^"]*">([\d,]+)</span>', html)


def test_a_track_name_beginning_with_a_slash_is_addressable(client, session, keys):
    write = factories.bearer(keys["write"])
    put = client.put(
        "/api/v1/track-mappings//cart", json={"event_type": "cart_view"}, headers=write
    )
    assert put.status_code == 200, put.get_data(as_text=True)
    assert put.get_json()["event_name"] == "/cart"
    _track(client, keys["ingest"], "/cart", "slash-1")
    assert _type_of(session, "slash-1") == "cart_view"
    assert client.delete("/api/v1/track-mappings//cart", headers=write).status_code == 204
