"""The send policies: what may hold a message back at delivery time, in this order
(the first that holds it names itself in the message's ``reason``):

1. the member was erased: suppressed;
2. consent: a marketing message needs the member's consent for its channel, and the
   member must not have refused automated personalised marketing (PIPL art. 24); a
   provider abroad (Twilio, FCM) carries a mainland member's number or token only with
   their separate consent to that (PIPL art. 39), for any message; withdrawal wins at
   once, since it is read at delivery: suppressed;
3. the suppression list (an address nobody may message): suppressed;
4. quiet hours in the member's own time zone (marketing SMS; default 21:00-08:00):
   deferred to the first minute after them, never dropped;
5. the frequency cap across all journeys, per member per day and per week (marketing
   only; the higher priority goes first): deferred to the next day, or suppressed once
   older than the cap's patience;
6. the global pause switch: deferred until it is lifted (a minute at a time).

``evaluate`` is pure: it reads what delivery loaded for a batch and returns a ``Hold``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from collections.abc import Mapping
from typing import Any
from zoneinfo import ZoneInfo

from journeys.definition import TIME
from journeys.models import MessageStatus
from journeys.templates import SmsStyle
from members import programme
from members.errors import InvalidFields

# Replies that mean "no more SMS": the old and new Chinese wordings (回T退订, 拒收请回复R)
# and the international ones, compared as a whole message. The opt-out texts appended
# to every SMS must name one of them.
OPT_OUT_WORDS = frozenset(
    {
        "R",
        "T",
        "TD",
        "N",
        "0000",
        "退订",
        "拒收",
        "STOP",
        "UNSUBSCRIBE",
        "STOPALL",
        "CANCEL",
        "END",
        "QUIT",
        "OPTOUT",
    }
)
# Template priorities: under a tight cap a higher one goes first.
PRIORITIES = {0: "promotion", 1: "reminder", 2: "care"}


@dataclasses.dataclass(frozen=True)
class Policies:
    quiet_start: str = "21:00"
    quiet_end: str = "08:00"
    daily_cap: int = 2  # marketing messages per member per day (0: no cap)
    weekly_cap: int = 5
    cap_patience_days: int = 3  # a capped message older than this is dropped
    paused: bool = False
    # What every SMS carries: the sender's signature, and the opt-out text by country.
    signature: str = "【会员中心】"
    opt_out_cn: str = "拒收请回复R"
    opt_out_other: str = "Reply STOP to opt out"

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def sms_style(self) -> SmsStyle:
        return SmsStyle(self.signature, self.opt_out_cn, self.opt_out_other)


def parse(data: Mapping[str, Any]) -> Policies:
    errors: dict[str, str] = {}
    values: dict[str, Any] = {}
    for name in ("quiet_start", "quiet_end"):
        value = data.get(name, getattr(Policies, name))
        if not isinstance(value, str) or not TIME.fullmatch(value):
            errors[name] = "a time of day as HH:MM"
        values[name] = value
    for name, high in (("daily_cap", 100), ("weekly_cap", 500), ("cap_patience_days", 30)):
        value = data.get(name, getattr(Policies, name))
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= high:
            errors[name] = f"a whole number from 0 to {high}"
        values[name] = value
    paused = data.get("paused", False)
    if not isinstance(paused, bool):
        errors["paused"] = "true or false"
    for name in ("signature", "opt_out_cn", "opt_out_other"):
        value = data.get(name, getattr(Policies, name))
        if not isinstance(value, str) or not value.strip() or len(value) > 40:
            errors[name] = "text of 1 to 40 characters"
        values[name] = value.strip() if isinstance(value, str) else value
    for name in ("opt_out_cn", "opt_out_other"):
        if name not in errors and not _names_a_keyword(values[name]):
            errors[name] = (
                "name the reply that opts out, one of: R, T, TD, 退订, STOP, UNSUBSCRIBE "
                "(e.g. 拒收请回复R, Reply STOP to opt out): other replies are not understood"
            )
    if isinstance(values.get("signature"), str) and not re.fullmatch(
        r"【[^【】]{2,16}】", values["signature"]
    ):
        errors.setdefault(
            "signature", "the sender's name in 【】, 2 to 16 characters: 【鞋履会员】"
        )
    if errors:
        raise InvalidFields(errors)
    return Policies(**values, paused=paused)


def _names_a_keyword(text: str) -> bool:
    upper = text.upper()
    for word in OPT_OUT_WORDS:
        if word.isascii():
            if re.search(rf"(?<![A-Z0-9]){re.escape(word)}(?![A-Z0-9])", upper):
                return True
        elif word in text:
            return True
    return False


SETTING = programme.Document("send_policies", parse, Policies())


@dataclasses.dataclass(frozen=True)
class Hold:
    """Why a message does not go now: suppressed for good, or deferred until a time."""

    status: MessageStatus
    reason: str
    until: dt.datetime | None = None


@dataclasses.dataclass
class Usage:
    """Marketing messages a member has had in the last day and week (counted as the
    batch goes, so that one batch cannot overrun the cap)."""

    daily: int = 0
    weekly: int = 0


def _minutes(text: str) -> int:
    hour, minute = map(int, text.split(":"))
    return hour * 60 + minute


def zone(name: str | None) -> ZoneInfo:
    try:
        return ZoneInfo(name or "Asia/Shanghai")
    except (KeyError, ValueError):
        return ZoneInfo("Asia/Shanghai")


def quiet_until(policies: Policies, zone_name: str, now: dt.datetime) -> dt.datetime | None:
    """When the quiet hours around ``now`` end in the member's zone (None: not quiet)."""
    local = now.astimezone(zone(zone_name))
    start, end = _minutes(policies.quiet_start), _minutes(policies.quiet_end)
    minute = local.hour * 60 + local.minute
    quiet = (start <= minute or minute < end) if start > end else (start <= minute < end)
    if start == end or not quiet:
        return None
    day = local.date() if minute < end else local.date() + dt.timedelta(days=1)
    hour, minute_of = divmod(end, 60)
    return dt.datetime.combine(day, dt.time(hour, minute_of), local.tzinfo)


