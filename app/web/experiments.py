"""Experiments as marketers run them: listed; started and stopped; and the results
page: the verdict in words, the tables against the control and the holdout, the
charts, the calculator for drafts, and the results as CSV. The design form is in
:mod:`app.web.experiment_design`."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any
from zoneinfo import ZoneInfo

from flask import Response, abort, current_app, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_login import login_required
from sqlalchemy import func, select

from app import clock
from app.api.experiments import to_csv
from app.auth.web import role_required
from app.extensions import db
from app.web import bp, charts
from app.web.experiment_design import (
    CORRECTIONS,
    MODES,
    actor,
    calculator,
    can_edit,
    experiment_or_404,
    plain,
    values_of,
)
from app.web.programme import EDITORS
from experiments import analysis, design, manage, power
from experiments.assignment import HOLDOUT
from experiments.models import Assignment, Experiment, ExperimentStatus
from journeys import audience

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
        "experiments.html", experiments=rows, assigned=assigned, can_edit=can_edit()
    )


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
    experiment = experiment_or_404(key)
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
    values = values_of(found)
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
            can_edit=can_edit(),
            calc=calculator(request.args, values)
            if experiment.status == ExperimentStatus.DRAFT
            else None,
        ),
        400 if problem else 200,
    )


def _change(key: str, action, done: str):
    experiment = experiment_or_404(key)
    try:
        action(db.session, experiment, actor=actor(), now=clock.now())
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
    experiment = experiment_or_404(key)
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
                v=plain(benefit["value"]),
                t=plain(benefit["threshold"]),
            )
        else:
            words = _("a %(v)s-yuan coupon", v=plain(benefit["value"]))
    elif kind == "points":
        words = _("%(p)s points", p=benefit["points"])
    elif kind == "multiplier":
        words = _("%(m)s× points", m=plain(benefit["multiplier"]))
    elif kind == "free_shipping":
        words = _("free shipping")
    else:
        words = _("a service: %(s)s", s=benefit.get("service"))
    if days:
        words += " " + _("for %(d)s days", d=days)
    if benefit.get("cost") not in (None, ""):
        words += " " + _("(costs the shop %(c)s yuan)", c=plain(benefit["cost"]))
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
