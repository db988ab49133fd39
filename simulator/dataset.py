"""The virtual membership as a data set, for benchmarks: members and their events as
the model makes them, day by day, written straight into the tables in bulk (no
journeys, no reactions: Tenure is not in the loop). Memory stays bounded: a day's
events at a time, members a batch at a time.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable
from zoneinfo import ZoneInfo

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from members import bulk
from members.event import Event
from members.member import Member
from simulator import model, population, tenure
from simulator.params import Params

BATCH = 20_000


@dataclasses.dataclass(frozen=True)
class Filled:
    members: int
    events: int


def fill(
    session: Session,
    *,
    members: int,
    days: int,
    end: dt.datetime,
    seed: int = 1,
    params: Params | None = None,
    max_events: int | None = None,
    commit: Callable[[], None] | None = None,
    zone: str = "Asia/Shanghai",
) -> Filled:
    """``members`` members living ``days`` days up to ``end`` (their events stop at
    ``max_events``), inserted with the bulk paths; ``commit`` after each batch."""
    params = params or Params()
    commit = commit or session.flush
    start = (end.astimezone(ZoneInfo(zone)) - dt.timedelta(days=days)).date()
    traits = population.draw(params, members, days, start, seed)
    sim = model.Membership(params, traits, start, days, seed, zone)
    origin = dt.datetime.combine(start, dt.time(0), ZoneInfo(zone)).astimezone(dt.UTC)
    clock = tenure.Clock(origin)
    for first in range(0, members, BATCH):
        _members(session, sim, first, min(first + BATCH, members), clock, end)
        commit()
    ids = dict(session.execute(select(Member.external_id, Member.id)).all())
    member_ids = np.array([ids[tenure.external_id(i)] for i in range(members)], dtype=np.int64)
    written = 0
    for day in range(days):
        events = sim.step(day)
        keep = events.time <= days  # those after the last day belong to no one yet
        events = events.take(keep)
        if max_events is not None:
            events = events.take(slice(0, max(0, max_events - written)))
        for at in range(0, len(events), BATCH):
            part = events.take(slice(at, at + BATCH))
            rows = _event_rows(sim, part, member_ids, clock, end)
            bulk.insert_ignore(session, Event.__table__, rows, "event_id")
            commit()
        written += len(events)
        if max_events is not None and written >= max_events:
            break
    return Filled(members, written)


def members_only(
    session: Session,
    count: int,
    *,
    joined: dt.datetime,
    seed: int = 1,
    params: Params | None = None,
    commit: Callable[[], None] | None = None,
) -> None:
    """``count`` of the model's members (names, phones, regions, time zones, consent,
    the ``sensitivity`` attribute), all joined at ``joined``, without events."""
    params = params or Params()
    traits = population.draw(params, count, 1, joined.date(), seed)
    traits.joined[:] = 0
    sim = model.Membership(params, traits, joined.date(), 1, seed)
    clock = tenure.Clock(joined)
    for first in range(0, count, BATCH):
        _members(session, sim, first, min(first + BATCH, count), clock, joined)
        (commit or session.flush)()


def _members(session, sim, first: int, upto: int, clock, now) -> None:
    rows = []
    for i in range(first, upto):
        profile = population.profile(sim.params, sim.traits, i, sim.seed)
        rows.append(
            {
                "external_id": tenure.external_id(i),
                "phone": profile["phone"],
                "name": profile["name"],
                "timezone": profile["timezone"],
                "region": profile["region"],
                "birthday": profile["birthday"],
                "attributes": profile["attributes"],
                "joined_at": clock.at(float(sim.traits.joined[i])),
                "consent_sms": bool(sim.traits.sms[i]),
                "consent_push": bool(sim.traits.push[i]),
                "created_at": now,
                "updated_at": now,
            }
        )
    bulk.insert_ignore(session, Member.__table__, rows, "external_id")


def _event_rows(sim, events: model.Events, member_ids, clock, now) -> list[dict]:
    rows = []
    for record in tenure.event_records(sim, events, clock):
        money = record.amount
        rows.append(
            {
                "event_id": record.event_id,
                "member_id": int(member_ids[tenure.index_of(record.member)]),
                "type": record.type,
                "occurred_at": record.occurred_at,
                "received_at": now,
                "properties": record.properties,
                "amount": money,
                "currency": "CNY" if money is not None else None,
                "category": record.category,
            }
        )
    return rows