# IANA names (and their aliases) of mainland China's time zones.
MAINLAND_ZONES = frozenset(
    {
        "Asia/Shanghai",
        "Asia/Urumqi",
        "Asia/Chongqing",
        "Asia/Chungking",
        "Asia/Harbin",
        "Asia/Kashgar",
        "PRC",
    }
)
CHANNEL_CONSENT = {"sms": "consent_sms", "push": "consent_push"}


def in_mainland(member) -> bool:
    """Whether PIPL's rules on leaving mainland China apply: a +86 number, or, without a
    number, a mainland time zone."""
    if member.phone:
        return member.phone.startswith("+86")
    return member.timezone in MAINLAND_ZONES


def refusal(message, member) -> str | None:
    """What the member said that forbids the message (policies 1 and 2, read at the
    claim and again just before the call): erased, no consent for the channel, or a
    refusal of personalised marketing."""
    if member is None or member.erased_at is not None:
        return "erased"
    if message.channel in CHANNEL_CONSENT and not message.transactional:
        if not getattr(member, CHANNEL_CONSENT[message.channel]):
            return f"no_consent:{message.channel}"
        if not member.personalised_marketing:
            return "refused_personalised_marketing"
    return None


def evaluate(
    message,
    member,
    policies: Policies,
    *,
    now: dt.datetime,
    usage: Usage,
    suppressed: bool = False,
    cross_border: bool = False,
) -> Hold | None:
    """The first policy that holds ``message`` back, or None when it may go now.

    ``suppressed``: its address is on the suppression list; ``cross_border``: the
    provider it would go through stores data outside mainland China."""
    refused = refusal(message, member)
    if refused:
        return Hold(MessageStatus.SUPPRESSED, refused)
    marketing = message.channel in CHANNEL_CONSENT and not message.transactional
    if cross_border and in_mainland(member) and not member.cross_border_consent:
        return Hold(MessageStatus.SUPPRESSED, "no_cross_border_consent")
    if suppressed:
        return Hold(MessageStatus.SUPPRESSED, "suppression_list")
    if marketing and message.channel == "sms":
        until = quiet_until(policies, member.timezone, now)
        if until is not None:
            return Hold(MessageStatus.DEFERRED, "quiet_hours", until)
    if marketing:
        capped = None
        if policies.daily_cap and usage.daily >= policies.daily_cap:
            capped = "frequency_cap:daily"
        elif policies.weekly_cap and usage.weekly >= policies.weekly_cap:
            capped = "frequency_cap:weekly"
        if capped:
            if now - message.created_at > dt.timedelta(days=policies.cap_patience_days):
                return Hold(MessageStatus.SUPPRESSED, capped)
            return Hold(MessageStatus.DEFERRED, capped, now + dt.timedelta(days=1))
    if policies.paused:
        return Hold(MessageStatus.DEFERRED, "paused", now + dt.timedelta(minutes=1))
    return None
