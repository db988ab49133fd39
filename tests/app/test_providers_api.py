"""Provider accounts, the suppression list, test sends and the providers' callbacks
through HTTP: secrets go in and never come out; bad input is a 4xx naming the field;
a Twilio callback is verified by its signature, a reply "STOP" withdraws consent."""

from __future__ import annotations

from sqlalchemy import select
from twilio.request_validator import RequestValidator

from journeys.channel_models import InboundMessage, ProviderAccount, Receipt
from journeys.models import Message, MessageStatus, MessageTemplate
from members.member import ConsentRecord, Member
from tests.factories import api_key, bearer

TOKEN = "twilio-auth-token-0123456789"
TWILIO = {
    "name": "twilio-intl",
    "kind": "twilio",
    "scope": "other",
    "settings": {
        "account_sid": "AC" + "1" * 32,
        "auth_token": TOKEN,
        "from_number": "+15017122661",
    },
}


def _admin(session):
    return bearer(api_key(session, "admin,read,write", name="ops")[1])


def test_an_account_keeps_its_secrets_and_never_shows_them(client, session):
    headers = _admin(session)
    created = client.post("/api/v1/providers", json=TWILIO, headers=headers)
    assert created.status_code == 201, created.json
    assert TOKEN not in created.get_data(as_text=True)
    assert created.json["secrets"] == ["auth_token"]
    assert created.json["cross_border"] is True
    listed = client.get("/api/v1/providers", headers=headers)
    assert TOKEN not in listed.get_data(as_text=True)
    stored = session.scalar(select(ProviderAccount).where(ProviderAccount.name == "twilio-intl"))
    assert TOKEN not in stored.secrets_encrypted and "auth_token" not in stored.settings
    # A blank secret on update keeps the stored one.
    patched = client.patch(
        "/api/v1/providers/twilio-intl",
        json={"scope": "all", "settings": {"auth_token": ""}},
        headers=headers,
    )
    assert patched.status_code == 200 and patched.json["scope"] == "all"
    kinds = client.get("/api/v1/providers/kinds", headers=headers).json
    assert {k["kind"] for k in kinds} == {"alibaba", "twilio", "jpush", "fcm", "webhook"}


def test_bad_accounts_are_refused_naming_the_field(client, session):
    headers = _admin(session)
    bad_kind = client.post("/api/v1/providers", json={**TWILIO, "kind": "pigeon"}, headers=headers)
    assert bad_kind.status_code == 422 and "kind" in bad_kind.json["errors"][0]["field"]
    missing = client.post(
        "/api/v1/providers", json={**TWILIO, "settings": {"account_sid": "AC1"}}, headers=headers
    )
    assert missing.status_code == 422
    fields = {e["field"] for e in missing.json["errors"]}
    assert "settings.auth_token" in fields
    unknown = client.post(
        "/api/v1/providers",
        json={**TWILIO, "settings": {**TWILIO["settings"], "colour": "red"}},
        headers=headers,
    )
    assert unknown.status_code == 422
    assert session.scalar(select(ProviderAccount.id)) is None


def test_only_admins_manage_accounts(client, session):
    writer = bearer(api_key(session, "read,write", name="crm")[1])
    assert client.post("/api/v1/providers", json=TWILIO, headers=writer).status_code == 403


def test_the_suppression_list(client, session):
    headers = _admin(session)
    added = client.post(
        "/api/v1/suppressions",
        json={"channel": "sms", "address": "138 0013 8000", "reason": "complaint"},
        headers=headers,
    )
    assert added.status_code == 201 and added.json["address"] == "+8613800138000"
    again = client.post(
        "/api/v1/suppressions",
        json={"channel": "sms", "address": "+8613800138000", "reason": "again"},
        headers=headers,
    )
    assert again.status_code == 409
    bad = client.post(
        "/api/v1/suppressions",
        json={"channel": "sms", "address": "not a phone", "reason": "x"},
        headers=headers,
    )
    assert bad.status_code == 422 and bad.json["errors"][0]["field"] == "address"
    assert len(client.get("/api/v1/suppressions", headers=headers).json) == 1
    gone = client.delete(f"/api/v1/suppressions/{added.json['id']}", headers=headers)
    assert gone.status_code == 204


def test_a_test_send_through_the_console(client, session):
    session.add(
        MessageTemplate(key="hello", name="Hello", channel="sms", body="你好 {{ member.name }}")
    )
    session.commit()
    headers = bearer(api_key(session, "read,write", name="crm")[1])
    sent = client.post(
        "/api/v1/templates/hello/test-send", json={"phone": "13800138000"}, headers=headers
    )
    assert sent.status_code == 200, sent.json
    assert (sent.json["provider"], sent.json["result"]) == ("console", "delivered")
    assert sent.json["text"].startswith("【会员中心】你好")
    bad = client.post("/api/v1/templates/hello/test-send", json={"phone": "12"}, headers=headers)
    assert bad.status_code == 422 and bad.json["errors"][0]["field"] == "phone"
    assert session.scalar(select(Message.id)) is None  # nothing in the outbox


def _twilio_account(client, session):
    created = client.post("/api/v1/providers", json=TWILIO, headers=_admin(session))
    return created.json["receipt_path"]


