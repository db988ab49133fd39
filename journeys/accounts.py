"""Provider accounts: entered by an admin (secrets sealed, never shown back), and the
one that carries a message chosen by its channel and where the member is.

A channel with no active account at all goes to the console provider (so a demo needs
no account); a channel with accounts of which none serves the member is an error the
message records, never a silent console delivery.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
import secrets as random
import threading
from collections.abc import Mapping
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from journeys import providers
from journeys.channel_models import ProviderAccount
from journeys.policies import in_mainland
from journeys.providers.base import Provider
from journeys.vault import SecretUnreadable, Vault
from members import audit
from members.errors import InvalidFields

SCOPES = ("cn", "other", "all")
NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
CONSOLE = "console"


def clean(
    data: Mapping[str, Any], *, existing: ProviderAccount | None = None
) -> tuple[dict[str, Any], dict[str, Any], dict[str, str]]:
    """(account columns, secrets, errors) from a form or API body. On update a blank
    secret keeps the stored one."""
    errors: dict[str, str] = {}
    kind = existing.kind if existing is not None else data.get("kind")
    if kind not in providers.ACCOUNT_KINDS:
        errors["kind"] = "one of " + ", ".join(providers.ACCOUNT_KINDS)
        return {}, {}, errors
    cls = providers.kind(kind)
    name = existing.name if existing is not None else (data.get("name") or "").strip()
    if not isinstance(name, str) or not NAME.match(name) or name == "new":
        errors["name"] = "lower-case letters, digits, - and _, up to 64 characters"
    scope = data.get("scope", existing.scope if existing is not None else "all")
    if scope not in SCOPES:
        errors["scope"] = "cn (members in mainland China), other, or all"
    active = data.get("active", existing.active if existing is not None else True)
    if not isinstance(active, bool):
        errors["active"] = "true or false"
    given = data.get("settings") or {}
    if not isinstance(given, Mapping):
        errors["settings"] = "an object of the provider's settings"
        given = {}
    known = {field.name for field in cls.fields}
    for unknown in sorted(set(given) - known):
        errors[f"settings.{unknown}"] = f"{cls.label} has no setting {unknown!r}"
    settings: dict[str, Any] = {}
    secret_values: dict[str, Any] = {}
    for field in cls.fields:
        value = given.get(field.name)
        if value is not None and not isinstance(value, str):
            errors[f"settings.{field.name}"] = "text"
            continue
        value = (value or "").strip()
        if field.secret and not value and existing is not None:
            continue  # kept as stored
        if not value and field.default is not None:
            value = field.default
        if not value:
            if field.required:
                errors[f"settings.{field.name}"] = f"{field.label} is required"
            continue
        (secret_values if field.secret else settings)[field.name] = value
    columns = {
        "name": name,
        "kind": kind,
        "channel": cls.channel,
        "scope": scope,
        "active": active,
        "settings": settings,
    }
    return columns, secret_values, errors


def save(
    session: Session,
    vault: Vault,
    data: Mapping[str, Any],
    *,
    actor: str,
    now: dt.datetime,
    account: ProviderAccount | None = None,
) -> ProviderAccount:
    """Create an account, or update ``account``; InvalidFields names what is wrong."""
    columns, secret_values, errors = clean(data, existing=account)
    if account is None and not errors:
        taken = session.scalar(
            select(ProviderAccount.id).where(ProviderAccount.name == columns["name"])
        )
        if taken:
            errors["name"] = f"an account named {columns['name']!r} exists"
    if errors:
        raise InvalidFields(errors)
    stored = {}
    if account is not None and account.secrets_encrypted:
        try:
            stored = vault.open(account.secrets_encrypted)
        except SecretUnreadable:
            # SECRET_KEY changed: every secret must be entered again.
            missing = {
                f"settings.{f.name}": f"{f.label}: the stored value cannot be read any more "
                "(SECRET_KEY changed); enter it again"
                for f in providers.kind(columns["kind"]).fields
                if f.secret and f.required and f.name not in secret_values
            }
            if missing:
                raise InvalidFields(missing) from None
    try:
        providers.kind(columns["kind"])(columns["settings"], {**stored, **secret_values}).check()
    except ValueError as exc:
        raise InvalidFields({"settings": str(exc)}) from None
    if account is None:
        account = ProviderAccount(receipt_token=random.token_urlsafe(24), created_at=now)
        session.add(account)
    for key, value in columns.items():
        setattr(account, key, value)
    account.secrets_encrypted = vault.seal({**stored, **secret_values})
    account.updated_at, account.updated_by = now, actor
    session.flush()
    audit.record(
        session,
        actor=actor,
        action="provider_account.save",
        target_type="provider_account",
        target_id=account.name,
        # Which secrets changed, never their values.
        details={**columns, "secrets_changed": sorted(secret_values)},
        now=now,
    )
    return account


def remove(session: Session, account: ProviderAccount, *, actor: str, now: dt.datetime) -> None:
    """Delete an account (messages it carried keep its name), in the audit log."""
    audit.record(
        session,
        actor=actor,
        action="provider_account.delete",
        target_type="provider_account",
        target_id=account.name,
        details={"kind": account.kind},
        now=now,
    )
    session.delete(account)
    session.flush()


def describe(account: ProviderAccount) -> dict[str, Any]:
    """An account as pages and the API show it: settings, and only the names of its
    stored secrets."""
    cls = providers.kind(account.kind)
    return {
        "name": account.name,
        "kind": account.kind,
        "label": cls.label,
        "channel": account.channel,
        "scope": account.scope,
        "active": account.active,
        "cross_border": cls.cross_border,
        "settings": dict(account.settings or {}),
        "secrets": [f.name for f in cls.fields if f.secret],
        "receipt_path": f"/hooks/providers/{account.receipt_token}",
        "updated_at": account.updated_at,
        "updated_by": account.updated_by,
    }


@dataclasses.dataclass(frozen=True)
class Route:
    """Where a message goes: an account (None: the console), or why nowhere."""

    account: ProviderAccount | None
    error: str | None = None

    @property
    def name(self) -> str:
        return self.account.name if self.account is not None else CONSOLE

    @property
    def cross_border(self) -> bool:
        return self.account is not None and providers.kind(self.account.kind).cross_border


class Router:
    """The active accounts, loaded once per batch."""

    def __init__(self, session: Session) -> None:
        rows = session.scalars(
            select(ProviderAccount)
            .where(ProviderAccount.active.is_(True))
            .order_by(ProviderAccount.id)
        ).all()
        self.by_channel: dict[str, list[ProviderAccount]] = {}
        for row in rows:
            self.by_channel.setdefault(row.channel, []).append(row)

    def route(self, channel: str, member) -> Route:
        accounts = self.by_channel.get(channel)
        if not accounts:
            return Route(None)
        where = "cn" if in_mainland(member) else "other"
        for scope in (where, "all"):
            for account in accounts:
                if account.scope == scope:
                    return Route(account)
        place = "in mainland China" if where == "cn" else "outside mainland China"
        return Route(None, f"no active {channel} account serves members {place}")


_built: dict[tuple[int, dt.datetime], Provider] = {}
_lock = threading.Lock()


def build(account: ProviderAccount, vault: Vault) -> Provider:
    """The provider of an account, built once per process and version of the account
    (so its HTTP connections are reused); SecretUnreadable if its secrets are lost."""
    key = (account.id, account.updated_at)
    with _lock:
        provider = _built.get(key)
        if provider is None:
            secret_values = (
                vault.open(account.secrets_encrypted) if account.secrets_encrypted else {}
            )
            provider = providers.kind(account.kind)(account.settings or {}, secret_values)
            for stale in [k for k in _built if k[0] == account.id]:
                del _built[stale]
            _built[key] = provider
        return provider
