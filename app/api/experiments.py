"""Experiments through the API: design, start, stop; assign a member (and grant the
variant's benefit package); import the assignments of an experiment run by hand (JSON
or CSV); report exposures; read results as JSON or CSV; and the power calculator."""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import io
from typing import Any

from flask import Response, request
from flask.views import MethodView
from flask_smorest import abort
from marshmallow import RAISE, Schema, fields, validate
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from app import clock
from app.api.auth import BEARER_DOC, api_actor, require_scope
from app.api.blueprint import Blueprint, page_of, refuse
from app.api.members import member_or_404
from app.auth.models import Scope
from app.extensions import db
from experiments import analysis, design, manage, power
from experiments.models import Experiment
from journeys import audience, conditions
from members.errors import InvalidFields
from members.lifecycle import MemberFeatures

blp = Blueprint(
    "experiments",
    __name__,
    url_prefix="/api/v1/experiments",
    description="Experiments: benefit variants with a holdout, assignment, and results",
)

EXAMPLE: dict[str, Any] = {
    "key": "service_vs_discount",
    "name": "Service package vs discount package",
    "hypothesis": "A service package keeps more at-risk members than a discount",
    "audience": "stage = 'at_risk'",
    "variants": [
        {
            "key": "discount",
            "name": "Discount package",
            "weight": 50,
            "control": True,
            "benefits": [{"benefit": "coupon", "value": 30, "threshold": 199, "expires_days": 14}],
        },
        {
            "key": "service",
            "name": "Service package",
            "weight": 50,
            "benefits": [{"benefit": "service", "service": "advisor_callback", "cost": 15}],
        },
    ],
    "holdout": 10,
    "primary_metric": "retention_90d",
    "guardrail_metrics": ["revenue_per_member", "cost_per_member"],
    "minimum_detectable_effect": 10,
    "design": {"mode": "group_sequential", "looks": 5, "planned_members": 20000},
}
METRIC_HELP = "; ".join(f"`{name}`: {text}" for name, text in design.METRICS.items())


class BenefitIn(fields.Dict):
    """One benefit of a package: `benefit` (coupon, points, multiplier, free_shipping,
    service) and its fields (value, threshold, expires_days, points, multiplier,
    service, cost)."""


class VariantIn(Schema):
    class Meta:
        unknown = RAISE

    key = fields.Str(required=True, metadata={"example": "service"})
    name = fields.Str(metadata={"description": "What the marketer calls it"})
    weight = fields.Int(required=True, metadata={"description": "Share of the split, 1-100"})
    control = fields.Bool(load_default=False)
    benefits = fields.List(
        fields.Dict(),
        load_default=list,
        metadata={"description": "The benefit package: e.g. {benefit: coupon, value: 30}"},
    )


class DesignIn(Schema):
    class Meta:
        unknown = RAISE

    mode = fields.Str(
        metadata={
            "description": "fixed (one look at the end), group_sequential (planned looks, "
            "O'Brien-Fleming) or always_valid (look any day, mSPRT)"
        }
    )
    looks = fields.Int(metadata={"description": "Planned looks (group_sequential), 2-20"})
    planned_members = fields.Int(
        allow_none=True,
        metadata={
            "description": "Members of every arm (the holdout's too) that the primary "
            "metric counts at the last planned look"
        },
    )
    alpha = fields.Float()
    power = fields.Float()
    winsor_percentile = fields.Float(metadata={"description": "Revenue cut at this percentile"})
    correction = fields.Str(metadata={"description": "holm or fdr_bh"})


class ExperimentIn(Schema):
    class Meta:
        unknown = RAISE

    key = fields.Str(required=True)
    name = fields.Str(required=True)
    hypothesis = fields.Str(allow_none=True)
    audience = fields.Str(
        allow_none=True, metadata={"description": "A journey audience condition; empty: all"}
    )
    variants = fields.List(fields.Nested(VariantIn), required=True)
    holdout = fields.Decimal(
        load_default=0, metadata={"description": "Percent of members who get nothing, 0-50"}
    )
    primary_metric = fields.Str(metadata={"description": METRIC_HELP})
    guardrail_metrics = fields.List(fields.Str())
    minimum_detectable_effect = fields.Decimal(
        allow_none=True, metadata={"description": "Pre-registered relative lift, percent"}
    )
    design = fields.Nested(DesignIn)


class ExperimentPatch(ExperimentIn):
    class Meta:
        unknown = RAISE

    key = fields.Str()
    name = fields.Str()
    variants = fields.List(fields.Nested(VariantIn))
    holdout = fields.Decimal()


