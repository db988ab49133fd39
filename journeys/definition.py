"""A journey's definition: its trigger, entry rules, goal and graph of steps, as JSON.

:func:`check` reads a definition as a marketer's form or an engineer's API call sends
it and returns the definition cleaned (defaults filled in, numbers as numbers) with
every problem keyed by where it is (``trigger.cron``, ``steps.s2.template``), so that
the builder shows each message beside its field and the API names it. What the
definition refers to (message templates, experiments, other journeys, tiers) is
checked against a :class:`Known` that the caller reads from the database.

The stored definition is the cleaned one: the engine reads it without checking again.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from croniter import CroniterError, croniter

from experiments import benefits
from journeys import audience, graph
from journeys.conditions import ConditionError, Kind, parse
from members.checking import Errors as _Errors
from members.checking import choice as _choice
from members.checking import integer as _integer
from members.checking import number as _number
from members.checking import text as _text

CHANNELS = ("sms", "push")
STAGE_TRIGGERS = audience.STAGES
DATE_FIELDS = ("birthday", "joined", "points_expiry")
REENTRY = ("never", "after_days", "always")
GOAL_EXITS = ("never", "on_conversion", "when_unmatched", "either")
MAX_HOLDOUT = Decimal(50)
TIME = re.compile(r"([01]\d|2[0-3]):([0-5]\d)")
NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")
EVENT_TYPE = re.compile(r"[a-z][a-z0-9_.]{0,63}")


class _EventFields(Mapping[str, Kind]):
    """What an event filter may name: the event's columns and any of its properties."""

    def __getitem__(self, name: str) -> Kind:
        if name.startswith("properties.") and len(name) > len("properties."):
            return "any"
        return {"amount": "number", "category": "text", "currency": "text"}[name]

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(["amount", "category", "currency", "properties.<name>"])

    def __len__(self) -> int:
        return 4


EVENT_FILTER_FIELDS = _EventFields()


@dataclasses.dataclass(frozen=True)
class Known:
    """What exists for a definition to refer to."""

    templates: Mapping[str, str] = dataclasses.field(default_factory=dict)  # key -> channel
    experiments: Mapping[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)
    journeys: frozenset[str] = frozenset()  # keys of other journeys (for hand-offs)
    tiers: tuple[str, ...] = ()


def check(data: Any, known: Known, *, key: str | None = None) -> tuple[dict[str, Any], dict]:
    """(the cleaned definition, {where: message}); the definition is usable only when
    there are no errors. ``key`` is the journey's own key (it may not hand off to itself)."""
    errors = _Errors()
    if not isinstance(data, Mapping):
        return {}, {"definition": "must be an object with trigger, entry, goal, start and steps"}
    clean: dict[str, Any] = {
        "trigger": _trigger(data.get("trigger"), known, errors),
        "entry": _entry(data.get("entry"), errors),
        "goal": _goal(data.get("goal"), errors),
        "start": data.get("start"),
        "steps": {},
    }
    steps = data.get("steps")
    graph_errors = graph.check(data.get("start"), steps)
    for where, message in graph_errors.items():
        errors.add(where, message)
    if isinstance(steps, Mapping):
        for step_id, step in steps.items():
            if isinstance(step, Mapping) and step.get("type") in graph.EXITS:
                clean["steps"][step_id] = _step(str(step_id), step, known, key, errors)
    exit_mode = clean["entry"].get("exit")
    if clean["goal"] is None and exit_mode in ("on_conversion", "either"):
        errors.add("goal", "exit on conversion needs a goal")
    if not clean["entry"].get("audience") and exit_mode in ("when_unmatched", "either"):
        errors.add("entry.audience", "exit when the member no longer matches needs an audience")
    return clean, dict(errors)


def _object(value: Any, where: str, errors: _Errors, *, required: bool = True) -> Mapping:
    if value is None and not required:
        return {}
    if not isinstance(value, Mapping):
        errors.add(where, "must be an object")
        return {}
    return value


