"""Message text from a marketer's template, in a sandboxed Jinja2 environment: a
template can read the variables it is given and nothing else (no config, files or
Python internals). A variable the member lacks renders empty rather than failing a
send at 3 a.m.; templates are linted for unknown variables when they are saved
(:mod:`journeys.templates`).

Filters for money and dates read the template's language: ``{{ coupon.value|money }}``
is "30元" in Chinese and "¥30" in English; ``{{ coupon.expires_at|date }}`` is
"11月26日" or "26 Nov".
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo

from jinja2 import Template, TemplateError, pass_context
from jinja2.runtime import Context
from jinja2.sandbox import SandboxedEnvironment

LANGUAGES = ("zh", "en")
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


class RenderError(ValueError):
    pass


def money(value: Any, language: str = "zh") -> str:
    """An amount of yuan as members read it: "30元" / "¥30", "29.90元" / "¥29.90"."""
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        return str(value)
    if not number.is_finite():
        return str(value)
    text = f"{number:.0f}" if number == number.to_integral() else f"{number:.2f}"
    return f"¥{text}" if language == "en" else f"{text}元"


def date(value: Any, language: str = "zh", zone: str = "Asia/Shanghai") -> str:
    """A day as members read it, in their own time zone: "11月26日" / "26 Nov"."""
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value)
        except ValueError:
            return value
    if isinstance(value, dt.datetime):
        try:
            value = value.astimezone(ZoneInfo(zone)).date()
        except (KeyError, ValueError):
            value = value.date()
    if not isinstance(value, dt.date):
        return "" if value is None else str(value)
    if language == "en":
        return f"{value.day} {MONTHS[value.month - 1]}"
    return f"{value.month}月{value.day}日"


@pass_context
def _money(context: Context, value: Any) -> str:
    return "" if value in (None, "") else money(value, context.get("language", "zh"))


@pass_context
def _date(context: Context, value: Any) -> str:
    member = context.get("member") or {}
    zone = member.get("timezone", "Asia/Shanghai") if isinstance(member, Mapping) else None
    return date(value, context.get("language", "zh"), zone or "Asia/Shanghai")


ENVIRONMENT = SandboxedEnvironment(autoescape=False, keep_trailing_newline=False)
ENVIRONMENT.filters.update(money=_money, date=_date)
# No globals (range, dict, cycler, joiner, lipsum, namespace): a message needs none,
# and each is one more object to climb from.
ENVIRONMENT.globals.clear()


def render(text: str, variables: Mapping[str, Any]) -> str:
    try:
        return _compiled(text).render(**variables).strip()
    except TemplateError as error:
        raise RenderError(str(error)) from error
    except Exception as error:  # a marketer's template: any failure is theirs
        raise RenderError(f"{type(error).__name__}: {error}") from error


@functools.lru_cache(maxsize=1024)
def _compiled(text: str) -> Template:
    """Compiling costs a thousand times rendering: each template text is compiled once
    per process (an edited template is new text)."""
    return ENVIRONMENT.from_string(text)


def member_variables(
    member: Any,
    features: Any = None,
    *,
    next_level: Any = None,
    expiring: tuple[int, dt.datetime | None] = (0, None),
) -> dict[str, Any]:
    """What a template may read of a member (see journeys.templates.VARIABLES)."""
    spend_more = getattr(next_level, "spend_more", None)
    level = getattr(next_level, "level", None)
    return {
        "name": member.name or "",
        "tier": member.tier or "",
        "stage": member.stage.value if member.stage else "",
        "points_balance": member.points_balance,
        "points_expiring": expiring[0],
        "points_expiring_at": expiring[1],
        "days_since_last_order": getattr(features, "days_since_last_order", None),
        "next_tier": level.name_zh if level is not None else "",
        "next_tier_en": level.name_en if level is not None else "",
        "spend_to_next_tier": spend_more,
        "region": member.region or "",
        "timezone": member.timezone or "Asia/Shanghai",
    }
