"""The templates and messages pages as marketers use them: a template refused with
the line of its error, previewed with the SMS counter, saved; the outbox searched,
with why a message was held back; analysts read only."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select

from journeys.models import Message, MessageStatus, MessageTemplate
from members.member import Member
from tests import factories


@pytest.fixture
def marketer(client, session):
    factories.user(session, "marketer")
    factories.login(client, "marketer@shop.example")
    return factories.csrf_token(client, "/templates")


def _post(client, url, token, **form):
    return client.post(url, data={"csrf_token": token, **form})


def test_write_preview_and_save_a_template(client, marketer, session):
    form = {"key": "welcome", "name": "Welcome", "channel": "sms"}
    bad = _post(
        client, "/templates/new", marketer, **form, body="您好\n{{ member.nmae }}", action="save"
    )
    assert bad.status_code == 400
    assert "line 2: member has no &#39;nmae&#39;" in bad.get_data(as_text=True)
    assert session.scalar(select(MessageTemplate)) is None
    body = "{{ member.name }}，新人券{{ coupon.value|money }}已到账"
    preview = _post(client, "/templates/new", marketer, **form, body=body, action="preview")
    html = preview.get_data(as_text=True)
    assert "【会员中心】王芳，新人券50元已到账 拒收请回复R" in html
    assert "UCS-2: 1 SMS" in html
    saved = _post(client, "/templates/new", marketer, **form, body=body, action="save")
    assert saved.status_code == 302
    assert session.scalar(select(MessageTemplate.body)) == body
    listing = client.get("/templates").get_data(as_text=True)
    assert "welcome" in listing and "UCS-2" in listing


def test_the_outbox_page_says_why_a_message_waits(client, marketer, session):
    member = Member(external_id="m-1", phone="+8613800138000")
    session.add(member)
    session.flush()
    at = dt.datetime(2026, 11, 23, 14, 30, tzinfo=dt.UTC)
    session.add(
        Message(
            member_id=member.id,
            channel="sms",
            provider="outbox",
            dedup_key="p:1",
            body="您好",
            status=MessageStatus.DEFERRED,
            reason="quiet_hours",
            send_after=at,
            created_at=at,
        )
    )
    session.commit()
    page = client.get("/messages", query_string={"member": "m-1", "status": "deferred"})
    html = page.get_data(as_text=True)
    assert "quiet hours in the member&#39;s time zone" in html
    assert "+8613800138000" not in html  # masked


def test_analysts_cannot_save_templates(app, session):
    client = app.test_client()
    factories.user(session, "analyst")
    factories.login(client, "analyst@shop.example")
    token = factories.csrf_token(client, "/templates")
    answer = _post(
        client, "/templates/new", token, key="x", name="x", channel="sms", body="x", action="save"
    )
    assert answer.status_code == 403


def test_the_live_preview_answers_as_the_marketer_types(client, marketer):
    body = "{{ member.name }}，积分{{ member.points_balance }}"
    shown = _post(client, "/templates/preview", marketer, channel="sms", body=body).json
    assert shown["text"].startswith("【会员中心】王芳，积分") and "SMS" in shown["counter"]
    broken = _post(client, "/templates/preview", marketer, channel="sms", body="{{ member.nmae }}")
    assert "nmae" in broken.json["error"]
    approved = _post(
        client,
        "/templates/preview",
        marketer,
        channel="sms",
        body=body,
        sms_approved_text="${name}您好",
        sms_params="name = {{ member.name }}",
    ).json
    assert approved["text"].startswith("【会员中心】王芳您好")
    page = client.get("/templates/new").get_data(as_text=True)
    assert "template_preview.js" in page and 'aria-live="polite"' in page


def test_preview_for_a_chosen_member(client, marketer, session):
    session.add(Member(external_id="m-li", name="李娜", phone="+447700900123", points_balance=88))
    session.commit()
    body = "{{ member.name }}，积分{{ member.points_balance }}"
    shown = _post(
        client, "/templates/preview", marketer, channel="sms", body=body, preview_member="m-li"
    ).json
    # Her own name and points, and the opt-out text of her (UK) number.
    assert shown["text"] == "【会员中心】李娜，积分88 Reply STOP to opt out"
    unknown = _post(
        client, "/templates/preview", marketer, channel="sms", body=body, preview_member="nobody"
    ).json
    assert "no member nobody" in unknown["error"]
    form = {"key": "pts", "name": "Points", "channel": "sms", "body": body, "action": "preview"}
    page = _post(client, "/templates/new", marketer, **form, preview_member="m-li")
    assert "李娜，积分88" in page.get_data(as_text=True)
    missing = _post(client, "/templates/new", marketer, **form, preview_member="nobody")
    assert missing.status_code == 400
