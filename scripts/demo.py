"""`make demo`: migrate, make sure there is an admin, simulate a membership (a year of
history, then 120 days with the five ready-made journeys and the canonical benefit
experiment running), start web + worker + cron on the configured (by default
embedded) database and Redis, print the URL, a login and where to look first, and stop
everything cleanly on Ctrl-C. A second run reuses the simulation; ``--fresh`` (``make
demo FRESH=1``) starts the embedded database again."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from config import ConfigError, Settings  # noqa: E402

ADMIN_EMAIL = "admin@example.com"
# The demo's membership: a year before Tenure, then 120 days with it.
DEMO_MEMBERS = 20_000
DEMO_DAYS = 485
DEMO_HISTORY = 365
DEMO_SEED = 2026
EXPERIMENT = "benefit_packages"
BIN = Path(sys.executable).parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=5000)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--web-workers", type=int, default=2)
    parser.add_argument("--fresh", action="store_true", help="Start the demo's data again.")
    parser.add_argument("--members", type=int, default=DEMO_MEMBERS, help="Simulated members.")
    parser.add_argument("--days", type=int, default=DEMO_DAYS, help="Simulated days in all.")
    parser.add_argument(
        "--history", type=int, default=DEMO_HISTORY, help="Of those, days before go-live."
    )
    args = parser.parse_args()
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        print(f"demo: configuration error: {exc}", file=sys.stderr)
        return 2
    if not port_free(args.host, args.port):
        print(f"demo: port {args.port} is in use; run `make demo PORT=5001`", file=sys.stderr)
        return 2

    stopping = False

    def stop(signum: int | None = None, _frame: object = None) -> None:
        nonlocal stopping
        stopping = True

    # Ctrl-C during the set-up below ends it quietly too (checked between steps).
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)

    if args.fresh and not start_afresh(settings):
        return 2

    from app import create_app, redis_server

    app = create_app(settings)
    step("Migrating the database")
    migrate(app)
    password = ensure_admin(app, settings.instance_path)
    if not simulate(app, settings, args, lambda: stopping):
        return 130 if stopping else 1
    install_journeys(app)
    if stopping:
        return 130
    findings = experiment_line(app, settings)
    started_redis = False
    if settings.redis_url is None:
        started_redis = not redis_server.is_running(settings.instance_path)
        step(f"Embedded Redis at {redis_server.ensure_running(settings.instance_path)}")

    env = {**os.environ, "TENURE_INSTANCE_PATH": str(settings.instance_path)}
    flask = [str(BIN / "flask"), "--app", "wsgi"]
    commands = {
        "web": [
            str(BIN / "gunicorn"),
            "--bind",
            f"{args.host}:{args.port}",
            "--workers",
            str(args.web_workers),
            "--access-logfile",
            "-",
            "wsgi:app",
        ],
        "worker": [*flask, "worker"],
        "cron": [*flask, "cron"],
    }
    processes: dict[str, subprocess.Popen] = {}
    code = 0
    try:
        for name, cmd in commands.items():
            step(f"Starting {name}: {Path(cmd[0]).name} {' '.join(cmd[1:])}")
            # A process group of its own: Ctrl-C reaches us, and we stop the children in order.
            processes[name] = subprocess.Popen(cmd, cwd=ROOT, env=env, start_new_session=True)
        url = f"http://{args.host}:{args.port}"
        if not wait_healthy(url, processes, lambda: stopping):
            code = 1
        else:
            print(flush=True)
            print(f"  Tenure is running at {url}/", flush=True)
            print(f"  Sign in as {ADMIN_EMAIL} with password {password}", flush=True)
            print(f"  API docs: {url}/api/docs    Health: {url}/healthz", flush=True)
            print(flush=True)
            print("  Three things to look at first:", flush=True)
            print(f"  1. The overview, a year of the membership: {url}/", flush=True)
            print(
                f"  2. The win-back journey and its live counts: {url}/journeys/dormant_winback",
                flush=True,
            )
            print(
                f"  3. The benefit experiment: {url}/experiments/{EXPERIMENT}"
                + (f"\n     {findings}" if findings else ""),
                flush=True,
            )
            print("  Press Ctrl-C to stop.", flush=True)
            print(flush=True)
            while not stopping:
                dead = [n for n, p in processes.items() if p.poll() is not None]
                if dead:
                    print(
                        f"demo: {dead[0]} exited with code {processes[dead[0]].returncode}; "
                        "stopping",
                        file=sys.stderr,
                    )
                    code = 1
                    break
                time.sleep(0.5)
    finally:
        step("Stopping")
        terminate(processes)
        if started_redis:
            redis_server.stop(settings.instance_path)
        step("Stopped")
    return code


def step(message: str) -> None:
    print(f"==> {message}", flush=True)


def port_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def migrate(app) -> None:
    from flask_migrate import upgrade

    with app.app_context():
        upgrade()


def start_afresh(settings) -> bool:
    """Remove the embedded database and the saved simulation (nothing else)."""
    url = settings.database_url
    if not url.startswith("sqlite:///"):
        print(
            "demo: FRESH=1 starts only the embedded SQLite database again; "
            "drop and create your own database yourself",
            file=sys.stderr,
        )
        return False
    database = Path(url.removeprefix("sqlite:///"))
    for path in (database, Path(f"{database}-wal"), Path(f"{database}-shm")):
        path.unlink(missing_ok=True)
    shutil.rmtree(settings.instance_path / "simulation", ignore_errors=True)
    step(f"Starting afresh: removed {database}")
    return True


def simulate(app, settings, args, stopping) -> bool:
    """Simulate the demo's membership unless it is there; continue one cut short."""
    from sqlalchemy import func, select

    from app.extensions import db
    from members.member import Member
    from members.programme import Cursor
    from simulator import run as simulation

    with app.app_context():
        day = db.session.get(Cursor, simulation.DAY_CURSOR)
        others = db.session.scalar(select(func.count()).select_from(Member))
    saved = simulation.state_path(settings.instance_path / "simulation").exists()
    if day is not None and saved:
        sim = simulation.load(settings.instance_path / "simulation")
        if sim.done:
            step(
                f"Reusing the simulated membership: {sim.joined:,} members up to "
                f"{sim.plan.start + dt.timedelta(days=sim.plan.days)} "
                "(`make demo FRESH=1` simulates it again)"
            )
            return True
        step(f"Continuing the simulation from day {sim.next_day} of {sim.plan.days}")
        command = ["simulate", "--resume"]
    elif others:
        step("This instance has members of its own: no simulation added")
        return True
    else:
        step(
            f"Simulating {args.members:,} members: {args.history} days of history, then "
            f"{args.days - args.history} days with the ready-made journeys and the "
            "benefit experiment"
        )
        command = [
            *("simulate", "--members", str(args.members), "--days", str(args.days)),
            *("--history", str(args.history), "--campaigns", "--seed", str(DEMO_SEED)),
        ]
    env = {**os.environ, "TENURE_INSTANCE_PATH": str(settings.instance_path)}
    started = time.monotonic()
    # Its own process group would not see Ctrl-C: it shares ours, stops after the
    # simulated day it is in, and saves it for the next `make demo`.
    done = subprocess.run([str(BIN / "flask"), "--app", "wsgi", *command], cwd=ROOT, env=env)
    if done.returncode != 0 or stopping():
        return False
    step(f"Simulated in {time.monotonic() - started:.0f} s")
    return True


