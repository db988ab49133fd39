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


def _api_routes(app):
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith("/api/v1/"):
            path = rule.rule
            for arg in rule.arguments:
                path = path.replace(f"<int:{arg}>", "99999").replace(f"<{arg}>", "nope")
            for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
                yield method, path


@pytest.mark.parametrize("content_type, body", BODIES)
def test_no_garbage_reaches_a_500(app, client, session, content_type, body):
    _, secret = factories.api_key(session, "admin")
    keys_before = session.scalar(select(func.count()).select_from(ApiKey))
    audit_before = session.scalar(select(func.count()).select_from(AuditEntry))
    for method, path in _api_routes(app):
        for query in ("", "?page=-1&page_size=abc"):
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
    assert session.scalar(select(func.count()).select_from(ApiKey)) == keys_before
    assert session.scalar(select(func.count()).select_from(AuditEntry)) == audit_before
