"""Power, sample size and minimum detectable effect at design time, for each way of
reading an experiment on a retention rate (30% of members order again within 90 days).

Before the start the marketer chooses how results will be read:

- ``fixed``: one look at the end, the two-sided z-test at level alpha;
- ``group_sequential``: K planned looks with O'Brien-Fleming boundaries
  c_k = C / sqrt(t_k), C chosen so that the overall type I error is exactly alpha;
- ``always_valid``: the mixture SPRT (:func:`experiments.estimators.always_valid_p`),
  read every day; valid under any amount of peeking, at a price in power.

Each is a set of two-sided boundaries on the z statistics Z_1..Z_K at the information
fractions t_1 < ... < t_K = 1, the standardised values of a Brownian motion with drift:
corr(Z_i, Z_j) = sqrt(t_i / t_j) and E Z_k = drift * sqrt(t_k), where ``drift`` is the
mean of the final statistic (the effect over its standard error at the end). The
probability of crossing is computed, not simulated, by the recursive numerical
integration of Armitage, McPherson and Rowe (1969) laid out in Jennison and Turnbull,
*Group Sequential Methods* (2000), chapter 19; here with composite Gauss-Legendre
panels, accurate to about 1e-12.

Sample size: a mode needs the drift at which it rejects with the target power. With a
share s_t of the audience treated and s_c in control, N members enrolled and rates p1 =
p0 (1 + mde) and p0, the difference of the rates has variance
V = p1 (1 - p1) / (N s_t) + p0 (1 - p0) / (N s_c), so drift = (p1 - p0) / sqrt(V) and

    N = drift^2 (p1 (1 - p1) / s_t + p0 (1 - p0) / s_c) / (p1 - p0)^2,

which for the fixed design is the textbook n with drift = z_{1-alpha/2} + z_{power}
(here solved with both tails counted, as statsmodels does). A member's outcome is known
``horizon_days`` after assignment, so the looks run from the end of the first window:
with a steady inflow, daily looks are one per day of enrolment, equally spaced in
information. Pure functions: plain numbers in and out.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
from collections.abc import Sequence

import numpy as np
from scipy import optimize, stats
from scipy.special import ndtr

MODES = ("fixed", "group_sequential", "always_valid")
MAX_LOOKS = 20  # O'Brien-Fleming designs
MAX_DAILY_LOOKS = 1000  # the integration's cost grows as looks^1.5
GROUP_SEQUENTIAL_LOOKS = 5  # when a design does not say
# Daily looks beyond this are computed as this many evenly spread looks: the power
# rises by a fraction of a point from 100 looks to 1000, so the figure errs a little
# on the side of asking for more members, and a page answers in a second, not ten.
COMPUTED_DAILY_LOOKS = 100

# Composite Gauss-Legendre panels two standard deviations of a step wide, and normal
# densities cut beyond nine (a tail of 1e-19): accurate to about 1e-12.
_NODES, _WEIGHTS = np.polynomial.legendre.leggauss(8)
_PANEL = 2.0
_REACH = 9.0


def obrien_fleming(
    looks: int, alpha: float = 0.05, fractions: Sequence[float] | None = None
) -> tuple[float, ...]:
    """Two-sided O'Brien-Fleming critical values c_k = C / sqrt(t_k) of |Z_k|, with C such
    that the probability under H0 of crossing at any look is alpha. ``fractions`` are the
    information fractions of the looks, equally spaced (k / K) by default."""
    _check_looks(looks, MAX_LOOKS)
    _check_alpha(alpha)
    t = _equally_spaced(looks) if fractions is None else _check_fractions(fractions, looks)
    constant = _obf_constant(t, alpha)
    return tuple(constant / math.sqrt(f) for f in t)


@functools.cache
def _obf_constant(fractions: tuple[float, ...], alpha: float) -> float:
    if len(fractions) == 1:
        return float(stats.norm.isf(alpha / 2))

    def excess(constant: float) -> float:
        boundaries = [constant / math.sqrt(f) for f in fractions]
        return crossing_power(boundaries, fractions, 0.0) - alpha

    # The last look alone spends alpha at C = z_{alpha/2}; Bonferroni bounds C above.
    low, high = stats.norm.isf(alpha / 2), stats.norm.isf(alpha / (2 * len(fractions)))
    return optimize.brentq(excess, low, high, xtol=1e-13)


def crossing_power(boundaries: Sequence[float], fractions: Sequence[float], drift: float) -> float:
    """The probability that |Z_k| >= boundaries[k] at some look, when the final statistic
    has mean ``drift`` (at fraction t the mean is drift * sqrt(t)).

    The recursion follows S(t) = sqrt(t) Z(t), a Brownian motion with drift: the density of
    S at each look among the paths still running, on a grid between the boundaries, is
    carried to the next look by the normal density of the independent increment."""
    t = np.asarray(_check_fractions(fractions, len(boundaries)))
    if min(boundaries) <= 0:
        raise ValueError("boundaries must be positive")
    edge = np.asarray(boundaries, dtype=float) * np.sqrt(t)  # on the scale of S
    step = np.diff(t, prepend=0.0)
    sd = np.sqrt(step)
    x, mass = np.zeros(1), np.ones(1)  # S(0) = 0
    crossed = 0.0
    for k in range(len(t)):
        mean = x + drift * step[k]
        crossed += mass @ (ndtr((mean - edge[k]) / sd[k]) + ndtr((-edge[k] - mean) / sd[k]))
        if k + 1 == len(t):
            break
        # Paths beyond nine standard deviations of S(t_k) carry no mass worth keeping.
        low = max(-edge[k], drift * t[k] - _REACH * math.sqrt(t[k]))
        high = min(edge[k], drift * t[k] + _REACH * math.sqrt(t[k]))
        if low >= high:  # every path has crossed
            break
        nodes, weights = _grid(low, high, _PANEL * min(sd[k], sd[k + 1]))
        x, mass = nodes, weights * _carry(mass, mean, nodes, sd[k])
    return float(crossed)


def _grid(low: float, high: float, width: float) -> tuple[np.ndarray, np.ndarray]:
    """Composite Gauss-Legendre nodes and weights on [low, high], panels at most ``width``."""
    panels = max(1, math.ceil((high - low) / width))
    edges = np.linspace(low, high, panels + 1)
    half = np.diff(edges)[:, None] / 2
    return (edges[:-1, None] + half * (1 + _NODES)).ravel(), (half * _WEIGHTS).ravel()


def _carry(mass: np.ndarray, mean: np.ndarray, nodes: np.ndarray, sd: float) -> np.ndarray:
    """sum_j mass_j phi((node_i - mean_j) / sd) / sd, over the j within reach of each node
    (``mean`` is sorted): a banded matrix product, without the band's zeros."""
    first = np.searchsorted(mean, nodes - _REACH * sd)
    counts = np.searchsorted(mean, nodes + _REACH * sd) - first
    rows = np.repeat(np.arange(len(nodes)), counts)
    cols = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts - first, counts)
    density = np.exp(-0.5 * ((nodes[rows] - mean[cols]) / sd) ** 2) / (sd * math.sqrt(2 * math.pi))
    return np.bincount(rows, density * mass[cols], minlength=len(nodes))


