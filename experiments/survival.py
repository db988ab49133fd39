"""Time to next purchase by arm, from counts per day (never from per-member rows):
Kaplan-Meier curves with pointwise intervals, the k-sample log-rank test and the
restricted mean. Pure functions: plain numbers in, frozen dataclasses out.

Days. SQL gives, per arm and whole day d = floor(days since assignment) >= 0, the
members whose first order after assignment fell on day d (events) and the members
still without one whose follow-up, min(as_of - assigned_at, max_days), ends on day d
(censored). Both are put at time t = d + 1, the day counted from 1, so S(t) is the
share of members with no order by the end of day t and S(0) = 1. Members censored on
day t count as at risk for the orders of day t (events before censoring at a tie).

The interval is Greenwood's variance on the log(-log S) scale: the cloglog transform
statsmodels uses for ``SurvfuncRight.quantile_ci``. SurvfuncRight's ``freq_weights``
would give the same S from the counts but not Greenwood's standard error (its
weighted branch returns Tsiatis' standard error of the cumulative hazard), hence the
direct computation; the tests check both against SurvfuncRight and ``survdiff`` on
the expanded per-member rows.
"""

from __future__ import annotations

import bisect
import dataclasses
import itertools
from collections import Counter
from collections.abc import Iterable, Mapping

import numpy as np
from scipy import stats


@dataclasses.dataclass(frozen=True)
class Grouped:
    """An arm as SQL gives it: per day d (from 0), first orders and censorings."""

    days: tuple[int, ...]
    events: tuple[int, ...]
    censored: tuple[int, ...]

    def __post_init__(self) -> None:
        if not len(self.days) == len(self.events) == len(self.censored):
            raise ValueError("days, events and censored differ in length")
        if self.days and (
            self.days[0] < 0 or any(b <= a for a, b in itertools.pairwise(self.days))
        ):
            raise ValueError("days are >= 0 and strictly increasing")
        if any(
            e < 0 or c < 0 or e + c == 0 for e, c in zip(self.events, self.censored, strict=True)
        ):
            raise ValueError("each day's counts are >= 0 and not both 0")

    @classmethod
    def from_rows(cls, rows: Iterable[tuple[int, int, int]]) -> Grouped:
        """From (day, events, censored) rows in any order; a repeated day's counts are
        summed and days without members dropped."""
        events: Counter[int] = Counter()
        censored: Counter[int] = Counter()
        for day, e, c in rows:
            # int(): SQL's SUM may come back as a Decimal.
            events[int(day)] += int(e)
            censored[int(day)] += int(c)
        days = sorted(d for d in events if events[d] or censored[d])
        return cls(tuple(days), tuple(events[d] for d in days), tuple(censored[d] for d in days))

    @property
    def members(self) -> int:
        return sum(self.events) + sum(self.censored)


@dataclasses.dataclass(frozen=True)
class Curve:
    """The Kaplan-Meier estimate at the days t (from 1) with orders: S just after t,
    its pointwise interval and the members at risk just before t. ``follow_up`` is the
    longest follow-up: the estimate says nothing beyond it."""

    days: tuple[int, ...]
    survival: tuple[float, ...]
    lower: tuple[float, ...]
    upper: tuple[float, ...]
    at_risk: tuple[int, ...]
    follow_up: int

    def at(self, day: float) -> float:
        """S(day): the share with no order by the end of that day (1 before the first
        order's day, the last value after the last)."""
        steps = bisect.bisect_right(self.days, day)
        return self.survival[steps - 1] if steps else 1.0

    @property
    def median(self) -> int | None:
        """The first day with S <= 0.5 (None if S stays above it)."""
        return next((d for d, s in zip(self.days, self.survival, strict=True) if s <= 0.5), None)


