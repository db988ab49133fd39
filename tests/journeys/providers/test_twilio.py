"""Twilio through the real SDK against a local Messages API, and Twilio-signed
callbacks."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import pytest

from journeys.providers.base import BadSignature, Outgoing, Result
from journeys.providers.twilio import TwilioSms
from tests.journeys.providers import fakes

SID, TOKEN = "AC" + "0123456789abcdef" * 2, "fake-auth-token-0123456789abcd"
STATUS_URL = "https://tenure.example/hooks/twilio/status"


@pytest.fixture
def fake() -> Iterator[fakes.Fake]:
    with fakes.serving(fakes.twilio(SID, TOKEN)) as fake:
        yield fake


def provider(fake: fakes.Fake, token: str = TOKEN, **settings: str) -> TwilioSms:
    values = {"account_sid": SID, "from_number": "+15017122661", "base_url": fake.url}
    sms = TwilioSms(values | settings, {"auth_token": token})
    sms.timeout = 0.5
    return sms


def message(**changes) -> Outgoing:
    values = dict(
        message_id=1,
        dedup_key="enr-1:step-1",
        channel="sms",
        to="+447700900123",
        body="Your points expire soon. Reply STOP to opt out.",
    )
    return Outgoing(**(values | changes))


def test_sends_through_the_sdk_to_the_configured_base_url(fake):
    outcome = provider(fake, status_callback_url=STATUS_URL).send_one(message())

    assert outcome.result is Result.SENT
    assert outcome.provider_message_id == f"SM{1:032x}"
    seen = fake.requests[-1]
    assert seen.path == f"/2010-04-01/Accounts/{SID}/Messages.json"
    assert seen.form == {
        "To": "+447700900123",
        "From": "+15017122661",
        "Body": "Your points expire soon. Reply STOP to opt out.",
        "StatusCallback": STATUS_URL,
    }


def test_a_messaging_service_replaces_the_from_number(fake):
    provider(fake, messaging_service_sid="MG" + "0" * 32).send_one(message())

    form = fake.requests[-1].form
    assert form["MessagingServiceSid"] == "MG" + "0" * 32
    assert "From" not in form


def test_without_a_sender_nothing_is_sent(fake):
    sms = TwilioSms({"account_sid": SID, "base_url": fake.url}, {"auth_token": TOKEN})

    assert sms.send_one(message()).result is Result.FAILED
    assert fake.requests == []


def test_a_wrong_token_fails_with_twilios_code(fake):
    outcome = provider(fake, token="wrong").send_one(message())

    assert (outcome.result, outcome.error) == (Result.FAILED, "20003: Authenticate")


def test_a_client_error_is_permanent(fake):
    error = {
        "code": 21211,
        "message": "The 'To' number is not a valid phone number.",
        "status": 400,
    }
    fake.answer(400, error)

    outcome = provider(fake).send_one(message())

    assert outcome.result is Result.FAILED
    assert outcome.error == "21211: The 'To' number is not a valid phone number."


def test_too_many_requests_is_retried_after_retry_after(fake):
    fake.answer(
        429, {"code": 20429, "message": "Too Many Requests", "status": 429}, {"Retry-After": "7"}
    )

    outcome = provider(fake).send_one(message())

    assert (outcome.result, outcome.retry_after) == (Result.RETRY, 7.0)
    assert outcome.error == "20429: Too Many Requests"


@pytest.mark.parametrize(
    "answer",
    [
        (500, {"code": 20500, "message": "Internal Server Error", "status": 500}),
        (503, "<html>Service Unavailable</html>"),
    ],
)
def test_server_errors_are_retried(fake, answer):
    fake.answer(*answer)

    assert provider(fake).send_one(message()).result is Result.RETRY
    assert len(fake.requests) == 1  # the SDK does not retry on its own


def test_an_accepted_message_with_an_unreadable_body_is_not_sent_twice(fake):
    fake.answer(201, "garbage")

    outcome = provider(fake).send_one(message())

    assert (outcome.result, outcome.provider_message_id) == (Result.SENT, None)


def test_a_hung_call_times_out_as_a_retry(fake):
    fake.hang()

    outcome = provider(fake).send_one(message())

    assert (outcome.result, outcome.error) == (Result.RETRY, "no answer: ReadTimeout")


def test_a_refused_connection_is_a_retry():
    with fakes.serving(fakes.twilio(SID, TOKEN)) as gone:
        sms = provider(gone)
    assert sms.send_one(message()).result is Result.RETRY


STATUS = {
    "AccountSid": SID,
    "ApiVersion": "2010-04-01",
    "From": "+15017122661",
    "To": "+447700900123",
    "MessageSid": "SM" + "a" * 32,
    "SmsSid": "SM" + "a" * 32,
    "SmsStatus": "undelivered",
    "MessageStatus": "undelivered",
    "ErrorCode": "30003",
}


def test_a_signed_status_callback_is_a_report(fake):
    sms = provider(fake)

    (report,) = sms.receipts(fakes.twilio_callback(STATUS_URL, STATUS, TOKEN))

    assert report.event_key == f"SM{'a' * 32}:undelivered"
    assert (report.status, report.error_code) == ("failed", "30003")
    assert report.provider_message_id == "SM" + "a" * 32
    assert "To" not in report.detail and "From" not in report.detail
    body, status = sms.receipt_answer()
    assert status == 200 and "<Response></Response>" in body


@pytest.mark.parametrize(
    ("twilio_status", "status"),
    [("delivered", "delivered"), ("failed", "failed"), ("sent", "sent"), ("queued", "sent")],
)
def test_statuses_map_to_ours(fake, twilio_status, status):
    params = STATUS | {"MessageStatus": twilio_status, "SmsStatus": twilio_status}

    (report,) = provider(fake).receipts(fakes.twilio_callback(STATUS_URL, params, TOKEN))

    assert report.status == status
    assert report.error_code == ("30003" if status == "failed" else None)


def test_fields_twilio_adds_later_are_signed_too(fake):
    params = STATUS | {"ChannelPrefix": "sms", "RawDlrDoneDate": "2603011200"}

    (report,) = provider(fake).receipts(fakes.twilio_callback(STATUS_URL, params, TOKEN))

    assert report.status == "failed"


def test_a_tampered_callback_is_refused(fake):
    callback = fakes.twilio_callback(STATUS_URL, STATUS, TOKEN)
    callback.form["MessageStatus"] = "delivered"

    with pytest.raises(BadSignature):
        provider(fake).receipts(callback)


def test_a_callback_signed_for_another_url_or_token_is_refused(fake):
    sms = provider(fake)
    signed = fakes.twilio_callback(STATUS_URL, STATUS, TOKEN)

    with pytest.raises(BadSignature):
        sms.receipts(dataclasses.replace(signed, url=STATUS_URL + "?account=2"))
    with pytest.raises(BadSignature):
        sms.receipts(fakes.twilio_callback(STATUS_URL, STATUS, "another-token"))


def test_an_unsigned_callback_is_refused(fake):
    signed = fakes.twilio_callback(STATUS_URL, STATUS, TOKEN)

    with pytest.raises(BadSignature):
        provider(fake).receipts(dataclasses.replace(signed, headers={}))


def test_an_inbound_sms_is_a_reply(fake):
    url = "https://tenure.example/hooks/twilio/inbound"
    inbound = {
        "MessageSid": "SM" + "b" * 32,
        "SmsMessageSid": "SM" + "b" * 32,
        "AccountSid": SID,
        "From": "+447700900123",
        "To": "+15017122661",
        "Body": "STOP",
        "NumMedia": "0",
        "SmsStatus": "received",
    }

    (reply,) = provider(fake).replies(fakes.twilio_callback(url, inbound, TOKEN))

    assert (reply.provider_message_id, reply.phone, reply.body) == (
        "SM" + "b" * 32,
        "+447700900123",
        "STOP",
    )
    with pytest.raises(BadSignature):
        provider(fake).replies(fakes.twilio_callback(url, inbound | {"Body": "YES"}, "other"))