class ExperimentOut(Schema):
    key = fields.Str()
    name = fields.Str()
    hypothesis = fields.Str(allow_none=True)
    audience = fields.Str(allow_none=True)
    status = fields.Str()
    holdout = fields.Float(metadata={"description": "Percent of members who get nothing"})
    variants = fields.List(fields.Dict())
    primary_metric = fields.Str()
    guardrail_metrics = fields.List(fields.Str())
    minimum_detectable_effect = fields.Float(allow_none=True)
    design = fields.Dict()
    assigned = fields.Dict(metadata={"description": "Members per variant and holdout"})
    created_at = fields.DateTime()
    started_at = fields.DateTime(allow_none=True)
    stopped_at = fields.DateTime(allow_none=True)


class AssignIn(Schema):
    class Meta:
        unknown = RAISE

    member = fields.Str(required=True, metadata={"description": "The member's external id"})
    grant = fields.Bool(
        load_default=True,
        metadata={"description": "Grant the variant's benefit package (once) and record it"},
    )


class AssignOut(Schema):
    variant = fields.Str(allow_none=True, metadata={"description": "A variant key or holdout"})
    in_audience = fields.Bool()
    new = fields.Bool(metadata={"description": "Assigned by this call"})
    assigned_at = fields.DateTime(allow_none=True)
    benefits = fields.List(fields.Dict())
    granted = fields.Int()


class ImportedAssignment(Schema):
    class Meta:
        unknown = RAISE

    member = fields.Raw(required=True, metadata={"type": "string"})
    variant = fields.Raw(required=True, metadata={"type": "string"})
    assigned_at = fields.Raw(
        required=True, metadata={"type": "string", "example": "2026-03-01T10:00:00+08:00"}
    )


class ImportIn(Schema):
    class Meta:
        unknown = RAISE

    assignments = fields.List(fields.Nested(ImportedAssignment), required=True)


class ExposureIn(Schema):
    class Meta:
        unknown = RAISE

    member = fields.Str(required=True)
    kind = fields.Str(required=True, validate=validate.OneOf(manage.EXPOSURE_KINDS))
    ref = fields.Str(load_default="", validate=validate.Length(max=128))
    at = fields.AwareDateTime(load_default=None, allow_none=True)


class ResultsArgs(Schema):
    class Meta:
        unknown = RAISE

    as_of = fields.AwareDateTime(
        metadata={"description": "Read the results as they stood then (default: now)"}
    )
    cuped = fields.Bool(load_default=True, metadata={"description": "Add CUPED figures"})
    metrics = fields.Str(metadata={"description": "Comma-separated metrics (default: all)"})
    format = fields.Str(load_default="json", validate=validate.OneOf(("json", "csv")))


class PowerIn(Schema):
    class Meta:
        unknown = RAISE

    baseline = fields.Float(
        required=True,
        validate=validate.Range(min=0.001, max=0.999),
        metadata={"description": "The control's rate, e.g. 0.30", "example": 0.3},
    )
    mde = fields.Float(
        required=True,
        validate=validate.Range(min=0.001, max=10.0),
        metadata={"description": "Relative lift to detect, e.g. 0.10", "example": 0.1},
    )
    members_per_day = fields.Float(
        required=True, validate=validate.Range(min=0.1, max=10_000_000.0)
    )
    horizon_days = fields.Int(load_default=90, validate=validate.Range(min=1, max=365))
    treated_share = fields.Float(load_default=0.45, validate=validate.Range(min=0.01, max=0.99))
    control_share = fields.Float(load_default=0.45, validate=validate.Range(min=0.01, max=0.99))
    alpha = fields.Float(load_default=0.05, validate=validate.Range(min=0.001, max=0.2))
    power = fields.Float(load_default=0.8, validate=validate.Range(min=0.5, max=0.99))
    mode = fields.Str(load_default="fixed", validate=validate.OneOf(design.MODES))
    looks = fields.Int(
        load_default=None,
        allow_none=True,
        validate=validate.Range(min=2, max=20),
        metadata={"description": "Planned looks (group_sequential: default 5)"},
    )


read_audience = audience.problem


def experiment_or_404(key: str) -> Experiment:
    found = db.session.scalar(select(Experiment).where(Experiment.key == key))
    if found is None:
        abort(404, message=f"no experiment {key!r}")
    return found


def shown(experiment: Experiment) -> dict[str, Any]:
    return {
        **manage.describe(experiment),
        "status": experiment.status.value,
        "assigned": manage.counts(db.session, experiment),
        "created_at": experiment.created_at,
        "started_at": experiment.started_at,
        "stopped_at": experiment.stopped_at,
    }


