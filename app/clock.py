"""The time the web layer passes to engines: the wall clock unless a test fixes one."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

from flask import current_app


def now() -> dt.datetime:
    clock = current_app.config.get("TENURE_CLOCK")
    return clock() if clock else dt.datetime.now(dt.UTC)


def local_date(at: dt.datetime) -> dt.date:
    """The programme's calendar day (TENURE_TIMEZONE) of an instant."""
    return at.astimezone(ZoneInfo(current_app.config["TENURE_SETTINGS"].timezone)).date()
