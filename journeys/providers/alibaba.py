"""Alibaba Cloud SMS (dysmsapi 2017-05-25) through the official SDK.

Mainland operators carry only approved templates, so a message goes out as a
``TemplateCode`` plus its variables, never as the rendered text. SendSms is not
idempotent, and business errors come back as HTTP 200 with ``Code != "OK"``.
Receipts and replies are pushed unsigned: the caller authenticates them by the
account's secret path token, so here they are only parsed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from typing import Any

from alibabacloud_dysmsapi20170525 import models as sms_models
from alibabacloud_dysmsapi20170525.client import Client
from alibabacloud_tea_openapi.exceptions import AlibabaCloudException
from alibabacloud_tea_openapi.utils_models import Config
from darabonba.exceptions import RetryError
from darabonba.runtime import RuntimeOptions
from Tea.exceptions import TeaException

from journeys.providers.base import (
    TIMEOUT,
    BadSignature,
    Callback,
    Field,
    Outcome,
    Outgoing,
    Provider,
    Reply,
    Report,
    Result,
)
from journeys.providers.wire import MAYBE_SENT
from members.fields import mask_phone

log = logging.getLogger(__name__)

# Codes worth another try later: flow control (per number, or the account's own daily
# and monthly caps, which reset), Alibaba's own faults, and a reused nonce (the SDK
# makes a fresh one per call). Everything else (bad number, template, signature,
# balance, permissions) is permanent for this message.
RETRY_CODES = frozenset(
    {"isv.BUSINESS_LIMIT_CONTROL", "isv.DAY_LIMIT_CONTROL", "isv.MONTH_LIMIT_CONTROL"}
    | {"isp.SYSTEM_ERROR", "isv.SYSTEM_ERROR", "InternalError", "ServiceUnavailable"}
    | {"SignatureNonceUsed"}
)
ENDPOINT = "dysmsapi.aliyuncs.com"
# OutId's limit is not documented; past this a stable digest goes instead, and the
# receipt is matched by BizId.
OUT_ID_MAX = 64
KEEP = ("send_time", "report_time", "err_msg", "sms_size")  # a receipt's detail


def alibaba_number(e164: str) -> str:
    """SendSms's PhoneNumbers form: mainland numbers as their 11 digits, others as
    country code + number, without "+" (Alibaba's SendSms reference)."""
    digits = re.sub(r"\D", "", e164)
    return digits[2:] if digits.startswith("86") and len(digits) == 13 else digits


def e164(number: Any) -> str:
    """A number as Alibaba pushes it back, in E.164: 11 digits starting with 1 are
    mainland numbers; anything else is taken to carry its country code."""
    digits = re.sub(r"\D", "", str(number))
    return f"+86{digits}" if len(digits) == 11 and digits.startswith("1") else f"+{digits}"


def out_id(dedup_key: str) -> str:
    if len(dedup_key) <= OUT_ID_MAX:
        return dedup_key
    return "h-" + hashlib.sha256(dedup_key.encode()).hexdigest()[:40]


class AlibabaSms(Provider):
    kind = "alibaba"
    channel = "sms"
    label = "Alibaba Cloud SMS (阿里云短信)"
    fields = (
        Field("access_key_id", "AccessKey ID"),
        Field("access_key_secret", "AccessKey secret", secret=True),
        Field("sign_name", "Signature name", help="The approved signature, without 【】."),
        Field("endpoint", "Endpoint (host[:port])", required=False, default=ENDPOINT),
        Field("protocol", "Protocol", required=False, default="HTTPS", help="HTTPS or HTTP."),
    )

    def __init__(self, settings, secrets) -> None:
        super().__init__(settings, secrets)
        self.timeout = TIMEOUT
        self._client: Client | None = None

    def client(self) -> Client:
        if self._client is None:
            self._client = Client(
                Config(
                    access_key_id=self.settings.get("access_key_id"),
                    access_key_secret=self.secrets.get("access_key_secret"),
                    endpoint=self.settings.get("endpoint") or ENDPOINT,
                    protocol=self.settings.get("protocol") or "HTTPS",
                )
            )
        return self._client

    def send_one(self, message: Outgoing) -> Outcome:
        if not message.template_code:
            return Outcome(
                Result.FAILED,
                error=f"template of message {message.message_id} is not bound to an"
                " approved Alibaba template code",
            )
        missing = [f.name for f in self.fields if f.required and not self._value(f.name)]
        if missing:
            return Outcome(Result.FAILED, error=f"account settings missing: {', '.join(missing)}")
        request = sms_models.SendSmsRequest(
            phone_numbers=alibaba_number(message.to),
            sign_name=self.settings["sign_name"],
            template_code=message.template_code,
            template_param=json.dumps(dict(message.params or {}), ensure_ascii=False),
            out_id=out_id(message.dedup_key),
        )
        ms = max(1, int(self.timeout * 1000))
        runtime = RuntimeOptions(read_timeout=ms, connect_timeout=ms)
        try:
            body = self.client().send_sms_with_options(request, runtime).body
        except AlibabaCloudException as exc:  # HTTP 4xx/5xx with a readable body
            return self._http_error(exc)
        except TeaException as exc:  # timeouts, refused connections, unreadable bodies
            error = _transport_error(getattr(exc, "inner_exception", exc))
            log.info("alibaba sms to %s: %s", mask_phone(message.to), error)
            # Only a connection never made is sure not to have sent anything.
            uncertain = error != "no answer: connection failed"
            return Outcome(Result.RETRY, error=error, uncertain=uncertain)
        code = str(body.code or "") if body is not None else ""
        if not code:  # JSON of another shape: Alibaba got it, and may have sent it
            return Outcome(Result.RETRY, error="unreadable answer: no Code", uncertain=True)
        if code == "OK":
            return Outcome(Result.SENT, provider_message_id=body.biz_id)
        return _refused(code, body.message)

    def _value(self, name: str) -> Any:
        return self.secrets.get(name) if name == "access_key_secret" else self.settings.get(name)

    @staticmethod
    def _http_error(exc: AlibabaCloudException) -> Outcome:
        data = exc.data if isinstance(exc.data, dict) else {}
        message = data.get("Message") or data.get("message") or exc.message
        wait = exc.retry_after / 1000 if exc.retry_after else None  # the SDK's unit: ms
        return _refused(str(exc.code), message, exc.status_code or 0, wait)

    def receipts(self, callback: Callback) -> list[Report]:
        reports = []
        for item in _items(callback):
            biz_id = str(item.get("biz_id") or "")
            code = str(item.get("err_code") or "")
            delivered = item.get("success") in (True, "true", "True", 1)
            reports.append(
                Report(
                    event_key=f"{biz_id}:{code}:{item.get('report_time') or ''}"[:200],
                    status="delivered" if delivered else "failed",
                    provider_message_id=biz_id or None,
                    dedup_key=item.get("out_id") or None,
                    error_code=None if delivered else (code[:64] or None),
                    # The phone number stays out: the message row already knows it.
                    detail={k: item[k] for k in KEEP if k in item},
                )
            )
        return reports

    def replies(self, callback: Callback) -> list[Reply]:
        # SmsUp push: [{"phone_number","send_time","content","sign_name","dest_code",
        # "sequence_id"}]; these field names are unverified against a live push.
        replies = []
        for item in _items(callback):
            phone, body = e164(item.get("phone_number") or ""), str(item.get("content") or "")
            key = item.get("sequence_id")
            if key in (None, ""):  # still a stable id, so that a repeated push is kept once
                seen = f"{phone}|{item.get('send_time')}|{body}".encode()
                key = "h-" + hashlib.sha256(seen).hexdigest()[:32]
            replies.append(Reply(provider_message_id=str(key), phone=phone, body=body))
        return replies

    def receipt_answer(self) -> tuple[Any, int]:
        return {"code": 0, "msg": "接收成功"}, 200


def _refused(code: str, message: Any, status: int = 200, wait: float | None = None) -> Outcome:
    """A business error (HTTP 200) or a gateway error (4xx/5xx) as an outcome."""
    error = f"{code}: {message}"
    if status >= 500 or status == 429 or code in RETRY_CODES or code.startswith("Throttling"):
        # isp.SYSTEM_ERROR and a gateway's 5xx may come after the SMS went.
        uncertain = status in MAYBE_SENT or code == "isp.SYSTEM_ERROR"
        return Outcome(Result.RETRY, error=error, retry_after=wait, uncertain=uncertain)
    return Outcome(Result.FAILED, error=error)


def _transport_error(exc: BaseException) -> str:
    """Words for a call that got no usable answer. The SDK's own text is not used: a
    refused connection's names the URL, whose query holds the phone number."""
    if isinstance(exc, RetryError):  # the SDK's wrapper for requests' IOError
        return (
            "no answer: timed out" if "timed out" in exc.message else "no answer: connection failed"
        )
    return f"unreadable answer: {type(exc).__name__}"


def _items(callback: Callback) -> list[dict[str, Any]]:
    """The JSON array of objects Alibaba pushes (BadSignature for anything else)."""
    try:
        items = json.loads(callback.body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadSignature(f"not JSON: {exc}") from exc
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise BadSignature("not a JSON array of objects")
    return items
