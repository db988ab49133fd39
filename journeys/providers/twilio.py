"""Twilio Programmable Messaging through the official SDK.

The text goes as is (Twilio has no template approval). Status callbacks and inbound
SMS are form POSTs signed with the auth token (``X-Twilio-Signature``), checked over
every field, since Twilio adds fields without notice.
"""

from __future__ import annotations

import json
import logging
import threading
from typing import Any

import requests
from twilio.base.exceptions import TwilioRestException, TwilioServiceException
from twilio.http.http_client import TwilioHttpClient
from twilio.http.response import Response
from twilio.request_validator import RequestValidator
from twilio.rest import Client

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
from journeys.providers.wire import MAYBE_SENT, header, no_answer, retry_after

STATUSES = {"delivered": "delivered", "read": "delivered", "failed": "failed"}
STATUSES |= {"undelivered": "failed", "canceled": "failed"}
# Anything else (queued, accepted, scheduled, sending, sent) is on its way.
# An empty TwiML answer: Twilio takes 2xx for a status callback, and for an inbound
# SMS it reads text/html (Flask's default for a str) as TwiML, here "send no reply".
# (text/plain would be sent back to the member as an SMS.)
EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response></Response>'


class _HttpClient(TwilioHttpClient):
    """Keeps each thread's last answer, whose headers (Retry-After) the SDK's
    exception does not carry."""

    def __init__(self, timeout: float) -> None:
        # The SDK logs a dozen INFO lines per message; only its warnings are news.
        quiet = logging.getLogger("tenure.twilio.http")
        quiet.setLevel(logging.WARNING)
        super().__init__(timeout=timeout, logger=quiet)
        self.last = threading.local()

    def request(self, *args: Any, **kwargs: Any) -> Response:
        self.last.response = None
        self.last.response = super().request(*args, **kwargs)
        return self.last.response


class TwilioSms(Provider):
    kind = "twilio"
    channel = "sms"
    label = "Twilio SMS"
    cross_border = True
    fields = (
        Field("account_sid", "Account SID"),
        Field("auth_token", "Auth token", secret=True),
        Field("from_number", "From number", required=False, help="E.164, e.g. +15017122661."),
        Field(
            "messaging_service_sid",
            "Messaging service SID",
            required=False,
            help="Used instead of the from number when set (one of the two is required).",
        ),
        Field("status_callback_url", "Status callback URL", required=False),
        Field("base_url", "API base URL", required=False, help="Empty: Twilio's own."),
    )

    def __init__(self, settings, secrets) -> None:
        super().__init__(settings, secrets)
        self.timeout = TIMEOUT
        self._http = _HttpClient(self.timeout)
        self._client: Client | None = None

    def client(self) -> Client:
        if self._client is None:
            client = Client(
                self.settings.get("account_sid"),
                self.secrets.get("auth_token"),
                http_client=self._http,
            )
            if self.settings.get("base_url"):
                # Domain.absolute_url joins base_url and the path: this moves every call.
                client.api.base_url = self.settings["base_url"].rstrip("/")
            self._client = client
        return self._client

    def send_one(self, message: Outgoing) -> Outcome:
        sender = {}
        if self.settings.get("messaging_service_sid"):
            sender["messaging_service_sid"] = self.settings["messaging_service_sid"]
        elif self.settings.get("from_number"):
            sender["from_"] = self.settings["from_number"]
        if not sender or not self.settings.get("account_sid") or not self.secrets.get("auth_token"):
            return Outcome(
                Result.FAILED,
                error="account settings missing: account_sid, auth_token and a from number"
                " or messaging service SID",
            )
        if self.settings.get("status_callback_url"):
            sender["status_callback"] = self.settings["status_callback_url"]
        self._http.timeout = self.timeout
        try:
            sent = self.client().messages.create(to=message.to, body=message.body, **sender)
        except (TwilioRestException, TwilioServiceException) as exc:
            return self._error(exc)
        except requests.RequestException as exc:  # timeouts, refused connections
            return no_answer(exc)
        except json.JSONDecodeError:  # a 2xx whose body is not JSON: accepted, id unknown
            return Outcome(Result.SENT)
        return Outcome(Result.SENT, provider_message_id=sent.sid)

    def _error(self, exc: TwilioRestException | TwilioServiceException) -> Outcome:
        if isinstance(exc, TwilioServiceException):
            text = f"{exc.code}: {exc.detail or exc.title}"
        else:
            text = f"{exc.code}: {exc.msg.removeprefix('Unable to create record: ')}"
        status = exc.status if isinstance(exc.status, int) else 0
        if status == 429 or status >= 500:
            last = getattr(self._http.last, "response", None)
            wait = retry_after(last.headers.get("Retry-After")) if last is not None else None
            return Outcome(
                Result.RETRY, error=text, retry_after=wait, uncertain=status in MAYBE_SENT
            )
        return Outcome(Result.FAILED, error=text)

    def _verify(self, callback: Callback) -> None:
        token = self.secrets.get("auth_token") or ""
        signature = header(callback.headers, "X-Twilio-Signature")
        if not token or not signature:
            raise BadSignature("no X-Twilio-Signature")
        if not RequestValidator(token).validate(callback.url, callback.form, signature):
            raise BadSignature("X-Twilio-Signature does not match")

    def receipts(self, callback: Callback) -> list[Report]:
        self._verify(callback)
        sid, status = callback.form.get("MessageSid"), callback.form.get("MessageStatus")
        if not sid or not status:
            raise BadSignature("not a status callback: no MessageSid or MessageStatus")
        mapped = STATUSES.get(status, "sent")
        keep = ("MessageStatus", "ErrorCode", "SmsStatus", "AccountSid", "MessagingServiceSid")
        return [
            Report(
                event_key=f"{sid}:{status}",
                status=mapped,
                provider_message_id=sid,
                error_code=(callback.form.get("ErrorCode") or None) if mapped == "failed" else None,
                # To and From stay out: the message row already knows the number.
                detail={k: callback.form.get(k) for k in keep if callback.form.get(k)},
            )
        ]

    def replies(self, callback: Callback) -> list[Reply]:
        self._verify(callback)
        sid = callback.form.get("MessageSid") or callback.form.get("SmsMessageSid")
        if not sid or not callback.form.get("From"):
            raise BadSignature("not an inbound message: no MessageSid or From")
        return [Reply(sid, phone=callback.form["From"], body=callback.form.get("Body") or "")]

    def receipt_answer(self) -> tuple[Any, int]:
        return EMPTY_TWIML, 200
