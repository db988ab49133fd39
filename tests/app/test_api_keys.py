"""Bearer keys on the JSON API: refused clearly when missing, unknown, revoked or short of scope."""

import datetime as dt

import pytest
from sqlalchemy import func, select

from app.auth.models import ApiKey
from members.audit import AuditEntry
from tests import factories


def _problem(response, status):
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/problem+json"
    body = response.get_json()
    assert body["status"] == status
    return body


def test_no_key_is_401_with_a_challenge(client):
    body = _problem(client.get("/api/v1/api-keys"), 401)
    assert "Bearer" in body["detail"]


def test_no_key_is_refused_before_the_body_is_looked_at(client):
    response = client.post("/api/v1/api-keys", json={"nonsense": True})
    _problem(response, 401)
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_unknown_key_is_401(client):
    body = _problem(client.get("/api/v1/api-keys", headers=factories.bearer("tnr_nope_nope")), 401)
    assert body["detail"] == "unknown API key"


def test_revoked_key_is_401_and_changes_nothing(client, session):
    _, admin_secret = factories.api_key(session, "admin", name="ops")
    key, secret = factories.api_key(session, "admin", name="old")
    assert (
        client.delete(
            f"/api/v1/api-keys/{key.id}", headers=factories.bearer(admin_secret)
        ).status_code
        == 204
    )
    body = _problem(
        client.post(
            "/api/v1/api-keys",
            json={"name": "x", "scopes": ["read"]},
            headers=factories.bearer(secret),
        ),
        401,
    )
    assert body["detail"] == "this API key has been revoked"
    assert session.scalar(select(func.count()).select_from(ApiKey)) == 2


def test_key_without_the_scope_is_403(client, session):
    _, secret = factories.api_key(session, "ingest,read")
    body = _problem(client.get("/api/v1/api-keys", headers=factories.bearer(secret)), 403)
    assert "'admin' scope" in body["detail"]


def test_admin_key_creates_a_key_whose_secret_is_shown_once(client, session):
    _, secret = factories.api_key(session, "admin")
    response = client.post(
        "/api/v1/api-keys",
        json={"name": "crm", "scopes": ["ingest"]},
        headers=factories.bearer(secret),
    )
    assert response.status_code == 201
    created = response.get_json()
    assert created["key"].startswith(created["prefix"] + "_")
    assert created["scopes"] == ["ingest"]
    listed = client.get("/api/v1/api-keys", headers=factories.bearer(secret)).get_json()
    assert {k["name"] for k in listed} == {"shop", "crm"}
    assert all("key" not in k for k in listed)
    assert (
        client.get(
            f"/api/v1/api-keys/{created['id']}", headers=factories.bearer(created["key"])
        ).status_code
        == 403
    )
    audit = session.scalar(select(AuditEntry).where(AuditEntry.target_id == str(created["id"])))
    assert audit.action == "api_key.created" and audit.actor.startswith("api_key:shop")


def test_invalid_body_is_422_naming_each_field(client, session):
    _, secret = factories.api_key(session, "admin")
    response = client.post(
        "/api/v1/api-keys",
        json={"name": "", "scopes": ["ingest", "superuser"], "colour": "red"},
        headers=factories.bearer(secret),
    )
    body = _problem(response, 422)
    fields = {e["field"] for e in body["errors"]}
    assert {"name", "scopes.1", "colour"} <= fields
    assert "name" in body["detail"] and "scopes" in body["detail"]
    assert session.scalar(select(func.count()).select_from(ApiKey)) == 1


def test_malformed_json_is_400_not_500(client, session):
    _, secret = factories.api_key(session, "admin")
    response = client.post(
        "/api/v1/api-keys",
        data="{not json",
        content_type="application/json",
        headers=factories.bearer(secret),
    )
    assert response.status_code in (400, 422)
    assert response.mimetype == "application/problem+json"


def test_revoking_twice_and_unknown_ids(client, session):
    _, secret = factories.api_key(session, "admin")
    other, _ = factories.api_key(session, "read", name="reader")
    headers = factories.bearer(secret)
    assert client.delete(f"/api/v1/api-keys/{other.id}", headers=headers).status_code == 204
    assert client.delete(f"/api/v1/api-keys/{other.id}", headers=headers).status_code == 204
    revocations = (
        select(func.count()).select_from(AuditEntry).where(AuditEntry.action == "api_key.revoked")
    )
    assert session.scalar(revocations) == 1
    _problem(client.delete("/api/v1/api-keys/9999", headers=headers), 404)


def test_last_used_time_is_kept(client, session, app, now):
    key, secret = factories.api_key(session, "admin")
    assert key.last_used_at is None
    app.config["TENURE_CLOCK"] = lambda: now
    client.get("/api/v1/api-keys", headers=factories.bearer(secret))
    session.refresh(key)
    assert key.last_used_at == now
    later = now + dt.timedelta(minutes=5)
    app.config["TENURE_CLOCK"] = lambda: later
    client.get("/api/v1/api-keys", headers=factories.bearer(secret))
    session.refresh(key)
    assert key.last_used_at == later


def test_list_is_paginated(client, session):
    _, secret = factories.api_key(session, "admin")
    for i in range(4):
        factories.api_key(session, "read", name=f"reader-{i}")
    response = client.get("/api/v1/api-keys?page=2&page_size=2", headers=factories.bearer(secret))
    assert response.status_code == 200
    assert len(response.get_json()) == 2
    assert '"total": 5' in response.headers["X-Pagination"]
    bad = client.get("/api/v1/api-keys?page_size=0", headers=factories.bearer(secret))
    assert {e["field"] for e in _problem(bad, 422)["errors"]} == {"page_size"}


def test_a_created_secret_is_not_cached(client, session):
    _, secret = factories.api_key(session, "admin")
    response = client.post(
        "/api/v1/api-keys",
        json={"name": "crm", "scopes": ["read"]},
        headers=factories.bearer(secret),
    )
    assert response.headers["Cache-Control"] == "no-store"


def test_huge_ids_and_pages_are_404_and_empty_not_500(client, session):
    _, secret = factories.api_key(session, "admin")
    headers = factories.bearer(secret)
    assert client.get(f"/api/v1/api-keys/{2**63}", headers=headers).status_code == 404
    far = client.get(f"/api/v1/api-keys?page={2**63}", headers=headers)
    assert far.status_code == 200 and far.get_json() == []


@pytest.mark.settings(api_limit="3 per minute")
def test_each_key_has_its_own_rate_limit(client, session):
    _, first = factories.api_key(session, "read", name="first")
    _, second = factories.api_key(session, "read", name="second")
    for _ in range(3):
        assert client.get("/api/v1/members", headers=factories.bearer(first)).status_code == 200
    refused = client.get("/api/v1/members", headers=factories.bearer(first))
    assert refused.status_code == 429
    assert refused.mimetype == "application/problem+json"
    assert 0 < int(refused.headers["Retry-After"]) <= 60
    assert client.get("/api/v1/members", headers=factories.bearer(second)).status_code == 200
