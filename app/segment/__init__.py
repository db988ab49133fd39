"""The Segment-compatible door (/v1/*): the analytics SDKs a shop already runs can
point their host at Tenure. Wire details in ../shared/INTEROP.md, section 1.

The SDKs drop a whole batch on any 4xx, so a readable, authenticated body is always
answered 200 with each message's result; only a bad key (401/403), an unreadable or
oversize body (400) and the rate limit (429) are errors.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import logging
import time
import zlib
from typing import Any

from flask import Blueprint, current_app, jsonify, request

from app import clock
from app.auth.models import ApiKey, Scope
from app.auth.service import find_api_key
from app.errors import PROBLEM_JSON, problem
from app.extensions import csrf, db, limiter
from members import ingest, segment

log = logging.getLogger(__name__)
bp = Blueprint("segment", __name__, url_prefix="/v1")

MAX_BODY = 500 * 1024
MAX_MESSAGE = 32 * 1024
MAX_MESSAGES = 2500
KINDS = {
    "identify": "identify",
    "i": "identify",
    "track": "track",
    "t": "track",
    "page": "page",
    "p": "page",
    "screen": "screen",
    "s": "screen",
    "group": "group",
    "g": "group",
    "alias": "alias",
    "a": "alias",
}


class SegmentBodies:
    """WSGI middleware for /v1/: inflate gzip bodies (with a cap against gzip bombs) and
    read text/plain as JSON, as analytics.js and RudderStack send them."""

    def __init__(self, wsgi_app) -> None:
        self.wsgi_app = wsgi_app

    def __call__(self, environ, start_response):
        if environ.get("PATH_INFO", "").startswith("/v1/"):
            if environ.get("HTTP_CONTENT_ENCODING", "").lower() == "gzip":
                try:
                    length = int(environ.get("CONTENT_LENGTH") or 0)
                    if length > MAX_BODY:
                        raise ValueError("too large")
                    raw = environ["wsgi.input"].read(length)
                    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
                    body = inflater.decompress(raw, MAX_BODY + 1)
                    if len(body) > MAX_BODY or inflater.unconsumed_tail:
                        raise ValueError("inflates past the limit")
                except (zlib.error, ValueError) as exc:
                    return _raw_error(start_response, f"unreadable gzip body: {exc}")
                environ["wsgi.input"] = io.BytesIO(body)
                environ["CONTENT_LENGTH"] = str(len(body))
                del environ["HTTP_CONTENT_ENCODING"]
            content_type = environ.get("CONTENT_TYPE", "").split(";")[0].strip()
            if content_type in ("", "text/plain"):
                environ["CONTENT_TYPE"] = "application/json"
        return self.wsgi_app(environ, start_response)


def _raw_error(start_response, message: str):
    """Answered before Flask runs: the problem document app.errors would write."""
    body = json.dumps(
        {
            "type": "about:blank",
            "title": "Bad Request",
            "status": 400,
            "detail": message,
            "code": "bad_request",
            "message": message,
        }
    ).encode()
    start_response(
        "400 Bad Request",
        [
            ("Content-Type", PROBLEM_JSON),
            ("Content-Length", str(len(body))),
            ("Access-Control-Allow-Origin", "*"),
        ],
    )
    return [body]


def init_app(app) -> None:
    app.wsgi_app = SegmentBodies(app.wsgi_app)
    csrf.exempt(bp)
    if not getattr(bp, "_tenure_limited", False):
        limiter.limit(_limit, key_func=_write_key_identity)(bp)
        bp._tenure_limited = True
    app.register_blueprint(bp)


def _limit() -> str:
    return current_app.config["TENURE_SETTINGS"].api_limit


def _write_key_identity() -> str:
    return "segment:" + (_basic_key() or request.remote_addr or "-")[:80]


@bp.after_request
def segment_headers(response):
    response.headers["Access-Control-Allow-Origin"] = "*"
    response.headers["Access-Control-Allow-Headers"] = "Content-Type, Authorization"
    # analytics.js waits parseInt(X-RateLimit-Reset) seconds: send seconds, not an epoch.
    reset = response.headers.get("X-RateLimit-Reset")
    if reset and reset.isdigit() and int(reset) > 10**9:
        response.headers["X-RateLimit-Reset"] = str(max(int(reset) - int(time.time()), 0))
    return response


@bp.route("/<kind>", methods=["OPTIONS"])
@limiter.exempt
def preflight(kind: str):
    return "", 204


@bp.post("/batch")
@bp.post("/b")
def batch():
    body = _body()
    messages = body.get("batch")
    if not isinstance(messages, list):
        return _error(400, "bad_request", "a batch body has a 'batch' list")
    key = _authenticate(body, messages)
    shared = {k: body[k] for k in ("context", "integrations") if isinstance(body.get(k), dict)}
    merged = [_merge(m, shared, body.get("sentAt")) for m in messages]
    return _apply(key, merged)


@bp.post("/<kind>")
def single(kind: str):
    if kind not in KINDS:
        return _error(404, "not_found", f"no /v1/{kind}; use batch, identify, track or page")
    body = _body()
    key = _authenticate(body, [body])
    return _apply(key, [{**body, "type": KINDS[kind]}])


def _body() -> dict[str, Any]:
    raw = request.get_data(cache=True)
    if len(raw) > MAX_BODY:
        _abort(400, "bad_request", f"the body is over {MAX_BODY // 1024} KB")
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        _abort(400, "bad_request", "the body is not JSON")
    if not isinstance(body, dict):
        _abort(400, "bad_request", "the body is a JSON object")
    return body


def _merge(message: Any, shared: dict, sent_at: Any) -> Any:
    if not isinstance(message, dict):
        return message
    merged = dict(message)
    for name, value in shared.items():
        own = merged.get(name)
        merged[name] = {**value, **own} if isinstance(own, dict) else value
    if sent_at and "sentAt" not in merged:
        merged["sentAt"] = sent_at
    return merged


def _basic_key() -> str | None:
    auth = request.authorization
    if auth and auth.type == "basic" and auth.username:
        return auth.username
    header = request.headers.get("Authorization", "")
    if header.lower().startswith("basic "):  # a value without the trailing colon
        try:
            return base64.b64decode(header[6:]).decode().split(":")[0] or None
        except (binascii.Error, UnicodeDecodeError):
            return None
    return None


def _authenticate(body: dict, messages: list) -> ApiKey:
    """Basic username, then the body's writeKey, then an item's, then Bearer."""
    candidates = [_basic_key(), body.get("writeKey")]
    candidates += [m.get("writeKey") for m in messages[:1] if isinstance(m, dict)]
    scheme, _, bearer = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer":
        candidates.append(bearer.strip())
    for secret in candidates:
        if isinstance(secret, str) and secret:
            key = find_api_key(db.session, secret)
            if key is None or key.is_revoked:
                _abort(401, "unauthorized", "unknown or revoked write key")
            if not {Scope.INGEST, Scope.ADMIN} & key.scope_set:
                _abort(403, "forbidden", "this key lacks the 'ingest' scope")
            return key
    _abort(401, "unauthorized", "send the write key as Basic auth username or writeKey")


def _apply(key: ApiKey, messages: list):
    settings = current_app.config["TENURE_SETTINGS"]
    accepted_part = messages[:MAX_MESSAGES]
    oversize = {
        i for i, m in enumerate(accepted_part) if len(json.dumps(m, default=str)) > MAX_MESSAGE
    }
    to_apply = [
        m if i not in oversize else {"type": "_oversize"} for i, m in enumerate(accepted_part)
    ]
    now = clock.now()
    results = segment.apply_batch(
        db.session,
        to_apply,
        now=now,
        default_currency=settings.currency,
        unknown_members=ingest.UnknownMembers(settings.unknown_members),
        mapping=segment.mapping(db.session),
    )
    answers = []
    for i, result in enumerate(results):
        answer = {"index": i, "messageId": result.message_id, "status": result.status}
        if i in oversize:
            answer.update(status="rejected", field=None, reason="a message is at most 32 KB")
        elif result.status in ("rejected", "ignored") and (result.field or result.reason):
            answer.update(field=result.field, reason=result.reason)
        answers.append(answer)
    answers += [
        {"index": i, "status": "rejected", "reason": f"over {MAX_MESSAGES} messages"}
        for i in range(MAX_MESSAGES, len(messages))
    ]
    ingest.tally(
        db.session,
        (
            (a["status"], a.get("field"), a.get("reason"), a.get("messageId"))
            if a["status"] == "rejected"
            else (a["status"], None, None, None)
            for a in answers
        ),
        source="segment",
        day=clock.local_date(now),
        now=now,
    )
    db.session.commit()
    rejected = sum(a["status"] == "rejected" for a in answers)
    if rejected:
        log.warning(
            "segment: %d of %d messages rejected (key %s)", rejected, len(answers), key.prefix
        )
    counts: dict[str, int] = {}
    for answer in answers:
        counts[answer["status"]] = counts.get(answer["status"], 0) + 1
    return jsonify({"success": True, "counts": counts, "results": answers})


class _SegmentError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        self.status, self.code, self.message = status, code, message


def _abort(status: int, code: str, message: str):
    raise _SegmentError(status, code, message)


def _error(status: int, code: str, message: str):
    return problem(status, message, code=code, message=message)


@bp.errorhandler(_SegmentError)
def segment_error(exc: _SegmentError):
    return _error(exc.status, exc.code, exc.message)