def inflation(looks: int, alpha: float = 0.05, power: float = 0.8) -> float:
    """How many times the fixed design's members an O'Brien-Fleming design with ``looks``
    equally spaced looks needs for the same power: the ratio of the drifts, squared."""
    _check_looks(looks, MAX_LOOKS)
    _check_alpha(alpha)
    _check_power(power, alpha)
    sequential = _drift_needed("group_sequential", looks, alpha, power)
    return (sequential / _drift_needed("fixed", 1, alpha, power)) ** 2


def always_valid_boundaries(looks: int, alpha: float, tau2_ratio: float) -> tuple[float, ...]:
    """The |Z_k| at which the mixture SPRT rejects, at ``looks`` equally spaced looks.

    With v_k the estimate's variance at look k (v_K / t_k) and the mixture N(0, tau2) over
    the effect, Lambda_k = sqrt(v_k / (v_k + tau2)) exp(tau2 est_k^2 / (2 v_k (v_k + tau2)))
    reaches 1 / alpha when

        Z_k^2 = (1 + v_k / tau2) (2 log(1 / alpha) + log(1 + tau2 / v_k)),

    and v_k / tau2 = 1 / (tau2_ratio t_k), with tau2_ratio = tau2 / v_K. The choice of
    tau2 (the default the calculator uses): the planned effect squared, tau2 = (p0 mde)^2
    (:attr:`Design.tau2`), so that tau2_ratio is the square of the drift at the MDE; for
    the fixed design's sample at alpha 0.05 and power 0.8 that is 2.80^2 = 7.85."""
    _check_looks(looks, MAX_DAILY_LOOKS)
    _check_alpha(alpha)
    if tau2_ratio <= 0:
        raise ValueError(f"tau2_ratio must be positive, got {tau2_ratio}")
    return tuple(
        math.sqrt(
            (1 + 1 / (tau2_ratio * t)) * (2 * math.log(1 / alpha) + math.log1p(tau2_ratio * t))
        )
        for t in _equally_spaced(looks)
    )


