"""The experiment's design form as marketers fill it in: variants with their benefit
packages (a line each), the holdout, the metrics, how the results will be read;
checked by ``experiments.design`` with every message beside its field; and the power
calculator that says how many members and days the design needs."""

from __future__ import annotations

import dataclasses
import shlex
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from flask import abort, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user
from sqlalchemy import select

from app import clock
from app.api.experiments import PowerIn, read_audience
from app.auth.web import role_required
from app.extensions import db
from app.web import bp
from app.web.programme import EDITORS
from experiments import design, manage, power
from experiments.design import CHANGEABLE_WHEN_RUNNING, DESIGN_DEFAULTS
from experiments.models import Experiment, ExperimentStatus
from journeys import audience
from members.errors import InvalidFields

MAX_VARIANTS = 5
MODES = {
    "fixed": _l(
        "One look at the end: read the results once, when the planned members’ windows "
        "have closed. The fewest members; peeking earlier and stopping on a good day "
        "makes false wins likely."
    ),
    "group_sequential": _l(
        "A few planned looks (O’Brien–Fleming boundaries): stop early only when a look "
        "crosses its boundary. Costs a few percent more members."
    ),
    "always_valid": _l(
        "Look any day (always-valid p-values): stop whenever the answer is clear. "
        "Costs the most members."
    ),
}
CORRECTIONS = {
    "holm": _l(
        "Holm: limits the chance of any false win among the primary and guardrail metrics (strict)"
    ),
    "fdr_bh": _l("Benjamini–Hochberg: limits the share of false wins among the wins (less strict)"),
}
SETTINGS = ("value", "threshold", "expires_days", "points", "multiplier", "service", "cost")
DESIGN_FIELDS = tuple(DESIGN_DEFAULTS)


def can_edit() -> bool:
    return current_user.role in EDITORS


def actor() -> str:
    return f"user:{current_user.email}"


def experiment_or_404(key: str) -> Experiment:
    found = db.session.scalar(select(Experiment).where(Experiment.key == key))
    if found is None:
        abort(404)
    return found


# --------------------------------------------------------------------------- the design form


def read_package(text: str) -> tuple[list[dict[str, str]], list[int], str | None]:
    """The benefits of a variant's textarea, one a line (``coupon value=30
    threshold=199``), with each one's line number, or what is wrong with the text."""
    package: list[dict[str, str]] = []
    numbers: list[int] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            words = shlex.split(line)
        except ValueError:
            return [], [], _("line %(n)d: a quote is not closed", n=number)
        if "=" in words[0]:
            return (
                [],
                [],
                _(
                    "line %(n)d: start with the benefit: coupon, points, multiplier, "
                    "free_shipping or service",
                    n=number,
                ),
            )
        benefit = {"benefit": words[0]}
        for word in words[1:]:
            name, equals, value = word.partition("=")
            if not equals or name not in SETTINGS:
                return (
                    [],
                    [],
                    _(
                        "line %(n)d: %(w)s is not a setting; write name=value with a name among "
                        "%(names)s",
                        n=number,
                        w=word,
                        names=", ".join(SETTINGS),
                    ),
                )
            benefit[name] = value
        package.append(benefit)
        numbers.append(number)
    return package, numbers, None


def package_text(package: list[Mapping[str, Any]]) -> str:
    """A cleaned package back as the textarea's lines."""
    lines = []
    for benefit in package:
        settings = [
            f"{name}={shlex.quote(plain(benefit[name]))}"
            for name in SETTINGS
            if benefit.get(name) not in (None, "")
        ]
        lines.append(" ".join([benefit["benefit"], *settings]))
    return "\n".join(lines)


def plain(value: Any) -> str:
    if isinstance(value, Decimal):
        return f"{value.normalize():f}"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def values_of(found: Mapping[str, Any]) -> dict[str, Any]:
    """A design (``manage.describe``'s shape) as the form's fields."""
    values: dict[str, Any] = {
        name: plain(found[name]) if found.get(name) is not None else ""
        for name in ("key", "name", "hypothesis", "audience", "holdout")
    }
    values["primary_metric"] = found.get("primary_metric") or "retention_90d"
    values["guardrail_metrics"] = list(found.get("guardrail_metrics") or [])
    mde = found.get("minimum_detectable_effect")
    values["minimum_detectable_effect"] = plain(mde) if mde is not None else ""
    settings = {**DESIGN_DEFAULTS, **(found.get("design") or {})}
    values.update({name: plain(v) if v is not None else "" for name, v in settings.items()})
    for row, variant in enumerate(found.get("variants") or []):
        values[f"v{row}.key"] = variant["key"]
        values[f"v{row}.name"] = variant.get("name") or ""
        values[f"v{row}.weight"] = plain(variant["weight"])
        values[f"v{row}.benefits"] = package_text(variant.get("benefits") or [])
        if variant.get("control"):
            values["control"] = str(row)
    return values


