"""The programme's settings that marketers edit (stage rules, the tier ladder, points
rules): one JSON document per key, with a version that every save increments, and an
audit entry holding what it was and what it became."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable, Mapping
from typing import Any, Generic, Protocol, TypeVar

from sqlalchemy import BigInteger, String
from sqlalchemy.orm import Mapped, Session, mapped_column

from members import audit
from members.db import Base


class ProgrammeSetting(Base):
    __tablename__ = "programme_settings"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[dict[str, Any]]
    version: Mapped[int]
    updated_at: Mapped[dt.datetime]
    updated_by: Mapped[str] = mapped_column(String(320))


class Cursor(Base):
    """How far a periodic pass over an append-only table has got (e.g. the points
    earned from events: the last event id it took)."""

    __tablename__ = "cursors"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    position: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[dt.datetime]


def load(session: Session, key: str) -> ProgrammeSetting | None:
    return session.get(ProgrammeSetting, key)


class VersionConflict(Exception):
    """The setting was saved by someone else since the version the caller edited."""

    def __init__(self, key: str, expected: int, current: int) -> None:
        super().__init__(f"{key} changed since version {expected} (now version {current})")
        self.current = current


def save(
    session: Session,
    key: str,
    value: dict[str, Any],
    *,
    actor: str,
    now: dt.datetime,
    expected_version: int | None = None,
) -> ProgrammeSetting | None:
    """Store ``value`` under ``key`` as a new version, unless it is what is stored
    already (then nothing is written and None is returned). With ``expected_version``,
    refuse (VersionConflict) if the stored version is another."""
    row = session.get(ProgrammeSetting, key, with_for_update=True)
    current = 0 if row is None else row.version
    if expected_version is not None and expected_version != current:
        raise VersionConflict(key, expected_version, current)
    before = None if row is None else row.value
    if before == value:
        return None
    if row is None:
        row = ProgrammeSetting(key=key, version=0)
        session.add(row)
    row.value, row.version = value, row.version + 1
    row.updated_at, row.updated_by = now, actor
    audit.record(
        session,
        actor=actor,
        action=f"{key}.update",
        target_type="programme_setting",
        target_id=key,
        details={"version": row.version, "before": before, "after": value},
        now=now,
    )
    session.flush()
    return row


class _AsDict(Protocol):
    def as_dict(self) -> dict[str, Any]: ...


T = TypeVar("T", bound=_AsDict)


@dataclasses.dataclass(frozen=True)
class Document(Generic[T]):
    """One setting: where it is stored, how a stored document is read back, and what
    is in force until someone changes it."""

    key: str
    parse: Callable[[Mapping[str, Any]], T]
    default: T

    def load(self, session: Session) -> tuple[T, int]:
        """The value in force and its version (0: the default, never edited)."""
        row = load(session, self.key)
        if row is None:
            return self.default, 0
        return self.parse(row.value), row.version

    def save(
        self,
        session: Session,
        value: T,
        *,
        actor: str,
        now: dt.datetime,
        expected_version: int | None = None,
    ) -> ProgrammeSetting | None:
        """A new version (in the audit log), or None when nothing changed."""
        return save(
            session,
            self.key,
            value.as_dict(),
            actor=actor,
            now=now,
            expected_version=expected_version,
        )

    def row(self, session: Session) -> ProgrammeSetting | None:
        return load(session, self.key)
