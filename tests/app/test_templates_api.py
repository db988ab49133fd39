"""Message templates through the API: created only when they lint, with the line of
the problem; read with their SMS length; previewed for a sample or a real member."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from journeys.models import MessageTemplate
from members.audit import AuditEntry
from members.member import Member
from tests import factories

URL = "/api/v1/templates"


@pytest.fixture
def writer(session):
    return factories.bearer(factories.api_key(session, "read,write", name="crm")[1])


def _fields(response):
    assert response.status_code == 422, response.get_json()
    return {e["field"]: e["message"] for e in response.get_json()["errors"]}


def test_create_read_update_and_list(client, writer, session):
    body = {"key": "hello", "name": "Hello", "channel": "sms", "body": "{{ member.name }}，您好"}
    created = client.post(URL, json=body, headers=writer)
    assert created.status_code == 201, created.get_json()
    assert created.get_json()["length"] == {"characters": 18, "encoding": "UCS-2", "segments": 1}
    update = {k: v for k, v in body.items() if k != "key"} | {"body": "您好"}
    changed = client.put(f"{URL}/hello", json=update, headers=writer)
    assert changed.status_code == 200 and changed.get_json()["body"] == "您好"
    assert [t["key"] for t in client.get(URL, headers=writer).get_json()] == ["hello"]
    actions = session.scalars(
        select(AuditEntry.action).where(AuditEntry.target_type == "message_template")
    ).all()
    assert actions == ["template.created", "template.updated"]


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ("{{ member.nmae }}", "body", "line 1: member has no 'nmae'"),
        ("ok\n{{ oops", "body", "line 2"),
        ("{{ config }}", "body", "unknown variable 'config'"),
    ],
    ids=["attribute", "syntax", "config"],
)
def test_a_template_that_does_not_lint_is_refused_with_its_line(
    client, writer, session, body, field, words
):
    answer = client.post(
        URL, json={"key": "bad", "name": "Bad", "channel": "sms", "body": body}, headers=writer
    )
    assert words in _fields(answer)[field]
    assert session.scalar(select(MessageTemplate)) is None


def test_push_needs_a_title(client, writer):
    answer = client.post(
        URL, json={"key": "p", "name": "P", "channel": "push", "body": "x"}, headers=writer
    )
    assert "title" in _fields(answer)


def test_preview_for_a_sample_and_for_a_member(client, writer, session):
    sample = client.post(
        f"{URL}/preview",
        json={"channel": "sms", "body": "{{ member.name }}，{{ coupon.value|money }}券"},
        headers=writer,
    ).get_json()
    assert sample["text"] == "【会员中心】王芳，50元券 拒收请回复R"
    session.add(Member(external_id="uk-1", name="Amy", phone="+447700900123"))
    session.commit()
    real = client.post(
        f"{URL}/preview",
        json={"channel": "sms", "body": "Hi {{ member.name }}", "member": "uk-1"},
        headers=writer,
    ).get_json()
    assert real["text"] == "【会员中心】Hi Amy Reply STOP to opt out"
    assert (real["encoding"], real["segments"]) == ("UCS-2", 1)  # the signature is Chinese
    bad = client.post(f"{URL}/preview", json={"channel": "sms", "body": "{{ x }"}, headers=writer)
    assert "line 1" in _fields(bad)["body"]
    unknown = client.post(
        f"{URL}/preview", json={"channel": "sms", "body": "x", "member": "nobody"}, headers=writer
    )
    assert unknown.status_code == 404


def test_send_policies_through_the_api_and_the_signature_they_set(client, writer):
    url = "/api/v1/settings/send-policies"
    current = client.get(url, headers=writer).get_json()
    assert (current["quiet_start"], current["quiet_end"], current["version"]) == (
        "21:00",
        "08:00",
        0,
    )
    body = {k: v for k, v in current.items() if k not in ("updated_at", "updated_by")}
    bad = client.put(url, json={**body, "signature": "鞋履会员", "daily_cap": -1}, headers=writer)
    assert set(_fields(bad)) == {"signature", "daily_cap"}
    changed = client.put(url, json={**body, "signature": "【鞋履会员】"}, headers=writer)
    assert changed.status_code == 200, changed.get_json()
    shown = client.post(
        f"{URL}/preview", json={"channel": "sms", "body": "明天见"}, headers=writer
    ).get_json()
    assert shown["text"] == "【鞋履会员】明天见 拒收请回复R"