NEW = values_of(
    {
        "holdout": 10,
        "minimum_detectable_effect": 10,
        "variants": [
            {"key": "control", "name": "", "weight": 50, "control": True, "benefits": []},
            {"key": "treatment", "name": "", "weight": 50, "control": False, "benefits": []},
        ],
    }
)


@dataclasses.dataclass
class _Posted:
    """The form as ``design.check`` reads it, and where each piece came from."""

    data: dict[str, Any]
    rows: list[int]  # the form's row of each variant sent
    lines: dict[int, list[int]]  # row -> the line of each benefit
    errors: dict[str, str]  # what the form itself could not read


def _posted(form: Mapping[str, Any], getlist) -> _Posted:
    field = lambda name: (form.get(name) or "").strip()  # noqa: E731
    data: dict[str, Any] = {
        name: field(name) or None for name in ("key", "name", "hypothesis", "audience")
    }
    data["holdout"] = field("holdout") or "0"
    data["minimum_detectable_effect"] = field("minimum_detectable_effect") or None
    if field("primary_metric"):  # else the default, retention_90d
        data["primary_metric"] = field("primary_metric")
    data["guardrail_metrics"] = getlist("guardrail_metrics")
    data["design"] = {name: field(name) for name in DESIGN_FIELDS if field(name)}
    posted = _Posted(data, [], {}, {})
    variants = []
    for row in range(MAX_VARIANTS):
        parts = {name: field(f"v{row}.{name}") for name in ("key", "name", "weight", "benefits")}
        if not any(parts.values()):
            continue
        package, numbers, problem = read_package(form.get(f"v{row}.benefits") or "")
        if problem:
            posted.errors[f"v{row}.benefits"] = problem
        variants.append(
            {
                "key": parts["key"] or None,
                "name": parts["name"] or None,
                "weight": parts["weight"] or None,
                "control": form.get("control") == str(row),
                "benefits": package,
            }
        )
        posted.rows.append(row)
        posted.lines[row] = numbers
    data["variants"] = variants
    return posted


def _beside(errors: Mapping[str, str], posted: _Posted) -> dict[str, str]:
    """``design.check``'s messages keyed by the form's field names (``v1.weight``);
    anything without a field of its own under ``_other``."""
    found = dict(posted.errors)
    other: list[str] = []

    def add(name: str, message: str) -> None:
        found[name] = f"{found[name]}; {message}" if name in found else message

    for where, message in errors.items():
        parts = where.split(".")
        if parts[0] == "variants" and len(parts) > 1 and parts[1].isdigit():
            row = posted.rows[int(parts[1])]
            if len(parts) == 2:
                add(f"v{row}.key", message)
            elif parts[2] == "benefits" and len(parts) > 3 and parts[3].isdigit():
                line = posted.lines[row][int(parts[3])]
                if len(parts) > 4:
                    message = _("line %(n)d (%(s)s): %(m)s", n=line, s=parts[4], m=message)
                else:
                    message = _("line %(n)d: %(m)s", n=line, m=message)
                add(f"v{row}.benefits", message)
            else:
                add(f"v{row}.{parts[2]}", message)
        elif parts[0] == "design" and len(parts) == 2 and parts[1] in DESIGN_FIELDS:
            add(parts[1], message)
        elif where in ("json",):
            other.append(message)
        else:
            add(where, message)
    known = {"key", "name", "hypothesis", "audience", "holdout", "variants", "primary_metric"}
    known |= {"guardrail_metrics", "minimum_detectable_effect", "design", *DESIGN_FIELDS}
    for name in list(found):
        if name not in known and not name.startswith("v"):
            other.append(f"{name}: {found.pop(name)}")
    if other:
        found["_other"] = "; ".join(other)
    return found


def _form(experiment: Experiment | None, values: Mapping[str, Any], errors=None, status=200):
    frozen = experiment is not None and experiment.status != ExperimentStatus.DRAFT
    plan = calculator(request.args, values)
    return (
        render_template(
            "experiment_form.html",
            experiment=experiment,
            values=values,
            errors=errors or {},
            frozen=frozen,
            rows=range(MAX_VARIANTS),
            metrics=design.METRICS,
            modes=MODES,
            corrections=CORRECTIONS,
            fields=sorted(audience.FIELDS.fixed),
            calc=plan,
        ),
        status,
    )


