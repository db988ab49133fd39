"""The webhook channel: a message's JSON body POSTed to the member's (or shop's) URL,
signed per Standard Webhooks.

The ``webhook-id`` is derived from the message's dedup key, so every retry carries
the same id and the receiver drops repeats: that makes the channel idempotent. The
timestamp is UTC (the SDK's ``sign`` overwrites the tzinfo, so a local time would be
signed wrong).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from standardwebhooks import Webhook

from journeys.providers.base import TIMEOUT, Field, Outcome, Outgoing, Provider, Result
from journeys.providers.wire import retry_after

PREFIX = "whsec_"


def check_secret(secret: str) -> str | None:
    """What is wrong with a signing secret, or None: ``whsec_`` and base64 of at least
    16 bytes (the spec recommends 24 to 64)."""
    if not secret.startswith(PREFIX):
        return "signing_secret must start with whsec_"
    text = secret[len(PREFIX) :]
    try:
        key = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        return "signing_secret is not base64 after whsec_"
    return None if len(key) >= 16 else "signing_secret is shorter than 16 bytes"


def webhook_id(dedup_key: str) -> str:
    """The same for every attempt at one message, and says nothing of its contents."""
    return "msg_" + hashlib.sha256(dedup_key.encode()).hexdigest()[:32]


class WebhookChannel(Provider):
    kind = "webhook"
    channel = "webhook"
    label = "Webhook (Standard Webhooks)"
    idempotent = True
    fields = (
        Field(
            "signing_secret",
            "Signing secret",
            secret=True,
            help="whsec_ followed by base64; receivers verify webhook-signature with it.",
        ),
    )

    def __init__(self, settings, secrets) -> None:
        super().__init__(settings, secrets)
        self.timeout = TIMEOUT
        self.session = requests.Session()
        adapter = HTTPAdapter(pool_maxsize=self.concurrency)
        self.session.mount("https://", adapter)
        self.session.mount("http://", adapter)

    def check(self) -> None:
        problem = check_secret(self.secrets.get("signing_secret") or "")
        if problem:
            raise ValueError(problem)

    def send_one(self, message: Outgoing) -> Outcome:
        secret = self.secrets.get("signing_secret") or ""
        problem = check_secret(secret)
        if problem:
            return Outcome(Result.FAILED, error=problem)
        target = urlsplit(message.to)
        if target.scheme not in ("http", "https") or not target.netloc:
            return Outcome(Result.FAILED, error="the webhook URL is not http(s)")
        msg_id = webhook_id(message.dedup_key)
        now = dt.datetime.now(dt.UTC)
        headers = {
            "Content-Type": "application/json",
            "webhook-id": msg_id,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": Webhook(secret).sign(msg_id, now, message.body),
        }
        try:
            response = self.session.post(
                message.to,
                data=message.body.encode(),
                headers=headers,
                timeout=self.timeout,
                allow_redirects=False,  # a redirect could carry the signed body elsewhere
            )
        except requests.RequestException as exc:  # timeouts, refused connections
            return Outcome(Result.RETRY, error=f"no answer: {type(exc).__name__}")
        status = response.status_code
        if 200 <= status < 300:
            return Outcome(Result.DELIVERED, provider_message_id=msg_id)
        error = f"HTTP {status}: {response.text[:200]}"
        if status in (408, 429) or status >= 500:
            wait = retry_after(response.headers.get("Retry-After"))
            return Outcome(Result.RETRY, error=error, retry_after=wait)
        if status == 410:
            return Outcome(Result.FAILED, error="endpoint gone (HTTP 410)")
        return Outcome(Result.FAILED, error=error)
