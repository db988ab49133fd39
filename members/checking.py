"""Reading a document a form or an API call sent: each helper takes one field, returns
it cleaned (or a default), and notes what is wrong under the field's path
(``steps.s2.value``), so that a page shows each message beside its field and the API
names it. Journeys' definitions and experiments' designs read their fields with these.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation


class Errors(dict[str, str]):
    def add(self, where: str, message: str) -> None:
        self.setdefault(where, message)


def choice(data: Mapping, name: str, where: str, options: tuple, errors: Errors, default=None):
    value = data.get(name, default)
    if value not in options:
        errors.add(f"{where}.{name}", f"must be one of {', '.join(map(str, options))}")
        return default
    return value


def integer(
    data: Mapping, name: str, where: str, errors: Errors, *, low: int, high: int, default=None
) -> int | None:
    value = data.get(name)
    if value is None:  # absent or null: the default
        return default
    if isinstance(value, str) and re.fullmatch(r"\s*-?[0-9]{1,9}\s*", value):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        errors.add(f"{where}.{name}", f"must be a whole number from {low} to {high}")
        return default
    return value


def number(
    data: Mapping,
    name: str,
    where: str,
    errors: Errors,
    *,
    low: Decimal,
    high: Decimal,
    places: int = 2,
) -> str | None:
    """The number as text, rounded to ``places`` decimals (money has two); a number
    that rounds outside [low, high] is refused."""
    value = data.get(name)
    if value is None or value == "":
        return None
    try:
        if isinstance(value, bool):
            raise InvalidOperation
        number = Decimal(str(value))
    except InvalidOperation:
        number = Decimal("NaN")
    if number.is_finite() and low <= number <= high:
        number = round(number, places)
    if not number.is_finite() or not low <= number <= high:
        errors.add(f"{where}.{name}", f"must be a number from {low} to {high}")
        return None
    if number == number.to_integral():
        return f"{number:.0f}"
    return f"{number:.2f}" if places == 2 else f"{number.normalize():f}"


def text(data: Mapping, name: str, where: str, errors: Errors, *, pattern=None, max_len=200):
    value = data.get(name)
    if not isinstance(value, str) or not value.strip():
        errors.add(f"{where}.{name}", "is required")
        return None
    value = value.strip()
    if len(value) > max_len or (pattern is not None and not pattern.fullmatch(value)):
        hint = "lower-case letters, digits, _ and ." if pattern is not None else ""
        errors.add(f"{where}.{name}", f"at most {max_len} characters {hint}".strip())
        return None
    return value
