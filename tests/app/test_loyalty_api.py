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