def _time(data: Mapping, name: str, where: str, errors: _Errors, default=None) -> str | None:
    value = data.get(name)
    if value is None:  # absent or null: the default
        return default
    if not isinstance(value, str) or not TIME.fullmatch(value):
        errors.add(f"{where}.{name}", "must be a time of day as HH:MM, e.g. 10:00")
        return default
    return value


def _condition(
    data: Mapping, name: str, where: str, fields: Mapping[str, Kind], errors: _Errors
) -> str | None:
    value = data.get(name)
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if not isinstance(value, str):
        errors.add(f"{where}.{name}", "must be a condition such as amount >= 200")
        return None
    try:
        if fields is audience.FIELDS:
            audience.read(value, fields)
        else:
            parse(value, fields)
    except ConditionError as error:
        errors.add(f"{where}.{name}", str(error))
        return None
    return value.strip()


def _trigger(value: Any, known: Known, errors: _Errors) -> dict[str, Any]:
    data = _object(value, "trigger", errors)
    kind = _choice(
        data,
        "type",
        "trigger",
        ("stage_entered", "tier_changed", "event", "schedule", "date", "api"),
        errors,
    )
    clean: dict[str, Any] = {"type": kind}
    where = "trigger"
    if kind == "stage_entered":
        # One stage ("stage": "dormant") or several ("stages": ["dormant", "lapsed"]).
        wanted = data.get("stages", [data.get("stage")] if "stage" in data else None)
        name = "stages" if "stages" in data else "stage"
        if (
            not isinstance(wanted, list)
            or not wanted
            or any(s not in STAGE_TRIGGERS for s in wanted)
        ):
            errors.add(f"trigger.{name}", f"name one or more of {', '.join(STAGE_TRIGGERS)}")
            wanted = []
        clean["stages"] = list(dict.fromkeys(wanted))
    elif kind == "tier_changed":
        to = data.get("to")
        if to is not None and to not in known.tiers:
            errors.add("trigger.to", f"no tier {to!r} (tiers: {', '.join(known.tiers)})")
        clean["to"] = to
        clean["direction"] = _choice(
            data, "direction", where, ("up", "down", "any"), errors, default="any"
        )
    elif kind == "event":
        clean["event"] = _text(data, "event", where, errors, pattern=EVENT_TYPE, max_len=64)
        clean["filter"] = _condition(data, "filter", where, EVENT_FILTER_FIELDS, errors)
        entry_key = data.get("entry_key")
        if entry_key is not None and (
            not isinstance(entry_key, str) or not re.fullmatch(r"[A-Za-z0-9_.]{1,64}", entry_key)
        ):
            errors.add("trigger.entry_key", "must name a property of the event, e.g. order_id")
            entry_key = None
        clean["entry_key"] = entry_key
    elif kind == "schedule":
        cron, daily = data.get("cron"), data.get("daily_at")
        if (cron is None) == (daily is None):
            errors.add("trigger.cron", "give either a cron expression or a daily time (daily_at)")
        elif cron is not None:
            if not _cron_fires(cron):
                errors.add(
                    "trigger.cron",
                    "is not a cron expression: five fields, minute hour day month weekday,"
                    " e.g. 0 10 * * 1",
                )
            clean["cron"] = cron
        else:
            clean["daily_at"] = _time(data, "daily_at", where, errors)
    elif kind == "date":
        field = _choice(data, "field", where, DATE_FIELDS, errors)
        clean["field"] = field
        default = 7 if field == "points_expiry" else 0
        clean["days_before"] = _integer(
            data, "days_before", where, errors, low=0, high=90, default=default
        )
        clean["at"] = _time(data, "at", where, errors, default="10:00")
    return clean


def _cron_fires(cron: Any) -> bool:
    """A five-field cron expression that names times which exist (not 31 February)."""
    if not isinstance(cron, str) or len(cron.split()) != 5:
        return False
    try:
        if not croniter.is_valid(cron, strict=True):
            return False
        croniter(cron, dt.datetime(2026, 1, 1, tzinfo=dt.UTC)).get_next(dt.datetime)
    except (CroniterError, ValueError, KeyError):
        return False
    return True


