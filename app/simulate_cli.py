"""``flask --app wsgi simulate``: a virtual membership lived day by day through Tenure,
and ``simulate report``: what the experiments and journeys estimated beside the truth."""

from __future__ import annotations

import datetime as dt
import signal
import sys
from pathlib import Path
from typing import Any

import click
from flask import current_app
from flask.cli import with_appcontext

from app import clock
from app.extensions import db
from app.oneline import OneLineGroup, fail
from simulator import campaigns, report, tenure
from simulator import run as simulation
from simulator.params import ParamError
from simulator.params import load as load_params


def folder() -> Path:
    return current_app.config["TENURE_SETTINGS"].instance_path / "simulation"


@click.group("simulate", cls=OneLineGroup, invoke_without_command=True)
@click.option("--members", type=int, help="How many members join over the simulation.")
@click.option("--days", type=int, help="Simulated days.")
@click.option("--seed", type=int, default=1, show_default=True, help="Same seed, same members.")
@click.option(
    "--start",
    type=click.DateTime(formats=["%Y-%m-%d"]),
    help="The first simulated day (default: --days before today).",
)
@click.option(
    "--history",
    type=int,
    default=0,
    show_default=True,
    help="Days before the journeys go live (stages are computed; nothing is sent).",
)
@click.option(
    "--campaigns",
    is_flag=True,
    help="At go-live, publish the five ready-made journeys and start the canonical "
    "benefit experiment (service vs discount package, 10%% holdout).",
)
@click.option("--params", "params_path", metavar="FILE", help="A TOML file of model parameters.")
@click.option("--resume", is_flag=True, help="Continue the simulation saved in this instance.")
@click.pass_context
@with_appcontext
def simulate_group(ctx: click.Context, **options: Any) -> None:
    """Simulate a membership: members join, buy, log in and drift away day by day; at
    each tick hour Tenure ingests what happened and runs lifecycle, points, journeys
    and delivery at the simulated time, and the members react to what they get."""
    if ctx.invoked_subcommand is not None:
        return
    settings = current_app.config["TENURE_SETTINGS"]
    sim = _resume(options) if options["resume"] else _new(options)
    config = simulation.Settings(
        timezone=settings.timezone,
        currency=settings.currency,
        journey_batch=settings.journey_batch,
        folder=folder(),
    )
    stopping = {"asked": False}

    def interrupt(_signum, _frame) -> None:
        if stopping["asked"]:  # a second Ctrl-C: the last saved day is kept
            raise KeyboardInterrupt
        stopping["asked"] = True
        click.echo("\nStopping after this simulated day (Ctrl-C again to stop now)", err=True)

    def go_live(session, now: dt.datetime) -> None:
        if sim.plan.campaigns:
            salt = f"sim-{sim.plan.seed}"
            started = campaigns.start(session, now, salt=salt)
            if started:
                click.echo(f"\nGo-live {now:%Y-%m-%d}: started {', '.join(started)}", err=True)

    previous = signal.signal(signal.SIGINT, interrupt)
    plan = sim.plan
    try:
        with click.progressbar(
            length=plan.days,
            label="Simulating",
            file=sys.stderr,
            show_eta=True,
            item_show_func=lambda p: _line(p) if p else "",
        ) as bar:
            bar.update(sim.next_day)

            def progress(p: simulation.Progress) -> None:
                bar.update(1, p)

            simulation.run(
                db.session,
                sim,
                config,
                progress=progress,
                should_stop=lambda: stopping["asked"],
                go_live=go_live,
            )
    except KeyboardInterrupt:
        db.session.rollback()
        fail(
            f"stopped at day {sim.next_day} of {plan.days}; the last whole day is saved: "
            "`flask --app wsgi simulate --resume` continues"
        )
    finally:
        signal.signal(signal.SIGINT, previous)
    if not sim.done:
        click.echo(
            f"Stopped after day {sim.next_day} of {plan.days}: "
            "`flask --app wsgi simulate --resume` continues",
            err=True,
        )
        sys.exit(130)
    click.echo(
        f"Simulated {plan.days:,} days from {plan.start}: {sim.joined:,} members, "
        f"{sim.events:,} events in {sim.seconds:,.0f} s"
    )


def _line(p: simulation.Progress) -> str:
    rate = p.events / p.seconds if p.seconds else 0
    return (
        f"{p.date} · {p.members:,} members · {p.events:,} events ({rate:,.0f}/s) · "
        f"{p.work.messages:,} messages today"
    )


def _new(options: dict[str, Any]) -> simulation.Simulation:
    for name in ("members", "days"):
        if options[name] is None:
            fail(f"--{name}: give it (or --resume to continue a saved simulation)")
    settings = current_app.config["TENURE_SETTINGS"]
    today = clock.local_date(clock.now())
    start = options["start"].date() if options["start"] else None
    days = options["days"]
    if start is None and days >= 0:
        start = today - dt.timedelta(days=days)
    try:
        params = load_params(options["params_path"])
    except ParamError as exc:
        fail(str(exc))
    plan = simulation.Plan(
        members=options["members"],
        days=days,
        seed=options["seed"],
        start=start or today,
        history=options["history"],
        campaigns=options["campaigns"],
        params=params.as_dict() if options["params_path"] else {},
    )
    try:
        params = simulation.check_plan(plan, today)
        tenure.check_instance(db.session)
        simulation.check_database(db.session, None)
    except (simulation.SimulationError, tenure.Refused) as exc:
        fail(str(exc))
    if simulation.state_path(folder()).exists():
        fail(
            f"{simulation.state_path(folder())} holds a simulation the database does not: "
            "remove it, or use a new instance"
        )
    return simulation.new(plan, params, settings.timezone)


def _resume(options: dict[str, Any]) -> simulation.Simulation:
    given = [n for n in ("members", "days", "start", "params_path") if options[n] is not None]
    if given:
        fail(f"--{given[0].replace('_path', '')}: --resume continues the saved plan unchanged")
    try:
        sim = simulation.load(folder())
        tenure.check_instance(db.session)
        simulation.check_database(db.session, sim)
    except (simulation.SimulationError, tenure.Refused) as exc:
        fail(str(exc))
    if sim.done:
        fail(f"--resume: the simulation is complete ({sim.plan.days} days)")
    return sim


@simulate_group.command("report")
@with_appcontext
def report_command() -> None:
    """Each experiment's and journey's estimate beside the simulator's true effect."""
    try:
        sim = simulation.load(folder())
    except simulation.SimulationError:
        fail("no simulation in this instance: run `flask --app wsgi simulate` first")
    click.echo(report.render(report.build(db.session, sim)))
