"""Engineers' webhook endpoints: an HTTPS address subscribed to event types, with a
Standard Webhooks signing secret (``whsec_`` + base64) sealed in the vault and shown
to its creator once; and the delivery log that the page and the API read.

A rotated secret keeps the previous one signing beside it for ROTATION_GRACE (the
``webhook-signature`` header carries both), so that receivers can switch without
dropping a delivery.
"""

from __future__ import annotations

import base64
import datetime as dt
import secrets
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any
from urllib.parse import urlsplit

import sqlalchemy as sa
from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from journeys.vault import SecretUnreadable, Vault
from journeys.webhook_models import DeliveryStatus, WebhookAttempt, WebhookDelivery, WebhookEndpoint
from members import audit
from members.errors import InvalidFields, NotFound

EVENT_TYPES = (
    "member.stage_changed",
    "member.tier_changed",
    "benefit.granted",
    "message.status",
    "journey.converted",
    "experiment.assigned",
)
# Sent by "Send test event" only: no endpoint subscribes to it.
TEST_EVENT = "webhook.test"
SECRET_PREFIX = "whsec_"  # noqa: S105 (the format's prefix, not a secret)
ROTATION_GRACE = dt.timedelta(hours=24)
MAX_URL = 2000
MAX_DESCRIPTION = 500


class _Unset:
    def __repr__(self) -> str:
        return "UNSET"


UNSET: Any = _Unset()  # an update's "leave this as it is"


