"""The statistics half of an experiment's analysis, on the sums of
:mod:`experiments.aggregates`: each variant against the control and each against the
holdout, for every metric; CUPED beside the plain figures; the sequential reading the
design chose; the sample-ratio check; multiple-testing corrections; survival curves
with a log-rank test; breakdowns; and the verdict in words.

Rates (retention, redemption) use the two-proportion z-test with Newcombe's interval
for the difference and the log interval for the ratio; means use Welch's t-test with
a delta-method interval for the relative lift; the average order value is a ratio of
per-member sums (delta method). A relative interval is never the absolute one divided
by the control's value, which would ignore the control's own uncertainty.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import stats as scipy_stats

from experiments import aggregates, power, survival
from experiments import estimators as est
from experiments.aggregates import Aggregates, Arm, RatioSums, Sums
from experiments.assignment import HOLDOUT
from experiments.design import METRICS, RATES
from experiments.stats import compare_proportions


@dataclasses.dataclass(frozen=True)
class Plan:
    """What the analysis needs to know of the experiment's design."""

    control: str
    variants: Sequence[str]  # every variant's key, the control's included
    names: Mapping[str, str]
    weights: Mapping[str, float]  # share of all members, the holdout's included
    primary: str = "retention_90d"
    guardrails: Sequence[str] = ()
    mode: str = "fixed"
    looks: int = 5
    alpha: float = 0.05
    correction: str = "holm"
    mde: float | None = None  # relative, e.g. 0.05
    planned_members: int | None = None


def analyse(data: Aggregates, plan: Plan, *, cuped: bool = True) -> dict[str, Any]:
    arms = data.arms
    control = arms[plan.control]
    theta = {name: _theta(arms.values(), name) for name in METRICS if cuped and name != "aov"}
    variants: dict[str, Any] = {}
    for key in plan.variants:
        variants[key] = {
            "name": plan.names.get(key, key),
            "control": key == plan.control,
            "n": arms[key].n,
            "metrics": _metrics(arms[key], control, plan, theta),
        }
    holdout = arms.get(HOLDOUT)
    by_holdout = None
    if holdout is not None and plan.weights.get(HOLDOUT, 0) > 0:
        by_holdout = {
            "n": holdout.n,
            "variants": {
                key: {"n": arms[key].n, "metrics": _metrics(arms[key], holdout, plan, theta)}
                for key in plan.variants
            },
        }
    _correct(variants, plan, skip=plan.control)
    if by_holdout:
        _correct(by_holdout["variants"], plan)
    counted = (
        sum(arm.metrics[plan.primary].n for arm in arms.values())
        if plan.primary in (arms[plan.control].metrics)
        else sum(arm.n for arm in arms.values())
    )
    sequential = _sequential(variants, plan, counted)
    # Under a sequential design the primary metric's decision is the design's, not the
    # fixed-horizon p-value's (which daily looks would inflate).
    for key, reading in sequential["variants"].items():
        cell = variants[key]["metrics"][plan.primary]
        cell["significant"] = reading["significant"]
        cell["sequential"] = reading
    result = {
        "as_of": data.as_of.isoformat(),
        "primary_metric": plan.primary,
        "guardrail_metrics": list(plan.guardrails),
        "mode": plan.mode,
        "alpha": plan.alpha,
        "cuped": cuped,
        "winsor_cap": data.winsor_cap,
        "variants": variants,
        "holdout": by_holdout,
        "srm": _srm(arms, plan),
        "variance_reduction": {
            name: est.variance_reduction([_co(arm.metrics[name]) for arm in arms.values()])
            for name in theta
            if sum(arm.metrics[name].n for arm in arms.values()) > 2
        },
        "sequential": sequential,
        "survival": _survival(arms, plan),
        "breakdowns": _breakdowns(data, plan),
    }
    result["verdict"] = verdict(result, plan)
    return result


# -- one comparison


