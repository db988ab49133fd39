"""Local servers speaking each provider's wire protocol, for the provider tests.

Each fake checks what the real service checks (the request's shape and its
credentials: Alibaba's ACS3 signature is recomputed, FCM's JWT grant verified with
the service account's public key), records every request, and answers success unless
the test queued another answer: an error, garbage, a 429, or a hang past the
client's timeout.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import datetime as dt
import hashlib
import hmac
import itertools
import json
import re
import threading
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import quote, urlencode

import jwt
from flask import Flask, Response, request
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError
from twilio.request_validator import RequestValidator
from werkzeug.datastructures import MultiDict
from werkzeug.serving import make_server

from journeys.providers.base import Callback

HANG = "hang"
Answer = tuple[int, Any, Mapping[str, str] | None]


@dataclasses.dataclass
class Seen:
    """One request as the fake received it."""

    method: str
    path: str
    args: dict[str, str]
    form: dict[str, str]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class Fake:
    def __init__(self, name: str) -> None:
        self.app = Flask(name)
        self.url = ""
        self.requests: list[Seen] = []
        self.answers: collections.deque[Answer | str] = collections.deque()
        self.release = threading.Event()
        self.counter = itertools.count(1)

    def answer(self, status: int, body: Any, headers: Mapping[str, str] | None = None) -> None:
        """Answer the next API call so (JSON for a dict or list, else the text as is)."""
        self.answers.append((status, body, headers))

    def hang(self) -> None:
        """Hold the next API call until the fake shuts down."""
        self.answers.append(HANG)

    def record(self) -> Seen:
        seen = Seen(
            request.method,
            request.path,
            request.args.to_dict(),
            request.form.to_dict(),
            {k.lower(): v for k, v in request.headers.items()},
            request.get_data(),
        )
        self.requests.append(seen)
        return seen

    def reply(self, default: Answer) -> Response:
        answer = self.answers.popleft() if self.answers else default
        if answer == HANG:
            self.release.wait(10)
            answer = default
        status, body, headers = answer  # type: ignore[misc]
        return respond(status, body, headers)


def respond(status: int, body: Any, headers: Mapping[str, str] | None = None) -> Response:
    if isinstance(body, dict | list):
        return Response(
            json.dumps(body, ensure_ascii=False), status, headers, mimetype="application/json"
        )
    return Response(body, status, headers, mimetype="text/html")


@contextlib.contextmanager
def serving(fake: Fake) -> Iterator[Fake]:
    """Run the fake on a free local port for the duration of the block."""
    server = make_server("127.0.0.1", 0, fake.app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    fake.url = f"http://127.0.0.1:{server.server_port}"
    try:
        yield fake
    finally:
        fake.release.set()
        server.shutdown()
        thread.join()
        server.server_close()


# Alibaba Cloud SMS ------------------------------------------------------------------


def acs3_problem(access_key_id: str, secret: str) -> str | None:
    """What is wrong with the request's ACS3-HMAC-SHA256 signature, or None."""
    found = re.fullmatch(
        r"ACS3-HMAC-SHA256 Credential=([^,]+),SignedHeaders=([^,]+),Signature=([0-9a-f]{64})",
        request.headers.get("Authorization", ""),
    )
    if not found:
        return "no ACS3-HMAC-SHA256 Authorization header"
    credential, signed, signature = found.groups()
    if credential != access_key_id:
        return "unknown AccessKey ID"
    names = signed.split(";")
    needed = {"host", "x-acs-action", "x-acs-content-sha256", "x-acs-date", "x-acs-version"}
    if not needed.issubset(names) or "x-acs-signature-nonce" not in names:
        return f"headers not signed: {sorted(needed - set(names))}"
    sent = dt.datetime.strptime(request.headers["x-acs-date"], "%Y-%m-%dT%H:%M:%SZ")
    if abs(sent.replace(tzinfo=dt.UTC) - dt.datetime.now(dt.UTC)) > dt.timedelta(minutes=15):
        return "x-acs-date is not within 15 minutes"
    payload = hashlib.sha256(request.get_data()).hexdigest()
    if request.headers["x-acs-content-sha256"] != payload:
        return "x-acs-content-sha256 does not match the body"
    query = "&".join(
        f"{quote(k, safe='~')}={quote(v, safe='~')}" for k, v in sorted(request.args.items())
    )
    headers = "".join(f"{name}:{request.headers.get(name, '').strip()}\n" for name in names)
    canonical = f"{request.method}\n{request.path}\n{query}\n{headers}\n{signed}\n{payload}"
    digest = hashlib.sha256(canonical.encode()).hexdigest()
    expected = hmac.new(
        secret.encode(), f"ACS3-HMAC-SHA256\n{digest}".encode(), hashlib.sha256
    ).hexdigest()
    return None if hmac.compare_digest(expected, signature) else "signature does not match"


def alibaba(access_key_id: str, secret: str) -> Fake:
    fake = Fake("fake-alibaba")

    @fake.app.post("/")
    def rpc() -> Response:
        fake.record()
        if request.headers.get("x-acs-action") != "SendSms":
            return respond(404, {"Code": "InvalidAction.NotFound", "Message": "no such action"})
        if request.headers.get("x-acs-version") != "2017-05-25":
            return respond(400, {"Code": "InvalidVersion", "Message": "bad version"})
        problem = acs3_problem(access_key_id, secret)
        if problem:
            return respond(400, {"Code": "SignatureDoesNotMatch", "Message": problem})
        params = ("PhoneNumbers", "SignName", "TemplateCode", "TemplateParam", "OutId")
        missing = [name for name in params if not request.args.get(name)]
        if missing:
            return respond(400, {"Code": "MissingParameter", "Message": ", ".join(missing)})
        n = next(fake.counter)
        ok = {"Code": "OK", "Message": "OK", "BizId": f"90061974693649{n}^0", "RequestId": "R"}
        return fake.reply((200, ok, None))

    return fake


