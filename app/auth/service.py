"""Creating users and API keys, checking passwords and keys; every change audited.

Functions take a session and plain values, flush but never commit: the request or
the CLI command that calls them owns the transaction.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from collections.abc import Iterable

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from email_validator import EmailNotValidError, validate_email
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.auth.models import ApiKey, Role, Scope, User
from members import audit

KEY_PREFIX = "tnr_"
MIN_PASSWORD_LENGTH = 10
_hasher = PasswordHasher()
# Verifying against this when the email is unknown keeps the timing the same.
_DUMMY_HASH = _hasher.hash("not a password of anyone")


class AuthError(ValueError):
    """Bad input to an auth operation; ``field`` names the offending field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def normalise_email(email: str) -> str:
    return email.strip().lower()


def create_user(
    session: Session, *, email: str, password: str, role: str, actor: str, now: dt.datetime
) -> User:
    email = normalise_email(email)
    try:
        validate_email(email, check_deliverability=False)
    except EmailNotValidError as exc:
        raise AuthError("email", f"{email!r} is not a valid email address: {exc}") from None
    try:
        role_value = Role(role)
    except ValueError:
        raise AuthError(
            "role", f"unknown role {role!r}: choose one of {', '.join(r.value for r in Role)}"
        ) from None
    check_password_strength(password)
    if session.scalar(select(User.id).where(User.email == email)) is not None:
        raise AuthError("email", f"a user with email {email} already exists")
    user = User(email=email, password_hash=_hasher.hash(password), role=role_value, created_at=now)
    try:
        with session.begin_nested():  # another process may create the same email meanwhile
            session.add(user)
            session.flush()
    except IntegrityError:
        raise AuthError("email", f"a user with email {email} already exists") from None
    audit.record(
        session,
        actor=actor,
        action="user.created",
        target_type="user",
        target_id=user.id,
        details={"email": email, "role": role_value.value},
        now=now,
    )
    return user


def check_password_strength(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise AuthError("password", f"the password needs at least {MIN_PASSWORD_LENGTH} characters")


def authenticate(session: Session, email: str, password: str, now: dt.datetime) -> User | None:
    """Return the active user with these credentials, or None; records the login time."""
    user = session.scalar(select(User).where(User.email == normalise_email(email)))
    try:
        _hasher.verify(user.password_hash if user else _DUMMY_HASH, password)
    except (VerificationError, InvalidHashError):
        return None
    if user is None or not user.active:
        return None
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = _hasher.hash(password)
    user.last_login_at = now
    return user


def update_user(
    session: Session,
    user: User,
    *,
    role: str | None = None,
    active: bool | None = None,
    actor: str,
    now: dt.datetime,
) -> bool:
    """Change a user's role or switch the account off or on; False if nothing changed.

    The last active admin can be neither demoted nor switched off: someone must be
    able to manage users and keys.
    """
    new_role = user.role
    if role is not None:
        try:
            new_role = Role(role)
        except ValueError:
            raise AuthError("role", f"unknown role {role!r}") from None
    new_active = user.active if active is None else active
    changes = {}
    if new_role is not user.role:
        changes["role"] = [user.role.value, new_role.value]
    if new_active != user.active:
        changes["active"] = [user.active, new_active]
    if not changes:
        return False
    stays_admin = new_role is Role.ADMIN and new_active
    if user.role is Role.ADMIN and user.active and not stays_admin and _lock_admins(session) <= 1:
        field = "role" if "role" in changes else "active"
        raise AuthError(field, "Tenure needs at least one active admin: make another admin first")
    user.role = new_role
    user.active = new_active
    audit.record(
        session,
        actor=actor,
        action="user.updated",
        target_type="user",
        target_id=user.id,
        details={"email": user.email, **changes},
        now=now,
    )
    return True


def _lock_admins(session: Session) -> int:
    """Count the active admins, locking their rows so that two admins demoting each
    other at once cannot both pass the last-admin check (SQLite: BEGIN IMMEDIATE)."""
    ids = session.scalars(
        select(User.id).where(User.role == Role.ADMIN, User.active).with_for_update()
    ).all()
    return len(ids)


def set_password(
    session: Session, user: User, password: str, *, actor: str, now: dt.datetime
) -> None:
    check_password_strength(password)
    user.password_hash = _hasher.hash(password)
    audit.record(
        session,
        actor=actor,
        action="user.password_set",
        target_type="user",
        target_id=user.id,
        details={"email": user.email},
        now=now,
    )


def parse_scopes(scopes: str | Iterable[str]) -> list[Scope]:
    names = scopes.split(",") if isinstance(scopes, str) else list(scopes)
    names = [n.strip() for n in names if n.strip()]
    if not names:
        raise AuthError("scopes", "give at least one scope: ingest, read, write or admin")
    parsed: list[Scope] = []
    for name in names:
        try:
            scope = Scope(name)
        except ValueError:
            raise AuthError(
                "scopes", f"unknown scope {name!r}: choose from ingest, read, write, admin"
            ) from None
        if scope not in parsed:
            parsed.append(scope)
    return parsed


def hash_key(secret: str) -> str:
    # Keys carry 256 random bits, so a fast hash is as safe as a slow one here.
    return hashlib.sha256(secret.encode()).hexdigest()


def create_api_key(
    session: Session,
    *,
    name: str,
    scopes: str | Iterable[str],
    actor: str,
    now: dt.datetime,
    created_by: User | None = None,
) -> tuple[ApiKey, str]:
    """Create a key; return it with its secret, which is never retrievable again."""
    name = name.strip()
    if not name or len(name) > 100:
        raise AuthError("name", "give the key a name of 1 to 100 characters")
    scope_list = parse_scopes(scopes)
    public = secrets.token_hex(4)
    secret = f"{KEY_PREFIX}{public}_{secrets.token_urlsafe(32)}"
    key = ApiKey(
        name=name,
        prefix=f"{KEY_PREFIX}{public}",
        key_hash=hash_key(secret),
        scopes=",".join(s.value for s in scope_list),
        created_by_id=created_by.id if created_by else None,
        created_at=now,
    )
    session.add(key)
    session.flush()
    audit.record(
        session,
        actor=actor,
        action="api_key.created",
        target_type="api_key",
        target_id=key.id,
        details={"name": name, "scopes": key.scopes, "prefix": key.prefix},
        now=now,
    )
    return key, secret


def revoke_api_key(session: Session, key: ApiKey, *, actor: str, now: dt.datetime) -> bool:
    """Revoke a key; False if it already was (nothing changes then)."""
    if key.revoked_at is not None:
        return False
    key.revoked_at = now
    audit.record(
        session,
        actor=actor,
        action="api_key.revoked",
        target_type="api_key",
        target_id=key.id,
        details={"name": key.name, "prefix": key.prefix},
        now=now,
    )
    return True


def find_api_key(session: Session, secret: str) -> ApiKey | None:
    if not secret.startswith(KEY_PREFIX):
        return None
    return session.scalar(select(ApiKey).where(ApiKey.key_hash == hash_key(secret)))
