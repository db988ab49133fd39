"""The sending pages as people use them: the send policies form refusing bad values next
to the field; an admin adding a provider account whose secret never comes back into
a page; the suppression list; a template bound to an approved Alibaba template,
previewed with the approved text, and sent as a test to a phone."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from journeys import policies
from journeys.channel_models import ProviderAccount, Suppression
from journeys.models import MessageTemplate
from tests import factories

SECRET = "twilio-secret-token-abcdef123456"


def _login(client, session, role):
    factories.user(session, role)
    factories.login(client, f"{role}@shop.example")
    return factories.csrf_token(client, "/settings/sending")


def _post(client, url, token, **form):
    return client.post(url, data={"csrf_token": token, **form})


POLICIES = {
    "quiet_start": "21:30",
    "quiet_end": "08:00",
    "daily_cap": "1",
    "weekly_cap": "4",
    "cap_patience_days": "2",
    "signature": "【鞋履会员】",
    "opt_out_cn": "回T退订",
    "opt_out_other": "Reply STOP to opt out",
}


def test_the_send_policies_form(client, session):
    token = _login(client, session, "marketer")
    bad = _post(client, "/settings/sending", token, **{**POLICIES, "quiet_start": "25:00"})
    assert bad.status_code == 400
    assert "a time of day as HH:MM" in bad.get_data(as_text=True)
    assert policies.SETTING.load(session)[1] == 0  # nothing saved
    saved = _post(client, "/settings/sending", token, **POLICIES, paused="on")
    assert saved.status_code == 302
    value, version = policies.SETTING.load(session)
    assert (version, value.quiet_start, value.daily_cap, value.paused) == (1, "21:30", 1, True)
    assert value.signature == "【鞋履会员】"


def test_analysts_read_the_policies_but_cannot_change_them(client, session):
    token = _login(client, session, "analyst")
    assert client.get("/settings/sending").status_code == 200
    assert _post(client, "/settings/sending", token, **POLICIES).status_code == 403


def test_an_admin_adds_an_account_and_its_secret_never_comes_back(client, session):
    token = _login(client, session, "admin")
    form = {
        "name": "twilio",
        "scope": "other",
        "active": "on",
        "setting_account_sid": "AC" + "2" * 32,
        "setting_auth_token": SECRET,
        "setting_from_number": "+15017122661",
    }
    missing = _post(
        client, "/settings/providers/new?kind=twilio", token, **{**form, "setting_account_sid": ""}
    )
    assert missing.status_code == 400
    assert SECRET not in missing.get_data(as_text=True)  # not echoed into the form
    created = _post(client, "/settings/providers/new?kind=twilio", token, **form)
    assert created.status_code == 302
    listed = client.get("/settings/providers").get_data(as_text=True)
    assert "twilio" in listed and SECRET not in listed
    page = client.get("/settings/providers/twilio").get_data(as_text=True)
    assert SECRET not in page and "/hooks/providers/" in page
    # Saving without retyping the secret keeps it.
    kept = _post(client, "/settings/providers/twilio", token, **{**form, "setting_auth_token": ""})
    assert kept.status_code == 302
    account = session.scalar(select(ProviderAccount))
    session.refresh(account)
    assert account.secrets_encrypted and SECRET not in account.secrets_encrypted
    assert _post(client, "/settings/providers/twilio", token, action="delete").status_code == 302
    assert session.scalar(select(ProviderAccount.id)) is None


def test_only_admins_open_provider_accounts(client, session):
    _login(client, session, "marketer")
    assert client.get("/settings/providers/new?kind=twilio").status_code == 403
    assert client.get("/settings/providers").status_code == 200


def test_the_suppression_list_page(client, session):
    token = _login(client, session, "marketer")
    bad = _post(client, "/settings/suppressions", token, channel="sms", address="12", reason="x")
    assert bad.status_code == 400 and "not a" in bad.get_data(as_text=True)
    added = _post(
        client, "/settings/suppressions", token, channel="sms", address="13800138000", reason="投诉"
    )
    assert added.status_code == 302
    row = session.scalar(select(Suppression))
    assert row.address == "+8613800138000"
    page = client.get("/settings/providers").get_data(as_text=True)
    assert "+86138****8000" in page and "+8613800138000" not in page
    gone = _post(client, f"/settings/suppressions/{row.id}/delete", token)
    assert gone.status_code == 302 and session.scalar(select(Suppression.id)) is None


@pytest.fixture
def bound(session):
    template = MessageTemplate(
        key="expiring",
        name="Points expiring",
        channel="sms",
        body="{{ member.name }}，积分即将到期",
        priority=1,
        sms_template_code="SMS_154950909",
        sms_approved_text="${name}您好，您有积分即将到期",
        sms_params={"name": "{{ member.name }}"},
    )
    session.add(template)
    session.commit()
    return template


def test_a_bound_template_previews_the_approved_text_and_sends_a_test(client, session, bound):
    token = _login(client, session, "marketer")
    page = client.get("/templates/expiring").get_data(as_text=True)
    assert "王芳您好，您有积分即将到期" in page  # the approved text, for the sample member
    values = {
        "name": bound.name,
        "channel": "sms",
        "title": "",
        "body": bound.body,
        "deep_link": "",
        "priority": "1",
        "sms_template_code": "SMS_154950909",
        "sms_approved_text": bound.sms_approved_text,
        "sms_params": "name = {{ member.name }}",
    }
    wrong = _post(
        client,
        "/templates/expiring",
        token,
        **{**values, "sms_params": "nmae = {{ member.name }}"},
        action="save",
    )
    assert wrong.status_code == 400 and "no value for ${name}" in wrong.get_data(as_text=True)
    sent = _post(
        client, "/templates/expiring", token, **values, test_phone="13800138000", action="test"
    )
    html = sent.get_data(as_text=True)
    assert sent.status_code == 200 and "console answered delivered" in html
    refused = _post(client, "/templates/expiring", token, **values, test_phone="12", action="test")
    assert refused.status_code == 400
