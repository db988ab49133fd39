"""Posting webhook deliveries, signed per Standard Webhooks, with no transaction open
while an endpoint is called.

1. ``claim`` takes due deliveries under a lease (``FOR UPDATE SKIP LOCKED`` on
   PostgreSQL); the caller commits. A lease that runs out (its worker died) makes the
   delivery due again: it may then be posted twice, which receivers expect (they
   de-duplicate on ``webhook-id``, the same on every attempt).
2. ``send`` posts them one by one, each attempt logged and committed as it ends: 2xx
   is delivered; 410 disables the endpoint; anything else is retried with exponential
   backoff (or after the ``Retry-After`` the endpoint asked for) until the delivery
   is GIVE_UP_AFTER old, when it fails with the last error.

An endpoint in trouble (no answer, 3xx, 408, 429, 5xx) is probed by one delivery at a
time: its other deliveries wait until that one's next attempt, keeping their order,
and are all made due again the moment the endpoint answers 2xx, oldest first. (A
delivery emitted during the trouble is tried once before it joins them, so a down
endpoint sees about one request a minute while events keep coming.) A payload the
receiver refuses (another 4xx) keeps its own backoff and holds up nothing.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import logging
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import requests
from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.orm import Session

from journeys import webhook_endpoints as endpoints
from journeys.vault import SecretUnreadable, Vault
from journeys.webhook_models import DeliveryStatus, WebhookAttempt, WebhookDelivery, WebhookEndpoint
from journeys.webhook_post import TIMEOUT, Sent, http_session, post
from journeys.webhooks_out import iso

log = logging.getLogger(__name__)

BATCH = 100
LEASE = dt.timedelta(minutes=5)
BACKOFF_FIRST = dt.timedelta(seconds=30)
BACKOFF_MOST = dt.timedelta(hours=6)
GIVE_UP_AFTER = dt.timedelta(hours=24)
GONE = "the endpoint answered 410 Gone"
_d = WebhookDelivery


@dataclasses.dataclass
class Claim:
    ids: list[int]
    lease: dt.datetime | None = None


@dataclasses.dataclass
class SendResult:
    claimed: int = 0
    delivered: int = 0
    retrying: int = 0
    failed: int = 0
    postponed: int = 0  # not attempted: their endpoint failed just before, or time ran out

    def add(self, other: SendResult) -> None:
        for field in dataclasses.fields(self):
            setattr(self, field.name, getattr(self, field.name) + getattr(other, field.name))

    def summary(self) -> str:
        return (
            f"{self.claimed} claimed, {self.delivered} delivered, {self.retrying} to retry, "
            f"{self.failed} failed, {self.postponed} postponed"
        )


def claim(
    session: Session, *, now: dt.datetime, limit: int = BATCH, lease: dt.timedelta = LEASE
) -> Claim:
    """Claim up to ``limit`` due deliveries of active endpoints, oldest due first (the
    caller commits). A claim whose lease ran out is due again."""
    free = or_(_d.claimed_until.is_(None), _d.claimed_until <= now)
    query = (
        select(_d.id)
        .join(WebhookEndpoint, WebhookEndpoint.id == _d.endpoint_id)
        .where(
            _d.status == DeliveryStatus.PENDING,
            _d.next_attempt_at <= now,
            free,
            WebhookEndpoint.active.is_(True),
        )
        .order_by(_d.next_attempt_at, _d.id)
        .limit(limit)
    )
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True, of=WebhookDelivery)
    ids = list(session.scalars(query))
    if not ids:
        return Claim([])
    until = now + lease
    # The conditions again: on SQLite the SELECT above ran before this transaction
    # took the write lock, and another worker may have claimed some in between.
    ours = session.scalars(
        update(_d)
        .where(_d.id.in_(ids), _d.status == DeliveryStatus.PENDING, free)
        .values(claimed_until=until)
        .returning(_d.id)
        .execution_options(synchronize_session=False)
    ).all()
    order = {delivery_id: i for i, delivery_id in enumerate(ids)}
    return Claim(sorted(ours, key=order.__getitem__), until)


def deliver_due(
    session: Session,
    *,
    now: dt.datetime,
    vault: Vault,
    clock: Callable[[], dt.datetime],
    commit: Callable[[], None],
    http: requests.Session | None = None,
    limit: int = BATCH,
    timeout: float = TIMEOUT,
    deadline: dt.datetime | None = None,
) -> SendResult:
    """Claim a batch, commit, and post it (see ``send``)."""
    claimed = claim(session, now=now, limit=limit)
    commit()
    return send(
        session,
        claimed,
        vault=vault,
        clock=clock,
        commit=commit,
        http=http,
        timeout=timeout,
        deadline=deadline,
    )


def send(
    session: Session,
    claimed: Claim,
    *,
    vault: Vault,
    clock: Callable[[], dt.datetime],
    commit: Callable[[], None],
    http: requests.Session | None = None,
    timeout: float = TIMEOUT,
    deadline: dt.datetime | None = None,
) -> SendResult:
    """Post the claimed deliveries in claim order, each attempt recorded and committed
    as it ends; no transaction is open during a call. After an endpoint's trouble its
    other deliveries wait for the next probe; at ``deadline`` the rest are released."""
    result = SendResult(claimed=len(claimed.ids))
    if claimed.lease is not None:  # stop well before another worker may take them
        margin = dt.timedelta(seconds=2 * timeout)
        deadline = min(deadline or claimed.lease, claimed.lease - margin)
    rows = _load(session, claimed.ids, claimed.lease)
    signing = _secrets(session, rows, vault, clock())
    commit()  # end the read: nothing is held while endpoints answer
    troubled: set[int] = set()
    recovered: set[int] = set()
    left: list[int] = []
    with http_session(http) as client:
        for row in rows:
            if row.endpoint_id in troubled or (deadline is not None and clock() >= deadline):
                left.append(row.id)
                continue
            secrets = signing[row.endpoint_id]
            if isinstance(secrets, str):  # the secret cannot be read
                sent = Sent(row.id, clock(), error=secrets)
            else:
                sent = post(client, row, secrets, clock=clock, timeout=timeout)
            _record(session, row, sent, claimed.lease, result)
            if sent.ok and row.endpoint_id not in recovered:
                recovered.add(row.endpoint_id)
                _release_waiting(session, row.endpoint_id, sent.at, claimed.lease)
            elif sent.status_code == 410 or (not sent.ok and sent.endpoint_trouble):
                troubled.add(row.endpoint_id)
            commit()
    if left:
        released = session.execute(
            update(_d)
            .where(_d.id.in_(left), _d.status == DeliveryStatus.PENDING)
            .where(_d.claimed_until == claimed.lease)
            .values(claimed_until=None)
            .execution_options(synchronize_session=False)
        )
        result.postponed += released.rowcount
        commit()
    return result


def send_test(
    session: Session,
    endpoint_id: int,
    *,
    now: dt.datetime,
    vault: Vault,
    clock: Callable[[], dt.datetime],
    commit: Callable[[], None],
    http: requests.Session | None = None,
    timeout: float = TIMEOUT,
) -> Sent:
    """Send a ``webhook.test`` event to one endpoint (active or not) right away and
    return the attempt's outcome; it is logged like any delivery but never retried."""
    endpoint = endpoints.get(session, endpoint_id)
    event_id = "msg_" + uuid.uuid4().hex
    data = {"endpoint": str(endpoint.id), "message": "A test event from Tenure"}
    delivery = WebhookDelivery(
        endpoint_id=endpoint.id,
        event_id=event_id,
        event_type=endpoints.TEST_EVENT,
        payload={"type": endpoints.TEST_EVENT, "timestamp": iso(now), "data": data},
        status=DeliveryStatus.PENDING,
        next_attempt_at=now,
        claimed_until=now + LEASE,  # the delivery jobs leave it to this call
        created_at=now,
    )
    session.add(delivery)
    session.flush()
    lease = delivery.claimed_until
    row = _load(session, [delivery.id], lease)[0]
    signing = _secrets(session, [row], vault, now)[endpoint.id]
    commit()
    if isinstance(signing, str):
        sent = Sent(row.id, clock(), error=signing)
    else:
        with http_session(http) as client:
            sent = post(client, row, signing, clock=clock, timeout=timeout)
    _record(session, row, sent, lease, SendResult())
    commit()
    return sent


