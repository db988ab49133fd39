"""Bearer API keys: who is calling, and may they do this?"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
from collections.abc import Callable
from typing import Any

from flask import g, request
from flask_smorest import abort

from app import clock
from app.auth.models import ApiKey, Scope
from app.auth.service import find_api_key
from app.extensions import db

# last_used_at is written at most this often per key, not on every request.
LAST_USED_RESOLUTION = dt.timedelta(seconds=60)
BEARER_DOC = {"security": [{"bearerAuth": []}]}


def require_scope(*scopes: Scope) -> Callable:
    """Refuse the request unless it carries a live API key holding one of ``scopes``
    (admin holds them all)."""
    wanted = {*scopes, Scope.ADMIN}
    names = " or ".join(f"'{s.value}'" for s in scopes)

    def decorator(view: Callable) -> Callable:
        @functools.wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            key = authenticate_request()
            if not wanted & key.scope_set:
                abort(403, message=f"this API key lacks the {names} scope")
            return view(*args, **kwargs)

        return wrapper

    return decorator


def authenticate_request() -> ApiKey:
    header = request.headers.get("Authorization", "")
    scheme, _, secret = header.partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        _unauthorized("send an API key as 'Authorization: Bearer <key>'")
    key = find_api_key(db.session, secret.strip())
    if key is None:
        _unauthorized("unknown API key")
    if key.is_revoked:
        _unauthorized("this API key has been revoked")
    now = clock.now()
    if key.last_used_at is None or now - key.last_used_at > LAST_USED_RESOLUTION:
        key.last_used_at = now
        db.session.commit()
    g.api_key = key
    return key


def api_key_identity() -> str:
    """What API rate limits count by: the key sent (hashed), else the client address."""
    scheme, _, secret = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and secret.strip():
        return "key:" + hashlib.sha256(secret.strip().encode()).hexdigest()[:24]
    return "addr:" + (request.remote_addr or "-")


def _unauthorized(message: str) -> None:
    abort(401, message=message, headers={"WWW-Authenticate": 'Bearer realm="tenure"'})


def api_actor() -> str:
    key: ApiKey = g.api_key
    return f"api_key:{key.name}({key.prefix})"
