"""Alibaba Cloud SMS through the real SDK against a local dysmsapi that checks the
ACS3 signature."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from journeys.providers.alibaba import AlibabaSms, alibaba_number, e164, out_id
from journeys.providers.base import BadSignature, Callback, Outgoing, Result
from tests.journeys.providers import fakes

AK, SECRET = "LTAI5tFakeKeyId", "fake-access-key-secret"


@pytest.fixture
def fake() -> Iterator[fakes.Fake]:
    with fakes.serving(fakes.alibaba(AK, SECRET)) as fake:
        yield fake


def provider(fake: fakes.Fake, secret: str = SECRET) -> AlibabaSms:
    settings = {
        "access_key_id": AK,
        "sign_name": "会员中心",
        "endpoint": fake.url.removeprefix("http://"),
        "protocol": "HTTP",
    }
    sms = AlibabaSms(settings, {"access_key_secret": secret})
    sms.timeout = 0.5
    return sms


def message(**changes) -> Outgoing:
    values = dict(
        message_id=1,
        dedup_key="enr-7:step-2",
        channel="sms",
        to="+8613800138000",
        body="【会员中心】您的积分即将到期。拒收请回复R",
        template_code="SMS_123456789",
        params={"name": "王小明", "points": "1200"},
    )
    return Outgoing(**(values | changes))


def test_sends_a_signed_sendsms_with_the_template(fake):
    outcome = provider(fake).send_one(message())

    assert outcome.result is Result.SENT
    assert outcome.provider_message_id == "900619746936491^0"
    seen = fake.requests[-1]
    assert seen.headers["x-acs-action"] == "SendSms"
    assert seen.headers["authorization"].startswith("ACS3-HMAC-SHA256 Credential=LTAI5tFakeKeyId,")
    # RPC style: every parameter travels in the query string, the body is empty.
    assert seen.body == b""
    assert seen.args["PhoneNumbers"] == "13800138000"
    assert seen.args["SignName"] == "会员中心"
    assert seen.args["TemplateCode"] == "SMS_123456789"
    assert json.loads(seen.args["TemplateParam"]) == {"name": "王小明", "points": "1200"}
    assert "王小明" in seen.args["TemplateParam"]  # not \u-escaped
    assert seen.args["OutId"] == "enr-7:step-2"


def test_a_message_without_a_template_code_fails_before_any_call(fake):
    outcome = provider(fake).send_one(message(template_code=None))

    assert outcome.result is Result.FAILED
    assert "not bound to an approved Alibaba template code" in outcome.error
    assert fake.requests == []


def test_a_wrong_secret_is_refused_by_the_signature_check(fake):
    outcome = provider(fake, secret="not-the-secret").send_one(message())

    assert outcome.result is Result.FAILED
    assert outcome.error.startswith("SignatureDoesNotMatch: ")


@pytest.mark.parametrize(
    ("code", "result"),
    [
        ("isv.MOBILE_NUMBER_ILLEGAL", Result.FAILED),
        ("isv.SMS_TEMPLATE_ILLEGAL", Result.FAILED),
        ("isv.SMS_SIGNATURE_ILLEGAL", Result.FAILED),
        ("isv.AMOUNT_NOT_ENOUGH", Result.FAILED),
        ("isv.BUSINESS_LIMIT_CONTROL", Result.RETRY),
        ("isv.DAY_LIMIT_CONTROL", Result.RETRY),
        ("isp.SYSTEM_ERROR", Result.RETRY),
    ],
)
def test_business_errors_come_as_http_200(fake, code, result):
    fake.answer(200, {"Code": code, "Message": "触发分钟级流控", "RequestId": "R"})

    outcome = provider(fake).send_one(message())

    assert outcome.result is result
    assert outcome.error == f"{code}: 触发分钟级流控"
    assert outcome.provider_message_id is None


def test_gateway_throttling_is_retried_after_the_advertised_wait(fake):
    error = {"Code": "Throttling.User", "Message": "Request was denied due to user flow control."}
    fake.answer(400, error, {"x-acs-retry-after": "2000"})

    outcome = provider(fake).send_one(message())

    assert outcome.result is Result.RETRY
    assert outcome.error.startswith("Throttling.User: ")
    assert outcome.retry_after == 2.0


def test_a_gateway_client_error_is_permanent(fake):
    fake.answer(404, {"Code": "InvalidAccessKeyId.NotFound", "Message": "Specified access key"})

    outcome = provider(fake).send_one(message())

    assert (outcome.result, outcome.error) == (
        Result.FAILED,
        "InvalidAccessKeyId.NotFound: Specified access key",
    )


@pytest.mark.parametrize(
    "answer",
    [
        (500, {"Code": "InternalError", "Message": "The request processing has failed."}),
        (503, {"Code": "ServiceUnavailable", "Message": "busy"}),
        (502, "<html>Bad Gateway</html>"),
        (200, "not json at all"),
        (200, ["a", "list"]),
    ],
)
def test_server_errors_and_garbage_are_retried(fake, answer):
    fake.answer(*answer)

    assert provider(fake).send_one(message()).result is Result.RETRY
    assert len(fake.requests) == 1  # SendSms is not idempotent: the SDK must not retry


def test_a_hung_call_times_out_as_a_retry(fake):
    fake.hang()

    outcome = provider(fake).send_one(message())

    assert outcome.result is Result.RETRY
    assert outcome.error == "no answer: timed out"


def test_a_refused_connection_is_a_retry():
    with fakes.serving(fakes.alibaba(AK, SECRET)) as gone:
        sms = provider(gone)
    assert sms.send_one(message()).result is Result.RETRY


def test_send_keeps_order_across_threads(fake):
    fake.answer(200, {"Code": "isv.MOBILE_NUMBER_ILLEGAL", "Message": "bad"})
    outcomes = provider(fake).send([message(message_id=i, dedup_key=f"k{i}") for i in range(5)])

    assert len(outcomes) == 5
    assert sum(o.result is Result.SENT for o in outcomes) == 4
    assert sorted(r.args["OutId"] for r in fake.requests) == [f"k{i}" for i in range(5)]


def test_numbers_and_out_ids_take_alibabas_forms():
    assert alibaba_number("+8613800138000") == "13800138000"
    assert alibaba_number("+85291234567") == "85291234567"
    assert e164("13800138000") == "+8613800138000"
    assert e164("85291234567") == "+85291234567"
    long_key = "x" * 150
    assert out_id(long_key) == out_id(long_key) != long_key
    assert len(out_id(long_key)) <= 64


def callback(body: bytes | str) -> Callback:
    raw = body.encode() if isinstance(body, str) else body
    return Callback(url="https://tenure.example/hooks/alibaba/tok", headers={}, form={}, body=raw)


def test_receipts_are_read_with_our_out_id(fake):
    pushed = [
        {
            "phone_number": "13800138000",
            "send_time": "2026-03-01 10:00:00",
            "report_time": "2026-03-01 10:00:08",
            "success": True,
            "err_code": "DELIVERED",
            "err_msg": "用户接收成功",
            "sms_size": "1",
            "biz_id": "900619746936491^0",
            "out_id": "enr-7:step-2",
        },
        {
            "phone_number": "13900139000",
            "send_time": "2026-03-01 10:00:00",
            "report_time": "2026-03-01 10:01:00",
            "success": False,
            "err_code": "MK:0001",
            "err_msg": "空号",
            "biz_id": "900619746936492^0",
            "out_id": "enr-8:step-2",
        },
    ]
    sms = provider(fake)

    delivered, failed = sms.receipts(callback(json.dumps(pushed, ensure_ascii=False)))

    assert delivered.status == "delivered"
    assert delivered.dedup_key == "enr-7:step-2"
    assert delivered.provider_message_id == "900619746936491^0"
    assert delivered.event_key == "900619746936491^0:DELIVERED:2026-03-01 10:00:08"
    assert delivered.error_code is None
    assert (failed.status, failed.error_code, failed.dedup_key) == (
        "failed",
        "MK:0001",
        "enr-8:step-2",
    )
    assert "phone_number" not in failed.detail
    assert sms.receipt_answer() == ({"code": 0, "msg": "接收成功"}, 200)


@pytest.mark.parametrize("body", [b"", b"<xml/>", b'{"biz_id": "1"}', b"[1, 2]", b"\xff\xfe"])
def test_a_receipt_body_that_is_not_an_array_of_objects_is_refused(fake, body):
    with pytest.raises(BadSignature):
        provider(fake).receipts(callback(body))


def test_replies_are_read_with_e164_numbers(fake):
    pushed = [
        {
            "phone_number": "13800138000",
            "send_time": "2026-03-01 21:05:00",
            "content": "R",
            "sign_name": "会员中心",
            "dest_code": "1234",
            "sequence_id": 1234567890,
        },
        {"phone_number": "13900139000", "send_time": "2026-03-01 21:06:00", "content": "退订"},
    ]
    sms = provider(fake)

    first, second = sms.replies(callback(json.dumps(pushed, ensure_ascii=False)))
    again = sms.replies(callback(json.dumps(pushed, ensure_ascii=False)))[1]

    assert (first.provider_message_id, first.phone, first.body) == (
        "1234567890",
        "+8613800138000",
        "R",
    )
    assert (second.phone, second.body) == ("+8613900139000", "退订")
    assert second.provider_message_id == again.provider_message_id  # stable without an id
