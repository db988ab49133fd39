"""FCM HTTP v1 with google-auth against a local FCM: a token endpoint that checks the
service account's signed JWT grant, and messages:send that wants its Bearer token."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from journeys.providers.base import Outgoing, Result
from journeys.providers.fcm import Fcm
from tests.journeys.providers import fakes

PROJECT = "tenure-demo"
EMAIL = "tenure-push@tenure-demo.iam.gserviceaccount.com"


def pem(key: rsa.RSAPrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def fake(key) -> Iterator[fakes.Fake]:
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    with fakes.serving(fakes.fcm(PROJECT, EMAIL, public)) as fake:
        yield fake


def service_account(fake: fakes.Fake, key: rsa.RSAPrivateKey) -> str:
    return json.dumps(
        {
            "type": "service_account",
            "project_id": PROJECT,
            "private_key_id": "k1",
            "private_key": pem(key),
            "client_email": EMAIL,
            "client_id": "1",
            "token_uri": f"{fake.url}/token",
        }
    )


def provider(fake: fakes.Fake, key: rsa.RSAPrivateKey, **secrets: str) -> Fcm:
    values = {"service_account_json": service_account(fake, key)} | secrets
    push = Fcm({"project_id": PROJECT, "base_url": fake.url}, values)
    push.timeout = 0.5
    return push


def message(**changes) -> Outgoing:
    values = dict(
        message_id=1,
        dedup_key="enr-1:step-1",
        channel="push",
        to="fcm-token-abc",
        title="Gold is one order away",
        body="Spend 120 more to reach Gold.",
        deep_link="tenure://tiers/gold",
        data={"member": "m-42", "points": 880, "tags": ["vip"]},
    )
    return Outgoing(**(values | changes))


def test_fetches_a_token_then_sends(fake, key):
    outcome = provider(fake, key).send_one(message())

    assert outcome.result is Result.SENT
    assert outcome.provider_message_id == f"projects/{PROJECT}/messages/0:2"
    grant, send = fake.requests
    assert grant.path == "/token"
    assert send.path == f"/v1/projects/{PROJECT}/messages:send"
    assert send.headers["authorization"] == "Bearer ya29.fake-1"
    assert send.json() == {
        "message": {
            "token": "fcm-token-abc",
            "notification": {
                "title": "Gold is one order away",
                "body": "Spend 120 more to reach Gold.",
            },
            "data": {
                "member": "m-42",
                "points": "880",
                "tags": '["vip"]',
                "deep_link": "tenure://tiers/gold",
            },
        }
    }


def test_the_token_is_reused_across_messages_and_threads(fake, key):
    push = provider(fake, key)

    outcomes = push.send([message(message_id=i, dedup_key=f"k{i}") for i in range(6)])

    assert {o.result for o in outcomes} == {Result.SENT}
    sends = [r for r in fake.requests if r.path != "/token"]
    assert len(sends) == 6
    assert len(fake.requests) - len(sends) <= push.concurrency  # not one grant per message


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (404, fakes.fcm_error(404, "NOT_FOUND", "Requested entity was not found.", "UNREGISTERED")),
        (
            400,
            fakes.fcm_error(
                400,
                "INVALID_ARGUMENT",
                "The registration token is not a valid FCM registration token",
                "INVALID_ARGUMENT",
            ),
        ),
    ],
)
def test_a_dead_token_is_reported_gone(fake, key, status, body):
    fake.answer(status, body)

    outcome = provider(fake, key).send_one(message())

    assert (outcome.result, outcome.token_gone) == (Result.FAILED, True)


def test_an_invalid_payload_fails_but_keeps_the_token(fake, key):
    fake.answer(
        400, fakes.fcm_error(400, "INVALID_ARGUMENT", "Message is too big", "INVALID_ARGUMENT")
    )

    outcome = provider(fake, key).send_one(message())

    assert (outcome.result, outcome.token_gone) == (Result.FAILED, False)
    assert outcome.error == "INVALID_ARGUMENT: Message is too big"


def test_a_bare_404_does_not_drop_the_token(fake, key):
    fake.answer(404, "<html>Not Found</html>")

    outcome = provider(fake, key).send_one(message())

    assert (outcome.result, outcome.token_gone) == (Result.FAILED, False)


def test_a_wrong_project_is_refused_credentials(fake, key):
    secrets = {"service_account_json": service_account(fake, key)}
    push = Fcm({"project_id": "not-ours", "base_url": fake.url}, secrets)

    outcome = push.send_one(message())

    assert outcome.result is Result.FAILED
    assert outcome.error.startswith("credentials refused: PERMISSION_DENIED")


def test_a_key_the_token_endpoint_does_not_know_is_refused(fake, key):
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    outcome = provider(fake, key, service_account_json=service_account(fake, stranger)).send_one(
        message()
    )

    assert outcome.result is Result.FAILED
    assert outcome.error.startswith("credentials refused: ")
    assert all(r.path == "/token" for r in fake.requests)


@pytest.mark.parametrize(
    "secret",
    ["", "not json", "[]", json.dumps({"client_email": EMAIL, "private_key": "x"})],
)
def test_a_malformed_service_account_key_fails_clearly(fake, secret):
    push = Fcm({"project_id": PROJECT, "base_url": fake.url}, {"service_account_json": secret})

    outcome = push.send_one(message())

    assert outcome.result is Result.FAILED
    assert outcome.error.startswith("service_account_json: ")
    assert fake.requests == []


def test_a_key_whose_private_key_is_not_pem_fails_clearly(fake, key):
    broken = json.loads(service_account(fake, key)) | {"private_key": "-----BEGIN nonsense"}

    outcome = provider(fake, key, service_account_json=json.dumps(broken)).send_one(message())

    assert outcome.result is Result.FAILED
    assert outcome.error.startswith("service_account_json: ")


def test_quota_exceeded_is_retried_after_retry_after(fake, key):
    error = fakes.fcm_error(429, "RESOURCE_EXHAUSTED", "Quota exceeded", "QUOTA_EXCEEDED")
    fake.answer(429, error, {"Retry-After": "30"})

    outcome = provider(fake, key).send_one(message())

    assert (outcome.result, outcome.retry_after) == (Result.RETRY, 30.0)
    assert outcome.error == "QUOTA_EXCEEDED: Quota exceeded"


@pytest.mark.parametrize(
    "answer",
    [
        (
            503,
            fakes.fcm_error(
                503, "UNAVAILABLE", "The service is currently unavailable.", "UNAVAILABLE"
            ),
        ),
        (500, "<html>oops</html>"),
    ],
)
def test_server_errors_are_retried(fake, key, answer):
    fake.answer(*answer)

    assert provider(fake, key).send_one(message()).result is Result.RETRY


def test_a_hung_send_times_out_as_a_retry(fake, key):
    fake.hang()

    outcome = provider(fake, key).send_one(message())

    assert (outcome.result, outcome.error) == (Result.RETRY, "no answer: ReadTimeout")


def test_an_unreachable_token_endpoint_is_a_retry(fake, key):
    with fakes.serving(fakes.fcm(PROJECT, EMAIL, b"")) as gone:
        push = provider(gone, key)

    outcome = push.send_one(message())

    assert outcome.result is Result.RETRY