def kaplan_meier(arm: Grouped, *, alpha: float = 0.05) -> Curve:
    """Kaplan-Meier from the arm's counts per day, with the 1 - alpha pointwise
    log(-log) interval: Var(log S) by Greenwood, sum d / (n (n - d)). Where S falls to 0
    (every member at risk ordered that day) the interval is undefined: NaN. An arm
    without orders gives a curve without steps (S = 1 throughout); an arm without
    members is a ValueError."""
    if arm.members == 0:
        raise ValueError("the arm has no members")
    events = np.asarray(arm.events)
    leaving = events + np.asarray(arm.censored)
    at_risk = np.cumsum(leaving[::-1])[::-1]
    hit = events > 0
    d, n = events[hit].astype(float), at_risk[hit]
    survival = np.cumprod(1 - d / n)
    z = stats.norm.ppf(1 - alpha / 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        spread = z * np.sqrt(np.cumsum(d / (n * (n - d)))) / -np.log(survival)
    return Curve(
        days=tuple((np.asarray(arm.days)[hit] + 1).tolist()),
        survival=tuple(survival.tolist()),
        lower=tuple((survival ** np.exp(spread)).tolist()),
        upper=tuple((survival ** np.exp(-spread)).tolist()),
        at_risk=tuple(n.tolist()),
        follow_up=arm.days[-1] + 1,
    )


@dataclasses.dataclass(frozen=True)
class LogRank:
    chi2: float
    df: int
    p_value: float


def log_rank(arms: Mapping[str, Grouped]) -> LogRank:
    """The k-sample log-rank test from the arms' counts per day: at each day with
    orders, observed minus expected orders per arm and their hypergeometric covariance;
    chi2 = (O - E)' V^- (O - E) on arms - 1 degrees of freedom. An arm never at risk on
    a day that tells arms apart (say, all censored on day 0 before any order) adds
    nothing and is left out, with its degree of freedom; fewer than two arms left, or
    an arm without members, is a ValueError."""
    if len(arms) < 2:
        raise ValueError("the log-rank test compares two or more arms")
    if any(arm.members == 0 for arm in arms.values()):
        raise ValueError("an arm has no members")
    days = sorted(set().union(*(arm.days for arm in arms.values())))
    column = {day: i for i, day in enumerate(days)}
    events = np.zeros((len(arms), len(days)))
    leaving = np.zeros((len(arms), len(days)))
    for row, arm in enumerate(arms.values()):
        columns = [column[day] for day in arm.days]
        events[row, columns] = arm.events
        leaving[row, columns] = np.add(arm.events, arm.censored)
    at_risk = np.cumsum(leaving[:, ::-1], axis=1)[:, ::-1]
    n, d = at_risk.sum(axis=0), events.sum(axis=0)
    # Days where everyone at risk orders (n = d) add nothing to O - E nor to V.
    informative = (d > 0) & (n > d)
    at_risk, n, d = at_risk[:, informative], n[informative], d[informative]
    share = at_risk / n
    weight = d * (n - d) / (n - 1)
    observed_minus_expected = (events[:, informative] - share * d).sum(axis=1)
    covariance = np.diag(share @ weight) - (share * weight) @ share.T
    # An arm at risk on none of these days, or only alone, has O - E = 0 and a zero row in V.
    kept = np.flatnonzero(((at_risk > 0) & (at_risk < n)).any(axis=1))
    if len(kept) < 2:
        raise ValueError("no day with orders has two arms at risk: nothing to compare")
    # V has rank arms - 1 (its rows sum to 0): drop one arm, the test does not change.
    u = observed_minus_expected[kept[1:]]
    chi2 = float(u @ np.linalg.solve(covariance[np.ix_(kept[1:], kept[1:])], u))
    df = len(kept) - 1
    return LogRank(chi2, df, float(stats.chi2.sf(chi2, df)))


def restricted_mean(curve: Curve, horizon: float) -> float:
    """The restricted mean time to next purchase, E[min(T, horizon)] in days: the area
    under S from 0 to horizon, an order on day d counting as d + 1 days. The horizon is
    at most the curve's follow-up (beyond it S is unknown)."""
    if not 0 < horizon <= curve.follow_up:
        raise ValueError(f"the horizon is in (0, {curve.follow_up}], the follow-up")
    steps = bisect.bisect_right(curve.days, horizon)
    knots = (0, *curve.days[:steps], horizon)
    levels = (1.0, *curve.survival[:steps])
    return sum(s * (b - a) for s, (a, b) in zip(levels, itertools.pairwise(knots), strict=True))
