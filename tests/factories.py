"""Factories per aggregate and helpers that act as a user would."""

from __future__ import annotations

import datetime as dt
import re

from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from app.auth.models import ApiKey, User
from app.auth.service import create_api_key, create_user

NOW = dt.datetime(2026, 11, 23, 6, 0, tzinfo=dt.UTC)
PASSWORD = "correct horse battery"
_CSRF = re.compile(
    r'name="csrf_token" type="hidden" value="([^"]+)"|name="csrf_token" value="([^"]+)"'
)


def user(session: Session, role: str = "admin", email: str | None = None) -> User:
    made = create_user(
        session,
        email=email or f"{role}@shop.example",
        password=PASSWORD,
        role=role,
        actor="test",
        now=NOW,
    )
    session.commit()
    return made


def api_key(
    session: Session, scopes: str = "ingest,read", name: str = "shop"
) -> tuple[ApiKey, str]:
    key, secret = create_api_key(session, name=name, scopes=scopes, actor="test", now=NOW)
    session.commit()
    return key, secret


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def csrf_token(client: FlaskClient, path: str) -> str:
    html = client.get(path).get_data(as_text=True)
    match = _CSRF.search(html)
    assert match, f"no CSRF token on {path}"
    return match.group(1) or match.group(2)


def login(client: FlaskClient, email: str, password: str = PASSWORD):
    token = csrf_token(client, "/login")
    return client.post("/login", data={"email": email, "password": password, "csrf_token": token})
