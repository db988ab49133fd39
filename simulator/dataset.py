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
    clock = tenure.Clock.starting(start, zone)
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


class People:
    """The model's members as rows for the members table, made a batch at a time."""

    def __init__(self, count: int, *, joined: dt.datetime, seed: int = 1, params=None):
        params = params or Params()
        traits = population.draw(params, count, 1, joined.date(), seed)
        traits.joined[:] = 0
        self.sim = model.Membership(params, traits, joined.date(), 1, seed)
        self.clock = tenure.Clock(joined)
        self.joined = joined

    def rows(self, first: int, upto: int) -> list[dict]:
        return _member_rows(self.sim, first, upto, self.clock, self.joined)


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
    people = People(count, joined=joined, seed=seed, params=params)
    for first in range(0, count, BATCH):
        rows = people.rows(first, min(first + BATCH, count))
        bulk.insert_ignore(session, Member.__table__, rows, "external_id")
        (commit or session.flush)()


def _members(session, sim, first: int, upto: int, clock, now) -> None:
    rows = _member_rows(sim, first, upto, clock, now)
    bulk.insert_ignore(session, Member.__table__, rows, "external_id")


def _member_rows(sim, first: int, upto: int, clock, now) -> list[dict]:
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
    return rows


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


def api_events(
    count: int, *, members: int, end: dt.datetime, seed: int = 1, params: Params | None = None
) -> list[dict]:
    """``count`` events of ``members`` members as a shop would POST them to
    /api/v1/events (the model's days up to ``end``, as many as it takes)."""
    params = params or Params()
    # About 0.05 events a member a day: enough days to end near ``end``.
    days = min(3650, int(count / (members * 0.05)) + 30)
    start = (end - dt.timedelta(days=days)).date()
    traits = population.draw(params, members, 1, start, seed)
    traits.joined[:] = -1  # everyone a member from the start
    sim = model.Membership(params, traits, start, days, seed)
    clock = tenure.Clock(dt.datetime.combine(start, dt.time(0), dt.UTC))
    out: list[dict] = []
    day = 0
    while len(out) < count and day < days:
        events = sim.step(day)
        day += 1
        for record in tenure.event_records(sim, events.take(events.time < day), clock):
            item = {
                "event_id": record.event_id,
                "member": record.member,
                "type": record.type,
                "occurred_at": record.occurred_at.isoformat(),
                "properties": record.properties,
            }
            if record.amount is not None:
                item["amount"] = str(record.amount)
            if record.category:
                item["category"] = record.category
            out.append(item)
    return out[:count]
