"""Experiments as marketers run them: listed; designed in one form (variants with their
benefit packages, the holdout, the metrics, how results will be read) checked by
``experiments.design`` with every message beside its field; the power calculator;
started and stopped; and the results page: the verdict in words, the tables against
the control and the holdout, the charts, and the results as CSV."""

from __future__ import annotations

import dataclasses
import datetime as dt
import shlex
from collections.abc import Mapping
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from flask import Response, abort, current_app, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user, login_required
from sqlalchemy import func, select

from app import clock
from app.api.experiments import PowerIn, read_audience, to_csv
from app.auth.web import role_required
from app.extensions import db
from app.web import bp, charts
from app.web.programme import EDITORS
from experiments import analysis, design, manage, power
from experiments.assignment import HOLDOUT
from experiments.design import CHANGEABLE_WHEN_RUNNING, DESIGN_DEFAULTS
from experiments.models import Assignment, Experiment, ExperimentStatus
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


def _can_edit() -> bool:
    return current_user.role in EDITORS


def _actor() -> str:
    return f"user:{current_user.email}"


def _experiment_or_404(key: str) -> Experiment:
    found = db.session.scalar(select(Experiment).where(Experiment.key == key))
    if found is None:
        abort(404)
    return found


# --------------------------------------------------------------------------- list


@bp.get("/experiments")
@login_required
def experiments():
    rows = db.session.scalars(select(Experiment).order_by(Experiment.id.desc())).all()
    assigned = dict(
        db.session.execute(
            select(Assignment.experiment_id, func.count()).group_by(Assignment.experiment_id)
        ).all()
    )
    return render_template(
        "experiments.html", experiments=rows, assigned=assigned, can_edit=_can_edit()
    )


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
            f"{name}={shlex.quote(_plain(benefit[name]))}"
            for name in SETTINGS
            if benefit.get(name) not in (None, "")
        ]
        lines.append(" ".join([benefit["benefit"], *settings]))
    return "\n".join(lines)


def _plain(value: Any) -> str:
    if isinstance(value, Decimal):
        return f"{value.normalize():f}"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _values_of(found: Mapping[str, Any]) -> dict[str, Any]:
    """A design (``manage.describe``'s shape) as the form's fields."""
    values: dict[str, Any] = {
        name: _plain(found[name]) if found.get(name) is not None else ""
        for name in ("key", "name", "hypothesis", "audience", "holdout")
    }
    values["primary_metric"] = found.get("primary_metric") or "retention_90d"
    values["guardrail_metrics"] = list(found.get("guardrail_metrics") or [])
    mde = found.get("minimum_detectable_effect")
    values["minimum_detectable_effect"] = _plain(mde) if mde is not None else ""
    settings = {**DESIGN_DEFAULTS, **(found.get("design") or {})}
    values.update({name: _plain(v) if v is not None else "" for name, v in settings.items()})
    for row, variant in enumerate(found.get("variants") or []):
        values[f"v{row}.key"] = variant["key"]
        values[f"v{row}.name"] = variant.get("name") or ""
        values[f"v{row}.weight"] = _plain(variant["weight"])
        values[f"v{row}.benefits"] = package_text(variant.get("benefits") or [])
        if variant.get("control"):
            values["control"] = str(row)
    return values


NEW = _values_of(
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
    calculator = _calculator(request.args, values)
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
            calc=calculator,
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
            experiment = manage.create(db.session, clean, actor=_actor(), now=clock.now())
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
    experiment = _experiment_or_404(key)
    stored = _values_of(manage.describe(experiment))
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
                manage.edit(db.session, experiment, changed, actor=_actor(), now=clock.now())
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


def _calculator(args: Mapping[str, str], values: Mapping[str, Any]) -> dict[str, Any]:
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


# --------------------------------------------------------------------------- the page


def _as_of(experiment: Experiment, text: str) -> tuple[dt.datetime, str | None]:
    """The end of the chosen day in the programme's time zone (now if today), or now
    and what is wrong with the date."""
    now = clock.now()
    if not text:
        return now, None
    zone = ZoneInfo(current_app.config["TENURE_SETTINGS"].timezone)
    try:
        day = dt.date.fromisoformat(text)
    except ValueError:
        return now, _("Give the date as YYYY-MM-DD.")
    if day > now.astimezone(zone).date():
        return now, _("%(d)s is in the future: results exist up to today.", d=day.isoformat())
    end = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), zone).astimezone(dt.UTC)
    if experiment.started_at is not None and end <= experiment.started_at:
        started = experiment.started_at.astimezone(zone).date().isoformat()
        return now, _(
            "%(d)s is before the experiment started (%(s)s): choose a later date.",
            d=day.isoformat(),
            s=started,
        )
    return min(end, now), None