def always_valid_power(drift: float, looks: int, alpha: float, tau2_ratio: float) -> float:
    """The probability that the mixture SPRT rejects by the last of ``looks`` equally
    spaced looks when the true effect is ``drift`` standard errors of the final estimate
    (see :func:`always_valid_boundaries` for tau2_ratio)."""
    boundaries = always_valid_boundaries(looks, alpha, tau2_ratio)
    return crossing_power(boundaries, _equally_spaced(looks), drift)


def _mode_power(mode: str, looks: int, alpha: float, drift: float) -> float:
    """The power of reading in ``mode``, the mixture centred on the effect powered for."""
    if mode == "always_valid":
        return always_valid_power(drift, looks, alpha, drift**2)
    return crossing_power(obrien_fleming(looks, alpha), _equally_spaced(looks), drift)


def _drift_needed(mode: str, looks: int, alpha: float, power: float) -> float:
    def shortfall(drift: float) -> float:
        return _mode_power(mode, looks, alpha, drift) - power

    # Sequential readings need more than the fixed design's drift, never less.
    low = 0.0 if mode != "always_valid" else _drift_needed("fixed", 1, alpha, power)
    high = low + 1
    while shortfall(high) < 0:
        low, high = high, 2 * high
    return optimize.brentq(shortfall, low, high, xtol=1e-12)


_LIMITS = {"fixed": 1, "group_sequential": MAX_LOOKS, "always_valid": MAX_DAILY_LOOKS}


