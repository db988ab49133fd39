"""The journey builder, the marketer's main page: journeys listed, created blank or from
a ready-made campaign, and built in forms (trigger, entry rules, goal, steps) that save
into the draft and explain each field; validation before publishing with the
audience's size today; a diagram with live counts; a dry run for one member; versions,
approval, pause, resume, archive and the move of waiting members to a new version."""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Mapping
from typing import Any

from flask import abort, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_login import current_user, login_required
from sqlalchemy import func, select

from app import clock
from app.auth.models import Role
from app.auth.web import role_required
from app.extensions import db
from app.web import bp
from app.web.programme import EDITORS
from experiments import benefits
from experiments.models import Experiment
from journeys import (
    audience,
    control,
    definition,
    diagram,
    dry_run,
    graph,
    ready_made,
    report,
    stats,
    versions,
)
from journeys.models import Enrollment, Journey, JourneyCount, JourneyStatus, MessageTemplate
from members.errors import InvalidFields, NotFound
from members.member import Member

TRIGGERS = {
    "stage_entered": "A member enters a lifecycle stage",
    "tier_changed": "A member's tier changes",
    "event": "An event arrives (an order, a login, a referral...)",
    "schedule": "On a schedule (cron, or daily at a time in each member's time zone)",
    "date": "A date of the member's (birthday, joining anniversary, points expiring)",
    "api": "The shop's system enrolls the member through the API",
}
STEP_TYPES = {
    "send": "Send a message",
    "wait": "Wait a while",
    "wait_until": "Wait until a time of day or a date",
    "wait_for_event": "Wait for an event (with a time-out)",
    "branch": "Branch on a condition",
    "split": "Random split",
    "experiment_split": "Experiment split",
    "grant": "Grant a benefit",
    "update_attribute": "Update an attribute",
    "webhook": "Call a webhook",
    "handoff": "Hand off to another journey",
    "exit": "Exit",
}
REASONS = {
    "audience": "not in the audience",
    "reentry": "re-entry not allowed yet",
    "already_in": "already in the journey",
    "duplicate_entry_key": "same entry key as before",
    "global_control": "in the global control group",
    "daily_cap": "over the daily cap",
    "erased": "erased member",
    "unknown_member": "unknown member",
    "paused": "journey paused",
}
MAX_SPLIT = 4


def _can_edit() -> bool:
    return current_user.role in EDITORS


def _actor() -> str:
    return f"user:{current_user.email}"


def _journey_or_404(key: str) -> Journey:
    try:
        return versions.get(db.session, key)
    except NotFound:
        abort(404)


# --------------------------------------------------------------------------- list, new


@bp.get("/journeys")
@login_required
def journeys():
    rows = db.session.scalars(select(Journey).order_by(Journey.status, Journey.name)).all()
    inside = dict(
        db.session.execute(
            select(Enrollment.journey_id, func.count())
            .where(Enrollment.state.in_(stats.INSIDE))
            .group_by(Enrollment.journey_id)
        ).all()
    )
    entered = dict(
        db.session.execute(
            select(Enrollment.journey_id, func.count()).group_by(Enrollment.journey_id)
        ).all()
    )
    group, _version = control.SETTING.load(db.session)
    return render_template(
        "journeys.html",
        journeys=rows,
        inside=inside,
        entered=entered,
        triggers=TRIGGERS,
        can_edit=_can_edit(),
        group=group,
        in_group=db.session.scalar(select(func.count()).select_from(control.GlobalControl)),
        is_admin=current_user.role == Role.ADMIN,
    )


@bp.route("/journeys/new", methods=["GET", "POST"])
@role_required(*EDITORS)
def new_journey():
    errors: dict[str, str] = {}
    values = {"start_from": request.args.get("from", "")}
    if request.method == "POST":
        values = request.form.to_dict()
        key, name = values.get("key", "").strip(), values.get("name", "").strip()
        source = values.get("start_from", "")
        try:
            if source in ready_made.BY_KEY:
                journey = ready_made.create_from(
                    db.session,
                    ready_made.BY_KEY[source],
                    key=key,
                    name=name,
                    actor=_actor(),
                    now=clock.now(),
                )
            else:
                journey = versions.create(
                    db.session,
                    key=key,
                    name=name,
                    definition_data=BLANK,
                    actor=_actor(),
                    now=clock.now(),
                    needs_approval=bool(values.get("needs_approval")),
                )
            db.session.commit()
            flash(_("Journey created as a draft. Build it below, then publish."), "success")
            return redirect(url_for("web.journey", key=journey.key))
        except InvalidFields as exc:
            db.session.rollback()
            errors = exc.errors
    return (
        render_template("journey_new.html", ready=ready_made.ALL, values=values, errors=errors),
        400 if errors else 200,
    )


