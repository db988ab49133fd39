"""Garbage sent to every API route gets a clear 4xx, never a 500, and changes nothing."""

import pytest
from sqlalchemy import func, select

from app.models import ApiKey, AuditEntry
from tests import factories

BODIES = [
    ("application/json", b"{not json"),
    ("application/json", b"[]"),
    ("application/json", b"null"),
    ("application/json", b'{"name": 12, "scopes": "admin"}'),
    ("application/json", b'{"name": "' + b"x" * 10_000 + b'", "scopes": [[]]}'),
    ("application/json", b'{"name": "\\u0000", "scopes": [null]}'),
    ("text/plain", b"hello"),
    ("application/x-www-form-urlencoded", b"name=a&scopes=read"),
    ("application/json", b"\xff\xfe\x00garbage"),
]


IDS = ["99999", str(2**31), str(2**63), "-1", "0", "nope"]


def _routes(app, prefix):
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith(prefix):
            for value in IDS if rule.arguments else [""]:
                path = rule.rule
                for arg in rule.arguments:
                    path = path.replace(f"<id:{arg}>", value).replace(f"<{arg}>", value)
                for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
                    yield method, path


def _api_routes(app):
    yield from _routes(app, "/api/v1/")


@pytest.mark.parametrize("content_type, body", BODIES)
def test_no_garbage_reaches_a_500(app, client, session, content_type, body):
    _, secret = factories.api_key(session, "admin")
    keys_before = session.scalar(select(func.count()).select_from(ApiKey))
    audit_before = session.scalar(select(func.count()).select_from(AuditEntry))
    for method, path in _api_routes(app):
        for query in ("", "?page=-1&page_size=abc", f"?page={2**63}", f"?page={2**31}&page_size=2"):
            response = client.open(
                path + query,
                method=method,
                data=body,
                content_type=content_type,
                headers=factories.bearer(secret),
            )
            assert response.status_code < 500, (method, path, response.get_data(as_text=True))
            if response.status_code >= 400:
                assert response.mimetype == "application/problem+json", (method, path)
            response.close()  # a streamed answer (the CSV export) ends when closed
    assert session.scalar(select(func.count()).select_from(ApiKey)) == keys_before
    assert session.scalar(select(func.count()).select_from(AuditEntry)) == audit_before


def test_no_page_or_form_reaches_a_500(app, client, session):
    factories.user(session, "admin")
    factories.login(client, "admin@shop.example")
    token = factories.csrf_token(client, "/settings/users")
    forms = [
        {"csrf_token": token},
        {
            "csrf_token": token,
            "name": "x" * 5000,
            "scopes": ["root", ""],
            "email": "\x00@x",
            "role": "god",
            "password": "p",
        },
        {"csrf_token": "forged"},
    ]
    paths = [p for p in _routes(app, "/") if not p[1].startswith(("/api/", "/static", "/logout"))]
    for method, path in paths:
        for query in ("", f"?page={2**63}", "?page=-5&next=//evil.example"):
            for data in forms if method == "POST" else [None]:
                response = client.open(path + query, method=method, data=data)
                assert response.status_code < 500, (method, path, query, data)
    assert client.get("/").status_code == 200  # still signed in: nothing broke the session


def test_nul_characters_are_refused_at_the_door(client, session):
    """PostgreSQL text cannot hold NUL: on either database the answer is a 400."""
    _, secret = factories.api_key(session, "admin")
    headers = factories.bearer(secret)
    body = client.post(
        "/api/v1/members",
        headers=headers,
        data=b'{"external_id": "a\\u0000b"}',
        content_type="application/json",
    )
    assert body.status_code == 400 and body.mimetype == "application/problem+json"
    query = client.get("/api/v1/members?attribute=a%00:b", headers=headers)
    assert query.status_code == 400
    form = client.post(
        "/login",
        data=b"email=a%00@b.c&password=x",
        content_type="application/x-www-form-urlencoded",
    )
    assert form.status_code == 400 and form.mimetype == "text/html"
    assert session.scalar(select(func.count()).select_from(ApiKey)) == 1