def _clean(data: dict[str, Any], *, partial: bool) -> dict[str, Any]:
    clean, errors = design.check(data, read_audience=read_audience, partial=partial)
    if errors:
        refuse(errors)
    return clean


@blp.route("")
class Experiments(MethodView):
    @blp.doc(**BEARER_DOC)
    @require_scope(Scope.READ)
    @blp.response(200, ExperimentOut(many=True))
    @blp.paginate()
    def get(self, pagination_parameters):
        """List experiments, newest first."""
        query = select(Experiment).order_by(Experiment.id.desc())
        return [shown(e) for e in page_of(db.session, query, pagination_parameters)]

    @blp.doc(**BEARER_DOC)
    @require_scope(Scope.WRITE)
    @blp.arguments(ExperimentIn, example=EXAMPLE)
    @blp.response(201, ExperimentOut)
    @blp.alt_response(409, description="The key is taken")
    def post(self, data):
        """Create an experiment (a draft): variants with weights adding up to 100, one the
        control, each with a benefit package; the holdout's percent (at most 50)."""
        clean = _clean(data, partial=False)
        try:
            experiment = manage.create(db.session, clean, actor=api_actor(), now=clock.now())
            db.session.commit()
        except manage.Conflict as error:
            abort(409, message=str(error))
        except IntegrityError:  # created by another request at the same moment
            db.session.rollback()
            abort(409, message=f"an experiment called {clean['key']} exists: choose another key")
        return shown(experiment)


@blp.route("/<key>")
class OneExperiment(MethodView):
    @blp.doc(**BEARER_DOC)
    @require_scope(Scope.READ)
    @blp.response(200, ExperimentOut)
    def get(self, key):
        """Read an experiment: its design, status and members per variant."""
        return shown(experiment_or_404(key))

    @blp.doc(**BEARER_DOC)
    @require_scope(Scope.WRITE)
    @blp.arguments(ExperimentPatch, example={"hypothesis": "Services beat discounts"})
    @blp.response(200, ExperimentOut)
    def patch(self, data, key):
        """Edit a draft; once running only the name, hypothesis and guardrails change (a
        new split, like new weights, needs a new experiment)."""
        experiment = experiment_or_404(key)
        if isinstance(data.get("design"), dict):  # a change to some of it keeps the rest
            data = {**data, "design": {**experiment.design, **data["design"]}}
        clean = _clean(data, partial=True)
        try:
            manage.edit(db.session, experiment, clean, actor=api_actor(), now=clock.now())
        except InvalidFields as error:
            db.session.rollback()
            refuse(error.errors)
        db.session.commit()
        return shown(experiment)


def _transition(key: str, change) -> dict[str, Any]:
    experiment = experiment_or_404(key)
    try:
        change(db.session, experiment, actor=api_actor(), now=clock.now())
    except manage.Conflict as error:
        abort(409, message=str(error))
    db.session.commit()
    return shown(experiment)


@blp.route("/<key>/start", methods=["POST"])
@blp.doc(**BEARER_DOC)
@require_scope(Scope.WRITE)
@blp.response(200, ExperimentOut)
@blp.alt_response(409, description="Already running, or stopped")
def start(key):
    """Start assigning members."""
    return _transition(key, manage.start)


@blp.route("/<key>/stop", methods=["POST"])
@blp.doc(**BEARER_DOC)
@require_scope(Scope.WRITE)
@blp.response(200, ExperimentOut)
@blp.alt_response(409, description="Not running")
def stop(key):
    """Stop assigning members (those assigned stay; results can still be read)."""
    return _transition(key, manage.stop)


@blp.route("/<key>/assign", methods=["POST"])
@blp.doc(**BEARER_DOC)
@require_scope(Scope.WRITE)
@blp.arguments(AssignIn, example={"member": "u-1001", "grant": True})
@blp.response(200, AssignOut)
@blp.alt_response(409, description="The experiment is not running")
def assign(data, key):
    """The member's variant and its benefit package: assigned on first asking (the same
    answer on any machine, forever), granted once. A member outside the audience gets
    `variant: null`."""
    experiment = experiment_or_404(key)
    member = member_or_404(data["member"])
    recorded = manage.recorded_assignment(db.session, experiment.id, member.id)
    condition = experiment.audience.get("condition")
    if recorded is None and condition:
        features = db.session.get(MemberFeatures, member.id)
        if not conditions.holds(audience.read(condition), audience.record(member, features)):
            return {"variant": None, "in_audience": False, "new": False, "benefits": []}
    try:
        placed = manage.place(db.session, experiment, member, now=clock.now(), grant=data["grant"])
    except manage.Conflict as error:
        abort(409, message=str(error))
    db.session.commit()
    shown = dataclasses.asdict(placed)
    del shown["id"]
    return {**shown, "in_audience": True}


