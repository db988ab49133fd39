"""The journey builder as marketers use it: create from a ready-made campaign, read the
diagram, edit the trigger, entry rules and steps in forms with errors beside the field,
publish, dry-run a member, move waiting members; analysts read only."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import func, select

from journeys import ready_made, versions
from journeys.models import Enrollment, EnrollmentState, Journey, Message
from members.lifecycle import MemberFeatures
from members.member import Member
from tests import factories


@pytest.fixture
def marketer(client, session):
    factories.user(session, "marketer")
    factories.login(client, "marketer@shop.example")
    return factories.csrf_token(client, "/journeys")


def _post(client, url, token, **form):
    return client.post(url, data={"csrf_token": token, **form})


def _create_winback(client, token):
    answer = _post(
        client,
        "/journeys/new",
        token,
        name="沉睡唤醒 11月",
        key="winback-nov",
        start_from="dormant_winback",
    )
    assert answer.status_code == 302, answer.get_data(as_text=True)
    return answer


def test_create_from_a_ready_made_campaign_and_read_its_diagram(client, marketer, session):
    _create_winback(client, marketer)
    page = client.get("/journeys/winback-nov")
    html = page.get_data(as_text=True)
    assert page.status_code == 200
    assert "<svg" in html and "winback_100" in html  # the diagram and the steps
    assert html.count('class="node ') == len(ready_made.WINBACK.definition["steps"])
    assert "Every step is reachable" in html
    listing = client.get("/journeys").get_data(as_text=True)
    assert "沉睡唤醒 11月" in listing


def test_a_bad_key_is_explained_beside_the_field(client, marketer):
    answer = _post(client, "/journeys/new", marketer, name="x", key="Bad Key", start_from="")
    assert answer.status_code == 400
    assert "lower-case letters" in answer.get_data(as_text=True)


def test_an_invalid_cron_is_refused_beside_the_field_and_changes_nothing(client, marketer, session):
    _create_winback(client, marketer)
    answer = _post(
        client,
        "/journeys/winback-nov/trigger",
        marketer,
        type="schedule",
        schedule="cron",
        cron="61 * * * *",
    )
    assert answer.status_code == 400
    html = answer.get_data(as_text=True)
    assert re.search(r'class="error" role="alert">is not a cron expression', html)
    journey = session.scalar(select(Journey).where(Journey.key == "winback-nov"))
    assert versions.latest(journey).definition["trigger"]["type"] == "stage_entered"


def test_entry_rules_with_a_holdout_out_of_range_and_an_unknown_field(client, marketer):
    _create_winback(client, marketer)
    answer = _post(
        client,
        "/journeys/winback-nov/entry",
        marketer,
        audience="spnd_365d > 3",
        reentry="never",
        holdout_percent="60",
        exit="never",
        marketing="on",
    )
    html = answer.get_data(as_text=True)
    assert answer.status_code == 400
    assert "unknown field &#39;spnd_365d&#39;" in html
    assert "must be a number from 0 to 50" in html


def test_add_edit_and_delete_a_step(client, marketer, session):
    _create_winback(client, marketer)
    form = client.get("/journeys/winback-nov/steps/new?type=wait&after=tell_50")
    assert form.status_code == 200
    assert 'value="watch" selected' in form.get_data(as_text=True)  # continues where it went
    saved = _post(
        client,
        "/journeys/winback-nov/steps/new",
        marketer,
        type="wait",
        after="tell_50",
        step_id="breathe",
        hours="2",
        next="watch",
    )
    assert saved.status_code == 302, saved.get_data(as_text=True)
    journey = session.scalar(select(Journey).where(Journey.key == "winback-nov"))
    session.refresh(journey)
    steps = versions.latest(journey).definition["steps"]
    assert steps["tell_50"]["next"] == "breathe" and steps["breathe"]["next"] == "watch"

    refused = _post(
        client,
        "/journeys/winback-nov/steps/tell_50",
        marketer,
        type="send",
        channel="sms",
        template="no_such_template",
        next="breathe",
    )
    assert refused.status_code == 400
    assert "no message template" in refused.get_data(as_text=True)

    deleted = _post(client, "/journeys/winback-nov/steps/breathe/delete", marketer)
    assert deleted.status_code == 302
    session.expire_all()
    steps = versions.latest(session.get(Journey, journey.id)).definition["steps"]
    assert "breathe" not in steps and steps["tell_50"]["next"] == "watch"


def test_publish_then_dry_run_a_member(client, marketer, session):
    _create_winback(client, marketer)
    member = Member(external_id="u-88", name="赵敏")
    session.add(member)
    session.flush()
    session.add(
        MemberFeatures(member_id=member.id, computed_at=member.joined_at, days_since_last_order=120)
    )
    session.commit()
    published = _post(client, "/journeys/winback-nov/publish", marketer)
    assert published.status_code == 302
    trial = _post(client, "/journeys/winback-nov/dry-run", marketer, member="u-88")
    html = trial.get_data(as_text=True)
    assert trial.status_code == 200
    assert "赵敏，我们想您了" in html  # 120 days: the 100-yuan path
    assert session.scalar(select(func.count()).select_from(Message)) == 0
    assert session.scalar(select(func.count()).select_from(Enrollment)) == 0
    unknown = _post(client, "/journeys/winback-nov/dry-run", marketer, member="nobody")
    assert unknown.status_code == 400
    assert "no member with external id nobody" in unknown.get_data(as_text=True)


def test_moving_waiting_members_with_a_preview(client, marketer, session):
    _create_winback(client, marketer)
    member = Member(external_id="u-9")
    session.add(member)
    session.commit()
    _post(client, "/journeys/winback-nov/publish", marketer)
    journey = session.scalar(select(Journey).where(Journey.key == "winback-nov"))
    session.add(
        Enrollment(
            journey_id=journey.id,
            journey_version_id=journey.live_version_id,
            member_id=member.id,
            state=EnrollmentState.WAITING,
            current_step="watch",
            entered_at=journey.created_at,
        )
    )
    session.commit()
    _post(
        client,
        "/journeys/winback-nov/goal",
        marketer,
        has_goal="on",
        event="order",
        within_days="10",
    )
    _post(client, "/journeys/winback-nov/publish", marketer)
    preview = _post(
        client,
        "/journeys/winback-nov/migrate",
        marketer,
        from_version="1",
        **{"map.watch": "watch"},
        action="preview",
    )
    assert "continue at step watch of v2: 1 members" in preview.get_data(as_text=True)
    moved = _post(
        client,
        "/journeys/winback-nov/migrate",
        marketer,
        from_version="1",
        **{"map.watch": "watch"},
        action="move",
    )
    assert moved.status_code == 302
    session.expire_all()
    enrollment = session.scalar(select(Enrollment))
    assert enrollment.journey_version_id == session.get(Journey, journey.id).live_version_id


def test_analysts_read_but_cannot_change(app, client, marketer, session):
    _create_winback(client, marketer)
    client = app.test_client()
    factories.user(session, "analyst")
    factories.login(client, "analyst@shop.example")
    token = factories.csrf_token(client, "/journeys")
    page = client.get("/journeys/winback-nov")
    assert page.status_code == 200
    assert "Save trigger" not in page.get_data(as_text=True)
    assert _post(client, "/journeys/winback-nov/publish", token).status_code == 403
    assert client.get("/journeys/new").status_code == 403


def test_the_report_compares_conversion_with_the_holdout(client, marketer, session):
    _create_winback(client, marketer)
    session.add_all(Member(external_id=f"rp-{i}") for i in range(40))
    session.commit()
    _post(client, "/journeys/winback-nov/publish", marketer)
    journey = session.scalar(select(Journey).where(Journey.key == "winback-nov"))
    members = session.scalars(select(Member.id).where(Member.external_id.like("rp-%"))).all()
    for index, member_id in enumerate(members):
        held = index >= 20
        converted = (index < 10) or (20 <= index < 24)
        session.add(
            Enrollment(
                journey_id=journey.id,
                journey_version_id=journey.live_version_id,
                member_id=member_id,
                state=EnrollmentState.HELD_OUT if held else EnrollmentState.COMPLETED,
                current_step=None if held else "done",
                entered_at=journey.created_at,
                converted_at=journey.created_at if converted else None,
            )
        )
    session.commit()
    page = client.get("/journeys/winback-nov/report")
    html = page.get_data(as_text=True)
    assert page.status_code == 200
    assert "50.00%" in html and "20.00%" in html  # 10 of 20 against 4 of 20
    assert "+30.00 percentage points" in html


def test_an_admin_changes_the_global_control_group(app, client, session):
    factories.user(session, "admin")
    factories.login(client, "admin@shop.example")
    token = factories.csrf_token(client, "/journeys")
    assert "5% of all members" in client.get("/journeys").get_data(as_text=True)
    bad = _post(client, "/journeys/control-group", token, percent="abc")
    assert bad.status_code == 302
    assert "must be a number from 0 to 20" in client.get("/journeys").get_data(as_text=True)
    _post(client, "/journeys/control-group", token, percent="7.5")
    assert "7.5% of all members" in client.get("/journeys").get_data(as_text=True)
