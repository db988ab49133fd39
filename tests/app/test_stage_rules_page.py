"""The stage rules page as marketers use it: read, preview, save; errors next to the
field; analysts read only."""

import datetime as dt
import re

import pytest
from rq import Queue
from sqlalchemy import func, select

from app.redis_client import get_redis
from members.lifecycle import MemberFeatures, Stage
from members.member import Member
from members.programme import ProgrammeSetting
from tests import factories
from workers import queues

PAGE = "/settings/stages"
FORM = {
    "new_days": "30",
    "new_max_orders": "1",
    "active_days": "30",
    "at_risk_days": "20",
    "at_risk_visit_percent": "50",
    "dormant_days": "30",
    "lapsed_days": "90",
    "vip_top_percent": "10",
    "place_1": "vip",
    "place_2": "at_risk",
    "place_3": "active",
    "place_4": "new",
    "place_5": "dormant",
}


@pytest.fixture
def marketer(client, session):
    factories.user(session, "marketer")
    factories.login(client, "marketer@shop.example")
    return factories.csrf_token(client, PAGE)


@pytest.fixture
def low_queue(app):
    queue = Queue(queues.LOW, connection=get_redis(app))
    queue.empty()
    yield queue
    queue.empty()


def _post(client, token, **changes):
    data = {**FORM, **changes, "csrf_token": token}
    return client.post(PAGE, data=data, follow_redirects=True)


def _row(html, stage_name):
    """The numbers in a stage's row of the members-per-stage table."""
    row = re.search(rf'<th scope="row">{stage_name}</th>(.*?)</tr>', html, re.S)
    assert row, f"no row for {stage_name}"
    return [int(n.replace(",", "")) for n in re.findall(r'class="num">([+-]?[\d,]+)<', row[1])]


def _value(html, name):
    tag = re.search(rf'<input[^>]*name="{name}"[^>]*>', html)
    assert tag, f"no input {name}"
    return re.search(r'value="([^"]*)"', tag[0])[1]


def _settings(session):
    return session.scalar(select(func.count()).select_from(ProgrammeSetting))


def test_the_page_shows_the_rules_and_members_per_stage(client, session, marketer):
    at = dt.datetime(2026, 11, 23, tzinfo=dt.UTC)
    session.add_all(
        [Member(external_id=f"m-{i}", joined_at=at, stage=Stage.ACTIVE) for i in range(3)]
    )
    session.commit()
    html = client.get(PAGE).get_data(as_text=True)
    assert "The default rules, never changed." in html
    assert _value(html, "active_days") == "30" and _value(html, "lapsed_days") == "90"
    assert _row(html, "Active") == [3]
    assert _row(html, "Dormant") == [0]
    assert "No lifecycle run yet" in html


def test_saving_versions_the_rules_and_queues_a_full_run(client, session, marketer, low_queue):
    response = _post(client, marketer, at_risk_days="15", place_1="at_risk", place_2="vip")
    html = response.get_data(as_text=True)
    assert response.status_code == 200
    assert "Saved as version 1" in html
    assert "Version 1, saved" in html and "user:marketer@shop.example" in html
    assert [job.func_name for job in low_queue.jobs] == ["workers.jobs.lifecycle_full"]
    stored = session.get(ProgrammeSetting, "stage_rules")
    assert stored.value["at_risk_days"] == 15
    assert stored.value["precedence"][:2] == ["at_risk", "vip"]
    again = _post(client, marketer, at_risk_days="15", place_1="at_risk", place_2="vip")
    assert "Nothing changed" in again.get_data(as_text=True)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"dormant_days": "45"}, "30 to 44 days old would have no stage"),
        ({"lapsed_days": "20"}, "deep end of dormant"),
        ({"at_risk_days": "-3"}, "Number must be between 0 and 3650"),
        ({"active_days": "thirty"}, "Not a valid integer value"),
        ({"active_days": ""}, "Enter a whole number"),
        ({"place_2": "vip"}, "at_risk missing"),
        ({"place_3": "lapsed"}, "Not a valid choice"),
    ],
    ids=["gap", "lapsed", "negative", "words", "empty", "twice", "unknown"],
)
def test_bad_rules_are_shown_next_to_the_field_and_nothing_changes(
    client, session, marketer, low_queue, changes, message
):
    response = client.post(PAGE, data={**FORM, **changes, "csrf_token": marketer})
    assert response.status_code == 400
    html = response.get_data(as_text=True)
    assert message in html and 'class="error" role="alert"' in html
    assert _settings(session) == 0
    assert low_queue.count == 0


def test_a_preview_counts_members_under_the_new_rules_without_saving(client, session, marketer):
    at = dt.datetime(2026, 11, 23, tzinfo=dt.UTC)
    for i, since in enumerate([1, 25, 40, 50]):
        member = Member(external_id=f"p-{i}", joined_at=at, stage=None)
        session.add(member)
        session.flush()
        session.add(
            MemberFeatures(
                member_id=member.id,
                computed_at=at,
                days_since_last_order=since,
                days_since_joined=400,
            )
        )
    session.commit()
    data = {**FORM, "active_days": "45", "dormant_days": "45", "vip_top_percent": "0"}
    response = client.post(PAGE, data={**data, "action": "preview", "csrf_token": marketer})
    html = response.get_data(as_text=True)
    assert response.status_code == 200
    assert "With the rules below" in html
    assert _row(html, "Active") == [0, 3, 3]  # now, with these rules, the change
    assert _row(html, "Dormant") == [0, 1, 1]
    assert _value(html, "active_days") == "45"  # the form keeps what was typed
    assert _settings(session) == 0


def test_an_analyst_reads_the_rules_but_cannot_change_them(client, session):
    factories.user(session, "analyst")
    factories.login(client, "analyst@shop.example")
    html = client.get(PAGE).get_data(as_text=True)
    assert "Admins and marketers change the rules." in html
    assert ">Save</button>" not in html
    token = factories.csrf_token(client, PAGE)
    assert client.post(PAGE, data={**FORM, "csrf_token": token}).status_code == 403
    assert _settings(session) == 0


def test_the_page_needs_a_login(client):
    assert client.get(PAGE).status_code == 302