def compare(metric: str, treated: Arm, control: Arm, alpha: float) -> dict[str, Any] | None:
    """The plain figures of ``treated`` against ``control`` on one metric (None when an
    arm has too few members to say anything)."""
    if metric == "aov":
        return _ratio(treated.aov, control.aov, alpha)
    t, c = treated.metrics[metric], control.metrics[metric]
    if metric in RATES:
        found = compare_proportions(round(t.y), t.n, round(c.y), c.n, alpha=alpha)
        if found is None:
            return None
        return _figures(
            found.control_rate,
            found.treated_rate,
            found.absolute_lift,
            found.absolute_ci,
            found.relative_lift,
            found.relative_ci,
            found.p_value,
            c.n,
            t.n,
        )
    if t.n < 2 or c.n < 2:
        return None
    return _lift(est.welch(_moments(t), _moments(c), alpha=alpha), c.n, t.n)


def _metrics(treated: Arm, control: Arm, plan: Plan, theta) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in METRICS:
        figures = compare(name, treated, control, plan.alpha)
        if figures is None:
            out[name] = _nothing(treated, control, name)
            continue
        if name in theta and treated is not control:
            adjusted = _cuped(treated, control, name, theta[name], plan.alpha)
            figures["cuped"] = adjusted
        figures["significant"] = figures["p_value"] < plan.alpha
        out[name] = figures
    return out


def _nothing(treated: Arm, control: Arm, name: str) -> dict[str, Any]:
    def n(arm: Arm) -> int:
        return arm.aov.n if name == "aov" else arm.metrics[name].n

    return {
        "control": None,
        "value": None,
        "abs_lift": None,
        "abs_ci": None,
        "rel_lift": None,
        "rel_ci": None,
        "p_value": None,
        "n_control": n(control),
        "n": n(treated),
        "significant": False,
    }


def _figures(control, value, abs_lift, abs_ci, rel_lift, rel_ci, p_value, n_control, n):
    return {
        "control": control,
        "value": value,
        "abs_lift": abs_lift,
        "abs_ci": list(abs_ci),
        "rel_lift": rel_lift,
        "rel_ci": None if rel_ci is None else list(rel_ci),
        "p_value": p_value,
        "n_control": n_control,
        "n": n,
    }


def _lift(lift: est.Lift, n_control: int, n: int) -> dict[str, Any]:
    return _figures(
        lift.control,
        lift.value,
        lift.abs_lift,
        lift.abs_ci,
        lift.rel_lift,
        lift.rel_ci,
        lift.p_value,
        n_control,
        n,
    )


def _moments(s: Sums) -> est.Moments:
    return est.Moments(s.n, s.y, s.yy)


def _co(s: Sums) -> est.CoMoments:
    return est.CoMoments(s.n, s.y, s.yy, s.x, s.xx, s.xy)


def _theta(arms, name: str) -> tuple[np.ndarray, np.ndarray] | None:
    sums = [_co(arm.metrics[name]) for arm in arms if arm.metrics[name].n]
    n = sum(s.n for s in sums)
    if n < 3:
        return None
    x_mean = np.sum([s.x for s in sums], axis=0) / n
    return est.cuped_theta(sums), x_mean


def _cuped(treated: Arm, control: Arm, name: str, theta, alpha: float) -> dict[str, Any] | None:
    t, c = treated.metrics[name], control.metrics[name]
    if theta is None or t.n < 2 or c.n < 2:
        return None
    coefficients, x_mean = theta
    treated_adjusted = est.cuped(_co(t), coefficients, x_mean)
    control_adjusted = est.cuped(_co(c), coefficients, x_mean)
    adjusted = est.welch(treated_adjusted, control_adjusted, alpha=alpha)
    figures = _lift(adjusted, c.n, t.n)
    for drop in ("n", "n_control"):
        figures.pop(drop)
    return figures


