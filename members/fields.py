"""Validation of member fields that any entry point (API, Segment, CSV) shares."""

from __future__ import annotations

import datetime as dt
import functools
import math
import re
from typing import Any
from zoneinfo import available_timezones

import phonenumbers
from phonenumbers import PhoneNumberType

from members.errors import InvalidField

DEFAULT_PHONE_REGION = "CN"
_MOBILE = {PhoneNumberType.MOBILE, PhoneNumberType.FIXED_LINE_OR_MOBILE}


def normalise_phone(raw: str, default_region: str = DEFAULT_PHONE_REGION) -> str:
    """Return the number in E.164 (+8613800138000); only mobile numbers can get SMS."""
    try:
        number = phonenumbers.parse(raw, default_region)
    except phonenumbers.NumberParseException:
        raise InvalidField("phone", f"{raw!r} is not a phone number") from None
    if not phonenumbers.is_valid_number(number):
        raise InvalidField("phone", f"{raw!r} is not a valid phone number")
    if phonenumbers.number_type(number) not in _MOBILE:
        raise InvalidField("phone", f"{raw!r} is not a mobile number")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def check_timezone(name: str) -> str:
    if name not in _zones():
        raise InvalidField("timezone", f"{name!r} is not an IANA time zone (e.g. Asia/Shanghai)")
    return name


@functools.cache
def _zones() -> frozenset[str]:
    return frozenset(available_timezones())


def mask_phone(phone: str | None) -> str | None:
    """+8613800138000 -> +86138****8000, for logs and lists."""
    if not phone:
        return phone
    return phone[:6] + "*" * max(len(phone) - 10, 0) + phone[-4:]


def parse_time(value: str, field: str) -> dt.datetime:
    """An ISO 8601 time that carries its offset ('Z' allowed); naive times are refused."""
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidField(field, f"{value!r} is not an ISO 8601 time") from None
    if parsed.tzinfo is None:
        raise InvalidField(field, "give a time zone offset (e.g. 2026-11-23T10:00:00+08:00)")
    return parsed


MAX_JSON_DEPTH = 8


def json_problem(value: Any) -> str | None:
    """What a JSON document (properties, attributes) cannot be stored with, or None:
    nesting deeper than MAX_JSON_DEPTH, or NaN and Infinity, which Python's json reads
    but PostgreSQL's jsonb refuses."""
    return _json_problem(value, 0)


def _json_problem(value: Any, level: int) -> str | None:
    if isinstance(value, float):
        return None if math.isfinite(value) else "holds NaN or Infinity, which JSON cannot hold"
    if not isinstance(value, dict | list):
        return None
    if level >= MAX_JSON_DEPTH:
        return f"nests deeper than {MAX_JSON_DEPTH} levels"
    for item in value.values() if isinstance(value, dict) else value:
        problem = _json_problem(item, level + 1)
        if problem:
            return problem
    return None


# A phone number as it may appear in a log line: E.164, or a bare mainland mobile.
_PHONE = re.compile(r"(?<![\w*+])(\+\d{8,15}|1[3-9]\d{9})(?![\w*])")


def mask_phones(text: str) -> str:
    """+8613800138000 -> +86138****8000 (13800138000 -> 138****8000) wherever a phone
    number appears."""

    def mask(match: re.Match) -> str:
        number = match.group(1)
        keep = 6 if number.startswith("+") else 3
        return number[:keep] + "*" * (len(number) - keep - 4) + number[-4:]

    return _PHONE.sub(mask, text)
