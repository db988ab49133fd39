"""The programme's global control group: a permanent, deterministic share of all members
(default 5%) that no marketing journey touches, so that the programme's total uplift on
retention can be measured against it.

A member's bucket is a hash of the group's salt and the member's external id into
10,000 buckets; members whose bucket falls under the share belong. Membership is
recorded (``global_control``) the first time a journey meets the member, and a
recorded member stays in whatever the share becomes: raising the share adds members,
lowering it only stops new ones from joining. The salt is fixed when the setting is
first stored and never changes.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import secrets
from collections.abc import Iterable, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from experiments.assignment import BUCKETS, bucket
from journeys.models import GlobalControl
from members import bulk, programme
from members.errors import InvalidFields

MAX_PERCENT = Decimal(20)
DEFAULT_SALT = "tenure-global-control"


@dataclasses.dataclass(frozen=True)
class ControlGroup:
    percent: Decimal = Decimal(5)
    salt: str = DEFAULT_SALT

    def as_dict(self) -> dict[str, Any]:
        text = f"{self.percent:f}"
        if "." in text:
            text = text.rstrip("0").rstrip(".")
        return {"percent": text, "salt": self.salt}

    def holds(self, number: int) -> bool:
        return number < int(self.percent * BUCKETS / 100)


def parse(data: Mapping[str, Any]) -> ControlGroup:
    try:
        percent = Decimal(str(data.get("percent", 5)))
    except InvalidOperation:
        percent = Decimal(-1)
    if not percent.is_finite() or not Decimal(0) <= percent <= MAX_PERCENT:
        raise InvalidFields({"percent": f"must be a number from 0 to {MAX_PERCENT}"})
    salt = data.get("salt") or DEFAULT_SALT
    return ControlGroup(percent=percent, salt=str(salt))


SETTING = programme.Document("global_control", parse, ControlGroup())


def new_salt() -> str:
    return secrets.token_hex(8)


def members_in(session: Session, members: Iterable[tuple[int, str]], now: dt.datetime) -> set[int]:
    """Which of (member id, external id) are in the group; records those newly in."""
    members = list(members)
    if not members:
        return set()
    group, _ = SETTING.load(session)
    ids = [member_id for member_id, _ in members]
    recorded = set()
    for start in range(0, len(ids), 5000):
        chunk = ids[start : start + 5000]
        recorded.update(
            session.scalars(
                select(GlobalControl.member_id).where(GlobalControl.member_id.in_(chunk))
            )
        )
    joining = []
    for member_id, external_id in members:
        if member_id in recorded:
            continue
        number = bucket(group.salt, external_id)
        if group.holds(number):
            joining.append({"member_id": member_id, "bucket": number, "since": now})
    if joining:
        bulk.insert_ignore(session, GlobalControl.__table__, joining, key="member_id")
    return recorded | {row["member_id"] for row in joining}