BLANK: dict[str, Any] = {
    "trigger": {"type": "api"},
    "entry": {"reentry": "never"},
    "goal": None,
    "start": "done",
    "steps": {"done": {"type": "exit"}},
}


# --------------------------------------------------------------------------- the builder


@bp.get("/journeys/<key>")
@login_required
def journey(key: str):
    return _builder(_journey_or_404(key))


def _builder(
    journey: Journey,
    *,
    status: int = 200,
    errors: Mapping[str, str] | None = None,
    form: str | None = None,
    values: Mapping[str, Any] | None = None,
    trial: dry_run.DryRun | None = None,
    trial_member: str = "",
):
    latest = versions.latest(journey)
    live = versions.live(journey)
    defn = latest.definition
    counts = stats.step_counts(db.session, journey.id)
    problems = versions.publish_errors(db.session, journey, latest)
    text = defn.get("entry", {}).get("audience")
    estimate = audience.count(db.session, audience.read(text) if text else None)
    skipped = db.session.execute(
        select(JourneyCount.reason, func.sum(JourneyCount.count))
        .where(JourneyCount.journey_id == journey.id)
        .group_by(JourneyCount.reason)
    ).all()
    shown = live.definition if live is not None and latest.status != "draft" else defn
    return (
        render_template(
            "journey.html",
            journey=journey,
            latest=latest,
            live=live,
            defn=defn,
            layout=diagram.layout(shown),
            diagram_version=(live or latest).version if shown is not defn else latest.version,
            counts=counts,
            totals=stats.totals(db.session, journey.id),
            problems=problems,
            estimate=estimate,
            skipped=skipped,
            reasons=REASONS,
            errors=errors or {},
            form=form,
            values=values or {},
            triggers=TRIGGERS,
            step_types=STEP_TYPES,
            stages=audience.STAGES,
            tiers=versions.known(db.session).tiers,
            can_edit=_can_edit() and journey.status != JourneyStatus.ARCHIVED,
            is_admin=current_user.role == Role.ADMIN,
            trial=trial,
            trial_member=trial_member,
            fields=sorted(audience.FIELDS.fixed),
            dimensions=diagram,
        ),
        status,
    )


def _save(journey: Journey, change: Callable[[dict[str, Any]], None], form: str, values):
    """Apply ``change`` to a copy of the latest definition and save it as the draft;
    on refusal, show the builder with the messages beside the form's fields."""
    data = copy.deepcopy(versions.latest(journey).definition)
    change(data)
    try:
        versions.save_draft(db.session, journey, data, actor=_actor(), now=clock.now())
        db.session.commit()
    except InvalidFields as exc:
        db.session.rollback()
        return _builder(journey, status=400, errors=exc.errors, form=form, values=values)
    except versions.Conflict as exc:
        db.session.rollback()
        flash(str(exc), "error")
        return redirect(url_for("web.journey", key=journey.key))
    flash(_("Saved to the draft (version %(v)d).", v=versions.latest(journey).version), "success")
    return redirect(url_for("web.journey", key=journey.key, _anchor=form))


def _blank_to_none(values: Mapping[str, str], *names: str) -> dict[str, Any]:
    return {name: (values.get(name) or "").strip() or None for name in names}


@bp.post("/journeys/<key>/trigger")
@role_required(*EDITORS)
def save_trigger(key: str):
    journey = _journey_or_404(key)
    form = request.form
    kind = form.get("type", "")
    trigger: dict[str, Any] = {"type": kind}
    if kind == "stage_entered":
        trigger["stages"] = form.getlist("stages")
    elif kind == "tier_changed":
        trigger.update(to=form.get("to") or None, direction=form.get("direction") or "any")
    elif kind == "event":
        trigger.update(_blank_to_none(form, "event", "filter", "entry_key"))
    elif kind == "schedule":
        if form.get("schedule") == "cron":
            trigger["cron"] = (form.get("cron") or "").strip()
        else:
            trigger["daily_at"] = (form.get("daily_at") or "").strip()
    elif kind == "date":
        trigger.update(
            field=form.get("field"), days_before=form.get("days_before") or 0, at=form.get("at")
        )

    def change(data: dict[str, Any]) -> None:
        data["trigger"] = trigger

    return _save(journey, change, "trigger", form.to_dict(flat=False))