@dataclasses.dataclass(frozen=True, kw_only=True)
class Design:
    """An experiment on a retention rate as planned.

    ``baseline`` is the control's rate p0, ``mde`` the relative lift to detect (0.10 for
    +10%); ``treated_share`` and ``control_share`` are the shares of the audience in each
    arm (0.45 and 0.45 with a 10% holdout); ``members_per_day`` is the audience's daily
    inflow and ``horizon_days`` the retention window. ``looks``: the planned looks of a
    group-sequential reading (5 by default); for an always-valid one, one a day of
    enrolment by default; a fixed reading has one."""

    baseline: float
    mde: float
    members_per_day: float
    horizon_days: int
    treated_share: float = 0.5
    control_share: float = 0.5
    alpha: float = 0.05
    power: float = 0.8
    mode: str = "fixed"
    looks: int | None = None

    def __post_init__(self) -> None:
        _check_rate(self.baseline)
        if self.mde <= 0 or self.treated_rate >= 1:
            raise ValueError("mde must be positive, with baseline * (1 + mde) below 1")
        _check_alpha(self.alpha)
        _check_power(self.power, self.alpha)
        if min(self.treated_share, self.control_share) <= 0:
            raise ValueError("each arm needs a positive share of the audience")
        if self.treated_share + self.control_share > 1 + 1e-12:
            raise ValueError("the arms' shares of the audience add up to more than 1")
        if self.members_per_day <= 0:
            raise ValueError(f"members_per_day must be positive, got {self.members_per_day}")
        if self.horizon_days < 0:
            raise ValueError(f"horizon_days must not be negative, got {self.horizon_days}")
        _check_mode(self.mode)
        if self.looks is not None:
            _check_looks(self.looks, _LIMITS[self.mode])

    @property
    def treated_rate(self) -> float:
        return self.baseline * (1 + self.mde)

    @property
    def tau2(self) -> float:
        """The mixture variance for the always-valid reading (what the analysis passes to
        :func:`experiments.estimators.always_valid_p`): the planned effect, squared."""
        return (self.baseline * self.mde) ** 2


def members_needed(design: Design) -> tuple[float, float]:
    """Members (treated, control) the design's reading needs for its power at the MDE,
    unrounded: the fixed design's N of the module docstring, times :func:`inflation` for a
    group-sequential reading, and for an always-valid one the N at which its power (daily
    looks over an enrolment of that N) reaches the target."""
    audience = _audience_needed(design, design.mode)
    return audience * design.treated_share, audience * design.control_share


def _audience_needed(design: Design, mode: str) -> float:
    """Members enrolled (both arms and the rest of the audience) ``mode`` needs."""
    if mode != "always_valid":
        looks = _looks(design, mode, 0.0)  # the audience sets only daily looks
        return _audience(design, _drift_needed(mode, looks, design.alpha, design.power))

    def shortfall(audience: float) -> float:
        return _power(design, mode, audience) - design.power

    # Power rises with the members and with the looks their enrolment brings.
    low = _audience_needed(design, "fixed")
    high = 2 * low
    while shortfall(high) < 0:
        low, high = high, 2 * high
    return optimize.brentq(shortfall, low, high, xtol=1e-9, rtol=1e-12)


def _power(design: Design, mode: str, audience: float) -> float:
    drift = (design.treated_rate - design.baseline) * math.sqrt(audience / _unit_variance(design))
    return _mode_power(mode, _looks(design, mode, audience), design.alpha, drift)


def _audience(design: Design, drift: float) -> float:
    return _unit_variance(design) * (drift / (design.treated_rate - design.baseline)) ** 2


def _unit_variance(design: Design) -> float:
    """N times the variance of the difference of the rates, N members enrolled."""
    p1, p0 = design.treated_rate, design.baseline
    return p1 * (1 - p1) / design.treated_share + p0 * (1 - p0) / design.control_share


def _looks(design: Design, mode: str, audience: float) -> int:
    if mode == "fixed":
        return 1
    if mode == design.mode and design.looks is not None:
        return design.looks
    if mode == "group_sequential":
        return GROUP_SEQUENTIAL_LOOKS
    return min(_days(design, audience), COMPUTED_DAILY_LOOKS)


def _days(design: Design, audience: float) -> int:
    return max(1, math.ceil(audience / design.members_per_day))


@dataclasses.dataclass(frozen=True)
class Cost:
    """One way of reading, against one look at the end: its power at the fixed design's
    sample, the members it needs for the target power, and their ratio to the fixed
    design's (1.3 reads "30% more members")."""

    mode: str
    power: float
    n_treated: float
    n_control: float
    inflation: float