def _entry(value: Any, errors: _Errors) -> dict[str, Any]:
    data = _object(value, "entry", errors, required=False)
    where = "entry"
    reentry = _choice(data, "reentry", where, REENTRY, errors, default="never")
    clean: dict[str, Any] = {
        "audience": _condition(data, "audience", where, audience.FIELDS, errors),
        "reentry": reentry,
        "reentry_days": None,
        "holdout_percent": _number(
            data, "holdout_percent", where, errors, low=Decimal(0), high=MAX_HOLDOUT
        )
        or "0",
        "daily_cap": _integer(data, "daily_cap", where, errors, low=1, high=10_000_000),
        "marketing": data.get("marketing", True),
        "exit": _choice(data, "exit", where, GOAL_EXITS, errors, default="never"),
    }
    if reentry == "after_days":
        clean["reentry_days"] = _integer(data, "reentry_days", where, errors, low=1, high=3650)
        if clean["reentry_days"] is None:
            errors.add("entry.reentry_days", "say after how many days a member may enter again")
    if not isinstance(clean["marketing"], bool):
        errors.add("entry.marketing", "must be true or false")
        clean["marketing"] = True
    return clean


def _goal(value: Any, errors: _Errors) -> dict[str, Any] | None:
    if value is None:
        return None
    data = _object(value, "goal", errors)
    return {
        "event": _text(data, "event", "goal", errors, pattern=EVENT_TYPE, max_len=64),
        "filter": _condition(data, "filter", "goal", EVENT_FILTER_FIELDS, errors),
        "within_days": _integer(data, "within_days", "goal", errors, low=1, high=365, default=14),
    }


def _duration(data: Mapping, prefix: str, where: str, errors: _Errors) -> dict[str, int]:
    parts = {
        unit: _integer(data, f"{prefix}{unit}", where, errors, low=0, high=limit) or 0
        for unit, limit in (("days", 365), ("hours", 24 * 365), ("minutes", 60 * 24 * 365))
    }
    total = dt.timedelta(**parts)
    if total <= dt.timedelta(0):
        errors.add(f"{where}.{prefix}days", "give how long: days, hours or minutes above 0")
    elif total > dt.timedelta(days=365):
        errors.add(f"{where}.{prefix}days", "at most 365 days")
    return {f"{prefix}{unit}": value for unit, value in parts.items()}


