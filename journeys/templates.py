"""Marketers' message templates: what they may refer to, the lint that refuses a
template at save time (a syntax error or an unknown variable, with its line), the SMS
as it is sent (the sender's signature in front, the opt-out text behind) and its
length in segments, and a preview for a chosen or a sample member.

Segments: a text of the GSM 03.38 alphabet takes 160 characters in one SMS and 153 in
each part of a longer one (the extension characters ^{}[]~|€\\ count twice); any other
character, as in every Chinese text, makes it UCS-2: 70 in one, 67 per part.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator, Mapping
from typing import Any

from jinja2 import TemplateSyntaxError, nodes

from journeys import render

# What a template may read: the member, the benefit just granted (and the last coupon),
# the journey's context (free-form: anything under it is allowed), and the language.
MEMBER = (
    "name",
    "tier",
    "stage",
    "points_balance",
    "points_expiring",
    "points_expiring_at",
    "days_since_last_order",
    "next_tier",
    "next_tier_en",
    "spend_to_next_tier",
    "region",
    "timezone",
)
BENEFIT = ("kind", "value", "threshold", "code", "expires_at", "service")
VARIABLES: Mapping[str, tuple[str, ...] | None] = {
    "member": MEMBER,
    "benefit": BENEFIT,
    "coupon": BENEFIT,
    "context": None,  # any key
    "language": (),
}
SAMPLE: dict[str, Any] = {
    "member": {
        "name": "王芳",
        "tier": "gold",
        "stage": "dormant",
        "points_balance": 1280,
        "points_expiring": 300,
        "points_expiring_at": "2026-12-01T16:00:00+00:00",
        "days_since_last_order": 45,
        "next_tier": "钻石卡",
        "next_tier_en": "Diamond",
        "spend_to_next_tier": "520.00",
        "region": "上海",
        "timezone": "Asia/Shanghai",
    },
    "benefit": {
        "kind": "coupon",
        "value": "50",
        "threshold": "200",
        "code": "TN8F3K2Q9W1A",
        "expires_at": "2026-11-26T15:59:00+00:00",
        "service": None,
    },
    "context": {"order_id": "A1001"},
}
SAMPLE["coupon"] = SAMPLE["benefit"]
GSM7 = (
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENDED = "^{}\\[~]|€\f"
MAX_BODY = 2000
KEY = re.compile(r"[a-z][a-z0-9_]{0,63}")


@dataclasses.dataclass(frozen=True)
class LintError:
    line: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


def lint(text: str) -> list[LintError]:
    """What is wrong with a template: a syntax error, or variables it may not read."""
    if not isinstance(text, str) or not text.strip():
        return [LintError(1, "write the message")]
    if len(text) > MAX_BODY:
        return [LintError(1, f"at most {MAX_BODY} characters")]
    try:
        tree = render.ENVIRONMENT.parse(text)
    except TemplateSyntaxError as error:
        return [LintError(error.lineno or 1, error.message or "syntax error")]
    errors = [
        LintError(node.lineno, f"unknown filter {node.name!r}")
        for node in tree.find_all(nodes.Filter)
        if node.name not in render.ENVIRONMENT.filters
    ]
    if errors:
        return errors
    known = ", ".join(VARIABLES)
    names = list(tree.find_all(nodes.Name))
    # Names the template sets itself ({% for x in ... %}, {% set x = ... %}) may be read.
    own = {node.name for node in names if node.ctx in ("store", "param")}
    for node in names:
        if node.ctx == "load" and node.name not in VARIABLES and node.name not in own:
            errors.append(LintError(node.lineno, f"unknown variable {node.name!r} ({known})"))
    for node in tree.find_all(nodes.Getattr):
        owner = node.node
        if isinstance(owner, nodes.Name) and VARIABLES.get(owner.name):
            allowed = VARIABLES[owner.name]
            if node.attr not in allowed:
                errors.append(
                    LintError(
                        node.lineno,
                        f"{owner.name} has no {node.attr!r} (it has {', '.join(allowed)})",
                    )
                )
    return sorted(set(errors), key=lambda e: (e.line, e.message))


@dataclasses.dataclass(frozen=True)
class Length:
    characters: int
    encoding: str  # "GSM-7" or "UCS-2"
    segments: int

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def length(text: str) -> Length:
    """How an SMS of ``text`` is counted and into how many segments it is cut."""
    if all(c in GSM7 or c in GSM7_EXTENDED for c in text):
        units = sum(2 if c in GSM7_EXTENDED else 1 for c in text)
        single, part = 160, 153
        encoding = "GSM-7"
    else:
        units = len(text.encode("utf-16-le")) // 2  # an emoji is two UCS-2 units
        single, part = 70, 67
        encoding = "UCS-2"
    segments = 1 if units <= single else -(-units // part)
    return Length(units, encoding, segments if units else 0)


@dataclasses.dataclass(frozen=True)
class SmsStyle:
    """What every SMS carries besides its body: the sender's signature (required in
    mainland China) and the opt-out text."""

    signature: str = "【会员中心】"
    opt_out_cn: str = "拒收请回复R"
    opt_out_other: str = "Reply STOP to opt out"


def compose_sms(body: str, style: SmsStyle, *, phone: str | None) -> str:
    """The SMS as sent: the signature in front, the opt-out text for the member's
    country behind (a +86 number gets the Chinese one)."""
    opt_out = style.opt_out_cn if (phone or "+86").startswith("+86") else style.opt_out_other
    signature = style.signature if not body.startswith(style.signature) else ""
    ending = "" if opt_out in body else f" {opt_out}"
    return f"{signature}{body}{ending}".strip()


def preview(
    body: str,
    *,
    channel: str,
    variables: Mapping[str, Any] | None = None,
    title: str | None = None,
    style: SmsStyle = SmsStyle(),
    phone: str | None = "+8613800000000",
    approved: tuple[str, Mapping[str, str]] | None = None,
) -> dict[str, Any]:
    """The message as a member would get it; RenderError or LintError list if it fails.
    ``approved``: the provider's approved text and its variables' expressions, which
    then make the text."""
    problems = lint(body) + (lint(title) if title else [])
    if problems:
        raise TemplateProblems(problems)
    values = dict(variables or SAMPLE)
    if approved is not None and channel == "sms":
        text = approved_text(approved[0], render_params(approved[1], values))
    else:
        text = render.render(body, values)
    shown_title = render.render(title, values) if title else None
    if channel == "sms":
        text = compose_sms(text, style, phone=phone)
        return {"text": text, "title": None, **length(text).as_dict()}
    return {
        "text": text,
        "title": shown_title,
        "characters": len(text),
        "encoding": None,
        "segments": None,
    }


class TemplateProblems(ValueError):
    def __init__(self, problems: list[LintError]) -> None:
        super().__init__("; ".join(map(str, problems)))
        self.problems = problems


def problems(channel: str, body: str, title: str | None) -> dict[str, str]:
    """What stops a template from being saved, by field (body, title)."""
    found: dict[str, str] = {}
    body_problems = lint(body)
    if body_problems:
        found["body"] = "; ".join(map(str, body_problems))
    if channel == "push" and not title:
        found["title"] = "a push message needs a title"
    elif title:
        title_problems = lint(title)
        if title_problems:
            found["title"] = "; ".join(map(str, title_problems))
    return found


APPROVED_CODE = re.compile(r"^SMS_\d{3,20}$")
APPROVED_VARIABLE = re.compile(r"\$\{(\w{1,32})\}")


def binding_problems(
    code: str | None, text: str | None, params: Mapping[str, Any] | None
) -> dict[str, str]:
    """What is wrong with an SMS template's binding to a provider's approved template
    (Alibaba: a TemplateCode, the approved text with ${variables}, and a template
    expression for each variable). No binding at all is fine."""
    if not (code or text or params):
        return {}
    found: dict[str, str] = {}
    if not code or not APPROVED_CODE.match(code):
        found["sms_template_code"] = "the approved template's code, like SMS_154950909"
    if not text or not text.strip():
        found["sms_approved_text"] = "the approved text as the provider shows it, with ${variables}"
    if params is not None and not isinstance(params, Mapping):
        found["sms_params"] = "an object: each ${variable} of the approved text and its value"
        return found
    wanted = set(APPROVED_VARIABLE.findall(text or ""))
    given = dict(params or {})
    missing, extra = sorted(wanted - set(given)), sorted(set(given) - wanted)
    if missing:
        found["sms_params"] = "no value for " + ", ".join("${" + m + "}" for m in missing)
    elif extra:
        found["sms_params"] = "the approved text has no " + ", ".join("${" + e + "}" for e in extra)
    for name, expression in given.items():
        if not isinstance(expression, str):
            found[f"sms_params.{name}"] = "a template expression as text"
            continue
        problems_of = lint(expression)
        if problems_of:
            found[f"sms_params.{name}"] = "; ".join(map(str, problems_of))
    return found


def approved_text(text: str, values: Mapping[str, Any]) -> str:
    """The approved text with each ${variable} replaced, as the provider will send it."""
    return APPROVED_VARIABLE.sub(lambda match: str(values.get(match.group(1), "")), text)


def render_params(params: Mapping[str, str], variables: Mapping[str, Any]) -> dict[str, str]:
    return {name: render.render(expression, variables) for name, expression in params.items()}


def placeholders(text: str) -> Iterator[str]:
    """The variables a template reads, as written (``member.name``), for the editor."""
    yield from dict.fromkeys(re.findall(r"{{\s*([a-z_]+(?:\.[a-z_]+)?)", text))
