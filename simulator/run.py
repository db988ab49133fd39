"""Simulated time: the membership lives day by day, and at the programme's tick hours
Tenure takes in what happened and does its periodic work at that instant.

A simulation's state (the members' arrays, what is still to reach Tenure, how far it
got) is saved after every simulated day, next to the database it fills, so that a run
stopped (Ctrl-C, a crash) continues with ``--resume`` from the last whole day. The
database holds the same day in a cursor: a state file that does not belong to the
database is refused.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import pickle
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from members import programme
from members.member import Member
from simulator import params as params_module
from simulator import population, tenure
from simulator.model import ORDER, REFERRAL, Events, Membership
from simulator.params import Params

STATE_FILE = "simulation.pickle"
# Days between saves of the state: a crash loses at most these, which --resume lives
# again (the same events, the same ids: nothing is doubled). Ctrl-C saves at once.
SAVE_EVERY = 5
DAY_CURSOR = "simulator.day"
SEED_CURSOR = "simulator.seed"


class SimulationError(Exception):
    """A simulation that cannot start or continue; the message says why."""


@dataclasses.dataclass
class Plan:
    """What the user asked for."""

    members: int
    days: int
    seed: int
    start: dt.date
    history: int = 0  # days before the journeys go live
    campaigns: bool = False  # at go-live: the five ready-made journeys + the experiment
    params: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Progress:
    day: int
    days: int
    date: dt.date
    members: int  # joined so far
    events: int  # sent to Tenure so far
    seconds: float
    work: tenure.Work


@dataclasses.dataclass
class Simulation:
    plan: Plan
    zone: str
    membership: Membership
    pending: Events
    next_day: int = 0
    joined: int = 0  # members signed up in Tenure (a prefix: member numbers follow joining)
    events: int = 0
    live: bool = False
    cursors: dict[str, int] = dataclasses.field(default_factory=dict)
    last_tick: float = 0.0
    seconds: float = 0.0
    timings: Counter = dataclasses.field(default_factory=Counter)  # seconds by phase
    definitions: dict = dataclasses.field(default_factory=dict)  # journey versions, read once

    @property
    def params(self) -> Params:
        return self.membership.params

    @property
    def clock(self) -> tenure.Clock:
        return tenure.Clock.starting(self.plan.start, self.zone)

    @property
    def done(self) -> bool:
        return self.next_day >= self.plan.days


def check_plan(plan: Plan, today: dt.date) -> Params:
    """The plan's problems, as a SimulationError naming the option; else the params."""
    if plan.members < 1:
        raise SimulationError(f"--members: must be at least 1 (got {plan.members})")
    if plan.members > 10_000_000:
        raise SimulationError(f"--members: at most 10,000,000 (got {plan.members:,})")
    if plan.days < 1:
        raise SimulationError(f"--days: must be at least 1 (got {plan.days})")
    if plan.days > 3660:
        raise SimulationError(f"--days: at most 3,660 (ten years; got {plan.days:,})")
    if not 0 <= plan.seed < 2**32:
        raise SimulationError(f"--seed: must be 0 to {2**32 - 1} (got {plan.seed})")
    if not 0 <= plan.history <= plan.days:
        raise SimulationError(f"--history: must be 0 to --days ({plan.days}); got {plan.history}")
    if plan.start > today:
        raise SimulationError(f"--start: {plan.start} is in the future (today is {today})")
    end = plan.start + dt.timedelta(days=plan.days)
    if end > today:
        latest = today - dt.timedelta(days=plan.days)
        raise SimulationError(
            f"--start: {plan.start} plus {plan.days} days ends after today ({today}); "
            f"start on {latest} or earlier"
        )
    if plan.start.year < 2000:
        raise SimulationError(f"--start: {plan.start} is before 2000")
    try:
        return params_module.from_dict(plan.params)
    except params_module.ParamError as exc:
        raise SimulationError(str(exc)) from None


def new(plan: Plan, params: Params, zone: str) -> Simulation:
    traits = population.draw(params, plan.members, plan.days, plan.start, plan.seed)
    membership = Membership(params, traits, plan.start, plan.days, plan.seed, zone)
    return Simulation(plan, zone, membership, Events.empty())


def state_path(folder: Path) -> Path:
    return folder / STATE_FILE


def save(sim: Simulation, folder: Path) -> None:
    """Write the state atomically: the old file stays whole until the new one is."""
    folder.mkdir(parents=True, exist_ok=True)
    path = state_path(folder)
    partial = path.with_suffix(".partial")
    traits, sim.membership.traits = sim.membership.traits, None
    try:
        with partial.open("wb") as out:
            pickle.dump(sim, out, protocol=pickle.HIGHEST_PROTOCOL)
            out.flush()
            os.fsync(out.fileno())
    finally:
        sim.membership.traits = traits
    os.replace(partial, path)