@bp.post("/journeys/<key>/entry")
@role_required(*EDITORS)
def save_entry(key: str):
    journey = _journey_or_404(key)
    form = request.form
    entry = {
        **_blank_to_none(form, "audience", "reentry_days", "daily_cap"),
        "reentry": form.get("reentry") or "never",
        "holdout_percent": (form.get("holdout_percent") or "0").strip(),
        "marketing": form.get("marketing") == "on",
        "exit": form.get("exit") or "never",
    }

    def change(data: dict[str, Any]) -> None:
        data["entry"] = entry

    return _save(journey, change, "entry", form.to_dict())


@bp.post("/journeys/<key>/goal")
@role_required(*EDITORS)
def save_goal(key: str):
    journey = _journey_or_404(key)
    form = request.form
    goal = None
    if form.get("has_goal") == "on":
        goal = {**_blank_to_none(form, "event", "filter"), "within_days": form.get("within_days")}

    def change(data: dict[str, Any]) -> None:
        data["goal"] = goal

    return _save(journey, change, "goal", form.to_dict())


# --------------------------------------------------------------------------- steps


def _exits_of(step: Mapping[str, Any]) -> list[str]:
    return [name for name, _ in graph.exits(step)]


def _step_from_form(kind: str, form: Mapping[str, str], old: Mapping[str, Any]) -> dict:
    """A step of ``kind`` from the step form's fields."""
    value = lambda name: (form.get(name) or "").strip() or None  # noqa: E731
    step: dict[str, Any] = {"type": kind}
    if value("name"):
        step["name"] = value("name")
    names = {
        "send": ("channel", "template", "next"),
        "wait": ("days", "hours", "minutes", "next"),
        "wait_until": ("time", "field", "days_before", "next"),
        "wait_for_event": (
            "event",
            "filter",
            "within_days",
            "within_hours",
            "matched",
            "timeout",
        ),
        "branch": ("condition", "yes", "no"),
        "grant": (
            "benefit",
            "value",
            "threshold",
            "expires_days",
            "points",
            "multiplier",
            "service",
            "next",
        ),
        "update_attribute": ("attribute", "value", "next"),
        "webhook": ("url", "next"),
        "handoff": ("journey",),
        "experiment_split": ("experiment",),
    }.get(kind, ())
    for name in names:
        if value(name) is not None:
            step[name] = value(name)
    if kind == "branch" and value("window_event"):
        step["window"] = {"event": value("window_event"), "days": value("window_days") or 7}
    if kind == "split":
        step["branches"] = [
            {"percent": value(f"percent_{i}"), "next": value(f"next_{i}")}
            for i in range(1, MAX_SPLIT + 1)
            if value(f"percent_{i}") or value(f"next_{i}")
        ]
    if kind == "experiment_split":
        step["variants"] = {
            name.removeprefix("variant."): target
            for name, target in form.items()
            if name.startswith("variant.") and target
        }
    if kind == "update_attribute" and step.get("value") is None:
        step["value"] = None
    return step


def _field_errors(errors: Mapping[str, str], step_id: str) -> dict[str, str]:
    """The check's errors for one step, keyed by the step form's field names."""
    prefix = f"definition.steps.{step_id}"
    found: dict[str, str] = {}
    for where, message in errors.items():
        if where == prefix:
            found["_step"] = message
        elif where.startswith(prefix + "."):
            name = where[len(prefix) + 1 :]
            match = re.fullmatch(r"branches\.(\d+)\.(percent|next)", name)
            if match:
                name = f"{match.group(2)}_{int(match.group(1)) + 1}"
            name = name.replace("window.", "window_").replace("variants.", "variant.")
            found[name] = message
        elif not where.startswith("definition.steps."):
            found.setdefault("_other", f"{where}: {message}")
    return found


