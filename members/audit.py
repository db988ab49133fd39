"""The audit log: one row for every change of configuration, key or user."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import Index, String
from sqlalchemy.orm import Mapped, Session, mapped_column

from members.db import Base, BigId


class AuditEntry(Base):
    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    at: Mapped[dt.datetime]
    # Who: "user:<email>", "api_key:<name>", "cli" or "system".
    actor: Mapped[str] = mapped_column(String(320))
    action: Mapped[str] = mapped_column(String(64))
    target_type: Mapped[str] = mapped_column(String(64))
    target_id: Mapped[str | None] = mapped_column(String(128))
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)

    __table_args__ = (Index(None, "at"), Index(None, "target_type", "target_id"))


def record(
    session: Session,
    *,
    actor: str,
    action: str,
    target_type: str,
    target_id: object = None,
    details: dict[str, Any] | None = None,
    now: dt.datetime,
) -> AuditEntry:
    """Append an audit entry to the session's transaction (the caller commits)."""
    entry = AuditEntry(
        at=now,
        actor=actor,
        action=action,
        target_type=target_type,
        target_id=None if target_id is None else str(target_id),
        details=details or {},
    )
    session.add(entry)
    return entry
