"""The points rules page as marketers use it."""

import pytest

from members.programme import ProgrammeSetting
from tests import factories

PAGE = "/settings/points"
FORM = {
    "per_yuan": "1",
    "review": "10",
    "share": "5",
    "checkin": "1",
    "referral": "50",
    "bonus_days": "",
    "birthday_multiplier": "2",
    "expiry_months": "12",
    "notice_days": "7",
}


@pytest.fixture
def marketer(client, session):
    factories.user(session, "marketer")
    factories.login(client, "marketer@shop.example")
    return factories.csrf_token(client, PAGE)


def test_saving_double_points_days(client, session, marketer):
    data = {**FORM, "bonus_days": "2026-11-11 2\n\n2026-06-18 ×3\n", "csrf_token": marketer}
    html = client.post(PAGE, data=data, follow_redirects=True).get_data(as_text=True)
    assert "Saved as version 1" in html
    assert "2026-06-18 3\n2026-11-11 2" in html
    stored = session.get(ProgrammeSetting, "points_rules").value
    assert stored["bonus_days"] == [
        {"day": "2026-06-18", "multiplier": 3},
        {"day": "2026-11-11", "multiplier": 2},
    ]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"bonus_days": "2026-11-31 2"}, "Line 1: must be a date"),
        ({"bonus_days": "2026-11-11 2\n2026-11-12 twice"}, "Line 2: must be a whole number"),
        ({"expiry_months": "-1"}, "Number must be between 0 and 120"),
        ({"per_yuan": "lots"}, "Not a valid decimal value"),
        ({"per_yuan": "NaN"}, "Enter a number."),
        ({"bonus_days": "2026-11-11 ²"}, "Line 1: must be a whole number"),
    ],
    ids=["date", "multiplier", "negative", "words", "nan", "superscript"],
)
def test_bad_rules_are_shown_and_nothing_changes(client, session, marketer, changes, message):
    response = client.post(PAGE, data={**FORM, **changes, "csrf_token": marketer})
    assert response.status_code == 400
    assert message in response.get_data(as_text=True)
    assert session.get(ProgrammeSetting, "points_rules") is None


def _page_key(html):
    import re

    return re.search(r'name="idempotency_key" type="hidden" value="([^"]+)"', html)[1]


@pytest.fixture
def holder(session):
    import datetime as dt

    from members import points
    from members.member import Member

    member = Member(
        external_id="vip-1",
        joined_at=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
        phone="+8613800138000",
    )
    session.add(member)
    session.flush()
    points.earn(
        session,
        member,
        120,
        reason="order",
        now=dt.datetime(2026, 11, 1, tzinfo=dt.UTC),
        rules=points.PointsRules(),
        actor="system",
    )
    session.commit()
    return member


def test_a_marketer_adds_and_deducts_points_on_the_member_page(client, session, marketer, holder):
    page = client.get("/members/points?external_id=vip-1", follow_redirects=True)
    html = page.get_data(as_text=True)
    assert page.status_code == 200 and "Points of vip-1" in html
    assert "138****8000" in html and "+8613800138000" not in html
    key = _page_key(html)
    data = {"points": "-20", "reason": "兑换礼品", "idempotency_key": key, "csrf_token": marketer}
    done = client.post("/members/vip-1/points", data=data, follow_redirects=True)
    assert "-20 points: the balance is now 100." in done.get_data(as_text=True)
    again = client.post("/members/vip-1/points", data=data, follow_redirects=True)
    assert again.status_code == 200  # the same form sent twice: points moved once
    session.refresh(holder)
    assert holder.points_balance == 100


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"points": "-500"}, "500 is more than the balance of 120"),
        ({"points": "0"}, "must not be 0"),
        ({"points": "10", "expires_on": "2020-01-01"}, "is in the past"),
        ({"reason": ""}, "Say why"),
    ],
    ids=["over-balance", "zero", "past", "no-reason"],
)
def test_bad_adjustments_are_shown_and_nothing_changes(
    client, session, marketer, holder, changes, message
):
    key = _page_key(client.get("/members/vip-1/points").get_data(as_text=True))
    data = {
        "points": "10",
        "reason": "r",
        "idempotency_key": key,
        "csrf_token": marketer,
        **changes,
    }
    response = client.post("/members/vip-1/points", data=data)
    assert response.status_code == 400
    assert message in response.get_data(as_text=True)
    session.refresh(holder)
    assert holder.points_balance == 120


def test_an_unknown_member_is_404(client, marketer):
    assert client.get("/members/nobody/points").status_code == 404
