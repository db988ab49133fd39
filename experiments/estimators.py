"""Estimators on aggregates (never on per-member rows): means with Welch's test and a
delta-method relative lift, CUPED adjustment from sums of products, the
sample-ratio-mismatch test, multiple-testing corrections and the always-valid
(mixture SPRT) p-value for daily looks. Pure functions: plain numbers in and out.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

from scipy import stats
from statsmodels.stats.multitest import multipletests


@dataclasses.dataclass(frozen=True)
class Moments:
    """An arm's metric as SQL gives it: count, sum and sum of squares."""

    n: int
    total: float
    squares: float

    @property
    def mean(self) -> float:
        return self.total / self.n

    @property
    def variance(self) -> float:
        """The sample variance (n - 1 in the denominator)."""
        if self.n < 2:
            return 0.0
        return max(0.0, (self.squares - self.total**2 / self.n) / (self.n - 1))


@dataclasses.dataclass(frozen=True)
class Lift:
    control: float
    value: float
    abs_lift: float
    abs_ci: tuple[float, float]
    rel_lift: float | None
    rel_ci: tuple[float, float] | None
    p_value: float


def welch(treated: Moments, control: Moments, *, alpha: float = 0.05) -> Lift:
    """Difference of means: Welch's t-test and interval (Welch-Satterthwaite degrees of
    freedom); the relative lift's interval by the delta method on the ratio of means,
    which carries the control's own uncertainty."""
    if treated.n < 2 or control.n < 2:
        raise ValueError("each arm needs at least two members")
    se_t, se_c = treated.variance / treated.n, control.variance / control.n
    diff = treated.mean - control.mean
    se = math.sqrt(se_t + se_c)
    if se == 0:
        p_value, half = (1.0 if diff == 0 else 0.0), 0.0
    else:
        df = (se_t + se_c) ** 2 / (
            (se_t**2 / (treated.n - 1) if se_t else 0) + (se_c**2 / (control.n - 1) if se_c else 0)
        )
        t = diff / se
        p_value = float(2 * stats.t.sf(abs(t), df))
        half = float(stats.t.ppf(1 - alpha / 2, df)) * se
    rel, rel_ci = None, None
    if control.mean != 0:
        ratio = treated.mean / control.mean
        # Var(a/b) ~ Var(a)/b^2 + a^2 Var(b)/b^4 for independent arms.
        rel_se = math.sqrt(se_t / control.mean**2 + treated.mean**2 * se_c / control.mean**4)
        z = float(stats.norm.ppf(1 - alpha / 2))
        rel = ratio - 1
        rel_ci = (rel - z * rel_se, rel + z * rel_se)
    return Lift(
        control=control.mean,
        value=treated.mean,
        abs_lift=diff,
        abs_ci=(diff - half, diff + half),
        rel_lift=rel,
        rel_ci=rel_ci,
        p_value=p_value,
    )


@dataclasses.dataclass(frozen=True)
class CoMoments:
    """An arm's metric y and its pre-period covariate x, as sums SQL gives."""

    n: int
    y: float
    x: float
    yy: float
    xx: float
    xy: float


def cuped_theta(arms: Sequence[CoMoments]) -> float:
    """theta = Cov(x, y) / Var(x), pooled over the arms (one theta for all keeps the
    estimator unbiased)."""
    n = sum(a.n for a in arms)
    sx, sy = sum(a.x for a in arms), sum(a.y for a in arms)
    cov = sum(a.xy for a in arms) - sx * sy / n
    var = sum(a.xx for a in arms) - sx * sx / n
    return cov / var if var > 0 else 0.0


def cuped(arm: CoMoments, theta: float, x_mean: float) -> Moments:
    """The arm's adjusted metric y - theta (x - mean x), as moments."""
    n = arm.n
    # sum of (y - theta x + theta m) and of its square, from the sums alone.
    shift = theta * x_mean
    total = arm.y - theta * arm.x + n * shift
    squares = (
        arm.yy
        + theta**2 * arm.xx
        + n * shift**2
        - 2 * theta * arm.xy
        + 2 * shift * arm.y
        - 2 * theta * shift * arm.x
    )
    return Moments(n, total, squares)


def variance_reduction(arms: Sequence[CoMoments]) -> float:
    """1 - Var(adjusted) / Var(y) over all arms: the share of variance CUPED removed
    (about rho^2, the squared correlation of y and x)."""
    n = sum(a.n for a in arms)
    sy, sx = sum(a.y for a in arms), sum(a.x for a in arms)
    var_y = sum(a.yy for a in arms) - sy * sy / n
    var_x = sum(a.xx for a in arms) - sx * sx / n
    cov = sum(a.xy for a in arms) - sx * sy / n
    if var_y <= 0 or var_x <= 0:
        return 0.0
    return cov * cov / (var_x * var_y)


@dataclasses.dataclass(frozen=True)
class SampleRatio:
    chi2: float
    p_value: float
    ok: bool


SRM_ALPHA = 0.001


def sample_ratio(counts: Sequence[int], weights: Sequence[float]) -> SampleRatio:
    """Chi-square of the arms' counts against the split they were meant to have; a
    mismatch (p < 0.001) means the assignment or the data is broken, not the effect."""
    total, weight = sum(counts), sum(weights)
    expected = [total * w / weight for w in weights]
    chi2, p_value = stats.chisquare(counts, expected)
    return SampleRatio(float(chi2), float(p_value), bool(p_value >= SRM_ALPHA))


def adjust(p_values: Sequence[float], method: str = "holm", alpha: float = 0.05) -> list[float]:
    """Adjusted p-values for several variants or metrics read together: "holm"
    (family-wise) or "fdr_bh" (Benjamini-Hochberg, false discovery rate)."""
    if method not in ("holm", "fdr_bh"):
        raise ValueError("method is holm or fdr_bh")
    if not p_values:
        return []
    return [float(p) for p in multipletests(list(p_values), alpha=alpha, method=method)[1]]


def always_valid_p(estimate: float, variance: float, tau2: float) -> float:
    """The mixture SPRT's p-value at one look (normal mixture N(0, tau2) over the
    effect; ``variance`` is the estimate's): 1 / Lambda, capped at 1. Taking the running
    minimum over looks gives p-values valid under continuous peeking."""
    if variance <= 0:
        return 1.0
    ratio = math.sqrt(variance / (variance + tau2))
    exponent = tau2 * estimate**2 / (2 * variance * (variance + tau2))
    if exponent > 700:  # Lambda overflows: the evidence is overwhelming
        return 0.0
    return min(1.0, 1 / (ratio * math.exp(exponent)))