@blp.route("/<key>/assignments", methods=["POST"])
@blp.doc(
    **BEARER_DOC,
    requestBody={
        "content": {
            "application/json": {
                "schema": ImportIn,
                "example": {
                    "assignments": [
                        {
                            "member": "u-1002",
                            "variant": "service",
                            "assigned_at": "2026-03-01T10:00:00+08:00",
                        }
                    ]
                },
            },
            "text/csv": {
                "schema": {"type": "string"},
                "example": "member,variant,assigned_at\nu-1003,holdout,2026-03-01T10:00:00+08:00\n",
            },
        }
    },
)
@require_scope(Scope.WRITE)
@blp.response(201, description="How many assignments were recorded")
def import_assignments(key):
    """Import the assignments of an experiment run by hand before Tenure: JSON
    `{"assignments": [{member, variant, assigned_at}]}` or CSV with the header
    `member,variant,assigned_at`. Timestamps carry their zone; unknown or duplicate
    members, unknown variants or members already assigned refuse the whole import."""
    experiment = experiment_or_404(key)
    rows = _csv_rows() if request.mimetype == "text/csv" else _json_rows()
    try:
        count = manage.import_assignments(
            db.session, experiment, rows, actor=api_actor(), now=clock.now()
        )
        db.session.commit()
    except InvalidFields as error:
        db.session.rollback()
        refuse(error.errors)
    except IntegrityError:  # a member assigned by another request meanwhile
        db.session.rollback()
        abort(409, message="some of these members were assigned meanwhile: send it again")
    return {"imported": count, "assigned": manage.counts(db.session, experiment)}


def _json_rows() -> list[dict[str, Any]]:
    data = request.get_json(silent=True)
    errors = ImportIn().validate(data) if isinstance(data, dict) else {"json": ["not JSON"]}
    if errors:
        abort(422, errors={"json": errors})
    return data["assignments"]


def _csv_rows() -> list[dict[str, Any]]:
    try:
        text = request.get_data(as_text=False).decode("utf-8-sig")
    except UnicodeDecodeError:
        refuse({"csv": "the file is not UTF-8 text"})
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        fieldnames = reader.fieldnames
        rows = [dict(row) for row in reader]
    except csv.Error as error:
        refuse({"csv": f"line {reader.line_num}: {error}"})
    missing = {"member", "variant", "assigned_at"} - set(fieldnames or ())
    if missing:
        named = ", ".join(sorted(missing))
        refuse({"csv": f"the header must name member, variant, assigned_at (missing {named})"})
    return rows


@blp.route("/<key>/exposures", methods=["POST"])
@blp.doc(**BEARER_DOC)
@require_scope(Scope.WRITE)
@blp.arguments(
    ExposureIn, example={"member": "u-1001", "kind": "benefit_granted", "ref": "coupon-88"}
)
@blp.response(200, description="Whether the exposure was new")
def expose(data, key):
    """Record that an assigned member actually received their treatment (when the shop,
    not Tenure, grants the benefit or sends the message); the same ref counts once."""
    experiment = experiment_or_404(key)
    member = member_or_404(data["member"])
    recorded = manage.recorded_assignment(db.session, experiment.id, member.id)
    if recorded is None:
        refuse({"member": f"{data['member']} is not assigned in {key}"})
    fresh = manage.expose(
        db.session, recorded, data["kind"], data["ref"], data["at"] or clock.now()
    )
    db.session.commit()
    return {"recorded": fresh}


