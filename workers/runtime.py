"""The app a worker process runs jobs in: created once, before RQ forks work horses."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flask import Flask

_app: Flask | None = None


def use_app(app: Flask) -> None:
    """Set the app jobs run in (the worker command passes the one it preloaded)."""
    global _app
    _app = app


def current() -> Flask:
    if _app is None:
        from app import create_app

        use_app(create_app())
    assert _app is not None
    return _app