@bp.route("/experiments/new", methods=["GET", "POST"])
@role_required(*EDITORS)
def new_experiment():
    if request.method == "GET":
        return _form(None, NEW)
    posted = _posted(request.form, request.form.getlist)
    clean, errors = design.check(posted.data, read_audience=read_audience)
    if not errors and not posted.errors:
        try:
            experiment = manage.create(db.session, clean, actor=actor(), now=clock.now())
            db.session.commit()
        except manage.Conflict as exc:
            db.session.rollback()
            errors = {"key": str(exc)}
        else:
            flash(_("Experiment created as a draft. Start it when the design is right."), "success")
            return redirect(url_for("web.experiment", key=experiment.key))
    values = {
        **request.form.to_dict(),
        "guardrail_metrics": request.form.getlist("guardrail_metrics"),
    }
    return _form(None, values, _beside(errors, posted), 400)


@bp.route("/experiments/<key>/edit", methods=["GET", "POST"])
@role_required(*EDITORS)
def edit_experiment(key: str):
    experiment = experiment_or_404(key)
    stored = values_of(manage.describe(experiment))
    if request.method == "GET":
        return _form(experiment, stored)
    posted = _posted({**request.form.to_dict(), "key": experiment.key}, request.form.getlist)
    frozen = experiment.status != ExperimentStatus.DRAFT
    data = posted.data
    if frozen:  # the disabled fields are not sent: only what may still change is read
        data = {name: data[name] for name in CHANGEABLE_WHEN_RUNNING}
        posted.errors.clear()
    clean, errors = design.check(data, read_audience=read_audience, partial=frozen)
    if not errors and not posted.errors:
        # Like a PATCH, only what changed: the audit then says what did.
        current = manage.describe(experiment)
        changed = {name: value for name, value in clean.items() if current[name] != value}
        try:
            if changed:
                manage.edit(db.session, experiment, changed, actor=actor(), now=clock.now())
                db.session.commit()
        except InvalidFields as exc:
            db.session.rollback()
            errors = exc.errors
        else:
            flash(_("Saved.") if changed else _("Nothing changed."), "success")
            return redirect(url_for("web.experiment", key=experiment.key))
    typed = {
        **request.form.to_dict(),
        "guardrail_metrics": request.form.getlist("guardrail_metrics"),
    }
    if frozen:
        typed = {**stored, **{name: typed.get(name, "") for name in CHANGEABLE_WHEN_RUNNING}}
    values = {**typed, "key": experiment.key}
    return _form(experiment, values, _beside(errors, posted), 400)


# --------------------------------------------------------------------------- the calculator


def calculator(args: Mapping[str, str], values: Mapping[str, Any]) -> dict[str, Any]:
    """The power calculator's fields (prefilled from the design), and its plan or its
    messages once asked (``calc`` in the query)."""
    holdout = _number(values.get("holdout"), 0) / 100
    weights = [
        (_number(values.get(f"v{row}.weight"), 0), values.get("control") == str(row))
        for row in range(MAX_VARIANTS)
    ]
    total = sum(w for w, _c in weights) or 100
    control = next((w for w, c in weights if c), 50)
    treated = next((w for w, c in weights if w and not c), 50)
    metric = values.get("primary_metric") or "retention_90d"
    horizon = metric.removeprefix("retention_").removesuffix("d")
    mode = values.get("mode") or "fixed"
    prefilled = {
        "baseline": "0.3",
        "mde": f"{_number(values.get('minimum_detectable_effect'), 10) / 100:g}",
        "members_per_day": "200",
        "horizon_days": horizon if horizon.isdigit() else "90",
        "treated_share": f"{(1 - holdout) * treated / total:.3g}",
        "control_share": f"{(1 - holdout) * control / total:.3g}",
        "alpha": values.get("alpha") or "0.05",
        "power": values.get("power") or "0.8",
        "mode": mode,
        "looks": values.get("looks") or "5",
    }
    asked = "calc" in args
    shown_values = {n: args.get(n, prefilled[n]) if asked else prefilled[n] for n in prefilled}
    out: dict[str, Any] = {"values": shown_values, "errors": {}, "plan": None, "asked": asked}
    if not asked:
        return out
    data = {name: v.strip() for name, v in shown_values.items() if v.strip()}
    if data.get("mode") != "group_sequential":
        data.pop("looks", None)  # daily looks for always-valid, one for fixed
    problems = PowerIn().validate(data)
    if problems:
        out["errors"] = {name: " ".join(m) for name, m in problems.items()}
        return out
    loaded = PowerIn().load(data)
    if loaded["treated_share"] + loaded["control_share"] > 1:
        out["errors"] = {"control_share": _("the two shares add up to more than 1")}
        return out
    loaded.setdefault("looks", None)
    if loaded["mode"] != "group_sequential":
        loaded["looks"] = None
    try:
        out["plan"] = power.days_needed(power.Design(**loaded))
    except ValueError as exc:
        out["errors"] = {"_plan": str(exc)}
    return out


def _number(text: Any, default: float) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        return default
