"""What the providers' HTTP calls share: reading ``Retry-After``, finding a header
whatever its case, and what a call without an answer means."""

from __future__ import annotations

import datetime as dt
import email.utils
from collections.abc import Mapping
from typing import Any

import requests

from journeys.providers.base import Outcome, Result


def retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value (delta-seconds or an HTTP date);
    None when absent or unreadable, so the caller's own backoff applies."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # an HTTP date is GMT by definition
        when = when.replace(tzinfo=dt.UTC)
    return max(0.0, (when - dt.datetime.now(dt.UTC)).total_seconds())


def header(headers: Mapping[str, Any], name: str) -> str:
    """A header's value from a plain dict or a werkzeug ``Headers``, case-blind."""
    value = headers.get(name)
    if value is None:
        wanted = name.lower()
        value = next((v for k, v in headers.items() if k.lower() == wanted), "")
    return str(value)


# Answers after which the provider may have sent the message all the same (a gateway
# timing out behind it, an error after accepting): retrying could send it twice.
MAYBE_SENT = frozenset({500, 502, 504})


def no_answer(exc: BaseException) -> Outcome:
    """A call that got no answer: safe to retry when the request never left (the
    connection was refused or never made), uncertain otherwise (it may have arrived)."""
    never_left = isinstance(exc, requests.ConnectTimeout) or (
        isinstance(exc, requests.ConnectionError) and "NewConnectionError" in repr(exc)
    )
    return Outcome(Result.RETRY, error=f"no answer: {type(exc).__name__}", uncertain=not never_left)