def experiment_line(app, settings) -> str | None:
    """The canonical experiment's estimate beside the simulator's truth, in words."""
    from app.extensions import db
    from simulator import report
    from simulator import run as simulation

    folder = settings.instance_path / "simulation"
    if not simulation.state_path(folder).exists():
        return None
    with app.app_context():
        sim = simulation.load(folder)
        lines = [
            line
            for line in report.build(db.session, sim)
            if line.subject.startswith(f"experiment {EXPERIMENT}")
        ]
    if not lines or lines[0].estimate is None:
        return None
    line = lines[0]
    covers = "inside" if line.covered else "outside"
    more = "more" if line.estimate >= 0 else "fewer"
    return (
        f"the service package keeps {abs(line.estimate) * 100:.1f}% {more} members buying "
        f"within 90 days than the discount package (95% CI {report.percent(line.low)} to "
        f"{report.percent(line.high)}); the simulator's truth, {report.percent(line.truth)}, "
        f"is {covers} it"
    )


def install_journeys(app) -> None:
    """The five ready-made journeys, published where their audience has members."""
    from app import clock
    from app.extensions import db
    from journeys import ready_made

    with app.app_context():
        made = ready_made.install_all(db.session, actor="demo", now=clock.now(), publish=True)
        db.session.commit()
    if made:
        step(f"Installed the ready-made journeys: {', '.join(made)}")


def ensure_admin(app, instance: Path) -> str:
    """Create the demo admin once; its password is kept in instance/demo-admin.txt."""
    from sqlalchemy import select

    from app import clock
    from app.auth.models import User
    from app.auth.service import create_user, set_password, update_user
    from app.extensions import db

    saved = instance / "demo-admin.txt"
    with app.app_context():
        exists = db.session.scalar(select(User.id).where(User.email == ADMIN_EMAIL))
        if exists and saved.exists():
            return saved.read_text().strip()
        password = secrets.token_urlsafe(12)
        if exists:  # the password file was lost: a new password, and make sure it works
            user = db.session.get(User, exists)
            set_password(db.session, user, password, actor="demo", now=clock.now())
            update_user(db.session, user, role="admin", active=True, actor="demo", now=clock.now())
        else:
            create_user(
                db.session,
                email=ADMIN_EMAIL,
                password=password,
                role="admin",
                actor="demo",
                now=clock.now(),
            )
        db.session.commit()
    saved.write_text(password + "\n")
    saved.chmod(0o600)
    step(f"Created the admin {ADMIN_EMAIL}")
    return password


def wait_healthy(url: str, processes: dict, stopping, timeout: float = 60) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not stopping():
        for name, proc in processes.items():
            if proc.poll() is not None:
                print(
                    f"demo: {name} exited with code {proc.returncode} while starting",
                    file=sys.stderr,
                )
                return False
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=2) as response:
                if response.status == 200:
                    return True
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.3)
    if not stopping():
        print(f"demo: {url}/healthz did not answer 200 within {timeout:.0f}s", file=sys.stderr)
    return False


def terminate(processes: dict[str, subprocess.Popen]) -> None:
    for proc in processes.values():
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + 15
    for proc in processes.values():
        try:
            proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


if __name__ == "__main__":
    sys.exit(main())
