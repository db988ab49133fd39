"""The small interface every provider implements, and the values that cross it.

A provider is built from an account's settings and decrypted secrets. Delivery hands
it messages already past the send policies, and gets one ``Outcome`` per message. A
provider never touches the database: what it answers is recorded by delivery.

Receipts and replies come back through ``receipts``/``replies``, which take the
request as plain values (the web layer passes them in) and raise ``BadSignature``
when the request is not the provider's.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar

log = logging.getLogger(__name__)

# Seconds a provider call may take before it counts as a transient failure.
TIMEOUT = 10.0


class Result(enum.StrEnum):
    SENT = "sent"  # accepted; a receipt will say whether it arrived
    DELIVERED = "delivered"  # arrived (providers that know at once: console, webhook)
    RETRY = "retry"  # transient (timeout, 5xx, throttled): try again later
    FAILED = "failed"  # permanent (bad number, bad credentials, refused content)


@dataclasses.dataclass(frozen=True)
class Outgoing:
    """One message as a provider needs it."""

    message_id: int
    dedup_key: str  # unique per message; providers that echo an id back get this
    channel: str  # "sms", "push" or "webhook"
    to: str  # an E.164 phone number, a push token or registration id, or a URL
    body: str  # for SMS: the full text, signature and opt-out included
    title: str | None = None
    deep_link: str | None = None
    # Providers of approved templates (Alibaba): the template's code and variables.
    template_code: str | None = None
    params: Mapping[str, Any] | None = None
    # Extra data for push payloads and webhook bodies (the member's external id...).
    data: Mapping[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Outcome:
    result: Result
    provider_message_id: str | None = None
    # The provider's own words: "isv.MOBILE_NUMBER_ILLEGAL: invalid number", "HTTP 503".
    error: str | None = None
    # Seconds the provider asked us to wait (Retry-After), for RETRY.
    retry_after: float | None = None
    # The push token is dead (FCM UNREGISTERED, JPush 1011): clear it from the member.
    token_gone: bool = False
    # For RETRY: the request may have reached the provider (a read timeout, a
    # connection cut mid-answer), so sending again could send twice.
    uncertain: bool = False


@dataclasses.dataclass(frozen=True)
class Field:
    """A setting of an account, as the settings page and API ask for it."""

    name: str
    label: str
    secret: bool = False  # stored encrypted, never shown back
    required: bool = True
    help: str = ""
    default: str | None = None


@dataclasses.dataclass(frozen=True)
class Report:
    """A delivery receipt, read from a provider's callback."""

    event_key: str  # the provider's identity of this report, for de-duplication
    status: str  # "delivered" or "failed" (or "sent" for an intermediate state)
    provider_message_id: str | None = None
    dedup_key: str | None = None  # when the provider echoes our id (Alibaba's out_id)
    error_code: str | None = None
    detail: Mapping[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Reply:
    """An SMS a member sent back."""

    provider_message_id: str
    phone: str  # E.164
    body: str


@dataclasses.dataclass(frozen=True)
class Callback:
    """An HTTP request from a provider, as plain values."""

    url: str  # the full URL the provider called (what Twilio signs)
    headers: Mapping[str, str]
    form: Mapping[str, Any]  # a werkzeug MultiDict works; parsed form fields
    body: bytes


class BadSignature(Exception):
    """The callback is not signed by the provider (or cannot be read at all)."""


class Provider:
    """Base class: subclasses set the class attributes and implement ``send_one``
    (or ``send`` when the provider takes batches)."""

    kind: ClassVar[str]
    channel: ClassVar[str]  # "sms", "push" or "webhook"
    label: ClassVar[str]
    # PIPL art. 39: the provider stores data outside mainland China (Twilio, FCM).
    cross_border: ClassVar[bool] = False
    # Sending the same message twice is harmless (the receiver de-duplicates on an id
    # we send), so a call cut off mid-way may be retried.
    idempotent: ClassVar[bool] = False
    # Calls made at once from one worker.
    concurrency: ClassVar[int] = 8
    fields: ClassVar[tuple[Field, ...]] = ()

    def __init__(self, settings: Mapping[str, Any], secrets: Mapping[str, Any]) -> None:
        self.settings = dict(settings)
        self.secrets = dict(secrets)
        self._pool: ThreadPoolExecutor | None = None

    def check(self) -> None:
        """Raise ValueError naming what is wrong with the settings (a service account
        JSON that is not one, a URL that is not a URL); called when an account is saved."""

    def send_one(self, message: Outgoing) -> Outcome:
        raise NotImplementedError

    def send(self, messages: Sequence[Outgoing]) -> list[Outcome]:
        """One outcome per message, in order. Never raises for a provider's answer:
        errors become outcomes."""
        if len(messages) <= 1 or self.concurrency <= 1:
            return [self._guarded(message) for message in messages]
        if self._pool is None:  # kept: starting threads for every chunk costs more
            self._pool = ThreadPoolExecutor(max_workers=self.concurrency)
        return list(self._pool.map(self._guarded, messages))

    def _guarded(self, message: Outgoing) -> Outcome:
        """``send_one``, and a bug or a surprise in it an outcome of that message alone,
        not the end of its batch (whether it went is then unknown)."""
        try:
            return self.send_one(message)
        except Exception as exc:
            log.exception(
                "%s: sending message %s failed unexpectedly", self.kind, message.message_id
            )
            return Outcome(Result.RETRY, error=f"unexpected: {type(exc).__name__}", uncertain=True)

    def receipts(self, callback: Callback) -> list[Report]:
        """Delivery receipts in a callback (BadSignature if it is not genuine)."""
        raise BadSignature(f"{self.label} sends no delivery receipts here")

    def replies(self, callback: Callback) -> list[Reply]:
        """Inbound SMS in a callback (BadSignature if it is not genuine)."""
        raise BadSignature(f"{self.label} sends no replies here")

    def receipt_answer(self) -> tuple[Any, int]:
        """What the provider expects back from a receipt callback: (body, status)."""
        return "", 204
