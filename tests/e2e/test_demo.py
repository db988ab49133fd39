"""`make demo`'s script as a newcomer runs it: real processes, a real browser-less login."""

from __future__ import annotations

import http.cookiejar
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from config import ROOT
from tests.services import free_port

pytestmark = pytest.mark.slow


# A small membership: the demo's own (20,000 members, 485 days) takes minutes.
SMALL = ["--members", "300", "--days", "50", "--history", "30"]


def _start_demo(
    tmp_path: Path, env_extra: dict[str, str], *extra: str
) -> tuple[subprocess.Popen, int]:
    port = free_port()
    env = {**os.environ, "TENURE_INSTANCE_PATH": str(tmp_path), **env_extra}
    env.pop("REDIS_URL", None) if "REDIS_URL" not in env_extra else None
    proc = subprocess.Popen(
        [
            *(sys.executable, "scripts/demo.py", "--port", str(port), "--web-workers", "1"),
            *SMALL,
            *extra,
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    return proc, port


def _read_until_ready(proc: subprocess.Popen, timeout: float = 240) -> tuple[str, str, str, str]:
    """The URL, the login and everything printed up to the three things to look at."""
    deadline = time.monotonic() + timeout
    lines = []
    url = login = None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if m := re.search(r"Tenure is running at (\S+)", line):
            url = m.group(1).rstrip("/")
        if m := re.search(r"Sign in as (\S+) with password (\S+)", line):
            login = m.group(1), m.group(2)
        if "Press Ctrl-C to stop" in line:
            assert url and login
            return url, *login, "".join(lines)
    raise AssertionError("demo printed no URL and login:\n" + "".join(lines[-40:]))


def _login(url: str, email: str, password: str) -> str:
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    with opener.open(f"{url}/login") as page:
        html = page.read().decode()
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', html).group(1)
    data = urllib.parse.urlencode({"email": email, "password": password, "csrf_token": token})
    try:
        with opener.open(f"{url}/login", data=data.encode()) as home:
            assert home.geturl() == f"{url}/"
            return home.read().decode()
    except urllib.error.HTTPError as exc:
        exc.close()
        raise


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_demo_starts_serves_a_login_and_stops_cleanly(tmp_path, database, request):
    env = {}
    if database == "postgresql":
        if "postgresql" not in os.environ.get("TENURE_TEST_DATABASES", "sqlite,postgresql"):
            pytest.skip("PostgreSQL not in TENURE_TEST_DATABASES")
        from tests.conftest import new_database

        env["DATABASE_URL"] = new_database("postgresql", f"demo_{os.getpid()}", tmp_path)
    proc, port = _start_demo(tmp_path, env)
    try:
        url, email, password, printed = _read_until_ready(proc)
        assert url == f"http://127.0.0.1:{port}"
        assert "Simulating 300 members: 30 days of history, then 20 days" in printed
        assert "Three things to look at first:" in printed
        assert f"{url}/journeys/dormant_winback" in printed
        assert f"{url}/experiments/benefit_packages" in printed
        with urllib.request.urlopen(f"{url}/healthz") as health:
            assert health.status == 200
        # The cron process enqueues the heartbeat at start and the forking worker runs it.
        deadline = time.monotonic() + 60
        beat = None
        while beat is None and time.monotonic() < deadline:
            with urllib.request.urlopen(f"{url}/healthz") as health:
                beat = json.load(health)["last_cron_heartbeat"]
            time.sleep(0.5)
        assert beat is not None, "cron + worker never ran the heartbeat job"
        home = _login(url, email, password)
        assert "Overview" in home and email in home
        # The simulated members are there (most of the 300 joined by now).
        members = re.search(r'<span class="n">([\d,]+)</span><span>members', home).group(1)
        assert 200 < int(members.replace(",", "")) <= 300
        with pytest.raises(urllib.error.HTTPError) as refused:
            _login(url, email, "wrong password")
        assert refused.value.code == 401
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert "==> Stopped" in out
    # Nothing left behind: the port is free and the embedded Redis is down.
    from app import redis_server

    assert not redis_server.is_running(tmp_path)
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2)


def _run_until_ready(tmp_path: Path, *extra: str) -> str:
    proc, _ = _start_demo(tmp_path, {}, *extra)
    try:
        *_, printed = _read_until_ready(proc)
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    return printed


def test_a_second_demo_reuses_the_simulation_and_fresh_starts_again(tmp_path):
    first = _run_until_ready(tmp_path)
    assert "Simulating 300 members" in first
    again = _run_until_ready(tmp_path)
    assert "Reusing the simulated membership" in again
    assert "Simulating" not in again
    fresh = _run_until_ready(tmp_path, "--fresh")
    assert "Starting afresh" in fresh and "Simulating 300 members" in fresh


def test_demo_refuses_a_busy_port(tmp_path):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "scripts/demo.py", "--port", str(port)],
            cwd=ROOT,
            env={**os.environ, "TENURE_INSTANCE_PATH": str(tmp_path)},
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 2
    assert result.stderr.strip() == f"demo: port {port} is in use; run `make demo PORT=5001`"


def test_ctrl_c_stops_a_simulation_after_its_day_and_resume_finishes_it(tmp_path):
    """`flask simulate` as a user runs it in a terminal: Ctrl-C, then --resume."""
    env = {**os.environ, "TENURE_INSTANCE_PATH": str(tmp_path)}
    flask = [sys.executable, "-m", "flask", "--app", "wsgi"]
    subprocess.run([*flask, "db", "upgrade"], cwd=ROOT, env=env, check=True, capture_output=True)
    proc = subprocess.Popen(
        [*flask, "simulate", "--members", "400", "--days", "60", "--history", "20"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    state = tmp_path / "simulation" / "simulation.pickle"
    deadline = time.monotonic() + 120
    while not state.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert state.exists(), "no day was saved"
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, out
    assert "Stopping after this simulated day" in out
    assert "`flask --app wsgi simulate --resume` continues" in out
    assert "Traceback" not in out

    resumed = subprocess.run(
        [*flask, "simulate", "--resume"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "Simulated 60 days" in resumed.stdout
