"""Journeys through the API as an engineer keeps them in code: create, read, publish,
edit (never a published version), approve, pause, archive, migrate and enroll; every
refusal a 4xx naming the field."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import func, select

from journeys.models import Enrollment, EnrollmentState, MessageTemplate
from members.audit import AuditEntry
from members.member import Member
from tests import factories

URL = "/api/v1/journeys"
DEFINITION = {
    "trigger": {"type": "api"},
    "entry": {"reentry": "never", "marketing": False},
    "start": "hello",
    "steps": {
        "hello": {"type": "send", "channel": "sms", "template": "hello", "next": "rest"},
        "rest": {"type": "wait", "days": 2, "next": "bye"},
        "bye": {"type": "exit"},
    },
}


@pytest.fixture
def writer(session):
    return factories.bearer(factories.api_key(session, "read,write", name="crm")[1])


@pytest.fixture
def admin(session):
    return factories.bearer(factories.api_key(session, "admin", name="ops")[1])


@pytest.fixture(autouse=True)
def template(session):
    session.add(
        MessageTemplate(key="hello", name="Hello", channel="sms", body="您好 {{ member.name }}")
    )
    session.commit()


def _fields(response, status=422):
    assert response.status_code == status, response.get_json()
    found: dict[str, list] = {}
    for error in response.get_json()["errors"]:
        found.setdefault(error["field"], []).append(error["message"])
    return found


def _create(client, headers, key="welcome", definition=DEFINITION, **extra):
    body = {"key": key, "name": "Welcome", "definition": definition, **extra}
    return client.post(URL, json=body, headers=headers)


def test_create_read_and_publish(client, writer, session):
    created = _create(client, writer)
    assert created.status_code == 201, created.get_json()
    body = created.get_json()
    assert (body["status"], body["live_version"]) == ("draft", None)
    assert body["latest"]["status"] == "draft"
    assert body["latest"]["definition"]["entry"]["holdout_percent"] == "0"

    published = client.post(f"{URL}/welcome/publish", headers=writer)
    assert published.status_code == 200, published.get_json()
    assert (published.get_json()["status"], published.get_json()["live_version"]) == ("active", 1)
    listed = client.get(URL, headers=writer).get_json()
    assert [j["key"] for j in listed] == ["welcome"]
    actions = session.scalars(
        select(AuditEntry.action).where(AuditEntry.target_type == "journey")
    ).all()
    assert actions == ["journey.created", "journey.published"]


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        (
            lambda d: d["steps"]["hello"].update(template="nope"),
            "definition.steps.hello.template",
            "no message template",
        ),
        (
            lambda d: d["steps"]["hello"].update(next="gone"),
            "definition.steps.hello.next",
            "no step",
        ),
        (
            lambda d: d["steps"].update(lost={"type": "exit"}),
            "definition.steps.lost",
            "cannot be reached",
        ),
        (
            lambda d: d["steps"].update(
                hello={**d["steps"]["hello"], "next": "check"},
                check={
                    "type": "branch",
                    "condition": "points_balance > 5",
                    "yes": "rest",
                    "no": "hello",
                },
            ),
            "definition.steps.check",
            "without waiting",
        ),
        (
            lambda d: d.update(trigger={"type": "schedule", "cron": "61 * * * *"}),
            "definition.trigger.cron",
            "cron",
        ),
        (
            lambda d: d.update(
                trigger={"type": "event", "event": "order", "filter": "amout >= 200"}
            ),
            "definition.trigger.filter",
            "unknown field 'amout'",
        ),
        (
            lambda d: d.update(entry={"holdout_percent": 60}),
            "definition.entry.holdout_percent",
            "0 to 50",
        ),
    ],
    ids=["template", "dangling", "unreachable", "loop", "cron", "filter", "holdout"],
)
def test_a_bad_definition_is_refused_naming_the_step_and_field(
    client, writer, session, change, field, words
):
    import copy

    definition = copy.deepcopy(DEFINITION)
    change(definition)
    answer = _create(client, writer, definition=definition)
    errors = _fields(answer)
    assert field in errors, errors
    assert any(words in message for message in errors[field]), errors[field]
    assert client.get(f"{URL}/welcome", headers=writer).status_code == 404


def test_a_published_version_cannot_be_edited_and_edits_make_a_new_draft(client, writer):
    _create(client, writer)
    client.post(f"{URL}/welcome/publish", headers=writer)
    changed = {
        **DEFINITION,
        "steps": {**DEFINITION["steps"], "rest": {"type": "wait", "days": 5, "next": "bye"}},
    }
    refused = client.put(f"{URL}/welcome/versions/1", json={"definition": changed}, headers=writer)
    assert refused.status_code == 409
    assert "published" in refused.get_json()["detail"]
    draft = client.put(
        f"{URL}/welcome/draft", json={"definition": changed, "version": 1}, headers=writer
    )
    assert draft.status_code == 200, draft.get_json()
    assert (draft.get_json()["version"], draft.get_json()["status"]) == (2, "draft")
    first = client.get(f"{URL}/welcome/versions/1", headers=writer).get_json()
    assert first["definition"]["steps"]["rest"]["days"] == 2
    client.post(f"{URL}/welcome/publish", headers=writer)
    first = client.get(f"{URL}/welcome/versions/1", headers=writer).get_json()
    assert first["status"] == "superseded"
    stale = client.put(
        f"{URL}/welcome/draft", json={"definition": changed, "version": 1}, headers=writer
    )
    assert stale.status_code == 409


def test_approval_a_writer_submits_and_an_admin_approves(client, writer, admin):
    _create(client, writer, needs_approval=True)
    refused = client.post(f"{URL}/welcome/publish", headers=writer)
    assert refused.status_code == 403
    assert "approval" in refused.get_json()["detail"]
    submitted = client.post(f"{URL}/welcome/submit", headers=writer)
    assert submitted.get_json()["latest"]["status"] == "pending_approval"
    approved = client.post(f"{URL}/welcome/publish", headers=admin)
    assert approved.status_code == 200
    assert approved.get_json()["live_version"] == 1


def test_enroll_through_the_api_and_the_entry_rules_answer(client, writer, session):
    member = Member(external_id="u-1", name="李雷")
    session.add(member)
    session.commit()
    _create(client, writer)
    not_live = client.post(f"{URL}/welcome/enroll", json={"member": "u-1"}, headers=writer)
    assert not_live.status_code == 409
    client.post(f"{URL}/welcome/publish", headers=writer)

    first = client.post(
        f"{URL}/welcome/enroll",
        json={"member": "u-1", "context": {"store": "徐汇"}},
        headers=writer,
    )
    assert first.status_code == 202, first.get_json()
    assert first.get_json()["enrolled"] is True
    again = client.post(f"{URL}/welcome/enroll", json={"member": "u-1"}, headers=writer)
    assert again.get_json() == {
        "enrolled": False,
        "held_out": False,
        "enrollment_id": None,
        "version": None,
        "reason": "reentry",
    }
    unknown = client.post(f"{URL}/welcome/enroll", json={"member": "nobody"}, headers=writer)
    assert unknown.status_code == 404
    bad = client.post(
        f"{URL}/welcome/enroll", json={"member": "u-1", "context": []}, headers=writer
    )
    assert "context" in _fields(bad)
    enrollment = session.scalar(select(Enrollment))
    assert enrollment.context == {"store": "徐汇"}
    assert enrollment.state == EnrollmentState.ACTIVE


def test_pause_resume_archive_and_the_transitions_that_make_no_sense(client, writer, session):
    _create(client, writer)
    assert client.post(f"{URL}/welcome/pause", headers=writer).status_code == 409  # a draft
    client.post(f"{URL}/welcome/publish", headers=writer)
    assert client.post(f"{URL}/welcome/pause", headers=writer).get_json()["status"] == "paused"
    assert client.post(f"{URL}/welcome/pause", headers=writer).status_code == 409
    assert client.post(f"{URL}/welcome/resume", headers=writer).get_json()["status"] == "active"
    assert client.post(f"{URL}/welcome/archive", headers=writer).get_json()["status"] == "archived"
    edit = client.put(f"{URL}/welcome/draft", json={"definition": DEFINITION}, headers=writer)
    assert edit.status_code == 409
    assert client.get(URL, headers=writer).get_json() == []
    archived = client.get(URL, query_string={"status": "archived"}, headers=writer).get_json()
    assert [j["key"] for j in archived] == ["welcome"]


def test_migrating_waiting_members_with_a_preview(client, writer, session):
    session.add(Member(external_id="u-2"))
    session.commit()
    _create(client, writer)
    client.post(f"{URL}/welcome/publish", headers=writer)
    client.post(f"{URL}/welcome/enroll", json={"member": "u-2"}, headers=writer)
    enrollment = session.scalar(select(Enrollment))
    enrollment.current_step = "rest"
    enrollment.state = EnrollmentState.WAITING
    session.commit()
    changed = {
        **DEFINITION,
        "steps": {**DEFINITION["steps"], "rest": {"type": "wait", "days": 1, "next": "bye"}},
    }
    client.put(f"{URL}/welcome/draft", json={"definition": changed}, headers=writer)
    client.post(f"{URL}/welcome/publish", headers=writer)
    body = {"from_version": 1, "mapping": {"rest": "rest"}}
    preview = client.post(f"{URL}/welcome/migration/preview", json=body, headers=writer)
    assert preview.get_json() == {
        "to_version": 2,
        "moves": [{"from_version": 1, "from_step": "rest", "to_step": "rest", "members": 1}],
    }
    wrong = client.post(
        f"{URL}/welcome/migration",
        json={"from_version": 1, "mapping": {"rest": "nap"}},
        headers=writer,
    )
    assert "mapping.rest" in _fields(wrong)
    moved = client.post(f"{URL}/welcome/migration", json=body, headers=writer)
    assert moved.status_code == 200
    session.expire_all()
    assert (
        session.scalar(
            select(func.count()).select_from(Enrollment).where(Enrollment.current_step == "rest")
        )
        == 1
    )
    enrollment = session.scalar(select(Enrollment))
    assert enrollment.journey_version_id != 0
    assert (
        client.get(f"{URL}/welcome/versions/2", headers=writer).get_json()["status"] == "published"
    )


def test_check_estimates_the_audience(client, writer, session):
    session.add_all(
        [Member(external_id=f"r-{i}", region="上海" if i % 2 else "北京") for i in range(6)]
    )
    session.commit()
    definition = {**DEFINITION, "entry": {"audience": "region = '上海'"}}
    _create(client, writer, definition=definition)
    answer = client.get(f"{URL}/welcome/check", headers=writer).get_json()
    assert answer == {"errors": {}, "audience_estimate": 3}


def test_the_journey_tick_command(app, session, writer, client):
    session.add(Member(external_id="u-3", name="韩梅梅"))
    session.commit()
    _create(client, writer)
    client.post(f"{URL}/welcome/publish", headers=writer)
    client.post(f"{URL}/welcome/enroll", json={"member": "u-3"}, headers=writer)
    runner = app.test_cli_runner()
    result = runner.invoke(args=["journeys", "tick"])
    assert result.exit_code == 0, result.output
    assert "1 enrollments advanced through 1 steps, 1 messages written" in result.output
    future = (dt.datetime.now(dt.UTC) + dt.timedelta(days=1)).isoformat()
    refused = runner.invoke(args=["journeys", "tick", "--as-of", future])
    assert refused.exit_code != 0
    assert "in the future" in refused.output


def test_the_report_through_the_api(client, writer, session):
    session.add(Member(external_id="u-r"))
    session.commit()
    _create(client, writer)
    client.post(f"{URL}/welcome/publish", headers=writer)
    client.post(f"{URL}/welcome/enroll", json={"member": "u-r"}, headers=writer)
    answer = client.get(f"{URL}/welcome/report", headers=writer)
    assert answer.status_code == 200, answer.get_json()
    body = answer.get_json()
    assert body["totals"]["entered"] == 1
    assert [s["step"] for s in body["funnel"]] == ["hello", "rest", "bye"]
    assert body["funnel"][0]["entered"] == 1 and body["conversion"] is None


def test_the_global_control_group_setting(client, writer, admin, session):
    url = "/api/v1/settings/global-control"
    first = client.get(url, headers=writer).get_json()
    assert (first["percent"], first["version"], first["members"]) == ("5", 0, 0)
    assert client.put(url, json={"percent": 8}, headers=writer).status_code == 403
    too_big = client.put(url, json={"percent": 30}, headers=admin)
    assert "percent" in _fields(too_big)
    changed = client.put(url, json={"percent": 8, "version": 0}, headers=admin)
    assert changed.status_code == 200, changed.get_json()
    assert (changed.get_json()["percent"], changed.get_json()["salt"]) == ("8", first["salt"])
    stale = client.put(url, json={"percent": 3, "version": 0}, headers=admin)
    assert stale.status_code == 409


def test_the_engines_own_context_keys_are_refused(client, writer, session):
    session.add(Member(external_id="u-c"))
    session.commit()
    _create(client, writer)
    client.post(f"{URL}/welcome/publish", headers=writer)
    answer = client.post(
        f"{URL}/welcome/enroll", json={"member": "u-c", "context": {"outcomes": 5}}, headers=writer
    )
    assert "context.outcomes" in _fields(answer)
    assert session.scalar(select(func.count()).select_from(Enrollment)) == 0
