"""The tier ladder page as marketers use it."""

import re

import pytest
from sqlalchemy import func, select

from members.programme import ProgrammeSetting
from tests import factories

PAGE = "/settings/tiers"
LEVELS = [
    ("silver", "银卡", "Silver", "", "", ""),
    ("gold", "金卡", "Gold", "2000", "6", "20"),
    ("diamond", "钻石卡", "Diamond", "8000", "15", "60"),
    ("", "", "", "", "", ""),
    ("", "", "", "", "", ""),
]
NAMES = ("key", "name_zh", "name_en", "min_spend", "min_orders", "min_contributions")


def _form(levels=LEVELS, **extra):
    data = {"window_days": "365", "grace_days": "30", **extra}
    for i, row in enumerate(levels):
        for name, value in zip(NAMES, row, strict=True):
            data[f"levels-{i}-{name}"] = value
    return data


@pytest.fixture
def marketer(client, session):
    factories.user(session, "marketer")
    factories.login(client, "marketer@shop.example")
    return factories.csrf_token(client, PAGE)


def _stored(session):
    return session.scalar(select(func.count()).select_from(ProgrammeSetting))


def test_the_page_shows_the_default_ladder(client, marketer):
    html = client.get(PAGE).get_data(as_text=True)
    assert "The default ladder, never changed." in html
    assert 'name="levels-1-name_zh" type="text" value="金卡"' in html
    assert re.search(r'name="levels-2-min_spend"[^>]*value="8000.00"', html)


def test_adding_a_level_saves_a_version(client, session, marketer):
    levels = [*LEVELS[:3], ("black", "黑钻", "Black Diamond", "20000", "", ""), LEVELS[4]]
    response = client.post(
        PAGE, data={**_form(levels), "csrf_token": marketer}, follow_redirects=True
    )
    html = response.get_data(as_text=True)
    assert "Saved as version 1" in html
    stored = session.get(ProgrammeSetting, "tier_ladder").value
    assert [lv["key"] for lv in stored["levels"]] == ["silver", "gold", "diamond", "black"]
    assert stored["levels"][3]["min_spend"] == "20000.00"
    assert stored["levels"][3]["min_orders"] is None


@pytest.mark.parametrize(
    ("levels", "message"),
    [
        (
            [*LEVELS[:2], ("diamond", "钻石卡", "Diamond", "1500", "", ""), *LEVELS[3:]],
            "more than 2000.00",
        ),
        ([LEVELS[0], LEVELS[1], *LEVELS[3:], LEVELS[3]], "3 to 5 levels"),
        ([LEVELS[0], ("silver", "金卡", "Gold", "2000", "", ""), *LEVELS[2:]], "already the key"),
        ([LEVELS[0], ("gold", "金卡", "Gold", "", "", ""), *LEVELS[2:]], "at least one way in"),
        ([LEVELS[0], ("gold", "金卡", "Gold", "-1", "", ""), *LEVELS[2:]], "at least 0"),
    ],
    ids=["not-increasing", "too-few", "same-key", "no-way-in", "negative"],
)
def test_bad_ladders_are_shown_and_nothing_changes(client, session, marketer, levels, message):
    response = client.post(PAGE, data={**_form(levels), "csrf_token": marketer})
    assert response.status_code == 400
    html = response.get_data(as_text=True)
    assert message in html and 'role="alert"' in html
    assert _stored(session) == 0


def test_an_analyst_cannot_change_the_ladder(client, session):
    factories.user(session, "analyst")
    factories.login(client, "analyst@shop.example")
    html = client.get(PAGE).get_data(as_text=True)
    assert "Admins and marketers change the ladder." in html
    token = factories.csrf_token(client, PAGE)
    assert client.post(PAGE, data={**_form(), "csrf_token": token}).status_code == 403