def _ratio(t: RatioSums, c: RatioSums, alpha: float) -> dict[str, Any] | None:
    """Revenue per order in each arm, R = Σrevenue / Σorders over its members; the
    variance of R by the delta method on the per-member pairs."""
    if t.n < 2 or c.n < 2 or t.den <= 0 or c.den <= 0:
        return None
    (rt, vt), (rc, vc) = _ratio_estimate(t), _ratio_estimate(c)
    z = float(scipy_stats.norm.ppf(1 - alpha / 2))
    diff, se = rt - rc, math.sqrt(vt + vc)
    p_value = 1.0 if se == 0 else float(2 * scipy_stats.norm.sf(abs(diff) / se))
    rel, rel_ci = None, None
    if rc > 0:
        rel = rt / rc - 1
        rel_se = math.sqrt(vt / rc**2 + rt**2 * vc / rc**4)
        rel_ci = (rel - z * rel_se, rel + z * rel_se)
    return _figures(rc, rt, diff, (diff - z * se, diff + z * se), rel, rel_ci, p_value, c.n, t.n)


def _ratio_estimate(s: RatioSums) -> tuple[float, float]:
    n = s.n
    ratio = s.num / s.den
    mean_den = s.den / n
    var_num = (s.numnum - s.num**2 / n) / (n - 1)
    var_den = (s.denden - s.den**2 / n) / (n - 1)
    cov = (s.numden - s.num * s.den / n) / (n - 1)
    variance = (var_num - 2 * ratio * cov + ratio**2 * var_den) / (n * mean_den**2)
    return ratio, max(0.0, variance)


# -- reading several together


def _correct(variants: dict[str, Any], plan: Plan, skip: str | None = None) -> None:
    """Adjusted p-values over the family read together: every variant on the primary
    and guardrail metrics (Holm, or Benjamini-Hochberg)."""
    family = [plan.primary, *(m for m in plan.guardrails if m != plan.primary)]
    cells = [
        variants[key]["metrics"][metric]
        for key in variants
        if key != skip
        for metric in family
        if variants[key]["metrics"][metric]["p_value"] is not None
    ]
    adjusted = est.adjust([cell["p_value"] for cell in cells], plan.correction, plan.alpha)
    for cell, p in zip(cells, adjusted, strict=True):
        cell["p_adjusted"] = p
        cell["significant"] = p < plan.alpha


def _srm(arms: Mapping[str, Arm], plan: Plan) -> dict[str, Any]:
    keys = [k for k in [*plan.variants, HOLDOUT] if plan.weights.get(k, 0) > 0]
    counts = [arms[k].n for k in keys]
    weights = [plan.weights[k] for k in keys]
    total = sum(counts)
    if total == 0:
        return {"p_value": None, "ok": True, "counts": {}, "expected": {}}
    check = est.sample_ratio(counts, weights)
    return {
        "p_value": check.p_value,
        "chi2": check.chi2,
        "ok": check.ok,
        "counts": dict(zip(keys, counts, strict=True)),
        "expected": {k: total * w / sum(weights) for k, w in zip(keys, weights, strict=True)},
    }


def _sequential(variants: dict[str, Any], plan: Plan, members: int) -> dict[str, Any]:
    """How the primary metric reads under the design's mode: an always-valid p-value
    and confidence sequence (mSPRT), or the O'Brien-Fleming boundary of the planned
    look reached. With several variants against the control, each is read at alpha
    over their number (Bonferroni), so the family keeps its alpha. ``members`` are all
    the arms' members the primary metric counts, compared with the planned members."""
    reading: dict[str, Any] = {"mode": plan.mode, "variants": {}}
    if plan.mode == "fixed":
        return reading
    treated = [key for key in variants if key != plan.control]
    alpha = plan.alpha / max(1, len(treated))
    reading["alpha"] = alpha
    look = None
    if plan.mode == "group_sequential":
        boundaries = power.obrien_fleming(plan.looks, alpha)
        look = _look(plan, members)
        reading.update(look)
    for key in treated:
        cell = variants[key]["metrics"][plan.primary]
        if cell["p_value"] is None:
            continue
        diff = cell["abs_lift"]
        z_crit = float(scipy_stats.norm.ppf(1 - plan.alpha / 2))
        se = (cell["abs_ci"][1] - cell["abs_ci"][0]) / (2 * z_crit)
        if plan.mode == "always_valid":
            reading["variants"][key] = _always_valid(diff, se, cell, plan, alpha)
        else:
            reading["variants"][key] = _group_sequential(diff, se, look, boundaries)
    return reading