def _signed(url, form, token=TOKEN):
    return {"X-Twilio-Signature": RequestValidator(token).compute_signature(url, form)}


def test_a_signed_twilio_receipt_settles_the_message(client, session):
    path = _twilio_account(client, session)
    member = Member(external_id="tw-1", phone="+447700900123", consent_sms=True)
    session.add(member)
    session.flush()
    session.add(
        Message(
            member_id=member.id,
            channel="sms",
            provider="twilio-intl",
            dedup_key="tw:1",
            body="hi",
            status=MessageStatus.SENT,
            provider_message_id="SM123",
            send_after=member.created_at,
        )
    )
    session.commit()
    url = f"http://localhost{path}/receipts"
    form = {"MessageSid": "SM123", "MessageStatus": "delivered", "To": "+447700900123"}
    answer = client.post(url, data=form, headers=_signed(url, form))
    assert answer.status_code == 200
    message = session.scalar(select(Message).where(Message.dedup_key == "tw:1"))
    session.refresh(message)
    assert message.status == MessageStatus.DELIVERED
    # Tampered after signing: refused, and nothing is stored.
    forged = {**form, "MessageStatus": "failed"}
    refused = client.post(url, data=forged, headers=_signed(url, form))
    assert refused.status_code == 403
    garbage = client.post(url, data=form, headers={"X-Twilio-Signature": "%%%not base64"})
    assert garbage.status_code == 403
    assert session.scalar(select(Receipt).where(Receipt.event_key == "SM123:failed")) is None


def test_an_unknown_callback_address_is_a_404(client):
    assert client.post("/hooks/providers/nope/receipts", data={}).status_code == 404


def test_a_stop_reply_withdraws_sms_consent(client, session):
    path = _twilio_account(client, session)
    session.add(Member(external_id="tw-2", phone="+447700900999", consent_sms=True))
    session.commit()
    url = f"http://localhost{path}/replies"
    form = {"MessageSid": "SMin1", "From": "+447700900999", "To": "+15017122661", "Body": "STOP"}
    answer = client.post(url, data=form, headers=_signed(url, form))
    assert answer.status_code == 200 and "<Response" in answer.get_data(as_text=True)
    member = session.scalar(select(Member).where(Member.external_id == "tw-2"))
    session.refresh(member)
    assert member.consent_sms is False
    log = session.scalar(select(ConsentRecord).where(ConsentRecord.member_id == member.id))
    assert (log.source, log.granted) == ("sms_reply", False)
    assert session.scalar(select(InboundMessage.action)) == "opt_out"


def test_the_member_shows_which_message_was_held_back_and_why(client, session):
    member = Member(external_id="held-1", phone="+8613700137000", consent_sms=True)
    session.add(member)
    session.flush()
    session.add(
        Message(
            member_id=member.id,
            channel="sms",
            provider="outbox",
            dedup_key="held:1",
            body="促销",
            status=MessageStatus.DEFERRED,
            reason="frequency_cap:daily",
            send_after=member.created_at,
        )
    )
    session.commit()
    headers = bearer(api_key(session, "read", name="reader")[1])
    shown = client.get("/api/v1/members/held-1", headers=headers).json
    [message] = shown["last_messages"]
    assert (message["status"], message["reason"]) == ("deferred", "frequency_cap:daily")


def test_only_admin_keys_see_the_callback_address(client, session):
    client.post("/api/v1/providers", json=TWILIO, headers=_admin(session))
    reader = bearer(api_key(session, "read", name="reader")[1])
    shown = client.get("/api/v1/providers/twilio-intl", headers=reader).json
    assert shown["receipt_path"] is None
    assert client.get("/api/v1/providers", headers=reader).json[0]["receipt_path"] is None


def test_no_test_send_to_a_suppressed_number(client, session):
    session.add(MessageTemplate(key="hey", name="Hey", channel="sms", body="hey"))
    session.commit()
    headers = _admin(session)
    client.post(
        "/api/v1/suppressions",
        json={"channel": "sms", "address": "+8613800138000", "reason": "complaint"},
        headers=headers,
    )
    refused = client.post(
        "/api/v1/templates/hey/test-send", json={"phone": "+8613800138000"}, headers=headers
    )
    assert refused.status_code == 422 and "suppression list" in refused.json["errors"][0]["message"]


def test_secrets_lost_to_a_new_secret_key_must_be_entered_again(client, session):
    from journeys.vault import Vault

    client.post("/api/v1/providers", json=TWILIO, headers=_admin(session))
    account = session.scalar(select(ProviderAccount))
    account.secrets_encrypted = Vault("an older secret key, long gone").seal({"auth_token": "x"})
    session.commit()
    kept = client.patch(
        "/api/v1/providers/twilio-intl", json={"scope": "all"}, headers=_admin(session)
    )
    assert kept.status_code == 422
    assert kept.json["errors"][0]["field"] == "settings.auth_token"
    again = client.patch(
        "/api/v1/providers/twilio-intl",
        json={"settings": {"auth_token": TOKEN}},
        headers=_admin(session),
    )
    assert again.status_code == 200