def load(folder: Path) -> Simulation:
    path = state_path(folder)
    if not path.exists():
        raise SimulationError(
            f"--resume: no simulation to continue in {folder} (start one with --members)"
        )
    try:
        with path.open("rb") as source:
            # The instance folder is Tenure's own (it holds the secret key too).
            sim = pickle.load(source)  # noqa: S301
    except (OSError, EOFError, pickle.UnpicklingError, AttributeError, ImportError) as exc:
        raise SimulationError(
            f"--resume: the saved simulation {path} cannot be read ({exc.__class__.__name__}); "
            "start a new one on a new instance"
        ) from None
    plan = sim.plan
    params = params_module.from_dict(plan.params)
    sim.membership.params = params
    sim.membership.traits = population.draw(params, plan.members, plan.days, plan.start, plan.seed)
    return sim


def check_database(session: Session, sim: Simulation | None) -> None:
    """A new simulation needs a database without one; a resumed one, its own."""
    day = session.get(programme.Cursor, DAY_CURSOR)
    seed = session.get(programme.Cursor, SEED_CURSOR)
    if sim is None:
        if day is not None:
            raise SimulationError(
                f"this database holds a simulation (seed {seed.position if seed else '?'}, "
                f"day {day.position}): continue it with --resume, or use a new instance"
            )
        others = session.scalar(select(Member.id).where(Member.external_id.like("sim-%")).limit(1))
        if others is not None:
            raise SimulationError("this database has simulated members already: use a new instance")
        return
    if day is None or seed is None or seed.position != sim.plan.seed:
        raise SimulationError(
            "--resume: the saved simulation does not belong to this database "
            "(start a new one on a new instance)"
        )
    if day.position > sim.next_day:
        raise SimulationError(
            f"--resume: the database is at day {day.position} but the saved state at day "
            f"{sim.next_day}; the state file is older than the database"
        )


def _mark(session: Session, sim: Simulation, now: dt.datetime) -> None:
    for name, value in ((DAY_CURSOR, sim.next_day), (SEED_CURSOR, sim.plan.seed)):
        cursor = session.get(programme.Cursor, name)
        if cursor is None:
            session.add(programme.Cursor(name=name, position=value, updated_at=now))
        else:
            cursor.position, cursor.updated_at = value, now


@dataclasses.dataclass
class Settings:
    timezone: str
    currency: str
    journey_batch: int
    folder: Path


def run(
    session: Session,
    sim: Simulation,
    settings: Settings,
    *,
    progress: Callable[[Progress], None] = lambda p: None,
    should_stop: Callable[[], bool] = lambda: False,
    go_live: Callable[[Session, dt.datetime], None] = lambda s, now: None,
) -> Simulation:
    """Live the simulation's remaining days; commit and save after each."""
    clock = sim.clock
    timing = sim.params.clock
    while not sim.done and not should_stop():
        started = time.perf_counter()
        day = sim.next_day
        sim.pending = sim.pending.merge(sim.membership.step(day))
        work = tenure.Work()
        work.seconds["behaviour"] += time.perf_counter() - started
        live = day >= sim.plan.history
        # Before go-live Tenure only takes the history in: once a day, with the stages
        # computed every few days (and on the last day before the journeys start).
        hours = timing.tick_hours if live else timing.tick_hours[-1:]
        for i, hour in enumerate(hours):
            at = day + hour / 24
            now = clock.at(at)
            started_in = time.perf_counter()
            _take_in(session, sim, at, now, settings)
            work.seconds["ingest"] += time.perf_counter() - started_in
            if live and not sim.live:
                tenure.go_live(session, now, settings.timezone)
                go_live(session, now)
                sim.live = True
            if live:
                # Stages once a day (every member now and then), journeys at every tick.
                lifecycle = None
                if i == 0:
                    every = (day - sim.plan.history) % timing.full_run_every == 0
                    lifecycle = "full" if every else "incremental"
                done = _tenure(session, now, settings, lifecycle=lifecycle, journeys=True)
            elif (day + 1) % timing.history_every == 0 or day + 1 == sim.plan.history:
                done = _tenure(session, now, settings, lifecycle="incremental", journeys=False)
                tenure.go_live(session, now, settings.timezone)  # triggers seen, not acted on
            else:
                done = tenure.Work()
            started_react = time.perf_counter()
            _react(session, sim, at, now)
            session.commit()
            work.seconds["react"] += time.perf_counter() - started_react
            work.add(done)
        sim.next_day = day + 1
        if sim.done or should_stop() or sim.next_day % SAVE_EVERY == 0:
            # The database's day and the saved state's move together.
            _mark(session, sim, clock.at(day + 1))
            session.commit()
            saving = time.perf_counter()
            save(sim, settings.folder)
            work.seconds["save"] += time.perf_counter() - saving
        else:
            session.commit()
        sim.seconds += time.perf_counter() - started
        sim.timings.update(work.seconds)
        progress(
            Progress(
                day + 1,
                sim.plan.days,
                sim.plan.start + dt.timedelta(days=day),
                sim.joined,
                sim.events,
                sim.seconds,
                work,
            )
        )
    return sim


