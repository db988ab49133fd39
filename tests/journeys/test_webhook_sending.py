"""Webhooks out, the sending side, against a real local HTTP receiver: signed so that
``standardwebhooks`` verifies it; retried with backoff or after Retry-After; given up
after a day; 410 disables the endpoint; an endpoint down for hours gets everything,
once each and in order, when it is back; a lease that ran out is due again; two
claims never take the same delivery."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from sqlalchemy import select
from standardwebhooks import Webhook

from app.extensions import db
from journeys import webhook_endpoints as endpoints
from journeys import webhook_sending as sending
from journeys import webhooks_out
from journeys.vault import Vault
from journeys.webhook_models import WebhookAttempt, WebhookDelivery, WebhookEndpoint
from journeys.webhook_post import retry_after
from tests.webhook_receiver import Receiver, closed_port_url

VAULT = Vault("w" * 32)


@pytest.fixture
def receiver():
    server = Receiver().start()
    yield server
    server.stop()


def _endpoint(session, now, url, types=("benefit.granted",)):
    return endpoints.create(
        session, url=url, event_types=list(types), vault=VAULT, actor="test", now=now
    )


def _emit(session, now, n=1, start=0):
    for i in range(start, start + n):
        webhooks_out.emit(session, "benefit.granted", {"n": i}, now, key=f"g{i}")
    session.commit()


def _deliver(session, now, **kw):
    result = sending.deliver_due(
        session,
        now=now,
        vault=VAULT,
        clock=kw.pop("clock", lambda: now),
        commit=session.commit,
        timeout=kw.pop("timeout", 2),
        **kw,
    )
    session.expire_all()
    return result


def _rows(session):
    return session.scalars(select(WebhookDelivery).order_by(WebhookDelivery.id)).all()


def _attempts(session, delivery_id):
    query = select(WebhookAttempt).where(WebhookAttempt.delivery_id == delivery_id)
    return session.scalars(query.order_by(WebhookAttempt.id)).all()


def test_a_delivery_is_signed_so_that_the_receiver_verifies_it(session, receiver):
    now = dt.datetime.now(dt.UTC)  # the receiver checks the timestamp against its clock
    endpoint, secret = _endpoint(session, now, receiver.url)
    webhooks_out.emit(session, "benefit.granted", {"member": "u-1", "code": "券-1"}, now, key="g")
    session.commit()
    shanghai = dt.timezone(dt.timedelta(hours=8))
    result = _deliver(session, now, clock=lambda: dt.datetime.now(shanghai))
    assert result.delivered == 1
    (got,) = receiver.received
    assert Webhook(secret).verify(got.body, got.headers) == {
        "type": "benefit.granted",
        "timestamp": webhooks_out.iso(now),
        "data": {"member": "u-1", "code": "券-1"},
    }
    assert got.headers["webhook-id"] == webhooks_out.event_id("benefit.granted", "g")
    assert abs(int(got.headers["webhook-timestamp"]) - now.timestamp()) < 60
    assert got.headers["content-type"] == "application/json"
    assert got.headers["user-agent"] == "Tenure-Webhooks/1"
    (row,) = _rows(session)
    assert row.status == "delivered" and row.attempts == 1 and row.last_status_code == 204
    (attempt,) = _attempts(session, row.id)
    assert attempt.status_code == 204 and attempt.error is None and attempt.duration_ms >= 0

    # After a rotation both secrets sign, so receivers switch without a gap.
    new = endpoints.rotate_secret(session, endpoint, vault=VAULT, actor="t", now=now)
    webhooks_out.emit(session, "benefit.granted", {}, now, key="g2")
    session.commit()
    _deliver(session, now, clock=lambda: dt.datetime.now(dt.UTC))
    last = receiver.received[-1]
    assert len(last.headers["webhook-signature"].split(" ")) == 2
    for key in (secret, new):
        Webhook(key).verify(last.body, last.headers)


def test_failures_back_off_exponentially_and_honour_retry_after(session, now, receiver):
    _endpoint(session, now, receiver.url)
    _emit(session, now)
    receiver.answer(500, "database is down")
    receiver.answer(503, "", {"Retry-After": "120"})
    receiver.answer(429, "", {"Retry-After": "Mon, 23 Nov 2026 06:30:00 GMT"})
    assert _deliver(session, now).retrying == 1
    (row,) = _rows(session)
    assert row.status == "pending" and row.attempts == 1 and row.last_status_code == 500
    assert row.last_error == "HTTP 500: database is down"
    wait = row.next_attempt_at - now
    assert dt.timedelta(seconds=24) <= wait <= dt.timedelta(seconds=36)
    assert _deliver(session, now + dt.timedelta(seconds=20)).claimed == 0  # not yet due
    second = row.next_attempt_at
    _deliver(session, second)
    row = _rows(session)[0]
    assert row.next_attempt_at == second + dt.timedelta(seconds=120)  # as the endpoint asked
    _deliver(session, row.next_attempt_at)
    row = _rows(session)[0]
    assert row.next_attempt_at == dt.datetime(2026, 11, 23, 6, 30, tzinfo=dt.UTC)
    _deliver(session, row.next_attempt_at)
    row = _rows(session)[0]
    assert row.status == "delivered" and row.attempts == 4
    codes = [a.status_code for a in _attempts(session, row.id)]
    assert codes == [500, 503, 429, 204]


def test_the_backoff_doubles_to_six_hours_and_a_day_later_it_gives_up(session, now):
    waits = [sending.backoff(n, delivery_id=7) for n in range(1, 15)]
    assert dt.timedelta(seconds=24) <= waits[0] <= dt.timedelta(seconds=36)
    assert dt.timedelta(seconds=48) <= waits[1] <= dt.timedelta(seconds=72)
    assert all(w <= dt.timedelta(hours=6) * 1.2 for w in waits)
    assert waits[-1] >= dt.timedelta(hours=6) * 0.8
    assert sending.backoff(3, 7) == sending.backoff(3, 7)  # reproducible

    _endpoint(session, now, closed_port_url())
    _emit(session, now)
    at = now
    for _ in range(40):
        _deliver(session, at)
        row = _rows(session)[0]
        if row.status != "pending":
            break
        assert row.next_attempt_at <= now + sending.GIVE_UP_AFTER
        at = row.next_attempt_at
    assert row.status == "failed"
    assert at == now + sending.GIVE_UP_AFTER  # the last try is at the end of the day
    assert 10 <= row.attempts <= 16
    assert row.last_error.startswith(f"gave up after {row.attempts} attempts in 24 h")
    assert "could not connect: [Errno 111] Connection refused" in row.last_error


def test_410_gone_disables_the_endpoint_and_fails_what_waits(session, now, receiver):
    endpoint, _ = _endpoint(session, now, receiver.url)
    _emit(session, now, n=3)
    webhooks_out.emit(session, "benefit.granted", {}, now + dt.timedelta(hours=1), key="later")
    session.commit()
    receiver.answer(410)
    result = _deliver(session, now)
    assert result.failed == 1 and len(receiver.received) == 1
    session.refresh(endpoint)
    assert not endpoint.active and endpoint.disabled_at == now
    assert endpoint.disabled_reason == "the endpoint answered 410 Gone"
    assert [r.status for r in _rows(session)] == ["failed"] * 4
    assert {r.last_error for r in _rows(session)} == {"the endpoint answered 410 Gone"}
    assert webhooks_out.emit(session, "benefit.granted", {}, now, key="after") == 0


def test_an_endpoint_down_for_hours_gets_everything_once_in_order(session, now, receiver):
    _endpoint(session, now, receiver.url)
    receiver.always(503, "maintenance")
    _emit(session, now, n=5)
    at = now
    for probe in range(10):  # about eight hours of backoff (±20%); events keep coming
        result = _deliver(session, at)
        assert result.retrying == 1 and result.postponed == result.claimed - 1
        at = min(r.next_attempt_at for r in _rows(session))
        if probe == 5:
            _emit(session, at, n=2, start=5)
    assert at - now > dt.timedelta(hours=6)  # 8.5 h, less the jitter at most
    probes = len(receiver.received)
    assert probes == 10  # one request per try, not one per delivery
    assert all(r.status == "pending" for r in _rows(session))
    assert len({r.next_attempt_at for r in _rows(session)}) == 1  # all wait for the probe

    receiver.always(204)
    at = _rows(session)[0].next_attempt_at
    while _deliver(session, at).claimed:
        pass
    rows = _rows(session)
    assert [r.status for r in rows] == ["delivered"] * 7
    delivered = receiver.ids()[probes:]
    assert sorted(delivered) == sorted(r.event_id for r in rows)  # once each
    assert delivered[1:] == [r.event_id for r in rows if r.event_id != delivered[0]]  # in order


def test_a_refused_payload_keeps_its_own_backoff_and_holds_up_nothing(session, now, receiver):
    _endpoint(session, now, receiver.url)
    _emit(session, now, n=3)
    receiver.answer(400, "unknown member")
    result = _deliver(session, now)
    assert result.retrying == 1 and result.delivered == 2  # the others went on
    refused = _rows(session)[0]
    assert refused.last_status_code == 400 and refused.next_attempt_at > now
    receiver.answer(503)  # the endpoint's trouble neither moves the refused one...
    _emit(session, now, n=1, start=3)
    _deliver(session, now)
    assert _rows(session)[3].last_status_code == 503
    assert _rows(session)[0].next_attempt_at == refused.next_attempt_at
    _emit(session, now, n=1, start=4)  # ...nor does its recovery
    _deliver(session, _rows(session)[3].next_attempt_at)  # delivered: the endpoint is back
    assert _rows(session)[0].next_attempt_at == refused.next_attempt_at  # still its own


def test_timeouts_and_refused_connections_are_logged_and_retried(session, now, receiver):
    _endpoint(session, now, receiver.url)
    _endpoint(session, now, closed_port_url())
    _emit(session, now)
    receiver.hang()
    result = _deliver(session, now, timeout=0.3)
    assert result.retrying == 2
    errors = sorted(a.error for a in session.scalars(select(WebhookAttempt)))
    assert errors == ["could not connect: [Errno 111] Connection refused", "no answer within 0.3 s"]


def test_a_lease_that_ran_out_makes_the_delivery_due_again(session, now, receiver):
    _endpoint(session, now, receiver.url)
    _emit(session, now)
    claimed = sending.claim(session, now=now)  # and then the worker died
    session.commit()
    assert len(claimed.ids) == 1
    assert _deliver(session, now + dt.timedelta(minutes=1)).claimed == 0
    assert _deliver(session, now + sending.LEASE).delivered == 1
    assert len(receiver.received) == 1
    # The dead worker's late send finds the claim is no longer its own.
    late = sending.send(session, claimed, vault=VAULT, clock=lambda: now, commit=session.commit)
    assert late.delivered == 0 and len(receiver.received) == 1


def test_time_running_out_leaves_the_rest_due(session, now, receiver):
    _endpoint(session, now, receiver.url)
    _emit(session, now, n=3)
    ticks = iter([now, now, now, now + dt.timedelta(minutes=1)] + [now + dt.timedelta(hours=1)] * 9)
    result = _deliver(
        session, now, clock=lambda: next(ticks), deadline=now + dt.timedelta(seconds=50)
    )
    assert result.delivered == 1 and result.postponed == 2
    assert [r.status for r in _rows(session)] == ["delivered", "pending", "pending"]
    assert all(r.claimed_until is None and r.attempts == 0 for r in _rows(session)[1:])
    assert _deliver(session, now).delivered == 2


def test_an_unreadable_secret_is_an_error_to_fix_by_rotating(session, now, receiver):
    _endpoint(session, now, receiver.url)
    _emit(session, now)
    result = sending.deliver_due(
        session, now=now, vault=Vault("k" * 32), clock=lambda: now, commit=session.commit
    )
    assert result.retrying == 1 and receiver.received == []
    (attempt,) = session.scalars(select(WebhookAttempt))
    assert "SECRET_KEY changed" in attempt.error and "rotate" in attempt.error


def test_a_disabled_endpoint_keeps_its_deliveries_for_later(session, now, receiver):
    endpoint, _ = _endpoint(session, now, receiver.url)
    _emit(session, now)
    endpoints.update(session, endpoint, active=False, actor="t", now=now)
    session.commit()
    assert _deliver(session, now).claimed == 0
    endpoints.update(session, endpoint, active=True, actor="t", now=now)
    session.commit()
    assert _deliver(session, now).delivered == 1


def test_send_test_posts_at_once_and_never_retries(session, now, receiver):
    endpoint, secret = _endpoint(session, now, receiver.url)
    real = dt.datetime.now(dt.UTC)
    sent = sending.send_test(
        session, endpoint.id, now=real, vault=VAULT, clock=lambda: real, commit=session.commit
    )
    assert sent.ok and sent.status_code == 204
    body = Webhook(secret).verify(receiver.received[0].body, receiver.received[0].headers)
    assert body["type"] == "webhook.test" and body["data"]["endpoint"] == str(endpoint.id)
    receiver.answer(500, "nope")
    sent = sending.send_test(
        session, endpoint.id, now=now, vault=VAULT, clock=lambda: now, commit=session.commit
    )
    assert not sent.ok and sent.error == "HTTP 500: nope"
    session.expire_all()
    assert [r.status for r in _rows(session)] == ["delivered", "failed"]
    assert _deliver(session, now + dt.timedelta(hours=1)).claimed == 0


def test_retry_after_reads_seconds_and_dates_within_bounds(now):
    assert retry_after("17", now) == dt.timedelta(seconds=17)
    assert retry_after("0", now) == dt.timedelta(seconds=1)
    assert retry_after("999999999", now) == dt.timedelta(hours=6)
    assert retry_after("Mon, 23 Nov 2026 06:01:00 GMT", now) == dt.timedelta(minutes=1)
    for bad in ("", None, "soon", "-5", "Mon, 99 Nov 2026 06:01:00 GMT"):
        assert retry_after(bad, now) is None


def test_two_claims_never_take_the_same_delivery(committed_app, now):
    with committed_app.app_context():
        session = db.session
        _endpoint(session, now, "https://shop.example/h")
        _emit(session, now, n=10)
        first, second = db.state().sessionmaker(), db.state().sessionmaker()
        try:
            mine = sending.claim(first, now=now, limit=6)
            if first.get_bind().dialect.name == "sqlite":
                first.commit()  # SQLite has one writer: the second claim waits for it
            theirs = sending.claim(second, now=now, limit=6)
            first.commit()
            second.commit()
        finally:
            first.close()
            second.close()
        assert len(mine.ids) == 6 and len(theirs.ids) == 4
        assert not set(mine.ids) & set(theirs.ids)
        session.execute(WebhookEndpoint.__table__.delete())
        session.commit()


def test_payload_key_order_is_the_standard_one(session, now, receiver):
    _endpoint(session, now, receiver.url)
    _emit(session, now)
    _deliver(session, now)
    assert list(json.loads(receiver.received[0].body)) == ["type", "timestamp", "data"]
