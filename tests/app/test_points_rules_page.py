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
    ],
    ids=["date", "multiplier", "negative", "words"],
)
def test_bad_rules_are_shown_and_nothing_changes(client, session, marketer, changes, message):
    response = client.post(PAGE, data={**FORM, **changes, "csrf_token": marketer})
    assert response.status_code == 400
    assert message in response.get_data(as_text=True)
    assert session.get(ProgrammeSetting, "points_rules") is None