@bp.get("/experiments/<key>")
@login_required
def experiment(key: str):
    experiment = _experiment_or_404(key)
    found = manage.describe(experiment)
    counts = manage.counts(db.session, experiment)
    condition = found["audience"]
    matching = audience.count(db.session, audience.read(condition) if condition else None)
    results, problem, as_of = None, None, None
    cuped = request.args.get("cuped", "1") != "0"
    if experiment.started_at is not None:
        as_of, problem = _as_of(experiment, request.args.get("as_of", "").strip())
        found_results = _compute(db.session, experiment, as_of=as_of, cuped=cuped)
        results = _view(found_results, experiment, as_of)
    values = _values_of(found)
    return (
        render_template(
            "experiment.html",
            experiment=experiment,
            design=found,
            counts=counts,
            total=sum(counts.values()),
            matching=matching,
            holdout_key=HOLDOUT,
            metrics=design.METRICS,
            modes=MODES,
            corrections=CORRECTIONS,
            describe=benefit_words,
            results=results,
            as_of=as_of,
            as_of_text=request.args.get("as_of", ""),
            problem=problem,
            cuped=cuped,
            can_edit=_can_edit(),
            calc=_calculator(request.args, values)
            if experiment.status == ExperimentStatus.DRAFT
            else None,
        ),
        400 if problem else 200,
    )


def _change(key: str, action, done: str):
    experiment = _experiment_or_404(key)
    try:
        action(db.session, experiment, actor=_actor(), now=clock.now())
        db.session.commit()
        flash(done, "success")
    except manage.Conflict as exc:
        db.session.rollback()
        flash(str(exc), "error")
    return redirect(url_for("web.experiment", key=key))


@bp.post("/experiments/<key>/start")
@role_required(*EDITORS)
def start_experiment(key: str):
    return _change(key, manage.start, _("Started: members are assigned from now on."))


@bp.post("/experiments/<key>/stop")
@role_required(*EDITORS)
def stop_experiment(key: str):
    return _change(
        key, manage.stop, _("Stopped: no one new is assigned; the results can still be read.")
    )


@bp.get("/experiments/<key>/results.csv")
@login_required
def experiment_results_csv(key: str):
    experiment = _experiment_or_404(key)
    if experiment.started_at is None:
        abort(400, _("%(k)s has not started: it has no results yet.", k=key))
    as_of, problem = _as_of(experiment, request.args.get("as_of", "").strip())
    if problem:
        abort(400, problem)
    found = _compute(
        db.session, experiment, as_of=as_of, cuped=request.args.get("cuped", "1") != "0"
    )
    return Response(
        to_csv(found),
        mimetype="text/csv",
        headers={"Content-Disposition": f'attachment; filename="{key}-results.csv"'},
    )


# --------------------------------------------------------------------------- results


LOWER_IS_BETTER = frozenset({"cost_per_member"})


def benefit_words(benefit: Mapping[str, Any]) -> str:
    """A benefit of a package as a marketer says it."""
    kind, days = benefit.get("benefit"), benefit.get("expires_days")
    if kind == "coupon":
        if benefit.get("threshold") not in (None, "0"):
            words = _(
                "a coupon: %(v)s yuan off orders of %(t)s yuan or more",
                v=_plain(benefit["value"]),
                t=_plain(benefit["threshold"]),
            )
        else:
            words = _("a %(v)s-yuan coupon", v=_plain(benefit["value"]))
    elif kind == "points":
        words = _("%(p)s points", p=benefit["points"])
    elif kind == "multiplier":
        words = _("%(m)s× points", m=_plain(benefit["multiplier"]))
    elif kind == "free_shipping":
        words = _("free shipping")
    else:
        words = _("a service: %(s)s", s=benefit.get("service"))
    if days:
        words += " " + _("for %(d)s days", d=days)
    if benefit.get("cost") not in (None, ""):
        words += " " + _("(costs the shop %(c)s yuan)", c=_plain(benefit["cost"]))
    return words


def _compute(session, experiment: Experiment, *, as_of: dt.datetime, cuped: bool):
    found = analysis.results(session, experiment, as_of=as_of, cuped=cuped)
    session.rollback()  # the temporary table is gone; nothing was written
    return found


def _tone(metric: str, cell: Mapping[str, Any] | None) -> str:
    if not cell or not cell.get("significant") or cell.get("abs_lift") is None:
        return "neutral"
    better = (cell["abs_lift"] < 0) == (metric in LOWER_IS_BETTER)
    return "good" if better else "bad"


def _row(label: str, metric: str, cell: Mapping[str, Any] | None, group: str) -> charts.Row:
    if not cell or cell.get("rel_lift") is None:
        why = ""
        if cell and cell.get("p_value") is not None:
            why = _("no relative lift: the control’s value is 0")
        return charts.Row(label, None, note=why, group=group)
    low, high = cell["rel_ci"] or (None, None)
    note = f"{cell['rel_lift']:+.1%}"
    if low is not None:
        note += f" ({low:+.1%} … {high:+.1%})"
    return charts.Row(label, cell["rel_lift"], low, high, _tone(metric, cell), note, group)


