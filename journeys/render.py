"""Message text from a marketer's template, in a sandboxed Jinja2 environment: a
template can read the variables it is given and nothing else (no config, files or
Python internals). A variable the member lacks renders empty rather than failing a
send at 3 a.m.; templates are linted for unknown variables when they are saved.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from jinja2 import Template, TemplateError
from jinja2.sandbox import SandboxedEnvironment

from members.member import Member

ENVIRONMENT = SandboxedEnvironment(autoescape=False, keep_trailing_newline=False)


class RenderError(ValueError):
    pass


def member_variables(member: Member) -> dict[str, Any]:
    return {
        "name": member.name or "",
        "tier": member.tier or "",
        "stage": member.stage.value if member.stage else "",
        "points_balance": member.points_balance,
        "region": member.region or "",
    }


def render(text: str, variables: Mapping[str, Any]) -> str:
    try:
        return _compiled(text).render(**variables).strip()
    except TemplateError as error:
        raise RenderError(str(error)) from error
    except Exception as error:
        raise RenderError(f"{type(error).__name__}: {error}") from error


@functools.lru_cache(maxsize=1024)
def _compiled(text: str) -> Template:
    """Compiling costs a thousand times rendering: each template text is compiled once
    per process (an edited template is new text)."""
    return ENVIRONMENT.from_string(text)


def money(value: Any) -> str:
    number = Decimal(str(value))
    return f"{number:.0f}" if number == number.to_integral() else f"{number:.2f}"
