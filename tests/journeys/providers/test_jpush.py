"""JPush REST API v3 against a local /v3/push that wants HTTP Basic app_key:master_secret."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from journeys.providers.base import Outgoing, Result
from journeys.providers.jpush import JPush
from tests.journeys.providers import fakes

APP_KEY, MASTER = "7d431e42dfa6a6d693ac2d04", "5e987ac6d2e04d95a9d8f0d1"


@pytest.fixture
def fake() -> Iterator[fakes.Fake]:
    with fakes.serving(fakes.jpush(APP_KEY, MASTER)) as fake:
        yield fake


def provider(fake: fakes.Fake, secret: str = MASTER, **settings: str) -> JPush:
    push = JPush({"app_key": APP_KEY, "base_url": fake.url} | settings, {"master_secret": secret})
    push.timeout = 0.5
    return push


def message(**changes) -> Outgoing:
    values = dict(
        message_id=1,
        dedup_key="enr-1:step-1",
        channel="push",
        to="1a0018970a8c1d2e3f4",
        title="金卡只差一单",
        body="再消费 120 元即可升级金卡",
        deep_link="tenure://tiers/gold",
        data={"member": "m-42"},
    )
    return Outgoing(**(values | changes))


def test_pushes_to_one_registration_id(fake):
    outcome = provider(fake).send_one(message())

    assert (outcome.result, outcome.provider_message_id) == (Result.SENT, "54043195521")
    extras = {"member": "m-42", "deep_link": "tenure://tiers/gold"}
    assert fake.requests[-1].json() == {
        "platform": "all",
        "audience": {"registration_id": ["1a0018970a8c1d2e3f4"]},
        "notification": {
            "alert": "再消费 120 元即可升级金卡",
            "android": {
                "alert": "再消费 120 元即可升级金卡",
                "title": "金卡只差一单",
                "extras": extras,
            },
            "ios": {
                "alert": {"title": "金卡只差一单", "body": "再消费 120 元即可升级金卡"},
                "extras": extras,
            },
        },
        "options": {"time_to_live": 86400, "apns_production": True},
    }


def test_development_builds_use_the_apns_sandbox(fake):
    provider(fake, apns_production="false").send_one(message())

    assert fake.requests[-1].json()["options"]["apns_production"] is False


def test_a_wrong_master_secret_is_refused(fake):
    outcome = provider(fake, secret="wrong").send_one(message())

    assert (outcome.result, outcome.token_gone) == (Result.FAILED, False)
    assert outcome.error == "credentials refused: 1004: Authen failed"


def test_an_unknown_registration_id_is_gone(fake):
    error = {"code": 1011, "message": "cannot find user by this audience"}
    fake.answer(400, {"msg_id": "0", "error": error})

    outcome = provider(fake).send_one(message())

    assert (outcome.result, outcome.token_gone) == (Result.FAILED, True)
    assert outcome.error == "1011: cannot find user by this audience"


def test_a_bad_parameter_is_permanent(fake):
    fake.answer(400, {"error": {"code": 1003, "message": "Parameter value is invalid"}})

    outcome = provider(fake).send_one(message())

    assert (outcome.result, outcome.token_gone) == (Result.FAILED, False)


def test_rate_limits_are_retried_after_the_reset(fake):
    error = {"code": 2002, "message": "Rate limiting, API call frequency exceeds the limit"}
    fake.answer(429, {"error": error}, {"X-Rate-Limit-Reset": "12"})

    outcome = provider(fake).send_one(message())

    assert (outcome.result, outcome.retry_after) == (Result.RETRY, 12.0)


@pytest.mark.parametrize(
    "answer",
    [
        (500, {"error": {"code": 1000, "message": "Server Internal error"}}),
        (502, "<html>Bad Gateway</html>"),
        (503, "garbage"),
    ],
)
def test_server_errors_are_retried(fake, answer):
    fake.answer(*answer)

    assert provider(fake).send_one(message()).result is Result.RETRY


def test_an_accepted_push_with_an_unreadable_body_is_not_sent_twice(fake):
    fake.answer(200, "garbage")

    assert provider(fake).send_one(message()).result is Result.SENT


def test_a_hung_call_times_out_as_a_retry(fake):
    fake.hang()

    outcome = provider(fake).send_one(message())

    assert (outcome.result, outcome.error) == (Result.RETRY, "no answer: ReadTimeout")


def test_a_refused_connection_is_a_retry():
    with fakes.serving(fakes.jpush(APP_KEY, MASTER)) as gone:
        push = provider(gone)

    assert push.send_one(message()).result is Result.RETRY
