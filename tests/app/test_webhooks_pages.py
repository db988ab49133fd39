"""The webhooks pages as admins use them: an endpoint added (its secret shown once,
never cached), a test event sent to a real receiver and its result shown with the
delivery log, the secret rotated, the endpoint paused and deleted; everyone else
reads only; forms need their CSRF token."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import select
from standardwebhooks import Webhook

from journeys.webhook_models import WebhookEndpoint
from tests import factories
from tests.webhook_receiver import Receiver

PAGE = "/settings/webhooks"
_SECRET = re.compile(r'<code id="new-secret">(whsec_[^<]+)</code>')


@pytest.fixture
def receiver():
    server = Receiver().start()
    yield server
    server.stop()


def _signed_in(client, session, role):
    factories.user(session, role)
    factories.login(client, f"{role}@shop.example")
    return factories.csrf_token(client, PAGE)


def test_an_admin_adds_tests_rotates_pauses_and_deletes_an_endpoint(client, session, receiver):
    token = _signed_in(client, session, "admin")
    page = client.get(PAGE).get_data(as_text=True)
    assert "No endpoints yet." in page and 'aria-current="page">Webhooks' in page

    bad = client.post(PAGE, data={"csrf_token": token, "url": "ftp://x", "event_types": []})
    assert bad.status_code == 400
    html = bad.get_data(as_text=True)
    assert "Choose at least one event type." in html
    assert session.scalar(select(WebhookEndpoint.id)) is None
    refused = client.post(
        PAGE, data={"csrf_token": token, "url": "ftp://x", "event_types": ["benefit.granted"]}
    )
    assert refused.status_code == 400
    assert "an http:// or https:// address with a host" in refused.get_data(as_text=True)

    added = client.post(
        PAGE,
        data={
            "csrf_token": token,
            "url": receiver.url,
            "event_types": ["member.stage_changed", "benefit.granted"],
            "description": "CRM sync",
        },
    )
    assert added.status_code == 201 and added.headers["Cache-Control"] == "no-store"
    secret = _SECRET.search(added.get_data(as_text=True)).group(1)
    endpoint = session.scalar(select(WebhookEndpoint))
    assert secret not in endpoint.secret_encrypted
    listing = client.get(PAGE).get_data(as_text=True)
    assert receiver.url in listing and "member.stage_changed, benefit.granted" in listing
    assert secret not in listing

    detail = f"{PAGE}/{endpoint.id}"
    tested = client.post(f"{detail}/test", data={"csrf_token": token}, follow_redirects=True)
    html = tested.get_data(as_text=True)
    assert "Test event delivered: HTTP 204" in html
    assert "webhook.test" in html and "HTTP 204" in html
    (got,) = receiver.received
    Webhook(secret).verify(got.body, got.headers)
    receiver.answer(503, "maintenance")
    failed = client.post(f"{detail}/test", data={"csrf_token": token}, follow_redirects=True)
    assert "Test event failed: HTTP 503: maintenance" in failed.get_data(as_text=True)
    only_failed = client.get(f"{detail}?status=failed").get_data(as_text=True)
    assert only_failed.count('<code class="muted">msg_') == 1  # one delivery shown

    rotated = client.post(f"{detail}/rotate", data={"csrf_token": token})
    assert rotated.status_code == 200 and rotated.headers["Cache-Control"] == "no-store"
    new = _SECRET.search(rotated.get_data(as_text=True)).group(1)
    assert new != secret

    paused = client.post(
        detail,
        data={
            "csrf_token": token,
            "url": receiver.url,
            "event_types": ["benefit.granted"],
            "description": "",
        },
    )
    assert paused.status_code == 302
    html = client.get(detail).get_data(as_text=True)
    assert "disabled by user:admin@shop.example" in html
    session.refresh(endpoint)
    assert not endpoint.active and endpoint.event_types == {"types": ["benefit.granted"]}
    bad_edit = client.post(
        detail, data={"csrf_token": token, "url": "https://", "event_types": ["x"]}
    )
    assert bad_edit.status_code == 400

    deleted = client.post(f"{detail}/delete", data={"csrf_token": token})
    assert deleted.status_code == 302
    assert session.scalar(select(WebhookEndpoint.id)) is None
    assert client.get(detail).status_code == 404


@pytest.mark.parametrize("role", ["analyst", "marketer"])
def test_others_read_but_cannot_change(client, session, role):
    token = _signed_in(client, session, role)
    endpoint = WebhookEndpoint(
        url="https://crm.example/h", secret_encrypted="sealed", event_types={"types": ["x"]}
    )
    session.add(endpoint)
    session.commit()
    listing = client.get(PAGE).get_data(as_text=True)
    assert "https://crm.example/h" in listing and "Add an endpoint" not in listing
    detail = client.get(f"{PAGE}/{endpoint.id}").get_data(as_text=True)
    assert "Send test event" not in detail
    form = {"csrf_token": token, "url": "https://y.example", "event_types": ["benefit.granted"]}
    assert client.post(PAGE, data=form).status_code == 403
    for action in ("", "/test", "/rotate", "/delete"):
        assert client.post(f"{PAGE}/{endpoint.id}{action}", data=form).status_code == 403
    assert session.scalar(select(WebhookEndpoint.url)) == "https://crm.example/h"


def test_forms_need_their_csrf_token_and_pages_a_login(client, session):
    assert client.get(PAGE).status_code == 302  # to the login page
    _signed_in(client, session, "admin")
    form = {"url": "https://y.example", "event_types": ["benefit.granted"]}
    assert client.post(PAGE, data=form).status_code == 400
    assert session.scalar(select(WebhookEndpoint.id)) is None
    assert client.get(f"{PAGE}/99999").status_code == 404
