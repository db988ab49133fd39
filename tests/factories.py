"""Factories per aggregate and helpers that act as a user would."""

from __future__ import annotations

import datetime as dt
import itertools
import re
from decimal import Decimal

from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from app.auth.models import ApiKey, User
from app.auth.service import create_api_key, create_user
from members.event import Event
from members.member import Member

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


_event_ids = itertools.count()


def event(
    session: Session,
    member: Member,
    type_: str,
    at: dt.datetime,
    amount: object = None,
    received_at: dt.datetime | None = None,
) -> Event:
    """An event of a member, stored as ingest stores it (received when it happened,
    unless said otherwise); an amount is in CNY."""
    made = Event(
        event_id=f"ev-{next(_event_ids)}",
        member_id=member.id,
        type=type_,
        occurred_at=at,
        received_at=received_at or at,
        properties={},
        amount=None if amount is None else Decimal(str(amount)),
        currency=None if amount is None else "CNY",
    )
    session.add(made)
    return made