def backoff(attempts: int, delivery_id: int) -> dt.timedelta:
    """30 s, 1 min, 2 min... up to 6 h, spread by ±20% so that a backlog does not
    return all at once; the spread is a hash, so a retry's time is reproducible."""
    wait = min(BACKOFF_FIRST * 2 ** max(attempts - 1, 0), BACKOFF_MOST)
    digest = hashlib.sha256(f"{delivery_id}:{attempts}".encode()).digest()
    return wait * (0.8 + 0.4 * digest[0] / 255)


def _load(session: Session, ids: Sequence[int], lease: dt.datetime | None) -> list[Any]:
    if not ids:
        return []
    e = WebhookEndpoint
    rows = session.execute(
        select(
            _d.id,
            _d.endpoint_id,
            _d.event_id,
            _d.event_type,
            _d.payload,
            _d.attempts,
            _d.created_at,
            e.url,
            e.secret_encrypted,
        )
        .join(e, e.id == _d.endpoint_id)
        .where(_d.id.in_(list(ids)), _d.status == DeliveryStatus.PENDING, _d.claimed_until == lease)
    ).all()
    order = {delivery_id: i for i, delivery_id in enumerate(ids)}
    return sorted(rows, key=lambda row: order[row.id])


def _secrets(
    session: Session, rows: Sequence[Any], vault: Vault, now: dt.datetime
) -> dict[int, list[str] | str]:
    """Per endpoint: its signing secrets, or why they cannot be read."""
    found: dict[int, list[str] | str] = {}
    for row in rows:
        if row.endpoint_id not in found:
            try:
                found[row.endpoint_id] = endpoints.signing_secrets(row.secret_encrypted, vault, now)
            except SecretUnreadable as exc:
                found[row.endpoint_id] = f"{exc} (rotate the endpoint's secret)"
    return found


