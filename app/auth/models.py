"""Users (marketers, with roles) and API keys (hashed, scoped, revocable)."""

from __future__ import annotations

import datetime as dt
import enum

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from members.db import Base, utcnow


class Role(enum.StrEnum):
    ADMIN = "admin"
    MARKETER = "marketer"
    ANALYST = "analyst"  # reads everything, changes nothing


class Scope(enum.StrEnum):
    INGEST = "ingest"
    READ = "read"
    WRITE = "write"
    ADMIN = "admin"


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    password_hash: Mapped[str] = mapped_column(String(200))
    role: Mapped[Role]
    locale: Mapped[str | None] = mapped_column(String(8))
    active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    last_login_at: Mapped[dt.datetime | None]

    # Flask-Login's protocol, written out so the model needs no Flask import.
    @property
    def is_active(self) -> bool:
        return self.active

    @property
    def is_authenticated(self) -> bool:
        return True

    @property
    def is_anonymous(self) -> bool:
        return False

    def get_id(self) -> str:
        return str(self.id)

    @property
    def can_write(self) -> bool:
        return self.role in (Role.ADMIN, Role.MARKETER)

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN


class ApiKey(Base):
    """An API key: only its hash is kept; the secret is shown once, at creation."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    # The visible start of the key ("tnr_ab12cd34"), to recognise it in lists.
    prefix: Mapped[str] = mapped_column(String(16))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    scopes: Mapped[str] = mapped_column(String(100))  # comma-separated Scope values
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[dt.datetime | None]
    revoked_at: Mapped[dt.datetime | None]

    @property
    def scope_set(self) -> frozenset[Scope]:
        return frozenset(Scope(s) for s in self.scopes.split(",") if s)

    @property
    def is_revoked(self) -> bool:
        return self.revoked_at is not None