def _step(
    step_id: str, data: Mapping, known: Known, key: str | None, errors: _Errors
) -> dict[str, Any]:
    where = f"steps.{step_id}"
    kind = data["type"]
    clean: dict[str, Any] = {"type": kind}
    label = data.get("name")
    if label is not None:
        if not isinstance(label, str) or len(label) > 200:
            errors.add(f"{where}.name", "at most 200 characters")
        else:
            clean["name"] = label.strip() or None
    for name, target in graph.exits(data):
        if "." not in name:
            clean[name] = target
    if kind == "send":
        channel = _choice(data, "channel", where, CHANNELS, errors)
        template = _text(data, "template", where, errors, max_len=64)
        if template is not None:
            if template not in known.templates:
                errors.add(f"{where}.template", f"no message template {template!r}")
            elif channel is not None and known.templates[template] != channel:
                errors.add(
                    f"{where}.template",
                    f"{template!r} is a {known.templates[template]} template, not {channel}",
                )
        clean.update(channel=channel, template=template)
    elif kind == "wait":
        clean.update(_duration(data, "", where, errors))
    elif kind == "wait_until":
        clean["time"] = _time(data, "time", where, errors, default="10:00")
        field = data.get("field")
        if field is not None:
            clean["field"] = _choice(data, "field", where, ("birthday", "joined"), errors)
            clean["days_before"] = _integer(
                data, "days_before", where, errors, low=0, high=90, default=0
            )
    elif kind == "wait_for_event":
        clean["event"] = _text(data, "event", where, errors, pattern=EVENT_TYPE, max_len=64)
        clean["filter"] = _condition(data, "filter", where, EVENT_FILTER_FIELDS, errors)
        clean.update(_duration(data, "within_", where, errors))
    elif kind == "branch":
        fields = audience.Fields({"events_in_window": "number", **_outcome_fields(data)})
        window = data.get("window")
        if window is not None:
            window = _object(window, f"{where}.window", errors)
            window = {
                "event": _text(window, "event", f"{where}.window", errors, pattern=EVENT_TYPE),
                "days": _integer(window, "days", f"{where}.window", errors, low=1, high=365) or 7,
            }
        condition = data.get("condition")
        if not isinstance(condition, str) or not condition.strip():
            errors.add(f"{where}.condition", "write the condition, e.g. tier = 'gold'")
        else:
            _check_branch(condition, fields, window, where, errors)
        clean.update(condition=condition, window=window)
    elif kind == "split":
        branches = data.get("branches") if isinstance(data.get("branches"), list) else []
        clean["branches"] = []
        total = Decimal(0)
        for index, branch in enumerate(branches):
            branch = branch if isinstance(branch, Mapping) else {}
            percent = _number(
                branch,
                "percent",
                f"{where}.branches.{index}",
                errors,
                low=Decimal("0.01"),
                high=Decimal(100),
            )
            total += Decimal(percent or 0)
            clean["branches"].append({"percent": percent, "next": branch.get("next")})
        if branches and total != 100:
            errors.add(f"{where}.branches", f"the percentages add up to {total}, not 100")
    elif kind == "experiment_split":
        experiment = _text(data, "experiment", where, errors, max_len=64)
        variants = data.get("variants") if isinstance(data.get("variants"), Mapping) else {}
        if experiment is not None:
            if experiment not in known.experiments:
                errors.add(f"{where}.experiment", f"no experiment {experiment!r}")
            else:
                wanted = set(known.experiments[experiment])
                missing = sorted(wanted - set(variants))
                extra = sorted(set(variants) - wanted)
                if missing:
                    errors.add(f"{where}.variants", f"say where {', '.join(missing)} go next")
                elif extra:
                    errors.add(f"{where}.variants", f"the experiment has no {', '.join(extra)}")
        clean.update(experiment=experiment, variants=dict(variants))
    elif kind == "grant":
        clean.update(benefits.clean(data, where, errors))
    elif kind == "update_attribute":
        attribute = _text(data, "attribute", where, errors, pattern=NAME, max_len=64)
        value = data.get("value")
        if isinstance(value, float | Decimal) and not Decimal(str(value)).is_finite():
            errors.add(f"{where}.value", "must be a finite number")
        if not (value is None or isinstance(value, str | int | float | bool)):
            errors.add(f"{where}.value", "must be text, a number, true/false or null")
        if isinstance(value, str) and len(value) > 500:
            errors.add(f"{where}.value", "at most 500 characters")
        clean.update(attribute=attribute, value=value)
    elif kind == "webhook":
        url = _text(data, "url", where, errors, max_len=2000)
        if url is not None and not re.fullmatch(r"https?://[^\s/$.?#][^\s]*", url):
            errors.add(f"{where}.url", "must be an http(s) address")
        clean["url"] = url
    elif kind == "handoff":
        target = _text(data, "journey", where, errors, max_len=64)
        if target is not None:
            if target == key:
                errors.add(f"{where}.journey", "a journey cannot hand off to itself")
            elif target not in known.journeys:
                errors.add(f"{where}.journey", f"no journey {target!r}")
        clean["journey"] = target
    return clean


def _outcome_fields(data: Mapping) -> dict[str, Kind]:
    condition = data.get("condition")
    names = re.findall(
        r"outcome\.([a-z][a-z0-9_]*)", condition if isinstance(condition, str) else ""
    )
    return {f"outcome.{name}": "text" for name in names}


def _check_branch(
    condition: str, fields: audience.Fields, window: Any, where: str, errors: _Errors
) -> None:
    try:
        parsed = audience.read(condition, fields)
    except ConditionError as error:
        errors.add(f"{where}.condition", str(error))
        return
    if window is None and "events_in_window" in repr(parsed):
        errors.add(f"{where}.window", "events_in_window needs a window: an event and days")