@bp.route("/journeys/<key>/steps/new", methods=["GET", "POST"])
@role_required(*EDITORS)
def new_step(key: str):
    journey = _journey_or_404(key)
    defn = versions.latest(journey).definition
    after = request.values.get("after") or ""
    kind = request.values.get("type") or "send"
    if kind not in STEP_TYPES or (after and after not in defn["steps"]):
        abort(400)
    if request.method == "GET":
        # A new step continues where the step it follows went.
        follows = defn["steps"].get(after, {})
        target = follows.get("next") or next(
            (t for _, t in graph.exits(follows) if isinstance(t, str)), defn["start"]
        )
        values = {name: target for name in graph.EXITS[kind]}
        values.update({f"next_{i}": target for i in (1, 2)}, percent_1="50", percent_2="50")
        return _step_page(journey, None, kind, values, {}, after=after)
    return _store_step(journey, None, kind, after)


@bp.route("/journeys/<key>/steps/<step_id>", methods=["GET", "POST"])
@role_required(*EDITORS)
def edit_step(key: str, step_id: str):
    journey = _journey_or_404(key)
    step = versions.latest(journey).definition["steps"].get(step_id)
    if step is None:
        abort(404)
    kind = request.values.get("type") or step["type"]
    if kind not in STEP_TYPES:
        abort(400)
    if request.method == "GET":
        return _step_page(journey, step_id, kind, _values_of(step), {})
    return _store_step(journey, step_id, kind, None)


def _values_of(step: Mapping[str, Any]) -> dict[str, Any]:
    values = {k: v for k, v in step.items() if not isinstance(v, dict | list)}
    for index, branch in enumerate(step.get("branches") or [], start=1):
        values[f"percent_{index}"], values[f"next_{index}"] = branch["percent"], branch["next"]
    for variant, target in (step.get("variants") or {}).items():
        values[f"variant.{variant}"] = target
    if step.get("window"):
        values["window_event"] = step["window"]["event"]
        values["window_days"] = step["window"]["days"]
    return values


def _store_step(journey: Journey, step_id: str | None, kind: str, after: str | None):
    form = request.form
    new_id = (form.get("step_id") or "").strip() if step_id is None else step_id
    data = copy.deepcopy(versions.latest(journey).definition)
    if step_id is None:
        if not graph.STEP_ID.fullmatch(new_id or ""):
            return _step_page(
                journey,
                None,
                kind,
                form.to_dict(),
                {"step_id": _("lower-case letters, digits and _, e.g. send_coupon")},
                after=after,
                status=400,
            )
        if new_id in data["steps"]:
            return _step_page(
                journey,
                None,
                kind,
                form.to_dict(),
                {"step_id": _("a step %(id)s exists already", id=new_id)},
                after=after,
                status=400,
            )
    old = data["steps"].get(new_id, {})
    data["steps"][new_id] = _step_from_form(kind, form, old)
    if step_id is None and after:
        before = data["steps"][after]
        # The step it follows now leads to it (the first exit that went on).
        for name in _exits_of(before):
            if "." not in name and before.get(name) in (
                data["steps"][new_id].get("next"),
                *[t for _, t in graph.exits(data["steps"][new_id])],
            ):
                before[name] = new_id
                break
    elif step_id is None:
        data["start"] = new_id if not after else data["start"]
    try:
        versions.save_draft(db.session, journey, data, actor=_actor(), now=clock.now())
        db.session.commit()
    except InvalidFields as exc:
        db.session.rollback()
        return _step_page(
            journey,
            step_id,
            kind,
            form.to_dict(),
            _field_errors(exc.errors, new_id),
            after=after,
            status=400,
        )
    except versions.Conflict as exc:
        db.session.rollback()
        flash(str(exc), "error")
        return redirect(url_for("web.journey", key=journey.key))
    flash(_("Step %(id)s saved to the draft.", id=new_id), "success")
    return redirect(url_for("web.journey", key=journey.key, _anchor="steps"))


