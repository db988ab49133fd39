"""The verdict in words, as the result page shows it: the size of the lift, its
interval and p-value, and a plain "not distinguishable from none" otherwise."""

from __future__ import annotations

import numpy as np

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
