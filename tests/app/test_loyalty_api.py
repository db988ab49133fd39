"""A member's tier through the API: "spend X more (or N more orders) to reach the next
tier", as the shop's app shows it."""

import datetime as dt
from decimal import Decimal

import pytest

from members.lifecycle import MemberFeatures
from members.member import Member
from tests import factories

T0 = dt.datetime(2026, 11, 23, 12, 0, tzinfo=dt.UTC)


@pytest.fixture
def reader(session):
    return factories.bearer(factories.api_key(session, "read", name="app")[1])


def _member(session, external_id, tier, spend, orders, contributions=0):
    member = Member(external_id=external_id, joined_at=T0, tier=tier, tier_since=T0)
    session.add(member)
    session.flush()
    session.add(
        MemberFeatures(
            member_id=member.id,
            computed_at=T0,
            spend_365d=Decimal(spend),
            orders_365d=orders,
            contributions_365d=contributions,
        )
    )
    session.commit()


def test_a_silver_member_sees_what_gold_takes(client, session, reader):
    _member(session, "m-1", "silver", "1800.00", 4, 3)
    body = client.get("/api/v1/members/m-1/tier", headers=reader).get_json()
    assert body["tier"] == {"key": "silver", "name_zh": "银卡", "name_en": "Silver"}
    assert body["spend"] == "1800.00" and body["orders"] == 4 and body["window_days"] == 365
    assert body["next"] == {
        "key": "gold",
        "name_zh": "金卡",
        "name_en": "Gold",
        "spend_more": "200.00",
        "orders_more": 2,
        "contributions_more": 17,
    }
    assert body["grace_until"] is None


def test_the_top_tier_has_no_next(client, session, reader):
    _member(session, "m-2", "diamond", "9000", 20)
    body = client.get("/api/v1/members/m-2/tier", headers=reader).get_json()
    assert body["tier"]["key"] == "diamond" and body["next"] is None


def test_an_unknown_member_is_404(client, reader):
    response = client.get("/api/v1/members/nobody/tier", headers=reader)
    assert response.status_code == 404
    assert "nobody" in response.get_json()["detail"]


@pytest.fixture
def writer(app, session):
    app.config["TENURE_CLOCK"] = lambda: T0
    return factories.bearer(factories.api_key(session, "read,write", name="crm")[1])


def _points(client, headers, external_id="m-p", **body):
    return client.post(f"/api/v1/members/{external_id}/points", json=body, headers=headers)


@pytest.fixture
def holder(session):
    session.add(Member(external_id="m-p", joined_at=T0))
    session.commit()


def test_earn_spend_and_read_points(client, session, writer, holder):
    earned = _points(
        client,
        writer,
        action="earn",
        points=300,
        reason="客服补偿",
        idempotency_key="t-1",
        expires_at="2026-12-01T00:00:00+08:00",
    )
    assert earned.status_code == 201, earned.get_json()
    assert earned.get_json()["balance"] == 300 and earned.get_json()["replayed"] is False
    assert (
        _points(
            client, writer, action="earn", points=200, reason="活动", idempotency_key="t-2"
        ).status_code
        == 201
    )
    spent = _points(
        client, writer, action="spend", points=350, reason="兑换", idempotency_key="t-3"
    )
    assert spent.status_code == 201 and spent.get_json()["entry"]["points"] == -350
    body = client.get("/api/v1/members/m-p/points", headers=writer).get_json()
    assert body["balance"] == 150
    # The lot expiring first (1 December) was spent first.
    assert [(lot["points"], lot["remaining"]) for lot in body["lots"]] == [(200, 150)]
    assert body["expiring_soon"] == {"points": 0, "first_expires_at": None, "within_days": 7}
    assert [e["kind"] for e in body["recent"]][:1] == ["spend"]


def test_a_repeated_request_moves_points_once(client, session, writer, holder):
    first = _points(client, writer, action="earn", points=50, reason="r", idempotency_key="same")
    again = _points(client, writer, action="earn", points=50, reason="r", idempotency_key="same")
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.get_json()["replayed"] is True and again.get_json()["balance"] == 50
    other = _points(client, writer, action="earn", points=60, reason="r", idempotency_key="same")
    assert other.status_code == 409
    assert client.get("/api/v1/members/m-p/points", headers=writer).get_json()["balance"] == 50


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({"action": "spend", "points": 10}, "points", "more than the balance of 0"),
        ({"action": "earn", "points": 0}, "points", "from 1 to"),
        ({"action": "earn", "points": "10"}, "points", "Not a valid integer"),
        ({"action": "adjust", "points": 0}, "points", "must not be 0"),
        (
            {"action": "earn", "points": 10, "expires_at": "2026-01-01T00:00:00Z"},
            "expires_at",
            "in the past",
        ),
        (
            {"action": "earn", "points": 10, "expires_at": "2027-01-01T00:00:00"},
            "expires_at",
            "offset",
        ),
        (
            {"action": "spend", "points": 1, "expires_at": "2027-01-01T00:00:00Z"},
            "expires_at",
            "only points added",
        ),
        ({"action": "steal", "points": 10}, "action", "Must be one of"),
        (
            {"action": "earn", "points": 10, "expires_at": "9999-12-31T23:00:00-05:00"},
            "expires_at",
            "100 years",
        ),
        ({"action": "earn", "points": 10, "reason": ""}, "reason", "Length"),
    ],
    ids=[
        "over-balance",
        "zero",
        "string",
        "adjust-zero",
        "past",
        "naive",
        "spend-expiry",
        "action",
        "far",
        "reason",
    ],
)
def test_bad_requests_name_the_field_and_change_nothing(
    client, session, writer, holder, body, field, words
):
    response = _points(client, writer, **{"reason": "r", "idempotency_key": "k", **body})
    assert response.status_code == 422, response.get_json()
    errors = {e["field"]: e["message"] for e in response.get_json()["errors"]}
    assert field in errors and words.lower() in str(errors[field]).lower()
    assert client.get("/api/v1/members/m-p/points", headers=writer).get_json()["balance"] == 0


def test_changing_points_needs_the_write_scope(client, session, reader, holder):
    response = _points(client, reader, action="earn", points=1, reason="r", idempotency_key="k")
    assert response.status_code == 403