def _step_page(journey, step_id, kind, values, errors, *, after=None, status=200):
    defn = versions.latest(journey).definition
    templates = db.session.execute(
        select(MessageTemplate.key, MessageTemplate.name, MessageTemplate.channel).order_by(
            MessageTemplate.key
        )
    ).all()
    experiments = db.session.scalars(select(Experiment).order_by(Experiment.key)).all()
    chosen = next((e for e in experiments if e.key == values.get("experiment")), None)
    variants = []
    if chosen is not None:
        variants = [v.key for v in chosen.variants]
        if chosen.holdout_percent:
            variants.insert(0, "holdout")
    others = db.session.scalars(
        select(Journey.key).where(Journey.id != journey.id, Journey.status != "archived")
    ).all()
    return (
        render_template(
            "journey_step.html",
            journey=journey,
            step_id=step_id,
            kind=kind,
            values=values,
            errors=errors,
            after=after,
            step_options=[(s, s) for s in defn["steps"] if s != step_id],
            template_options=[(k, f"{k} ({channel}): {name}") for k, name, channel in templates],
            experiment_options=[(e.key, f"{e.key} ({e.status.value})") for e in experiments],
            variants=variants,
            journey_options=[(k, k) for k in others],
            step_types=STEP_TYPES,
            channels=definition.CHANNELS,
            benefits=benefits.BENEFITS,
            max_split=MAX_SPLIT,
            fields=sorted(audience.FIELDS.fixed),
        ),
        status,
    )


@bp.post("/journeys/<key>/steps/<step_id>/delete")
@role_required(*EDITORS)
def delete_step(key: str, step_id: str):
    journey = _journey_or_404(key)
    defn = versions.latest(journey).definition
    step = defn["steps"].get(step_id)
    if step is None:
        abort(404)
    onward = [t for _, t in graph.exits(step) if isinstance(t, str)]

    def change(data: dict[str, Any]) -> None:
        # Who led to the deleted step now leads where it went (when it had one way on).
        replacement = onward[0] if len(set(onward)) == 1 else None
        del data["steps"][step_id]
        if data["start"] == step_id and replacement:
            data["start"] = replacement
        for other in data["steps"].values():
            for name in ("next", "yes", "no", "matched", "timeout"):
                if other.get(name) == step_id:
                    other[name] = replacement
            for branch in other.get("branches") or []:
                if branch.get("next") == step_id:
                    branch["next"] = replacement
            for variant, target in list((other.get("variants") or {}).items()):
                if target == step_id:
                    other["variants"][variant] = replacement

    return _save(journey, change, "steps", {})


@bp.post("/journeys/<key>/steps/<step_id>/move")
@role_required(*EDITORS)
def move_step(key: str, step_id: str):
    """Reorder the list of steps (the graph's arrows stay as they are)."""
    journey = _journey_or_404(key)
    direction = -1 if request.form.get("direction") == "up" else 1

    def change(data: dict[str, Any]) -> None:
        order = list(data["steps"])
        if step_id not in order:
            return
        index = order.index(step_id)
        other = index + direction
        if 0 <= other < len(order):
            order[index], order[other] = order[other], order[index]
        data["steps"] = {name: data["steps"][name] for name in order}

    return _save(journey, change, "steps", {})


# --------------------------------------------------------------------------- life cycle


def _change(key: str, action: Callable[[Journey], Any], done: str):
    journey = _journey_or_404(key)
    try:
        action(journey)
        db.session.commit()
        flash(done, "success")
    except InvalidFields as exc:
        db.session.rollback()
        return _builder(journey, status=400, errors=exc.errors, form="publish")
    except versions.Conflict as exc:
        db.session.rollback()
        flash(str(exc), "error")
    return redirect(url_for("web.journey", key=key))


@bp.post("/journeys/<key>/publish")
@role_required(*EDITORS)
def publish_journey(key: str):
    def publish(journey: Journey) -> None:
        versions.publish(
            db.session,
            journey,
            actor=_actor(),
            now=clock.now(),
            approver=current_user.role == Role.ADMIN,
        )

    return _change(key, publish, _("Published: new members enter this version."))


@bp.post("/journeys/<key>/submit")
@role_required(*EDITORS)
def submit_journey(key: str):
    return _change(
        key,
        lambda j: versions.submit(db.session, j, actor=_actor(), now=clock.now()),
        _("Submitted: an admin will review and approve it."),
    )


