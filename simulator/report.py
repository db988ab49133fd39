"""The validation report: what Tenure estimated beside what the simulator knows.

For the experiments: the relative lift on retention at 90 days of each variant over
the control, as Tenure's analysis estimates it (with its confidence interval), and the
truth: the same lift between each assigned member's arms (the member and their twins)
over every member assigned whose 90 days have passed. For the journeys: the
conversion lift over the journey's holdout, estimated, beside the true lift, the
conversion of treated members less that of their untreated twins.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections import defaultdict
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from experiments import analysis
from experiments.models import Experiment
from journeys import report as journey_report
from journeys import versions
from journeys.models import Journey
from simulator.run import EXPERIMENT_WINDOW, Simulation

METRIC = "retention_90d"


@dataclasses.dataclass(frozen=True)
class Line:
    subject: str  # "experiment benefit_packages: service vs discount", "journey ..."
    measure: str  # what is compared
    estimate: float | None
    low: float | None
    high: float | None
    truth: float | None
    n: int  # members whose outcome the truth counts

    @property
    def covered(self) -> bool | None:
        if None in (self.low, self.high, self.truth):
            return None
        return self.low <= self.truth <= self.high


def build(session: Session, sim: Simulation) -> list[Line]:
    end = sim.next_day
    as_of = sim.clock.at(end)
    lines = []
    entries = defaultdict(list)
    for entry in sim.membership.entries:
        entries[entry.cohort].append(entry)
    for experiment in session.scalars(select(Experiment).order_by(Experiment.id)):
        cohort = entries.get(f"experiment:{experiment.key}", [])
        lines.extend(_experiment(session, sim, experiment, cohort, as_of, end))
    for journey in session.scalars(select(Journey).order_by(Journey.id)):
        cohort = entries.get(f"journey:{journey.key}")
        if cohort:
            lines.append(_journey(session, sim, journey, cohort, end))
    return lines


def _experiment(session, sim, experiment, cohort, as_of: dt.datetime, end: float) -> list[Line]:
    if experiment.status.value == "draft":
        return []
    found = analysis.results(session, experiment, as_of=as_of, cuped=False)
    control = next((k for k, v in found["variants"].items() if v["control"]), None)
    rates = _rates(sim, cohort, end)
    lines = []
    for key, variant in found["variants"].items():
        if variant["control"]:
            continue
        figures = variant["metrics"].get(METRIC) or {}
        rel = figures.get("rel_lift")
        ci = figures.get("rel_ci") or (None, None)
        truth = None
        if rates.get(key) is not None and rates.get(control):
            truth = rates[key] / rates[control] - 1
        lines.append(
            Line(
                f"experiment {experiment.key}: {key} vs {control}",
                f"retention at {EXPERIMENT_WINDOW} days, relative",
                rel,
                ci[0],
                ci[1],
                truth,
                rates.get("n", 0),
            )
        )
    return lines


def _rates(sim: Simulation, cohort, end: float) -> dict[str, Any]:
    """Each arm's true rate over every assigned member whose window has closed."""
    totals: dict[str, int] = defaultdict(int)
    closed = 0
    for entry in cohort:
        outcomes = {arm: sim.membership.outcome(entry, arm, end) for arm in entry.rows}
        if any(v is None for v in outcomes.values()):
            continue
        closed += 1
        for arm, value in outcomes.items():
            totals[arm] += bool(value)
    rates: dict[str, Any] = {arm: n / closed for arm, n in totals.items()} if closed else {}
    rates["n"] = closed
    return rates


def _journey(session: Session, sim: Simulation, journey: Journey, cohort, end: float) -> Line:
    version = versions.latest(journey)
    found = journey_report.build(session, journey, version.definition)
    conversion = found.conversion
    treated = untreated = n = 0
    for entry in cohort:
        stop = min(entry.at + entry.window, end)
        rows = entry.rows
        treated += sim.membership.ordered_between(rows["with"], entry.at, stop)
        untreated += sim.membership.ordered_between(rows["without"], entry.at, stop)
        n += 1
    truth = (treated - untreated) / n if n else None
    estimate = low = high = None
    if conversion is not None:
        estimate = conversion.absolute_lift
        low, high = conversion.absolute_ci
    return Line(
        f"journey {journey.key}",
        "conversion (goal reached) vs holdout, absolute",
        estimate,
        low,
        high,
        truth,
        n,
    )


def render(lines: list[Line]) -> str:
    if not lines:
        return "Nothing to compare: no experiment or journey has treated simulated members."
    out = [f"{'':60} {'estimate':>9} {'95% CI':>19} {'truth':>8}  covers  members"]
    for line in lines:
        out.append(line.subject)
        ci = (
            f"[{percent(line.low)}, {percent(line.high)}]"
            if line.low is not None and line.high is not None
            else "-"
        )
        covers = {True: "yes", False: "NO", None: "-"}[line.covered]
        out.append(
            f"  {line.measure:58} {percent(line.estimate):>9} {ci:>19} {percent(line.truth):>8}"
            f"  {covers:6}  {line.n:,}"
        )
    return "\n".join(out)


def percent(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:+.1f}%"
