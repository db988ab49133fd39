"""The webhook channel against a local receiver that verifies Standard Webhooks
signatures with the official library."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator

import pytest

from journeys.providers.base import Outgoing, Result
from journeys.providers.webhook import WebhookChannel, check_secret
from tests.journeys.providers import fakes

SECRET = "whsec_" + base64.b64encode(b"tenure-webhook-secret-32-bytes!!").decode()


@pytest.fixture
def fake() -> Iterator[fakes.Fake]:
    with fakes.serving(fakes.webhook_receiver(SECRET)) as fake:
        yield fake


def provider(secret: str = SECRET) -> WebhookChannel:
    channel = WebhookChannel({}, {"signing_secret": secret})
    channel.timeout = 0.5
    return channel


def message(fake: fakes.Fake, **changes) -> Outgoing:
    body = json.dumps(
        {"type": "tier.upgraded", "member": "m-42", "tier": "金卡"}, ensure_ascii=False
    )
    values = dict(
        message_id=1,
        dedup_key="enr-1:step-3",
        channel="webhook",
        to=f"{fake.url}/hook",
        body=body,
    )
    return Outgoing(**(values | changes))


def test_posts_the_body_signed_and_the_receiver_verifies_it(fake):
    outgoing = message(fake)

    outcome = provider().send_one(outgoing)

    assert outcome.result is Result.DELIVERED
    seen = fake.requests[-1]
    assert seen.body == outgoing.body.encode()
    assert seen.headers["content-type"] == "application/json"
    assert outcome.provider_message_id == seen.headers["webhook-id"]
    assert seen.headers["webhook-id"].startswith("msg_")
    assert seen.headers["webhook-signature"].startswith("v1,")


def test_a_retry_carries_the_same_webhook_id(fake):
    fake.answer(503, "busy")
    channel = provider()

    first = channel.send_one(message(fake))
    second = channel.send_one(message(fake))

    assert (first.result, second.result) == (Result.RETRY, Result.DELIVERED)
    ids = {r.headers["webhook-id"] for r in fake.requests}
    assert len(ids) == 1
    other = channel.send_one(message(fake, dedup_key="enr-2:step-3"))
    assert other.provider_message_id not in ids


def test_a_receiver_with_another_secret_refuses_it(fake):
    other = "whsec_" + base64.b64encode(b"some-other-secret-of-32-bytes!!!").decode()

    outcome = provider(other).send_one(message(fake))

    assert outcome.result is Result.FAILED
    assert outcome.error.startswith("HTTP 401: bad signature")


@pytest.mark.parametrize(
    ("status", "result"),
    [(408, Result.RETRY), (429, Result.RETRY), (500, Result.RETRY), (502, Result.RETRY)],
)
def test_transient_statuses_are_retried_with_retry_after(fake, status, result):
    fake.answer(status, "slow down", {"Retry-After": "120"})

    outcome = provider().send_one(message(fake))

    assert (outcome.result, outcome.retry_after) == (result, 120.0)


def test_gone_means_the_endpoint_is_gone(fake):
    fake.answer(410, "")

    outcome = provider().send_one(message(fake))

    assert (outcome.result, outcome.error) == (Result.FAILED, "endpoint gone (HTTP 410)")


def test_other_client_errors_are_permanent_with_the_receivers_words(fake):
    fake.answer(422, "x" * 500)

    outcome = provider().send_one(message(fake))

    assert outcome.result is Result.FAILED
    assert outcome.error == "HTTP 422: " + "x" * 200


def test_redirects_are_not_followed(fake):
    fake.answer(307, "", {"Location": "http://example.invalid/elsewhere"})

    assert provider().send_one(message(fake)).result is Result.FAILED
    assert len(fake.requests) == 1


def test_a_hung_receiver_times_out_as_a_retry(fake):
    fake.hang()

    outcome = provider().send_one(message(fake))

    assert (outcome.result, outcome.error) == (Result.RETRY, "no answer: ReadTimeout")


def test_a_refused_connection_is_a_retry():
    with fakes.serving(fakes.webhook_receiver(SECRET)) as gone:
        outgoing = message(gone)

    assert provider().send_one(outgoing).result is Result.RETRY


@pytest.mark.parametrize(
    "url", ["ftp://example.com/hook", "file:///etc/passwd", "example.com/hook", ""]
)
def test_only_http_urls_are_called(fake, url):
    outcome = provider().send_one(message(fake, to=url))

    assert (outcome.result, outcome.error) == (Result.FAILED, "the webhook URL is not http(s)")


@pytest.mark.parametrize(
    "secret",
    ["", "not-whsec", "whsec_not base64!", "whsec_" + base64.b64encode(b"short").decode()],
)
def test_a_malformed_secret_fails_before_any_call(fake, secret):
    assert check_secret(secret) is not None

    outcome = provider(secret).send_one(message(fake))

    assert outcome.result is Result.FAILED
    assert outcome.error.startswith("signing_secret")
    assert fake.requests == []