def power_cost(design: Design) -> tuple[Cost, ...]:
    """The three modes (in ``MODES`` order) at the design's MDE, alpha and power; the
    group-sequential one with the design's looks if it is one, else 5, the always-valid
    one with daily looks unless the design says otherwise."""
    fixed = _audience_needed(design, "fixed")
    costs = []
    for mode in MODES:
        audience = _audience_needed(design, mode)
        costs.append(
            Cost(
                mode=mode,
                power=_power(design, mode, fixed),
                n_treated=audience * design.treated_share,
                n_control=audience * design.control_share,
                inflation=audience / fixed,
            )
        )
    return tuple(costs)


@dataclasses.dataclass(frozen=True)
class Plan:
    """The design's members (rounded up), looks and calendar: enrolment, then the last
    enrolled members' retention window."""

    n_treated: int
    n_control: int
    looks: int
    days_enrolling: int
    days_total: int
    costs: tuple[Cost, ...]


def days_needed(design: Design) -> Plan:
    """Days of enrolment at ``members_per_day`` to reach the members the design needs,
    plus ``horizon_days`` for the last window to close, with :func:`power_cost`."""
    audience = _audience_needed(design, design.mode)
    days = _days(design, audience)
    return Plan(
        n_treated=math.ceil(audience * design.treated_share),
        n_control=math.ceil(audience * design.control_share),
        looks=_looks(design, design.mode, audience),
        days_enrolling=days,
        days_total=days + design.horizon_days,
        costs=power_cost(design),
    )


def mde(
    baseline: float,
    n_treated: float,
    n_control: float,
    alpha: float = 0.05,
    power: float = 0.8,
    mode: str = "fixed",
    looks: int | None = None,
) -> float:
    """The smallest relative lift of the rate ``baseline`` that reading in ``mode``
    detects with ``power`` given the members of each arm: the inverse of
    :func:`members_needed`. ``looks`` as in :class:`Design`, required when always-valid."""
    _check_rate(baseline)
    if min(n_treated, n_control) <= 0:
        raise ValueError("each arm needs members")
    _check_alpha(alpha)
    _check_power(power, alpha)
    _check_mode(mode)
    if looks is None:
        if mode == "always_valid":
            raise ValueError("an always-valid reading needs its number of looks")
        looks = 1 if mode == "fixed" else GROUP_SEQUENTIAL_LOOKS
    _check_looks(looks, _LIMITS[mode])
    drift = _drift_needed(mode, looks, alpha, power)

    def shortfall(rate: float) -> float:
        variance = rate * (1 - rate) / n_treated + baseline * (1 - baseline) / n_control
        return (rate - baseline) / math.sqrt(variance) - drift

    # The standardised difference rises with the treated rate up to rate 1.
    if shortfall(1.0) < 0:
        raise ValueError("no lift is detectable with so few members")
    return optimize.brentq(shortfall, baseline, 1.0, xtol=1e-14) / baseline - 1


def _equally_spaced(looks: int) -> tuple[float, ...]:
    return tuple(k / looks for k in range(1, looks + 1))


def _check_fractions(fractions: Sequence[float], looks: int) -> tuple[float, ...]:
    t = tuple(float(f) for f in fractions)
    if not t or len(t) != looks:
        raise ValueError(f"{looks} looks need {looks} information fractions, got {len(t)}")
    if t[-1] != 1 or t[0] <= 0 or any(b <= a for a, b in itertools.pairwise(t)):
        raise ValueError("information fractions must increase strictly in (0, 1], ending at 1")
    return t


def _check_looks(looks: int, most: int) -> None:
    if not 1 <= looks <= most:
        raise ValueError(f"looks must be in 1..{most}, got {looks}")


def _check_alpha(alpha: float) -> None:
    if not 0 < alpha < 0.5:
        raise ValueError(f"alpha must be in (0, 0.5), got {alpha}")


def _check_power(power: float, alpha: float) -> None:
    if not alpha < power < 1:
        raise ValueError(f"power must be in (alpha, 1), got {power}")


def _check_rate(rate: float) -> None:
    if not 0 < rate < 1:
        raise ValueError(f"the baseline rate must be in (0, 1), got {rate}")


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"mode is one of {', '.join(MODES)}, got {mode!r}")
