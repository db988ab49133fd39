"""The simulator at `make demo`'s size: 20,000 members, a year of history, then 120
days with the five ready-made journeys and the benefit experiment, through Tenure's
engines on SQLite (and PostgreSQL); time per phase, then the validation report.

BENCH_SIM_MEMBERS, BENCH_SIM_DAYS, BENCH_SIM_HISTORY change the sizes, BENCH_DATABASES
the databases (default "sqlite").
"""

from __future__ import annotations

import datetime as dt
import os
import resource
import time

from app.extensions import db
from bench.setup import instance
from simulator import campaigns, report
from simulator import run as simulation
from simulator.params import Params

MEMBERS = int(os.environ.get("BENCH_SIM_MEMBERS", "20000"))
DAYS = int(os.environ.get("BENCH_SIM_DAYS", "485"))
HISTORY = int(os.environ.get("BENCH_SIM_HISTORY", "365"))
SEED = 2026


def run() -> None:
    for kind in os.environ.get("BENCH_DATABASES", "sqlite").split():
        with instance(kind) as app, app.app_context():
            _measure(kind, app)


def _measure(kind: str, app) -> None:
    settings = app.config["TENURE_SETTINGS"]
    today = dt.datetime.now(dt.UTC).date()
    plan = simulation.Plan(
        members=MEMBERS,
        days=DAYS,
        seed=SEED,
        start=today - dt.timedelta(days=DAYS),
        history=HISTORY,
        campaigns=True,
    )
    sim = simulation.new(plan, Params(), settings.timezone)
    config = simulation.Settings(
        timezone=settings.timezone,
        currency=settings.currency,
        journey_batch=settings.journey_batch,
        folder=settings.instance_path / "simulation",
    )
    live_from = {}

    def go_live(session, now) -> None:
        campaigns.start(session, now, salt=f"sim-{SEED}")
        live_from["seconds"] = time.perf_counter() - started

    started = time.perf_counter()
    simulation.run(db.session, sim, config, go_live=go_live)
    total = time.perf_counter() - started
    history = live_from.get("seconds", total)
    phases = ", ".join(f"{name} {seconds:.0f}s" for name, seconds in sim.timings.most_common())
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"{kind}: {MEMBERS:,} members, {DAYS} days ({HISTORY} of history): {total:.0f}s "
        f"({history:.0f}s history, {total - history:.0f}s with journeys live), "
        f"{sim.events:,} events ({sim.events / total:,.0f}/s), peak memory {peak:,.0f} MB\n"
        f"  by phase: {phases}",
        flush=True,
    )
    print(report.render(report.build(db.session, sim)), flush=True)


if __name__ == "__main__":
    run()
