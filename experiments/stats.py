"""Statistics on aggregates: a treated group's rate against a control group's.

The absolute lift's interval is Newcombe's hybrid score interval, the relative lift's
is the log (Katz) interval of the ratio of the rates, both from statsmodels; the
p-value is the two-proportion z-test's. The relative interval is not the absolute one
divided by the control's rate: that would ignore the control's own uncertainty.
"""

from __future__ import annotations

import dataclasses
import math

from statsmodels.stats.proportion import confint_proportions_2indep, proportions_ztest


@dataclasses.dataclass(frozen=True)
class Proportions:
    treated: int
    treated_n: int
    control: int
    control_n: int
    treated_rate: float
    control_rate: float
    absolute_lift: float
    absolute_ci: tuple[float, float]
    relative_lift: float | None  # None when the control's rate is 0
    relative_ci: tuple[float, float] | None
    p_value: float
    alpha: float

    @property
    def significant(self) -> bool:
        return self.p_value < self.alpha


def compare_proportions(
    treated: int, treated_n: int, control: int, control_n: int, *, alpha: float = 0.05
) -> Proportions | None:
    """The treated rate against the control rate; None when a group is empty."""
    if treated_n <= 0 or control_n <= 0:
        return None
    if not (0 <= treated <= treated_n and 0 <= control <= control_n):
        raise ValueError("successes must be between 0 and the group's size")
    treated_rate, control_rate = treated / treated_n, control / control_n
    low, high = confint_proportions_2indep(
        treated, treated_n, control, control_n, method="newcomb", compare="diff", alpha=alpha
    )
    pooled = (treated + control) / (treated_n + control_n)
    if pooled in (0.0, 1.0):
        p_value = 1.0  # both groups all-or-nothing alike: no evidence of a difference
    else:
        _, p_value = proportions_ztest([treated, control], [treated_n, control_n])
    relative, relative_ci = None, None
    if control > 0:
        relative = treated_rate / control_rate - 1
        if treated > 0:
            r_low, r_high = confint_proportions_2indep(
                treated, treated_n, control, control_n, method="log", compare="ratio", alpha=alpha
            )
            relative_ci = (float(r_low) - 1, float(r_high) - 1)
    return Proportions(
        treated=treated,
        treated_n=treated_n,
        control=control,
        control_n=control_n,
        treated_rate=treated_rate,
        control_rate=control_rate,
        absolute_lift=treated_rate - control_rate,
        absolute_ci=(float(low), float(high)),
        relative_lift=relative,
        relative_ci=relative_ci,
        p_value=float(p_value) if not math.isnan(p_value) else 1.0,
        alpha=alpha,
    )