def _tau2(cell: Mapping[str, Any], plan: Plan) -> float:
    """The mixture's spread: the effect the design hopes to detect, squared."""
    relative = plan.mde if plan.mde else 0.05
    scale = abs(cell["control"]) if cell["control"] else 1.0
    return (relative * scale) ** 2


def _always_valid(diff: float, se: float, cell, plan: Plan, alpha: float) -> dict[str, Any]:
    variance, tau2 = se**2, _tau2(cell, plan)
    p_value = est.always_valid_p(diff, variance, tau2)
    if variance > 0:
        half = math.sqrt(
            variance
            * (variance + tau2)
            / tau2
            * (2 * math.log(1 / alpha) + math.log((variance + tau2) / variance))
        )
    else:
        half = 0.0
    return {
        "p_value": p_value,
        "ci": [diff - half, diff + half],
        "significant": p_value < alpha,
    }


def _look(plan: Plan, members: int) -> dict[str, Any]:
    """The last planned look the members have reached (look k is planned at k/K of the
    planned members), and when the next one comes."""
    planned = plan.planned_members
    if not planned:
        return {"look": None, "note": "no planned number of members"}
    fraction = min(1.0, members / planned)
    look = min(plan.looks, math.floor(fraction * plan.looks + 1e-9))
    following = None if look >= plan.looks else math.ceil(planned * (look + 1) / plan.looks)
    return {
        "look": look,
        "looks": plan.looks,
        "information": fraction,
        "members": members,
        "next_look_at": following,
    }


def _group_sequential(diff: float, se: float, look, boundaries) -> dict[str, Any]:
    """The comparison against the boundary of the last planned look reached: the
    design's error rates hold when the results are read at the planned looks; before
    the first one nothing can be concluded."""
    if not look.get("look"):
        return {"significant": False, "boundary": None, "z": None}
    z = 0.0 if se == 0 else diff / se
    boundary = boundaries[look["look"] - 1]
    return {"z": z, "boundary": boundary, "significant": abs(z) >= boundary}


def _survival(arms: Mapping[str, Arm], plan: Plan) -> dict[str, Any]:
    grouped = {
        key: survival.Grouped.from_rows(arm.survival)
        for key, arm in arms.items()
        if arm.survival and (key in plan.variants or plan.weights.get(key, 0) > 0)
    }
    curves = {}
    for key, counts in grouped.items():
        curve = survival.kaplan_meier(counts)
        curves[key] = {
            "days": list(curve.days),
            "survival": list(curve.survival),
            "lower": [_finite(v) for v in curve.lower],
            "upper": [_finite(v) for v in curve.upper],
            "median": curve.median,
            "follow_up": curve.follow_up,
        }
    test = None
    if len(grouped) >= 2:
        try:
            found = survival.log_rank(grouped)
        except ValueError:
            found = None
        if found is not None:
            test = {"chi2": found.chi2, "df": found.df, "p_value": found.p_value}
    return {"curves": curves, "log_rank": test}


def _finite(value: float) -> float | None:
    return None if math.isnan(value) else value


def _breakdowns(data: Aggregates, plan: Plan) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for dimension, slices in data.breakdowns.items():
        rows = []
        for value, arms in slices.items():
            control = arms.get(plan.control)
            cells = {}
            for key in plan.variants:
                if key == plan.control or key not in arms or control is None:
                    continue
                treated = Arm(key, arms[key].n, {plan.primary: arms[key]}, _NO_RATIO)
                base = Arm(plan.control, control.n, {plan.primary: control}, _NO_RATIO)
                cells[key] = compare(plan.primary, treated, base, plan.alpha)
            rows.append(
                {
                    "value": value,
                    "n": {key: sums.n for key, sums in arms.items()},
                    "variants": cells,
                }
            )
        out[dimension] = rows
    return out


_NO_RATIO = RatioSums(0, 0, 0, 0, 0, 0)


# -- in words

HORIZON_WORDS = {
    "retention_7d": "at 7 days",
    "retention_30d": "at 30 days",
    "retention_60d": "at 60 days",
    "retention_90d": "at 90 days",
}


