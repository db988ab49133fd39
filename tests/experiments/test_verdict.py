"""The verdict in words, as the result page shows it: the size of the lift, its
interval and p-value, and a plain "not distinguishable from none" otherwise; and the
group-sequential reading at its planned looks."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from experiments import power
from experiments.aggregates import Aggregates
from experiments.analysis import Plan, analyse
from tests.experiments.test_correctness import AS_OF, arm_from_rows

PLAN = Plan(
    control="discount",
    variants=["discount", "service"],
    names={"discount": "The discount package", "service": "The service package"},
    weights={"discount": 0.45, "service": 0.45, "holdout": 0.10},
)


def _arm(key, retained, n):
    kept = np.zeros(n)
    kept[:retained] = 1
    rows = {h: kept for h in (7, 30, 60, 90)}
    zeros = np.zeros(n)
    return arm_from_rows(key, rows, zeros, zeros, zeros, zeros)


def test_the_verdict_says_how_many_more_members_were_kept_and_how_sure():
    data = Aggregates(
        as_of=AS_OF,
        arms={
            "discount": _arm("discount", 3000, 10000),
            "service": _arm("service", 3360, 10000),
            "holdout": _arm("holdout", 660, 2222),
        },
        winsor_cap=None,
        breakdowns={},
    )
    verdict = analyse(data, PLAN)["verdict"]
    assert verdict[0].startswith(
        "The service package kept 12% more members at 90 days than The discount package "
        "(95% CI 8% to 17%, adjusted p < 0.001)."
    )
    # the discount package against the holdout: 30% against 29.7%
    assert verdict[1].startswith(
        "The effect of The discount package against the holdout is not distinguishable "
        "from none (95% CI -6% to 8%"
    )


def test_a_group_sequential_reading_waits_for_its_planned_looks():
    """Look k is planned at k/K of the planned members: between looks the boundary is
    the last look's; before the first nothing is concluded; several variants share
    alpha."""

    plan = dataclasses.replace(
        PLAN, mode="group_sequential", looks=5, planned_members=50000, guardrails=()
    )

    def read(service_kept, n):
        arms = {
            "discount": _arm("discount", int(0.3 * n), n),
            "service": _arm("service", service_kept, n),
            "holdout": _arm("holdout", 0, 0),
        }
        data = Aggregates(as_of=AS_OF, arms=arms, winsor_cap=None, breakdowns={})
        return analyse(data, plan)["sequential"]

    early = read(3360, 4000)  # 8,000 of 50,000 members: before the first look at 10,000
    assert early["look"] == 0 and early["next_look_at"] == 10000
    assert early["variants"]["service"]["significant"] is False
    second = read(int(0.336 * 12000), 12000)  # 24,000: look 2 reached, look 3 at 30,000
    assert (second["look"], second["next_look_at"]) == (2, 30000)
    boundaries = power.obrien_fleming(5, 0.05)
    assert second["variants"]["service"]["boundary"] == pytest.approx(boundaries[1])
    assert second["variants"]["service"]["significant"] is True  # z about 5.7
