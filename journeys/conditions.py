"""Conditions as marketers write them: ``amount >= 200``, ``stage = 'dormant' and
(tier in ('gold', 'diamond') or days_since_last_order > 60)``.

:func:`parse` reads one into a small tree, checking every field against the fields
the context offers (an event's properties, a member's attributes and features) and
every value against the field's kind, and raises ConditionError with the position of
the first problem. :func:`holds` evaluates a tree on a record (a mapping of field to
value); a field the record lacks makes its comparison false, never an error.
"""

from __future__ import annotations

import dataclasses
import operator
import re
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

# "any": a field whose kind the value decides (a member's attributes: vip_level = 3).
Kind = Literal["number", "text", "any"]
OPERATORS = ("=", "!=", ">=", "<=", ">", "<", "in", "not in")
# The comparisons, for Python values here and for SQL columns in the audience's query.
COMPARE = {
    "=": operator.eq,
    "!=": operator.ne,
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
}
MAX_LENGTH = 2000
MAX_DEPTH = 20

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<number>-?\d+(?:\.\d+)?)
      | (?P<text>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")
      | (?P<op>!=|>=|<=|=|>|<)
      | (?P<punct>[(),])
      | (?P<word>[A-Za-z_][A-Za-z0-9_.]*)
    )""",
    re.VERBOSE,
)


class ConditionError(ValueError):
    def __init__(self, message: str, position: int) -> None:
        super().__init__(f"{message} (at character {position + 1})")
        self.position = position


@dataclasses.dataclass(frozen=True)
class Compare:
    field: str
    op: str
    value: Any  # Decimal, str, or a tuple of them for in / not in


@dataclasses.dataclass(frozen=True)
class All:
    parts: tuple[Condition, ...]


@dataclasses.dataclass(frozen=True)
class Any_:
    parts: tuple[Condition, ...]


Condition = Compare | All | Any_


@dataclasses.dataclass
class _Token:
    kind: str
    text: str
    position: int


def _tokens(source: str) -> list[_Token]:
    tokens, position = [], 0
    while position < len(source):
        if source[position:].strip() == "":
            break
        match = _TOKEN.match(source, position)
        if not match or match.end() == position:
            rest = source[position:]
            where = position + len(rest) - len(rest.lstrip())
            raise ConditionError(f"cannot read {rest.strip()[:10]!r}", where)
        kind = match.lastgroup or ""
        start = match.start(kind)
        tokens.append(_Token(kind, match.group(kind), start))
        position = match.end()
    return tokens


def parse(source: str, fields: Mapping[str, Kind]) -> Condition:
    """A condition from its text; ``fields`` are the fields it may name, with their kinds."""
    if not isinstance(source, str) or not source.strip():
        raise ConditionError("write a condition, e.g. amount >= 200", 0)
    if len(source) > MAX_LENGTH:
        raise ConditionError(f"at most {MAX_LENGTH} characters", MAX_LENGTH)
    return _Parser(_tokens(source), fields, len(source)).whole()


class _Parser:
    def __init__(self, tokens: list[_Token], fields: Mapping[str, Kind], end: int) -> None:
        self.tokens, self.fields, self.end, self.at = tokens, fields, end, 0
        self.depth = 0

    def peek(self) -> _Token | None:
        return self.tokens[self.at] if self.at < len(self.tokens) else None

    def take(self) -> _Token:
        token = self.peek()
        if token is None:
            raise ConditionError("the condition stops too early", self.end)
        self.at += 1
        return token

    def word(self, *words: str) -> bool:
        token = self.peek()
        return token is not None and token.kind == "word" and token.text.lower() in words

    def whole(self) -> Condition:
        condition = self.any_()
        token = self.peek()
        if token is not None:
            raise ConditionError(f"unexpected {token.text!r}", token.position)
        return condition

    def any_(self) -> Condition:
        parts = [self.all_()]
        while self.word("or"):
            self.take()
            parts.append(self.all_())
        return parts[0] if len(parts) == 1 else Any_(tuple(parts))

    def all_(self) -> Condition:
        parts = [self.term()]
        while self.word("and"):
            self.take()
            parts.append(self.term())
        return parts[0] if len(parts) == 1 else All(tuple(parts))

    def term(self) -> Condition:
        token = self.take()
        if token.kind == "punct" and token.text == "(":
            self.depth += 1
            if self.depth > MAX_DEPTH:
                raise ConditionError(f"at most {MAX_DEPTH} levels of ( )", token.position)
            inner = self.any_()
            self.depth -= 1
            closing = self.take()
            if closing.text != ")":
                raise ConditionError("a ( is not closed", closing.position)
            return inner
        if token.kind != "word" or token.text.lower() in ("and", "or", "in", "not"):
            raise ConditionError(f"expected a field, found {token.text!r}", token.position)
        if token.text not in self.fields:
            known = ", ".join(sorted(self.fields)[:20])
            raise ConditionError(f"unknown field {token.text!r} (known: {known})", token.position)
        kind = self.fields[token.text]
        op = self.operator()
        if op in ("in", "not in"):
            return Compare(token.text, op, self.values(kind))
        value_token = self.take()
        value = self.value(value_token, kind)
        if isinstance(value, str) and op not in ("=", "!="):
            raise ConditionError(
                f"{token.text} is text: compare it with = or !=", value_token.position
            )
        return Compare(token.text, op, value)

    def operator(self) -> str:
        token = self.take()
        if token.kind == "op":
            return token.text
        if token.kind == "word" and token.text.lower() == "in":
            return "in"
        if token.kind == "word" and token.text.lower() == "not" and self.word("in"):
            self.take()
            return "not in"
        raise ConditionError(f"expected one of {', '.join(OPERATORS)}", token.position)

    def values(self, kind: Kind) -> tuple[Any, ...]:
        opening = self.take()
        if opening.text != "(":
            raise ConditionError("after in, list the values in ( )", opening.position)
        first = self.take()
        items = [self.value(first, kind)]
        if kind == "any":  # the first value decides: a list holds numbers or text
            kind = "text" if isinstance(items[0], str) else "number"
        while (token := self.take()).text == ",":
            item = self.take()
            if (item.kind == "text") != (kind == "text") and item.kind in ("text", "number"):
                raise ConditionError("a list holds numbers or text, not both", item.position)
            items.append(self.value(item, kind))
        if token.text != ")":
            raise ConditionError("a ( is not closed", token.position)
        return tuple(items)

    def value(self, token: _Token, kind: Kind) -> Any:
        if kind == "any" and token.kind in ("number", "text"):
            kind = token.kind  # type: ignore[assignment]
        if kind == "number":
            if token.kind != "number":
                raise ConditionError(f"expected a number, found {token.text!r}", token.position)
            return Decimal(token.text)
        if token.kind != "text":
            raise ConditionError(f"expected text in quotes, found {token.text!r}", token.position)
        return re.sub(r"\\(.)", r"\1", token.text[1:-1])


def holds(condition: Condition, record: Mapping[str, Any]) -> bool:
    """Whether ``record`` meets the condition (a missing or unreadable value: no)."""
    if isinstance(condition, All):
        return all(holds(part, record) for part in condition.parts)
    if isinstance(condition, Any_):
        return any(holds(part, record) for part in condition.parts)
    value = record.get(condition.field)
    if value is None:
        return False
    if isinstance(condition.value, Decimal) or (
        isinstance(condition.value, tuple)
        and condition.value
        and isinstance(condition.value[0], Decimal)
    ):
        try:
            value = Decimal(str(value))
        except InvalidOperation:
            return False
        if not value.is_finite():
            return False
    else:
        value = str(value)
    if condition.op == "in":
        return value in condition.value
    if condition.op == "not in":
        return value not in condition.value
    return COMPARE[condition.op](value, condition.value)
