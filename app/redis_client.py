"""The Redis connection of an app: the configured server, or the embedded one."""

from __future__ import annotations

from flask import Flask, current_app
from redis import Redis

from app import redis_server
from config import Settings


def init_app(app: Flask, settings: Settings) -> None:
    app.extensions["tenure_redis"] = _RedisHolder(settings)


def limiter_storage_uri(settings: Settings) -> str:
    if settings.redis_url is None:
        return f"redis+unix://{redis_server.socket_path(settings.instance_path)}"
    if settings.redis_url.startswith("unix://"):
        return "redis+" + settings.redis_url
    return settings.redis_url


class _RedisHolder:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.client: Redis | None = None

    def get(self) -> Redis:
        if self.client is None:
            url = self.settings.redis_url
            if url is None:  # embedded: start it on first use
                url = redis_server.ensure_running(self.settings.instance_path)
            self.client = Redis.from_url(url, socket_timeout=5, socket_connect_timeout=2)
        return self.client


def get_redis(app: Flask | None = None) -> Redis:
    """The app's Redis client; starts the embedded server when REDIS_URL is unset."""
    return (app or current_app).extensions["tenure_redis"].get()