def _tenure(session, now, settings: Settings, *, lifecycle: str | None, journeys: bool):
    return tenure.run_tenure(
        session,
        now,
        timezone=settings.timezone,
        lifecycle=lifecycle,
        journeys=journeys,
        batch=settings.journey_batch,
        # One transaction a tick: the simulation is the only writer, and every commit
        # of a busy SQLite file costs milliseconds.
        commit=lambda: session.flush(),
    )


def _take_in(session: Session, sim: Simulation, at: float, now, settings: Settings) -> None:
    """Members who joined and events that happened by ``at``, into Tenure."""
    joined = int(np.searchsorted(sim.membership.traits.joined, at, side="right"))
    tenure.join(session, sim.membership, sim.joined, joined, sim.clock, now)
    sim.joined = max(sim.joined, joined)
    due, sim.pending = sim.pending.split(at)
    sim.events += tenure.send_events(
        session, sim.membership, due, sim.clock, now, settings.currency
    )


def _react(session: Session, sim: Simulation, at: float, now: dt.datetime) -> None:
    """The members' answers to what Tenure did since the last tick."""
    m, clock, fx = sim.membership, sim.clock, sim.params.effects
    cursors = sim.cursors
    # Twins first: they copy the member as they were before this tick's benefits.
    for placed in tenure.placed_since(session, cursors.get("assignment", 0)):
        cursors["assignment"] = placed.id
        start = clock.days(placed.at)
        others = {
            arm: [
                (kind, {**f, "until": start + f["expires_days"]} if "expires_days" in f else f)
                for kind, f in benefits
            ]
            for arm, benefits in placed.packages.items()
            if arm != placed.arm
        }
        m.enter(
            f"experiment:{placed.experiment}",
            placed.member,
            start,
            EXPERIMENT_WINDOW,
            placed.arm,
            others,
            {f"experiment:{placed.experiment}"},
        )
    for entered in tenure.entered_since(session, cursors.get("enrollment", 0), sim.definitions):
        cursors["enrollment"] = entered.id
        m.enter(
            f"journey:{entered.journey}",
            entered.member,
            clock.days(entered.at),
            entered.window_days,
            "with",
            {"without": []},
            {f"journey:{entered.journey}"},
        )
    for grant_id, grant in tenure.grants_since(session, cursors.get("grant", 0)):
        cursors["grant"] = grant_id
        m.grant(
            grant.member,
            grant.kind,
            clock.days(grant.at),
            until=clock.days(grant.expires_at) if grant.expires_at else None,
            threshold=grant.threshold,
            code=grant.code,
            sources=grant.sources,
        )
    since = clock.at(sim.last_tick) if sim.last_tick else clock.origin
    extra = []
    delivered = tenure.delivered_between(session, since, now, sim.definitions)
    # Seeded by the tick, not by database ids (a PostgreSQL sequence differs between runs).
    tick = round(at * 24)
    luck = np.random.default_rng([sim.plan.seed, 6, tick]).random((len(delivered), 3))
    for message, draws in zip(delivered, luck, strict=True):
        when = clock.days(message.at)
        m.message(message.member, when, message.sources)
        if m.annoyed(message.member, when, draws[0]):
            tenure.withdraw(session, message.member_id, message.channel, now)
        if message.points_reminder and draws[1] < fx.points_reminder_redemption:
            key = f"sim-redeem-{message.id}"
            if tenure.redeem_points(session, message.member_id, 0.5 + draws[2] / 2, now, key):
                # The order the points went on reaches Tenure too, at the next tick.
                m.ordered(message.member, when, message.sources)
                m.serial += 1
                value = float(m.traits.order_value[message.member])
                category = int(m.traits.category[message.member])
                extra.append((message.member, ORDER, when, value, category, m.serial))
        if message.waiting_for == "referral" and draws[1] < fx.referral_after_invite:
            extra.append((message.member, REFERRAL, at + 0.01 + draws[2] * 0.1, 0, -1, message.id))
    if extra:
        member, kind, time_, amount, category, ref = zip(*extra, strict=True)
        sim.pending = sim.pending.merge(
            Events(
                np.array(member, np.int64),
                np.array(kind, np.int8),
                np.array(time_),
                np.array(amount, np.float32),
                np.array(category, np.int8),
                np.array(ref, np.int64),
            )
        )
    sim.last_tick = at


# Retention at 90 days is the canonical experiment's primary metric.
EXPERIMENT_WINDOW = 90