@bp.post("/journeys/<key>/reject")
@role_required(Role.ADMIN)
def reject_journey(key: str):
    reason = (request.form.get("reason") or "").strip() or _("no reason given")
    return _change(
        key,
        lambda j: versions.reject(db.session, j, actor=_actor(), now=clock.now(), reason=reason),
        _("Sent back to draft."),
    )


@bp.post("/journeys/<key>/status")
@role_required(*EDITORS)
def journey_status(key: str):
    try:
        status = JourneyStatus(request.form.get("status", ""))
    except ValueError:
        abort(400)
    return _change(
        key,
        lambda j: versions.set_status(db.session, j, status, actor=_actor(), now=clock.now()),
        _("The journey is now %(s)s.", s=status.value),
    )


@bp.post("/journeys/<key>/dry-run")
@login_required
def journey_dry_run(key: str):
    journey = _journey_or_404(key)
    external_id = (request.form.get("member") or "").strip()
    member = db.session.scalar(select(Member).where(Member.external_id == external_id))
    if member is None:
        return _builder(
            journey,
            status=400,
            errors={"member": _("no member with external id %(id)s", id=external_id or "''")},
            form="dry-run",
            trial_member=external_id,
        )
    latest = versions.latest(journey)
    trial = dry_run.run(
        db.session,
        journey_id=journey.id,
        journey_key=journey.key,
        defn=latest.definition,
        member=member,
        now=clock.now(),
    )
    return _builder(journey, trial=trial, trial_member=external_id, form="dry-run")


@bp.route("/journeys/<key>/migrate", methods=["GET", "POST"])
@role_required(*EDITORS)
def migrate_journey(key: str):
    journey = _journey_or_404(key)
    live = versions.live(journey)
    older = [v for v in journey.versions if live is not None and v.id != live.id and v.published_at]
    number = request.values.get("from_version", type=int) or (older[-1].version if older else None)
    source = next((v for v in older if v.version == number), None)
    mapping = {
        name.removeprefix("map."): target
        for name, target in request.form.items()
        if name.startswith("map.") and target
    }
    moves, errors = None, {}
    if request.method == "POST" and source is not None:
        try:
            if request.form.get("action") == "move":
                moves = versions.migrate(
                    db.session, journey, source.version, mapping, actor=_actor(), now=clock.now()
                )
                db.session.commit()
                moved = sum(move.members for move in moves)
                flash(
                    _("%(n)d members moved to version %(v)d.", n=moved, v=live.version), "success"
                )
                return redirect(url_for("web.journey", key=key))
            moves = versions.migration_preview(db.session, journey, source.version, mapping)
        except InvalidFields as exc:
            errors = exc.errors
        except versions.Conflict as exc:
            errors = {"mapping": str(exc)}
    waiting = {}
    if source is not None:
        waiting = dict(
            db.session.execute(
                select(Enrollment.current_step, func.count())
                .where(
                    Enrollment.journey_version_id == source.id,
                    Enrollment.state.in_(stats.INSIDE),
                )
                .group_by(Enrollment.current_step)
            ).all()
        )
    return (
        render_template(
            "journey_migrate.html",
            journey=journey,
            live=live,
            older=older,
            source=source,
            waiting=waiting,
            mapping=mapping,
            moves=moves,
            errors=errors,
        ),
        400 if errors else 200,
    )


@bp.get("/journeys/<key>/report")
@login_required
def journey_report(key: str):
    journey = _journey_or_404(key)
    shown = versions.live(journey) or versions.latest(journey)
    return render_template(
        "journey_report.html",
        journey=journey,
        version=shown,
        report=report.build(db.session, journey, shown.definition),
        step_types=STEP_TYPES,
    )


@bp.post("/journeys/control-group")
@role_required(Role.ADMIN)
def save_control_group():
    group, _version = control.SETTING.load(db.session)
    try:
        changed = control.parse({"percent": request.form.get("percent", ""), "salt": group.salt})
    except InvalidFields as exc:
        flash(_("Global control group: %(m)s", m=exc.errors["percent"]), "error")
        return redirect(url_for("web.journeys"))
    saved = control.SETTING.save(db.session, changed, actor=_actor(), now=clock.now())
    db.session.commit()
    if saved is not None:
        flash(
            _(
                "The global control group is now %(p)s%% of members.",
                p=changed.as_dict()["percent"],
            ),
            "success",
        )
    return redirect(url_for("web.journeys"))
