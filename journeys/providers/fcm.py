"""Firebase Cloud Messaging (HTTP v1) with google-auth and requests.

firebase-admin hard-codes Google's URL, so the call is made here with a service
account's OAuth token and a configurable base URL (a local fake in tests). A 2xx
means FCM accepted the message: it answers SENT, and FCM sends no receipts back.
"""

from __future__ import annotations

import json
import threading
from typing import Any

import requests
from google.auth import exceptions as auth_errors
from google.auth.transport.requests import AuthorizedSession
from google.oauth2 import service_account
from requests.adapters import HTTPAdapter

from journeys.providers.base import TIMEOUT, Field, Outcome, Outgoing, Provider, Result
from journeys.providers.wire import MAYBE_SENT, no_answer, retry_after

SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
DEFAULT_BASE_URL = "https://fcm.googleapis.com"


def service_account_info(text: Any) -> dict[str, Any]:
    """The service account key as a dict (ValueError naming what is wrong)."""
    try:
        info = json.loads(text or "")
    except (TypeError, ValueError) as exc:
        raise ValueError("the service account key is not JSON") from exc
    if not isinstance(info, dict):
        raise ValueError("the service account key is not a JSON object")
    missing = [k for k in ("client_email", "private_key", "token_uri") if not info.get(k)]
    if missing:
        raise ValueError(f"the service account key lacks {', '.join(missing)}")
    return info


def data_payload(message: Outgoing) -> dict[str, str]:
    """FCM's ``data`` takes string values only: others go as JSON."""
    data = {k: v if isinstance(v, str) else json.dumps(v) for k, v in message.data.items()}
    if message.deep_link:
        data["deep_link"] = message.deep_link
    return data


class Fcm(Provider):
    kind = "fcm"
    channel = "push"
    label = "Firebase Cloud Messaging (FCM)"
    cross_border = True
    fields = (
        Field("project_id", "Firebase project ID"),
        Field(
            "service_account_json",
            "Service account key (JSON)",
            secret=True,
            help="The whole JSON key file of a service account allowed to send messages.",
        ),
        Field("base_url", "API base URL", required=False, default=DEFAULT_BASE_URL),
    )

    def __init__(self, settings, secrets) -> None:
        super().__init__(settings, secrets)
        self.timeout = TIMEOUT
        self._session: AuthorizedSession | None = None
        self._lock = threading.Lock()

    def session(self) -> AuthorizedSession:
        """One session per provider: the token is fetched once and refreshed when it
        runs out, and its pool has room for every concurrent send."""
        with self._lock:
            if self._session is None:
                info = service_account_info(self.secrets.get("service_account_json"))
                credentials = service_account.Credentials.from_service_account_info(
                    info, scopes=[SCOPE]
                )
                session = AuthorizedSession(credentials)
                adapter = HTTPAdapter(pool_maxsize=self.concurrency)
                session.mount("https://", adapter)
                session.mount("http://", adapter)
                self._session = session
            return self._session

    def check(self) -> None:
        service_account_info(self.secrets.get("service_account_json"))

    def send_one(self, message: Outgoing) -> Outcome:
        project = self.settings.get("project_id")
        if not project:
            return Outcome(Result.FAILED, error="account settings missing: project_id")
        try:
            session = self.session()
        except ValueError as exc:  # a malformed key or private key
            return Outcome(Result.FAILED, error=f"service_account_json: {exc}")
        base = (self.settings.get("base_url") or DEFAULT_BASE_URL).rstrip("/")
        notification = {"body": message.body}
        if message.title:
            notification["title"] = message.title
        body = {
            "message": {
                "token": message.to,
                "notification": notification,
                "data": data_payload(message),
            }
        }
        try:
            response = session.post(
                f"{base}/v1/projects/{project}/messages:send", json=body, timeout=self.timeout
            )
        except auth_errors.RefreshError as exc:  # the token endpoint said no
            result = Result.RETRY if exc.retryable else Result.FAILED
            return Outcome(result, error=f"credentials refused: {exc}")
        except auth_errors.TransportError as exc:  # the token endpoint: nothing was sent
            return Outcome(Result.RETRY, error=f"no answer: {type(exc).__name__}")
        except requests.RequestException as exc:
            return no_answer(exc)
        return outcome(response)


def outcome(response: requests.Response) -> Outcome:
    """Map FCM's answer. A token is dropped only on FCM's own word (UNREGISTERED, or
    INVALID_ARGUMENT about the registration token), never on a bare 404, which a
    wrong base URL gives too."""
    status = response.status_code
    try:
        payload = response.json()
    except ValueError:
        payload = None
    if 200 <= status < 300:
        name = payload.get("name") if isinstance(payload, dict) else None
        return Outcome(Result.SENT, provider_message_id=name)  # accepted, even if unread
    error = payload.get("error") if isinstance(payload, dict) else None
    error = error if isinstance(error, dict) else {}
    details = error.get("details") if isinstance(error.get("details"), list) else []
    codes = {d.get("errorCode") for d in details if isinstance(d, dict)}
    code = next(iter(codes - {None}), None) or error.get("status") or f"HTTP {status}"
    text = f"{code}: {error.get('message') or response.text[:200]}"
    wait = retry_after(response.headers.get("Retry-After"))
    if status == 429 or status >= 500:
        return Outcome(Result.RETRY, error=text, retry_after=wait, uncertain=status in MAYBE_SENT)
    if "UNREGISTERED" in codes or (status == 404 and error.get("status") == "NOT_FOUND"):
        return Outcome(Result.FAILED, error=text, token_gone=True)
    if code == "INVALID_ARGUMENT" and "registration token" in str(error.get("message")).lower():
        return Outcome(Result.FAILED, error=text, token_gone=True)
    if status in (401, 403) and "SENDER_ID_MISMATCH" not in codes:
        return Outcome(Result.FAILED, error=f"credentials refused: {text}")
    return Outcome(Result.FAILED, error=text)
