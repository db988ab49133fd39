"""One signed POST of a webhook delivery, per Standard Webhooks, and what came of it.
No database here: the caller records the outcome."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import email.utils
import json
import re
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import requests
import urllib3
from standardwebhooks import Webhook

TIMEOUT = 10.0  # seconds to connect, and again to the answer's first byte
USER_AGENT = "Tenure-Webhooks/1"
THROTTLED = frozenset({429, 502, 503, 504})  # Retry-After is honoured on these
LONGEST_WAIT = dt.timedelta(hours=6)  # a Retry-After beyond this is cut to it
_ERRNO = re.compile(r"\[Errno -?\d+\] [^'\")]+")


@dataclasses.dataclass
class Sent:
    """One attempt's outcome."""

    delivery_id: int
    at: dt.datetime
    status_code: int | None = None
    error: str | None = None
    duration_ms: int = 0
    retry_after: dt.timedelta | None = None

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300

    @property
    def endpoint_trouble(self) -> bool:
        """Down, overloaded, throttling or misdirected: not this payload's fault."""
        code = self.status_code
        return code is None or not 400 <= code < 500 or code in (408, 429)


def post(
    client: requests.Session,
    row: Any,
    secrets: Sequence[str],
    *,
    clock: Callable[[], dt.datetime],
    timeout: float = TIMEOUT,
) -> Sent:
    """One signed POST. The timestamp is taken (in UTC: ``sign`` drops any offset)
    just before the call, so a late attempt in a batch is still within tolerance."""
    body = json.dumps(
        {k: row.payload[k] for k in ("type", "timestamp", "data")},
        ensure_ascii=False,
        separators=(",", ":"),
    )
    at = clock().astimezone(dt.UTC)
    headers = {
        "webhook-id": row.event_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": " ".join(Webhook(s).sign(row.event_id, at, body) for s in secrets),
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
    }
    started = time.monotonic()
    sent = Sent(row.id, at)
    try:
        response = client.post(
            row.url,
            data=body.encode(),
            headers=headers,
            timeout=timeout,
            allow_redirects=False,
            stream=True,  # the status is the answer: a large body is not downloaded
        )
    except requests.Timeout:
        sent.error = f"no answer within {timeout:g} s"
    except requests.ConnectionError as exc:
        found = _ERRNO.search(str(exc))
        sent.error = "could not connect: " + (found.group(0) if found else type(exc).__name__)
    except requests.RequestException as exc:
        sent.error = f"{type(exc).__name__}: {exc}"[:500]
    else:
        with response:
            sent.status_code = response.status_code
            if not sent.ok:
                sent.error = _describe(response)
            if response.status_code in THROTTLED:
                sent.retry_after = retry_after(response.headers.get("Retry-After"), at)
    sent.duration_ms = int((time.monotonic() - started) * 1000)
    return sent


def retry_after(value: str | None, now: dt.datetime) -> dt.timedelta | None:
    """A Retry-After header (seconds or an HTTP date), within 1 s and LONGEST_WAIT."""
    if not value:
        return None
    value = value.strip()
    try:
        wait = dt.timedelta(seconds=int(value)) if value.isdigit() else None
        if wait is None:
            wait = email.utils.parsedate_to_datetime(value) - now
    except (TypeError, ValueError, OverflowError):
        return None
    return max(dt.timedelta(seconds=1), min(wait, LONGEST_WAIT))


def _describe(response: requests.Response) -> str:
    if response.is_redirect:
        where = response.headers.get("Location", "?")
        return f"HTTP {response.status_code} to {where}: redirects are not followed"
    try:  # the start of the answer, for the delivery log
        head = response.raw.read(200, decode_content=True) or b""
    except (OSError, urllib3.exceptions.HTTPError):
        head = b""  # the status is what counts
    text = " ".join(head.decode("utf-8", "replace").split())
    return f"HTTP {response.status_code}" + (f": {text}" if text else "")


@contextlib.contextmanager
def http_session(given: requests.Session | None) -> Iterator[requests.Session]:
    """The caller's requests session, or a new one closed afterwards."""
    if given is not None:
        yield given
        return
    with requests.Session() as own:
        yield own