# Twilio -----------------------------------------------------------------------------


def twilio(account_sid: str, auth_token: str) -> Fake:
    fake = Fake("fake-twilio")

    @fake.app.post("/2010-04-01/Accounts/<account>/Messages.json")
    def create(account: str) -> Response:
        fake.record()
        auth = request.authorization
        if not auth or (auth.username, auth.password) != (account_sid, auth_token):
            error = {"code": 20003, "message": "Authenticate", "status": 401}
            return respond(401, error)
        if account != account_sid:
            return respond(404, {"code": 20404, "message": "Not found", "status": 404})
        form = request.form
        if not form.get("To") or not form.get("Body"):
            error = {"code": 21604, "message": "A 'To' phone number is required.", "status": 400}
            return respond(400, error)
        if not form.get("From") and not form.get("MessagingServiceSid"):
            error = {"code": 21603, "message": "A 'From' phone number is required.", "status": 400}
            return respond(400, error)
        sid = f"SM{next(fake.counter):032x}"
        created = {"sid": sid, "account_sid": account, "to": form["To"], "status": "queued"}
        return fake.reply((201, created, None))

    return fake


def twilio_callback(url: str, params: Mapping[str, str], auth_token: str) -> Callback:
    """A callback as Twilio sends it: a form POST signed with the auth token."""
    signature = RequestValidator(auth_token).compute_signature(url, params)
    return Callback(
        url=url,
        headers={
            "X-Twilio-Signature": signature,
            "Content-Type": "application/x-www-form-urlencoded",
        },
        form=MultiDict(params),
        body=urlencode(params).encode(),
    )


# FCM --------------------------------------------------------------------------------

FCM_SCOPE = "https://www.googleapis.com/auth/firebase.messaging"


def fcm(project_id: str, client_email: str, public_key_pem: bytes) -> Fake:
    fake = Fake("fake-fcm")
    issued: set[str] = set()

    @fake.app.post("/token")
    def token() -> Response:
        fake.record()
        if request.form.get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer":
            return respond(400, {"error": "unsupported_grant_type"})
        try:
            claims = jwt.decode(
                request.form.get("assertion", ""),
                public_key_pem,
                algorithms=["RS256"],
                # google-auth always names Google's endpoint, whatever token_uri says.
                audience="https://oauth2.googleapis.com/token",
                issuer=client_email,
            )
        except jwt.PyJWTError as exc:
            return respond(400, {"error": "invalid_grant", "error_description": str(exc)})
        if FCM_SCOPE not in str(claims.get("scope", "")).split():
            return respond(400, {"error": "invalid_scope"})
        access = f"ya29.fake-{next(fake.counter)}"
        issued.add(access)
        return respond(200, {"access_token": access, "expires_in": 3600, "token_type": "Bearer"})

    @fake.app.post("/v1/projects/<project>/messages:send")
    def send(project: str) -> Response:
        fake.record()
        bearer = request.headers.get("Authorization", "").removeprefix("Bearer ")
        if bearer not in issued:
            error = {"code": 401, "message": "invalid credentials", "status": "UNAUTHENTICATED"}
            return respond(401, {"error": error})
        if project != project_id:
            error = {"code": 403, "message": "no such project", "status": "PERMISSION_DENIED"}
            return respond(403, {"error": error})
        message = (request.get_json(silent=True) or {}).get("message") or {}
        data = message.get("data") or {}
        if not isinstance(message.get("token"), str) or not all(
            isinstance(v, str) for v in data.values()
        ):
            error = {"code": 400, "message": "invalid message", "status": "INVALID_ARGUMENT"}
            return respond(400, {"error": error})
        name = f"projects/{project}/messages/0:{next(fake.counter)}"
        return fake.reply((200, {"name": name}, None))

    return fake


def fcm_error(status: int, name: str, message: str, error_code: str | None = None) -> dict:
    """FCM's error body, with its FcmError detail when there is an error code."""
    error: dict[str, Any] = {"code": status, "message": message, "status": name}
    if error_code:
        fcm_type = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
        error["details"] = [{"@type": fcm_type, "errorCode": error_code}]
    return {"error": error}


# JPush ------------------------------------------------------------------------------


def jpush(app_key: str, master_secret: str) -> Fake:
    fake = Fake("fake-jpush")

    @fake.app.post("/v3/push")
    def push() -> Response:
        fake.record()
        auth = request.authorization
        if not auth or (auth.username, auth.password) != (app_key, master_secret):
            return respond(401, {"error": {"code": 1004, "message": "Authen failed"}})
        body = request.get_json(silent=True) or {}
        ids = (body.get("audience") or {}).get("registration_id")
        if not ids or not body.get("platform") or not body.get("notification"):
            return respond(400, {"error": {"code": 1003, "message": "invalid parameter"}})
        ok = {"sendno": "0", "msg_id": f"5404319552{next(fake.counter)}"}
        return fake.reply((200, ok, None))

    return fake


# Standard Webhooks receiver ---------------------------------------------------------


def webhook_receiver(secret: str) -> Fake:
    fake = Fake("fake-webhook")

    @fake.app.post("/hook")
    def hook() -> Response:
        fake.record()
        try:
            Webhook(secret).verify(request.get_data(), dict(request.headers), json_parse=False)
        except (WebhookVerificationError, ValueError) as exc:  # ValueError: malformed
            return respond(401, f"bad signature: {exc}")
        return fake.reply((204, "", None))

    return fake
