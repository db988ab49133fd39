"""Tenure's commands: ``flask --app wsgi <command>``.

Bad input ends with one line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import datetime as dt
import sys

import click
from flask import Flask, current_app
from flask.cli import with_appcontext
from redis import RedisError
from rq import Worker
from sqlalchemy.exc import SQLAlchemyError

from app import clock, redis_server, uploads
from app.auth.service import AuthError, create_api_key, create_user
from app.extensions import db
from app.oneline import OneLineCommand, fail
from app.redis_client import get_redis
from app.simulate_cli import simulate_group
from journeys import engine as journey_engine
from journeys import ready_made
from members import csv_import, lifecycle_run, points
from members.errors import InvalidField
from members.fields import parse_time
from members.lifecycle import Stage
from workers import queues, runtime
from workers.schedule import LeaderCronScheduler, register_all


def register_cli(app: Flask) -> None:
    app.cli.add_command(import_group)
    app.cli.add_command(export_group)
    app.cli.add_command(lifecycle_group)
    app.cli.add_command(journeys_group)
    app.cli.add_command(simulate_group)
    for command in (
        create_user_command,
        create_api_key_command,
        worker_command,
        cron_command,
        redis_command,
    ):
        app.cli.add_command(command)


@click.command("create-user", cls=OneLineCommand)
@click.argument("email")
@click.option("--role", required=True, type=click.Choice(["admin", "marketer", "analyst"]))
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
@with_appcontext
def create_user_command(email: str, role: str, password_stdin: bool) -> None:
    """Create a marketer account; the password is prompted for unless --password-stdin."""
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    try:
        user = create_user(
            db.session, email=email, password=password, role=role, actor="cli", now=clock.now()
        )
    except AuthError as exc:
        db.session.rollback()
        fail(f"{exc.field}: {exc.message}")
    db.session.commit()
    click.echo(f"Created {user.role.value} {user.email}")


@click.command("create-api-key", cls=OneLineCommand)
@click.argument("name")
@click.option("--scopes", required=True, help="Comma-separated: ingest, read, write, admin.")
@with_appcontext
def create_api_key_command(name: str, scopes: str) -> None:
    """Create an API key and print its secret, once: only a hash of it is kept."""
    try:
        key, secret = create_api_key(
            db.session, name=name, scopes=scopes, actor="cli", now=clock.now()
        )
    except AuthError as exc:
        db.session.rollback()
        fail(f"{exc.field}: {exc.message}")
    db.session.commit()
    click.echo(
        f"Created API key {key.name!r} with scopes {key.scopes}. Keep it; it is shown once:",
        err=True,
    )
    click.echo(secret)


@click.command("worker", cls=OneLineCommand)
@click.option(
    "--queue",
    "-q",
    "queue_names",
    multiple=True,
    help=f"Queues to listen on (default: {', '.join(queues.ALL)}).",
)
@click.option("--burst", is_flag=True, help="Stop once the queues are empty.")
@click.option("--name", default=None, help="Worker name (default: host and pid).")
@with_appcontext
def worker_command(queue_names: tuple[str, ...], burst: bool, name: str | None) -> None:
    """Run an RQ worker on the configured Redis (the embedded one when REDIS_URL is unset)."""
    unknown = set(queue_names) - set(queues.ALL)
    if unknown:
        fail(f"--queue: unknown queue {sorted(unknown)[0]!r}; choose from {', '.join(queues.ALL)}")
    # The app is created before RQ forks a work horse per job (preload).
    runtime.use_app(current_app._get_current_object())
    connection = _redis_orfail()
    worker = Worker(list(queue_names or queues.ALL), connection=connection, name=name)
    worker.work(burst=burst, with_scheduler=True)


@click.command("cron", cls=OneLineCommand)
@with_appcontext
def cron_command() -> None:
    """Run RQ's cron scheduler with Tenure's periodic jobs (workers/schedule.py).

    Run one or several: only the one holding the lease enqueues.
    """
    scheduler = LeaderCronScheduler(connection=_redis_orfail())
    register_all(scheduler)
    scheduler.start()


@click.command("redis", cls=OneLineCommand)
@click.argument("action", type=click.Choice(["start", "stop", "status"]))
@with_appcontext
def redis_command(action: str) -> None:
    """Start, stop or check the embedded Redis (only when REDIS_URL is unset)."""
    settings = current_app.config["TENURE_SETTINGS"]
    if settings.redis_url is not None:
        fail("REDIS_URL is set: Tenure uses that server, not the embedded one")
    path = settings.instance_path
    if action == "start":
        click.echo(redis_server.ensure_running(path))
    elif action == "stop":
        click.echo("stopped" if redis_server.stop(path) else "not running")
    else:
        running = redis_server.is_running(path)
        click.echo(f"running at {redis_server.url_for(path)}" if running else "not running")
        sys.exit(0 if running else 1)


def _redis_orfail():
    try:
        connection = get_redis()
        connection.ping()
    except (RedisError, redis_server.EmbeddedRedisError, OSError) as exc:
        fail(f"cannot reach Redis: {exc}")
    return connection


@click.group("import", cls=click.Group)
def import_group() -> None:
    """Import members or events from a CSV file (UTF-8 or GB18030)."""


def _commit(rows: int) -> None:
    """A chunk of an import is written: commit it (on SQLite one long transaction would
    hold every other writer off; an import run again is safe)."""
    db.session.commit()


def _run_import(path: str, dry_run: bool, kind: str) -> None:
    try:
        with open(path, "rb") as f:
            text = csv_import.decode(f.read())
    except OSError as exc:
        fail(f"FILE: cannot read {path}: {exc.strerror}")
    except csv_import.CsvError as exc:
        fail(f"FILE: {exc}")
    lines = max(text.count("\n"), 1)
    try:
        with click.progressbar(length=lines, label=f"Checking {kind}", file=sys.stderr) as bar:
            report = uploads.run_import(
                kind, text, write=not dry_run, progress=bar.update, written=_commit
            )
    except csv_import.CsvError as exc:
        db.session.rollback()
        fail(f"FILE: {exc}")
    for error in report.errors:
        click.echo(str(error), err=True)
    if report.errors:
        db.session.rollback()
        fail(f"{len(report.errors)} of {report.rows} rows are bad; nothing was imported")
    if dry_run:
        db.session.rollback()
        click.echo(f"{report.rows} rows checked, all good (dry run: nothing written)")
        return
    uploads.count_import(kind, report)
    db.session.commit()
    stored = ", ".join(f"{n} {status}" for status, n in sorted(report.stored.items()))
    click.echo(f"{report.rows} rows imported: {stored}")


@import_group.command("members", cls=OneLineCommand)
@click.argument("path", metavar="FILE")
@click.option("--dry-run", is_flag=True, help="Check every row and report; write nothing.")
@with_appcontext
def import_members_command(path: str, dry_run: bool) -> None:
    """Upsert members by external_id from a CSV file; any bad row stops the import."""
    _run_import(path, dry_run, "members")


@import_group.command("events", cls=OneLineCommand)
@click.argument("path", metavar="FILE")
@click.option("--dry-run", is_flag=True, help="Check every row and report; write nothing.")
@with_appcontext
def import_events_command(path: str, dry_run: bool) -> None:
    """Store events from a CSV file (duplicates by event_id are skipped); any bad row
    stops the import."""
    _run_import(path, dry_run, "events")


@click.group("export", cls=click.Group)
def export_group() -> None:
    """Export members to CSV, filtered as GET /api/v1/members filters them."""


@export_group.command("members", cls=OneLineCommand)
@click.option("--stage", type=click.Choice([s.value for s in Stage]))
@click.option("--tier")
@click.option("--region")
@click.option(
    "--joined-from",
    type=click.DateTime(["%Y-%m-%d"]),
    help="First day joined, YYYY-MM-DD in TENURE_TIMEZONE.",
)
@click.option("--joined-to", type=click.DateTime(["%Y-%m-%d"]), help="Last day joined, included.")
@click.option(
    "--attribute",
    "attributes",
    multiple=True,
    metavar="KEY:VALUE",
    help="Members whose attribute equals the value; repeatable.",
)
@click.option(
    "-o",
    "--output",
    default="-",
    type=click.Path(dir_okay=False, allow_dash=True),
    help="Write to FILE, UTF-8 with BOM for Excel as the API sends it (default: standard "
    "output, without the BOM, for pipes).",
)
@with_appcontext
def export_members_command(
    stage: str | None,
    tier: str | None,
    region: str | None,
    joined_from: dt.datetime | None,
    joined_to: dt.datetime | None,
    attributes: tuple[str, ...],
    output: str,
) -> None:
    """Write the members matching the filters as CSV: the columns of the API's export,
    erased members left out."""
    pairs = [a.split(":", 1) for a in attributes]
    for attribute, pair in zip(attributes, pairs, strict=True):
        if len(pair) != 2 or not 1 <= len(pair[0]) <= 64:
            fail(f"--attribute: write key:value, not {attribute!r}")
    try:
        filters = csv_import.export_filter(
            timezone=current_app.config["TENURE_SETTINGS"].timezone,
            stage=Stage(stage) if stage else None,
            tier=tier,
            region=region,
            joined_from=joined_from.date() if joined_from else None,
            joined_to=joined_to.date() if joined_to else None,
            attributes=dict(pairs),
        )
    except InvalidField as exc:
        fail(f"--{exc.field.replace('_', '-')}: {exc.message}")
    to_file = output != "-"
    try:
        # Atomic: a file appears whole, under its name, or not at all.
        with click.open_file(output, "wb", atomic=to_file) as out:
            if to_file:
                out.write("\ufeff".encode())
            for chunk in csv_import.export_members(db.session, filters):
                out.write(chunk.encode())
    except OSError as exc:
        fail(f"--output: cannot write {output}: {exc.strerror or exc}")
    if to_file:
        click.echo(f"Members written to {output}", err=True)


@click.group("lifecycle", cls=click.Group)
def lifecycle_group() -> None:
    """Recompute RFM features and stages (the worker's cron does this by itself)."""


@lifecycle_group.command("run", cls=OneLineCommand)
@click.option("--full", is_flag=True, help="Every member, not only those that may have moved.")
@click.option(
    "--as-of",
    "as_of_text",
    metavar="TIMESTAMP",
    help="Compute as of this past moment, ISO 8601 with an offset (default: now).",
)
@with_appcontext
def lifecycle_run_command(full: bool, as_of_text: str | None) -> None:
    """Run the lifecycle engine once and say how many members changed stage and tier;
    then the points tick (points for new events, expiry, reminders)."""
    now = clock.now()
    as_of = None
    if as_of_text is not None:
        try:
            as_of = parse_time(as_of_text, "--as-of")
        except InvalidField as exc:
            fail(str(exc))
        if as_of > now:
            fail(f"--as-of: {as_of_text} is in the future")
    steps = lifecycle_run.STEPS
    timezone = current_app.config["TENURE_SETTINGS"].timezone
    try:
        with click.progressbar(
            length=len(steps), label="Lifecycle", item_show_func=_step, file=sys.stderr
        ) as bar:
            result = lifecycle_run.run(
                db.session,
                now=now,
                as_of=as_of,
                full=full,
                timezone=timezone,
                progress=lambda s: bar.update(1, s),
            )
        db.session.commit()
    except lifecycle_run.LifecycleBusy:
        db.session.rollback()
        fail("another lifecycle run is in progress; run again when it has finished")
    except SQLAlchemyError as exc:
        db.session.rollback()
        if lifecycle_run.is_busy(exc):
            fail("another lifecycle run is in progress; run again when it has finished")
        raise
    click.echo(_summary(result))
    try:
        ticked = points.tick(db.session, now=now, timezone=timezone)
        db.session.commit()
    except points.PointsBusy:
        db.session.rollback()
        click.echo("Points: a tick is in progress elsewhere; skipped", err=True)
        return
    click.echo(
        f"Points: {ticked.events:,} new events looked at, {ticked.earned:,} points earned, "
        f"{ticked.expired_lots:,} lots expired, {ticked.reminders:,} expiry reminders"
    )


@click.group("journeys", cls=click.Group)
def journeys_group() -> None:
    """Journeys (the worker's cron ticks every minute by itself)."""


@journeys_group.command("tick", cls=OneLineCommand)
@click.option(
    "--as-of",
    "as_of_text",
    metavar="TIMESTAMP",
    help="Tick as of this past moment, ISO 8601 with an offset (default: now).",
)
@with_appcontext
def journeys_tick_command(as_of_text: str | None) -> None:
    """Run one journey tick: enroll members from new triggers, events, schedules and
    dates, then walk every due enrollment on, a batch per transaction."""
    now = clock.now()
    if as_of_text is not None:
        try:
            now = parse_time(as_of_text, "--as-of")
        except InvalidField as exc:
            fail(str(exc))
        if now > clock.now():
            fail(f"--as-of: {as_of_text} is in the future")
    settings = current_app.config["TENURE_SETTINGS"]
    result = journey_engine.tick(
        db.session,
        now=now,
        timezone=settings.timezone,
        batch=settings.journey_batch,
        commit=db.session.commit,
    )
    db.session.commit()
    skipped = ", ".join(f"{reason} {n:,}" for reason, n in sorted(result.skipped.items()))
    click.echo(
        f"Journeys as of {now:%Y-%m-%d %H:%M:%S %Z}: {result.enrolled:,} enrolled, "
        f"{result.held_out:,} held out, {sum(result.skipped.values()):,} not admitted"
        f"{f' ({skipped})' if skipped else ''}; {result.advanced:,} enrollments advanced "
        f"through {result.steps:,} steps, {result.messages:,} messages written, "
        f"{result.grants:,} benefits granted, {result.converted:,} conversions"
    )


@journeys_group.command("install-ready-made", cls=OneLineCommand)
@click.option("--publish", is_flag=True, help="Publish each one whose audience has members.")
@with_appcontext
def journeys_install_command(publish: bool) -> None:
    """Create the five ready-made journeys (win-back, churn rescue, active growth, VIP
    care, onboarding) with their message templates, unless they exist."""
    made = ready_made.install_all(db.session, actor="cli", now=clock.now(), publish=publish)
    db.session.commit()
    click.echo(f"Installed: {', '.join(made)}" if made else "All ready-made journeys exist")


def _step(label: str | None) -> str:
    return label or ""


def _summary(result: lifecycle_run.RunResult) -> str:
    entered = ", ".join(
        f"{stage.value} {count:,}" for stage, count in sorted(result.entered.items())
    )
    moved = f": {entered}" if entered else ""
    tiers = ", ".join(f"{key} {n:,}" for key, n in sorted(result.tiers_entered.items()))
    climbed = f"; {sum(result.tiers_entered.values()):,} changed tier: {tiers}" if tiers else ""
    return (
        f"{result.kind.value.capitalize()} run as of {result.as_of:%Y-%m-%d %H:%M:%S %Z}: "
        f"{result.members:,} members looked at, {result.changed:,} changed stage{moved}"
        f"{climbed} ({result.seconds:.1f} s)"
    )