def _view(found: dict[str, Any], experiment: Experiment, as_of: dt.datetime) -> dict[str, Any]:
    """The results with what the page draws and flags beside them."""
    names = {key: variant["name"] for key, variant in found["variants"].items()}
    names[HOLDOUT] = _("Holdout")
    control = next(key for key, v in found["variants"].items() if v["control"])
    treated = [key for key in found["variants"] if key != control]
    primary, guardrails = found["primary_metric"], found["guardrail_metrics"]
    family = [primary, *(m for m in guardrails if m != primary)]
    rows = [
        _row(
            f"{names[key]} · {metric}",
            metric,
            found["variants"][key]["metrics"][metric],
            _("Against %(c)s", c=names[control]),
        )
        for metric in family
        for key in treated
    ]
    holdout = found["holdout"]
    if holdout:
        rows += [
            _row(
                f"{names[key]} · {primary}",
                primary,
                v["metrics"][primary],
                _("Against the holdout"),
            )
            for key, v in holdout["variants"].items()
        ]
    return {
        "found": found,
        "names": names,
        "control": control,
        "treated": treated,
        "family": family,
        "forest": charts.forest(
            rows,
            label=_("Relative lift with its 95%% confidence interval, per variant and metric"),
            axis=_("relative lift (0 = no difference)"),
            empty=_("not enough members yet"),
        ),
        "retention": _retention(found, names),
        "survival": _survival(found, names, experiment, as_of),
        "guardrails": [
            (key, metric, found["variants"][key]["metrics"][metric])
            for metric in guardrails
            for key in treated
        ],
        "precision": _precision(found, experiment, treated),
        "lower_is_better": LOWER_IS_BETTER,
        "srm_counts": ", ".join(f"{names[k]} {n:,}" for k, n in found["srm"]["counts"].items()),
        "srm_expected": ", ".join(
            f"{names[k]} {n:,.0f}" for k, n in found["srm"]["expected"].items()
        ),
    }


def _retention(found: dict[str, Any], names: Mapping[str, str]):
    horizons = design.RETENTION_HORIZONS
    series = [
        charts.Series(
            names[key],
            [(h, v["metrics"][f"retention_{h}d"]["value"]) for h in horizons],
            colour=index,
        )
        for index, (key, v) in enumerate(found["variants"].items())
    ]
    if found["holdout"]:
        any_variant = next(iter(found["holdout"]["variants"].values()))
        series.append(
            charts.Series(
                names[HOLDOUT],
                [(h, any_variant["metrics"][f"retention_{h}d"]["control"]) for h in horizons],
                dashed=True,
                colour=len(charts.PALETTE) - 1,
            )
        )
    if all(y is None for one in series for _x, y in one.points):
        return None
    return charts.lines(
        series,
        label=_("Share of members with an order within 7, 30, 60 and 90 days, per arm"),
        x_label=_("days after assignment"),
        y_label=_("members with an order"),
        x_marks=horizons,
    )


def _survival(found, names, experiment: Experiment, as_of: dt.datetime):
    curves = found["survival"]["curves"]
    if not curves:
        return None
    followed = (as_of - experiment.started_at).days + 1 if experiment.started_at else 90
    arms = [*found["variants"], HOLDOUT]  # the retention chart's order and colours
    series = [
        charts.Series(
            names.get(key, key),
            [(0, 1.0), *zip(curves[key]["days"], curves[key]["survival"], strict=True)],
            dashed=key == HOLDOUT,
            colour=len(charts.PALETTE) - 1 if key == HOLDOUT else index,
        )
        for index, key in enumerate(arms)
        if key in curves
    ]
    return charts.steps(
        series,
        label=_("Kaplan–Meier: share of members without a next order, by day, per arm"),
        x_label=_("days after assignment"),
        y_label=_("without a next order"),
        x_end=max(1, min(90, followed)),
    )


def _precision(found, experiment: Experiment, treated: list[str]) -> list[dict[str, Any]]:
    """Per variant, the primary metric's relative interval's half-width against the
    pre-registered MDE, and the smallest lift detectable with the members so far."""
    primary, settings = found["primary_metric"], experiment.design or {}
    out = []
    for key in treated:
        cell = found["variants"][key]["metrics"][primary]
        low, high = cell.get("rel_ci") or (None, None)
        detectable = None
        mode = settings.get("mode", "fixed")
        if primary in design.RATES and cell["control"] and 0 < cell["control"] < 1:
            try:
                detectable = power.mde(
                    cell["control"],
                    cell["n"],
                    cell["n_control"],
                    alpha=float(settings.get("alpha", 0.05)),
                    power=float(settings.get("power", 0.8)),
                    mode="fixed" if mode == "always_valid" else mode,
                    looks=int(settings.get("looks", 5)) if mode == "group_sequential" else None,
                )
            except ValueError:
                detectable = None
        out.append(
            {
                "key": key,
                "half_width": None if low is None else (high - low) / 2,
                "detectable": detectable,
            }
        )
    return out