def new_secret() -> str:
    """A signing secret as Standard Webhooks libraries read it: whsec_ + 24 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(24)).decode()


def types_of(endpoint: WebhookEndpoint) -> list[str]:
    return list((endpoint.event_types or {}).get("types", []))


def get(session: Session, endpoint_id: int) -> WebhookEndpoint:
    endpoint = session.get(WebhookEndpoint, endpoint_id)
    if endpoint is None:
        raise NotFound("webhook endpoint", str(endpoint_id))
    return endpoint


def create(
    session: Session,
    *,
    url: str,
    event_types: Sequence[str],
    description: str | None = None,
    vault: Vault,
    actor: str,
    now: dt.datetime,
) -> tuple[WebhookEndpoint, str]:
    """Subscribe an endpoint; returns it and its secret, which is never shown again."""
    errors: dict[str, str] = {}
    url = _check_url(url, errors)
    types = _check_types(event_types, errors)
    description = _check_description(description, errors)
    if errors:
        raise InvalidFields(errors)
    secret = new_secret()
    endpoint = WebhookEndpoint(
        url=url,
        description=description,
        secret_encrypted=vault.seal({"current": secret}),
        event_types={"types": types},
        active=True,
        created_at=now,
        created_by=actor[:320],
    )
    session.add(endpoint)
    session.flush()
    _audit(session, "webhook.created", endpoint, actor, now)
    return endpoint, secret


def update(
    session: Session,
    endpoint: WebhookEndpoint,
    *,
    url: str = UNSET,
    event_types: Sequence[str] = UNSET,
    description: str | None = UNSET,
    active: bool = UNSET,
    actor: str,
    now: dt.datetime,
) -> WebhookEndpoint:
    """Change what was given. Disabling pauses the endpoint's deliveries (they wait,
    pending); enabling again resumes them and clears why it was disabled."""
    errors: dict[str, str] = {}
    if url is not UNSET:
        url = _check_url(url, errors)
    if event_types is not UNSET:
        event_types = _check_types(event_types, errors)
    if description is not UNSET:
        description = _check_description(description, errors)
    if active is not UNSET and not isinstance(active, bool):
        errors["active"] = "true or false"
    if errors:
        raise InvalidFields(errors)
    if url is not UNSET:
        endpoint.url = url
    if event_types is not UNSET:
        endpoint.event_types = {"types": event_types}
    if description is not UNSET:
        endpoint.description = description
    if active is not UNSET and active != endpoint.active:
        endpoint.active = active
        if active:
            endpoint.disabled_at = endpoint.disabled_reason = None
        else:
            endpoint.disabled_at = now
            endpoint.disabled_reason = f"disabled by {actor}"[:200]
    if session.is_modified(endpoint):  # an update that changes nothing leaves no trace
        session.flush()
        _audit(session, "webhook.updated", endpoint, actor, now)
    return endpoint


def disable(session: Session, endpoint_id: int, *, reason: str, now: dt.datetime) -> None:
    """Stop delivering to an endpoint that asked for it (410 Gone): it is disabled and
    every delivery still waiting for it fails with the reason."""
    session.execute(
        sa.update(WebhookEndpoint)
        .where(WebhookEndpoint.id == endpoint_id)
        .values(active=False, disabled_at=now, disabled_reason=reason[:200])
        .execution_options(synchronize_session="fetch")
    )
    d = WebhookDelivery
    session.execute(
        sa.update(d)
        .where(d.endpoint_id == endpoint_id, d.status == DeliveryStatus.PENDING)
        .values(status=DeliveryStatus.FAILED, last_error=reason[:500], claimed_until=None)
        .execution_options(synchronize_session=False)
    )


def rotate_secret(
    session: Session, endpoint: WebhookEndpoint, *, vault: Vault, actor: str, now: dt.datetime
) -> str:
    """A new secret, returned once; the old one still signs for ROTATION_GRACE. Also
    the way out when SECRET_KEY changed and the old secret cannot be read."""
    secret = new_secret()
    until = now + ROTATION_GRACE
    try:
        old = vault.open(endpoint.secret_encrypted)["current"]
    except SecretUnreadable:
        old = None
    sealed: dict[str, Any] = {"current": secret}
    if old:
        sealed.update(previous=old, previous_until=until.isoformat())
    endpoint.secret_encrypted = vault.seal(sealed)
    session.flush()
    _audit(session, "webhook.secret_rotated", endpoint, actor, now, previous_valid_until=until)
    return secret


def signing_secrets(sealed: str, vault: Vault, now: dt.datetime) -> list[str]:
    """The secrets a delivery is signed with now: the current one, and the previous one
    while its grace lasts. Raises SecretUnreadable when SECRET_KEY changed."""
    value = vault.open(sealed)
    found = [value["current"]]
    until = value.get("previous_until")
    if value.get("previous") and until and now < dt.datetime.fromisoformat(until):
        found.append(value["previous"])
    return found


def delete(session: Session, endpoint: WebhookEndpoint, *, actor: str, now: dt.datetime) -> None:
    """Remove an endpoint with its deliveries and their log."""
    _audit(session, "webhook.deleted", endpoint, actor, now)
    session.delete(endpoint)
    session.flush()


def _audit(
    session: Session,
    action: str,
    endpoint: WebhookEndpoint,
    actor: str,
    now: dt.datetime,
    **extra: Any,
) -> None:
    details: dict[str, Any] = {
        "url": endpoint.url,
        "event_types": types_of(endpoint),
        "active": endpoint.active,
    }
    details.update(
        {k: v.isoformat() if isinstance(v, dt.datetime) else v for k, v in extra.items()}
    )
    audit.record(
        session,
        actor=actor,
        action=action,
        target_type="webhook_endpoint",
        target_id=endpoint.id,
        details=details,
        now=now,
    )


def _check_url(url: Any, errors: dict[str, str]) -> str:
    if not isinstance(url, str) or not url.strip():
        errors["url"] = "give the endpoint's address, e.g. https://example.com/webhooks/tenure"
        return ""
    url = url.strip()
    if len(url) > MAX_URL:
        errors["url"] = f"at most {MAX_URL} characters"
        return url
    try:
        parts = urlsplit(url)
        port_ok = parts.port is None or parts.port > 0
    except ValueError:
        parts, port_ok = None, False
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname or not port_ok:
        errors["url"] = "an http:// or https:// address with a host"
    elif any(c.isspace() or ord(c) < 32 for c in url):
        errors["url"] = "no spaces or control characters"
    elif parts.username or parts.password:
        errors["url"] = "no user name or password in the address: verify the signature instead"
    return url


def _check_types(event_types: Any, errors: dict[str, str]) -> list[str]:
    if isinstance(event_types, str) or not isinstance(event_types, Iterable):
        errors["event_types"] = "a list of event types"
        return []
    given = list(event_types)
    unknown = [t for t in given if t not in EVENT_TYPES]
    if unknown:
        errors["event_types"] = f"unknown: {', '.join(map(str, unknown))}; known: " + ", ".join(
            EVENT_TYPES
        )
    elif not given:
        errors["event_types"] = "subscribe to at least one event type"
    return [t for t in EVENT_TYPES if t in given]  # known order, no repeats


def _check_description(description: Any, errors: dict[str, str]) -> str | None:
    if description is None:
        return None
    if not isinstance(description, str):
        errors["description"] = "text"
        return None
    description = description.strip()
    if len(description) > MAX_DESCRIPTION:
        errors["description"] = f"at most {MAX_DESCRIPTION} characters"
    return description or None


# -- the delivery log


def deliveries(endpoint_id: int, status: DeliveryStatus | None = None) -> Select:
    """An endpoint's deliveries, newest first (optionally of one status)."""
    d = WebhookDelivery
    query = select(d).where(d.endpoint_id == endpoint_id).order_by(d.created_at.desc(), d.id.desc())
    if status is not None:
        query = query.where(d.status == status)
    return query


def attempts_of(session: Session, delivery_ids: Sequence[int]) -> dict[int, list[WebhookAttempt]]:
    """Each delivery's attempts, oldest first: one query for a page of deliveries."""
    found: dict[int, list[WebhookAttempt]] = defaultdict(list)
    if delivery_ids:
        a = WebhookAttempt
        query = select(a).where(a.delivery_id.in_(list(delivery_ids))).order_by(a.at, a.id)
        for attempt in session.scalars(query):
            found[attempt.delivery_id].append(attempt)
    return found


def status_counts(session: Session, endpoint_ids: Sequence[int]) -> dict[int, dict[str, int]]:
    """Per endpoint: how many deliveries are pending, delivered and failed."""
    counts: dict[int, dict[str, int]] = {
        i: {s.value: 0 for s in DeliveryStatus} for i in endpoint_ids
    }
    if endpoint_ids:
        d = WebhookDelivery
        query = (
            select(d.endpoint_id, d.status, func.count())
            .where(d.endpoint_id.in_(list(endpoint_ids)))
            .group_by(d.endpoint_id, d.status)
        )
        for endpoint_id, status, n in session.execute(query):
            counts[endpoint_id][DeliveryStatus(status).value] = n
    return counts