def verdict(result: Mapping[str, Any], plan: Plan) -> list[str]:
    """The primary metric's reading, one sentence per comparison."""
    sentences = []
    if not result["srm"]["ok"]:
        sentences.append(
            "The arms' sizes do not match the split (sample-ratio mismatch): fix the "
            "assignment or the data before reading any lift."
        )
    control = plan.names.get(plan.control, plan.control)
    for key, variant in result["variants"].items():
        if key != plan.control:
            cell = variant["metrics"][plan.primary]
            sentences.append(_sentence(variant["name"], cell, plan, control))
    if result["holdout"]:
        for key, variant in result["holdout"]["variants"].items():
            name = plan.names.get(key, key)
            cell = variant["metrics"][plan.primary]
            sentences.append(_sentence(name, cell, plan, "the holdout"))
    return sentences


def _sentence(name: str, cell: Mapping[str, Any], plan: Plan, reference: str) -> str:
    metric = plan.primary
    if cell["p_value"] is None:
        return f"{name} against {reference}: not enough members yet to read {metric}."
    rel, ci = cell["rel_lift"], cell["rel_ci"]
    span = f"95% CI {_pct(ci[0])} to {_pct(ci[1])}" if ci else ""
    reading = cell.get("sequential", {})
    if "p_value" in reading:
        p, said = reading["p_value"], "always-valid p"
    elif "p_adjusted" in cell:
        p, said = cell["p_adjusted"], "adjusted p"
    else:
        p, said = cell["p_value"], "p"
    p_text = f"{said} = {p:.3f}" if p >= 0.001 else f"{said} < 0.001"
    if "boundary" in reading:
        p_text = "before the first planned look"
        if reading["boundary"] is not None:
            p_text = f"|z| {abs(reading['z']):.2f} against the boundary {reading['boundary']:.2f}"
    figures = ", ".join(part for part in (span, p_text) if part)
    if not cell.get("significant"):
        return (
            f"The effect of {name} against {reference} is not distinguishable from none "
            f"({figures})."
        )
    size = _pct(abs(rel)) if rel is not None else f"{abs(cell['abs_lift']):.3g}"
    if metric in HORIZON_WORDS:
        more = "more" if cell["abs_lift"] > 0 else "fewer"
        when = HORIZON_WORDS[metric]
        return f"{name} kept {size} {more} members {when} than {reference} ({figures})."
    higher = "higher" if cell["abs_lift"] > 0 else "lower"
    what = metric.replace("_", " ")
    return f"With {name}, {what} was {size} {higher} than with {reference} ({figures})."


def _pct(value: float) -> str:
    return f"{value * 100:.0f}%"


# -- from an experiment


def plan_of(experiment: Any) -> Plan:
    holdout = float(experiment.holdout_percent) / 100
    total = sum(v.weight for v in experiment.variants) or 1
    weights = {v.key: (1 - holdout) * v.weight / total for v in experiment.variants}
    weights[HOLDOUT] = holdout
    design = experiment.design or {}
    mde = experiment.minimum_detectable_effect
    return Plan(
        control=next((v.key for v in experiment.variants if v.is_control), ""),
        variants=[v.key for v in experiment.variants],
        names={v.key: v.benefits.get("name") or v.key for v in experiment.variants},
        weights=weights,
        primary=experiment.primary_metric,
        guardrails=list(experiment.guardrail_metrics.get("metrics", [])),
        mode=design.get("mode", "fixed"),
        looks=int(design.get("looks", 5)),
        alpha=float(design.get("alpha", 0.05)),
        correction=design.get("correction", "holm"),
        mde=float(mde) / 100 if mde is not None else None,
        planned_members=design.get("planned_members"),
    )


def results(session: Any, experiment: Any, *, as_of: Any, cuped: bool = True) -> dict[str, Any]:
    """The experiment's results as they stood at ``as_of``."""
    design = experiment.design or {}
    plan = plan_of(experiment)
    data = aggregates.aggregate(
        session,
        experiment,
        as_of=as_of,
        winsor_percentile=float(design.get("winsor_percentile", 99)),
        primary=plan.primary,
    )
    return {"experiment": experiment.key, **analyse(data, plan, cuped=cuped)}