@blp.route("/<key>/results")
@blp.doc(**BEARER_DOC)
@require_scope(Scope.READ)
@blp.arguments(ResultsArgs, location="query")
@blp.response(200, description="Per variant `n` and `metrics` (see the description)")
def results(args, key):
    """Results as they stood at `as_of`: per variant `n` and `metrics`, a map from the
    metric's name to `control`, `value`, `abs_lift`, `abs_ci`, `rel_lift`, `rel_ci`,
    `p_value` (and `p_adjusted` for the primary and guardrail metrics), `n_control`,
    `n`, and `cuped` with the adjusted figures; `holdout` with each variant against the
    holdout in the same shape; `srm` (`p_value`, `ok`); `sequential`; `survival`
    (Kaplan-Meier curves, log-rank test); `breakdowns`; `verdict`. `format=csv` gives
    one row per comparison and metric."""
    experiment = experiment_or_404(key)
    now = clock.now()
    as_of = args.get("as_of") or now
    if experiment.started_at is None:
        refuse({"as_of": f"{key} has not started: it has no results yet"})
    if as_of < experiment.started_at:
        started = f"{experiment.started_at:%Y-%m-%d %H:%M} UTC"
        refuse({"as_of": f"is before the experiment started ({started})"})
    if as_of > now + dt.timedelta(minutes=5):
        refuse({"as_of": "is in the future"})
    wanted = _metrics(args.get("metrics"))
    found = analysis.results(db.session, experiment, as_of=as_of, cuped=args["cuped"])
    db.session.rollback()  # the temporary table is gone; nothing was written
    _keep(found, wanted)
    if args["format"] == "csv":
        return Response(
            to_csv(found),
            mimetype="text/csv",
            headers={"Content-Disposition": f'attachment; filename="{key}-results.csv"'},
        )
    return found


def _metrics(text: str | None) -> list[str]:
    if not text:
        return list(design.METRICS)
    names = [name.strip() for name in text.split(",") if name.strip()]
    if problem := design.unknown_metric(names):
        refuse({"metrics": problem})
    return names


def _keep(found: dict[str, Any], wanted: list[str]) -> None:
    comparisons = [found["variants"], (found["holdout"] or {}).get("variants", {})]
    for variants in comparisons:
        for variant in variants.values():
            variant["metrics"] = {m: variant["metrics"][m] for m in wanted}


CSV_FIELDS = (
    "against",
    "variant",
    "metric",
    "n",
    "n_control",
    "control",
    "value",
    "abs_lift",
    "abs_ci_low",
    "abs_ci_high",
    "rel_lift",
    "rel_ci_low",
    "rel_ci_high",
    "p_value",
    "p_adjusted",
    "cuped_abs_lift",
    "cuped_abs_ci_low",
    "cuped_abs_ci_high",
    "cuped_p_value",
)


def to_csv(found: dict[str, Any]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, CSV_FIELDS)
    writer.writeheader()
    comparisons = [("control", found["variants"])]
    if found["holdout"]:
        comparisons.append(("holdout", found["holdout"]["variants"]))
    for against, variants in comparisons:
        for key, variant in variants.items():
            if against == "control" and variant.get("control"):
                continue
            for metric, cell in variant["metrics"].items():
                cuped = cell.get("cuped") or {}
                writer.writerow(
                    {
                        "against": against,
                        "variant": key,
                        "metric": metric,
                        "n": cell["n"],
                        "n_control": cell["n_control"],
                        "control": cell["control"],
                        "value": cell["value"],
                        "abs_lift": cell["abs_lift"],
                        "abs_ci_low": (cell["abs_ci"] or [None, None])[0],
                        "abs_ci_high": (cell["abs_ci"] or [None, None])[1],
                        "rel_lift": cell["rel_lift"],
                        "rel_ci_low": (cell["rel_ci"] or [None, None])[0],
                        "rel_ci_high": (cell["rel_ci"] or [None, None])[1],
                        "p_value": cell["p_value"],
                        "p_adjusted": cell.get("p_adjusted"),
                        "cuped_abs_lift": cuped.get("abs_lift"),
                        "cuped_abs_ci_low": (cuped.get("abs_ci") or [None, None])[0],
                        "cuped_abs_ci_high": (cuped.get("abs_ci") or [None, None])[1],
                        "cuped_p_value": cuped.get("p_value"),
                    }
                )
    return out.getvalue()


@blp.route("/power", methods=["POST"])
@blp.doc(**BEARER_DOC)
@require_scope(Scope.READ)
@blp.arguments(
    PowerIn,
    example={"baseline": 0.3, "mde": 0.1, "members_per_day": 200, "mode": "group_sequential"},
)
@blp.response(200, description="Members and days needed, and each mode's power cost")
def power_calculator(data):
    """How many members and days until the minimum detectable effect is detectable,
    given the audience's daily inflow, the baseline rate and the split; and what
    looking often costs: each mode's power at the fixed design's size and the members
    it needs for the target power."""
    if data["treated_share"] + data["control_share"] > 1:
        refuse({"control_share": "the treated and control shares add up to more than 1"})
    if data["mode"] == "fixed":
        data["looks"] = None  # one look at the end
    try:
        plan = power.days_needed(power.Design(**data))
    except ValueError as error:
        refuse({"json": str(error)})
    return dataclasses.asdict(plan)
