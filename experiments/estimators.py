"""Estimators on aggregates (never on per-member rows): means with Welch's test and a
delta-method relative lift, CUPED adjustment from sums of products, the
sample-ratio-mismatch test, multiple-testing corrections and the always-valid
(mixture SPRT) p-value for daily looks. Pure functions: plain numbers in and out.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np
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
    """An arm's metric y and its pre-period covariates x (a member's orders and spend in
    the 90 days before assignment), as the sums SQL gives: n, Σy, Σy², Σx, Σxxᵀ, Σxy."""

    n: int
    y: float
    yy: float
    x: tuple[float, ...]
    xx: tuple[tuple[float, ...], ...]
    xy: tuple[float, ...]


def _centred(arms: Sequence[CoMoments]) -> tuple[int, float, np.ndarray, np.ndarray, np.ndarray]:
    """Pooled over the arms: n, the centred Σ(y-ȳ)², Σ(x-x̄)(x-x̄)ᵀ, Σ(x-x̄)(y-ȳ), and x̄."""
    n = sum(a.n for a in arms)
    sy = sum(a.y for a in arms)
    sx = np.sum([a.x for a in arms], axis=0)
    syy = sum(a.yy for a in arms) - sy * sy / n
    sxx = np.sum([a.xx for a in arms], axis=0) - np.outer(sx, sx) / n
    sxy = np.sum([a.xy for a in arms], axis=0) - sx * sy / n
    return n, syy, sxx, sxy, sx / n


def cuped_theta(arms: Sequence[CoMoments]) -> np.ndarray:
    """θ = Σxx⁻¹ Σxy, pooled over the arms (one θ for all keeps the estimator
    unbiased: the covariates were fixed before assignment). Covariates without variance
    get no weight."""
    _, _, sxx, sxy, _ = _centred(arms)
    theta, *_ = np.linalg.lstsq(sxx, sxy, rcond=1e-12)
    return theta


def cuped(arm: CoMoments, theta: np.ndarray, x_mean: np.ndarray) -> Moments:
    """The arm's adjusted metric y - θ·(x - x̄), as moments, from the sums alone."""
    x, xx, xy = np.asarray(arm.x), np.asarray(arm.xx), np.asarray(arm.xy)
    shift = float(theta @ x_mean)
    linear = arm.y - float(theta @ x)
    total = linear + arm.n * shift
    squares = (
        arm.yy
        - 2 * float(theta @ xy)
        + float(theta @ xx @ theta)
        + 2 * shift * linear
        + arm.n * shift**2
    )
    return Moments(arm.n, total, squares)


def variance_reduction(arms: Sequence[CoMoments]) -> float:
    """1 - Var(adjusted) / Var(y) over all arms: the share of variance CUPED removed
    (R², which is ρ² for one covariate)."""
    _, syy, sxx, sxy, _ = _centred(arms)
    if syy <= 0:
        return 0.0
    theta, *_ = np.linalg.lstsq(sxx, sxy, rcond=1e-12)
    return float(max(0.0, min(1.0, theta @ sxy / syy)))


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
    if method == "holm":
        # statsmodels' holm runs gc.collect() on every call, a second on a busy
        # process: the step-down is a running maximum of (m - rank) p, written out.
        p = np.asarray(p_values, dtype=float)
        order = np.argsort(p, kind="stable")
        steps = (len(p) - np.arange(len(p))) * p[order]
        adjusted = np.empty_like(p)
        adjusted[order] = np.minimum(1.0, np.maximum.accumulate(steps))
        return [float(v) for v in adjusted]
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
