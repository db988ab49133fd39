"""JPush (极光推送) through its REST API v3, with requests.

The official jpush SDK hard-codes its URLs, so the call is made here against a
configurable base URL. The error codes below are JPush's documented v3 push codes
as commonly reported; they have not been checked against a live JPush answer.
"""

from __future__ import annotations

from typing import Any

import requests
from requests.adapters import HTTPAdapter

from journeys.providers.base import TIMEOUT, Field, Outcome, Outgoing, Provider, Result
from journeys.providers.wire import MAYBE_SENT, no_answer, retry_after

DEFAULT_BASE_URL = "https://api.jpush.cn"
# 1011: "cannot find user by this audience" (the registration id is unknown, or was
# inactive for 255 days): with one id as the audience, the id is dead.
TOKEN_GONE = frozenset({1011})
# 1000 internal error, 1030 internal timeout, 2002 API rate limit, 2008 push rate limit.
RETRY_CODES = frozenset({1000, 1030, 2002, 2008})
# 1004 authentication failed, 1008 invalid app_key.
AUTH_CODES = frozenset({1004, 1008})


class JPush(Provider):
    kind = "jpush"
    channel = "push"
    label = "JPush (极光推送)"
    fields = (
        Field("app_key", "AppKey"),
        Field("master_secret", "Master secret", secret=True),
        Field("base_url", "API base URL", required=False, default=DEFAULT_BASE_URL),
        Field(
            "apns_production",
            "APNs production",
            required=False,
            default="true",
            help="true for App Store builds, false for development builds.",
        ),
    )

    def __init__(self, settings, secrets) -> None:
        super().__init__(settings, secrets)
        self.timeout = TIMEOUT
        self.session = requests.Session()
        adapter = HTTPAdapter(pool_maxsize=self.concurrency)
        self.session.mount("https://", adapter)
        self.session.mount("http://", adapter)

    def payload(self, message: Outgoing) -> dict[str, Any]:
        extras = dict(message.data)
        if message.deep_link:
            extras["deep_link"] = message.deep_link
        android: dict[str, Any] = {"alert": message.body, "extras": extras}
        ios_alert: dict[str, Any] = {"body": message.body}
        if message.title:
            android["title"] = ios_alert["title"] = message.title
        production = str(self.settings.get("apns_production") or "true").lower() != "false"
        return {
            "platform": "all",
            "audience": {"registration_id": [message.to]},
            "notification": {
                "alert": message.body,
                "android": android,
                "ios": {"alert": ios_alert, "extras": extras},
            },
            "options": {"time_to_live": 86400, "apns_production": production},
        }

    def send_one(self, message: Outgoing) -> Outcome:
        key, secret = self.settings.get("app_key"), self.secrets.get("master_secret")
        if not key or not secret:
            return Outcome(Result.FAILED, error="account settings missing: app_key, master_secret")
        base = (self.settings.get("base_url") or DEFAULT_BASE_URL).rstrip("/")
        try:
            response = self.session.post(
                f"{base}/v3/push",
                json=self.payload(message),
                auth=(key, secret),
                timeout=self.timeout,
            )
        except requests.RequestException as exc:  # timeouts, refused connections
            return no_answer(exc)
        return outcome(response)


def outcome(response: requests.Response) -> Outcome:
    status = response.status_code
    try:
        payload = response.json()
    except ValueError:
        payload = None
    payload = payload if isinstance(payload, dict) else {}
    error = payload.get("error") if isinstance(payload.get("error"), dict) else None
    if 200 <= status < 300 and error is None:
        msg_id = payload.get("msg_id")
        return Outcome(Result.SENT, provider_message_id=str(msg_id) if msg_id else None)
    code = error.get("code") if error else None
    text = f"{code}: {error.get('message')}" if error else f"HTTP {status}: {response.text[:200]}"
    if code in TOKEN_GONE:
        return Outcome(Result.FAILED, error=text, token_gone=True)
    if code in RETRY_CODES or status == 429 or status >= 500:
        # JPush documents X-Rate-Limit-Reset (seconds until the window resets).
        wait = retry_after(
            response.headers.get("Retry-After") or response.headers.get("X-Rate-Limit-Reset")
        )
        return Outcome(Result.RETRY, error=text, retry_after=wait, uncertain=status in MAYBE_SENT)
    if code in AUTH_CODES or status == 401:
        return Outcome(Result.FAILED, error=f"credentials refused: {text}")
    return Outcome(Result.FAILED, error=text)