def _record(
    session: Session, row: Any, sent: Sent, lease: dt.datetime | None, result: SendResult
) -> None:
    session.add(
        WebhookAttempt(
            delivery_id=row.id,
            at=sent.at,
            status_code=sent.status_code,
            error=(sent.error or None) and sent.error[:500],
            duration_ms=sent.duration_ms,
        )
    )
    attempts = row.attempts + 1
    values: dict[str, Any] = {
        "attempts": attempts,
        "last_status_code": sent.status_code,
        "claimed_until": None,
    }
    if sent.ok:
        values.update(
            status=DeliveryStatus.DELIVERED,
            delivered_at=sent.at,
            next_attempt_at=None,
            last_error=None,
        )
        result.delivered += 1
    elif sent.status_code == 410:
        values.update(status=DeliveryStatus.FAILED, next_attempt_at=None, last_error=GONE)
        result.failed += 1
    elif row.event_type == endpoints.TEST_EVENT:
        values.update(status=DeliveryStatus.FAILED, next_attempt_at=None, last_error=sent.error)
        result.failed += 1
    elif sent.at >= row.created_at + GIVE_UP_AFTER:
        hours = GIVE_UP_AFTER.total_seconds() / 3600
        error = f"gave up after {attempts} attempts in {hours:g} h; the last: {sent.error}"
        values.update(status=DeliveryStatus.FAILED, next_attempt_at=None, last_error=error[:500])
        result.failed += 1
        log.info("webhook delivery %s to endpoint %s failed: %s", row.id, row.endpoint_id, error)
    else:
        wait = sent.retry_after or backoff(attempts, row.id)
        due = min(sent.at + wait, row.created_at + GIVE_UP_AFTER)
        if sent.endpoint_trouble:
            due = max(due, _probe_time(session, row, lease) or due)
        values.update(next_attempt_at=due, last_error=sent.error)
        result.retrying += 1
    session.execute(
        update(_d)
        .where(_d.id == row.id, _d.status == DeliveryStatus.PENDING)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    if sent.status_code == 410:
        endpoints.disable(session, row.endpoint_id, reason=GONE, now=sent.at)
        log.info("webhook endpoint %s answered 410 Gone: disabled", row.endpoint_id)
    elif "status" not in values and sent.endpoint_trouble:  # retrying: the others wait
        _wait_for_probe(session, row, values["next_attempt_at"], sent.at, lease)


def _probe_time(session: Session, row: Any, lease: dt.datetime | None) -> dt.datetime | None:
    """When the endpoint's earlier failing deliveries try again: a newer delivery that
    fails the same way joins them rather than probing on a schedule of its own."""
    return session.scalar(
        select(func.max(_d.next_attempt_at)).where(
            _d.endpoint_id == row.endpoint_id,
            _d.status == DeliveryStatus.PENDING,
            _d.attempts > 0,
            _d.id != row.id,
            _trouble(),
        )
    )


def _trouble():
    """Deliveries waiting because of their endpoint (as ``Sent.endpoint_trouble``), or
    never tried: not those whose payload the receiver refused (4xx)."""
    code = _d.last_status_code
    return or_(code.is_(None), ~and_(code >= 400, code < 500), code.in_((408, 429)))


def _unclaimed(now: dt.datetime, lease: dt.datetime | None):
    return or_(_d.claimed_until.is_(None), _d.claimed_until <= now, _d.claimed_until == lease)


def _wait_for_probe(
    session: Session, row: Any, due: dt.datetime, now: dt.datetime, lease: dt.datetime | None
) -> None:
    """The endpoint is in trouble: its other deliveries wait for this one's next try."""
    session.execute(
        update(_d)
        .where(
            _d.endpoint_id == row.endpoint_id,
            _d.status == DeliveryStatus.PENDING,
            _d.id != row.id,
            _d.next_attempt_at < due,
            _trouble(),
            _unclaimed(now, lease),
        )
        .values(next_attempt_at=due)
        .execution_options(synchronize_session=False)
    )


def _release_waiting(
    session: Session, endpoint_id: int, now: dt.datetime, lease: dt.datetime | None
) -> None:
    """The endpoint answers again: what waited because of its trouble is due now (a
    delivery its receiver refused, 4xx, keeps its own backoff)."""
    session.execute(
        update(_d)
        .where(
            _d.endpoint_id == endpoint_id,
            _d.status == DeliveryStatus.PENDING,
            _d.next_attempt_at > now,
            _trouble(),
            _unclaimed(now, lease),
        )
        .values(next_attempt_at=now)
        .execution_options(synchronize_session=False)
    )
