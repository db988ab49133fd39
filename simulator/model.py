"""How the virtual members behave, a day at a time, and how they react to Tenure.

Each member is engaged, drifting or lapsed (a BG/NBD-like "alive or not", with a
warning phase so that the at-risk rule has a signal):

- an engaged member orders at their own rate (gamma across members) times the season,
  and logs in most days;
- every day without an order an engaged member may start to drift away, with a hazard
  that rises with the days since their last order; a drifting member orders and logs
  in less, and either orders again (and is engaged) or lapses;
- a lapsed member neither orders nor logs in, and comes back only rarely, more often
  with a coupon in hand.

What Tenure does changes these rates by the sizes in ``params.Effects``. To know the
*true* effect of an experiment or a journey, the model keeps twins: for every member
an experiment assigns, one twin per other arm, given that arm's package instead; for
every member a journey treats, one twin the journey left alone. A twin lives through
the same luck as its member (the same random numbers, day by day) and gets everything
else Tenure did to the member; it writes no events. Comparing members with their twins
gives the effect each estimate should recover.

Time is counted in days (float) from programme midnight of the first simulated day.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterable
from zoneinfo import ZoneInfo

import numpy as np
from scipy.stats import poisson

from simulator import population
from simulator.params import Params
from simulator.population import DRIFTING, ENGAGED, LAPSED, Traits

NEVER = -1e9
# Event types as small integers in the arrays; names as the ingest API knows them.
EVENT_TYPES = ("order", "login", "app_open", "checkin", "review", "share", "refund")
ORDER, LOGIN, APP_OPEN, CHECKIN, REVIEW, SHARE, REFUND = range(len(EVENT_TYPES))
COUPON_REDEEMED = len(EVENT_TYPES)  # written with the coupon's code
REFERRAL = COUPON_REDEEMED + 1
TYPE_NAMES = (*EVENT_TYPES, "coupon_redeemed", "referral")
# Draws shared by a member and their twins (common random numbers), per day.
_SHARED = 5
# A member's messages in the last 7 days above which another one annoys.
CAP_PER_WEEK = 3


@dataclasses.dataclass
class Events:
    """Events waiting to reach Tenure: columns of equal length, sorted by time."""

    member: np.ndarray
    kind: np.ndarray
    time: np.ndarray
    amount: np.ndarray
    category: np.ndarray
    ref: np.ndarray  # an order's number, a coupon's index in Membership.codes, or 0

    @classmethod
    def empty(cls) -> Events:
        return cls(
            np.zeros(0, np.int64),
            np.zeros(0, np.int8),
            np.zeros(0, np.float64),
            np.zeros(0, np.float32),
            np.zeros(0, np.int8),
            np.zeros(0, np.int64),
        )

    def __len__(self) -> int:
        return len(self.time)

    def columns(self) -> tuple[np.ndarray, ...]:
        return tuple(getattr(self, f.name) for f in dataclasses.fields(self))

    def take(self, index) -> Events:
        return Events(*(column[index] for column in self.columns()))

    def merge(self, other: Events) -> Events:
        joined = Events(
            *(np.concatenate([a, b]) for a, b in zip(self.columns(), other.columns(), strict=True))
        )
        return joined.take(np.argsort(joined.time, kind="stable"))

    def split(self, until: float) -> tuple[Events, Events]:
        """(those that happened by ``until``, the rest)."""
        cut = int(np.searchsorted(self.time, until, side="right"))
        return self.take(slice(0, cut)), self.take(slice(cut, None))


@dataclasses.dataclass
class Twin:
    """A member's counterfactual double for one cohort (an experiment or a journey)."""

    row: int
    excludes: frozenset[str]  # the sources whose grants and messages it does not get


@dataclasses.dataclass
class Entry:
    """A member entering a cohort: the rows whose orders tell each arm's outcome."""

    cohort: str  # "experiment:<key>" or "journey:<key>"
    member: int
    at: float
    window: float  # days after ``at`` that count
    arm: str  # the arm the member is really in
    rows: dict[str, int]  # arm -> row (the member's own row for ``arm``)


class Membership:
    """The state of every member (and twin), and the day's behaviour."""

    def __init__(
        self,
        params: Params,
        traits: Traits,
        start: dt.date,
        days: int,
        seed: int,
        zone: str = "Asia/Shanghai",
    ):
        self.params, self.traits, self.start, self.days, self.seed = (
            params,
            traits,
            start,
            days,
            seed,
        )
        self.zone = zone
        n = traits.size
        self.size = n  # rows in use: the members, then their twins
        self.season = population.season(params, start, max(days, 1) + 30)
        rng = np.random.default_rng([seed, 4])
        # Members already there on the first day: their state in that moment.
        before = traits.joined < 0
        state = np.full(n, ENGAGED, np.int8)
        draw = rng.random(n)
        state[before & (draw < 0.35)] = LAPSED
        state[before & (draw >= 0.35) & (draw < 0.45)] = DRIFTING
        last = np.where(before, -rng.uniform(1, 75, n), NEVER)
        last[before & (state == LAPSED)] -= rng.uniform(
            60, 300, int((before & (state == LAPSED)).sum())
        )
        self.origin = np.arange(n, dtype=np.int64)
        self.state = state
        self.last_order = last
        self.coupon_until = np.full(n, NEVER)
        self.coupon_threshold = np.zeros(n, np.float32)
        self.multiplier_until = np.full(n, NEVER)
        self.service_until = np.full(n, NEVER)
        self.shipping_until = np.full(n, NEVER)
        self.attention_until = np.full(n, NEVER)
        self.live_until = np.full(n, np.inf)  # twins stop when their window ends
        self.orders_of: dict[int, list[float]] = {}  # rows whose order times are kept
        self.codes: list[str] = [""]  # coupon codes, by index; 0 is none
        self.coupon_code = np.zeros(n, np.int64)
        self.twins: dict[int, list[Twin]] = {}
        self.entries: list[Entry] = []
        self.recent_messages: dict[int, list[float]] = {}
        self.serial = 0  # orders numbered across the run
        self._today = (np.zeros(0, np.int64), np.zeros(0))  # today's orders: rows, times
        self._shifts: tuple[int | None, np.ndarray] = (None, np.zeros(0))

    @property
    def members(self) -> int:
        return self.traits.size

    # -- a day of behaviour

    def step(self, day: int) -> Events:
        """Live through ``day``: the members' events, for Tenure to take in."""
        p, t = self.params, self.traits
        n = self.members
        rng = np.random.default_rng([self.seed, 5, day])
        shared = rng.random((_SHARED, n))
        hour = population.time_of_day(rng, n)
        live = slice(0, self.size)
        rows = np.flatnonzero(
            (t.joined[self.origin[live]] < day + 1) & (self.live_until[live] > day)
        )
        o = self.origin[rows]
        u_order, u_hazard, u_lapse, u_return, u_login = (shared[k, o] for k in range(_SHARED))
        price = t.price[o]
        state = self.state[rows]
        fx = p.effects
        # Members who join today are there for the rest of it only.
        joined = t.joined[o]
        share_of_day = np.clip(day + 1 - np.maximum(joined, day), 0, 1)

        def by(effect) -> np.ndarray:
            return np.where(price, effect.price, effect.service)

        lift = np.ones(len(rows))
        lift *= 1 + np.where(self.coupon_until[rows] > day, by(fx.coupon_purchase_lift), 0)
        lift *= 1 + np.where(self.multiplier_until[rows] > day, by(fx.multiplier_purchase_lift), 0)
        lift *= 1 + np.where(self.attention_until[rows] > day, fx.message_purchase_lift, 0)
        level = np.select([state == ENGAGED, state == DRIFTING], [1.0, p.churn.drift_purchase], 0.0)
        mean = t.rate[o] * self.season[day] * lift * level * share_of_day
        orders = poisson.ppf(u_order, mean).astype(np.int64)
        orders[mean <= 0] = 0
        # Lapsed members come back rarely by themselves, more with a coupon.
        back = np.where(self.coupon_until[rows] > day, by(fx.coupon_return_daily), 0)
        back = (state == LAPSED) & (u_return < p.churn.return_daily + back)
        orders[back] = np.maximum(orders[back], 1)
        # Drifting: the hazard rises with the days since the last order; services and
        # free shipping hold members back.
        since = day - np.floor(np.maximum(self.last_order[rows], joined))
        hazard = p.churn.base_hazard * (1 + p.churn.recency_slope * np.clip(since, 0, 365) / 30)
        hazard *= 1 - np.where(self.service_until[rows] > day, by(fx.service_churn_reduction), 0)
        hazard *= 1 - np.where(
            self.shipping_until[rows] > day, by(fx.free_shipping_churn_reduction), 0
        )
        new_state = state.copy()
        new_state[(state == ENGAGED) & (orders == 0) & (u_hazard < hazard)] = DRIFTING
        new_state[(state == DRIFTING) & (orders == 0) & (u_lapse < 1 / p.churn.drift_days)] = LAPSED
        new_state[orders > 0] = ENGAGED
        self.state[rows] = new_state

        login_level = np.select(
            [state == ENGAGED, state == DRIFTING], [1.0, p.churn.drift_login], p.churn.lapsed_login
        )
        logged_in = (u_login < t.login[o] * login_level * share_of_day) | (orders > 0)

        # Order times: the member's hour of the day, shared with their twins; values
        # are drawn for each row.
        has = np.flatnonzero(orders)
        order_rows = np.repeat(rows[has], orders[has])
        start_of = np.repeat(np.maximum(joined[has], day), orders[has])
        span = day + 1 - start_of
        # The same hour for a member and their twins (the k-th order of the day later).
        nth = np.arange(len(order_rows)) - np.repeat(
            np.cumsum(orders[has]) - orders[has], orders[has]
        )
        times = start_of + span * ((hour[self.origin[order_rows]] + 0.37 * nth) % 1)
        times = np.maximum(times - self._zone_shift(day, order_rows), start_of)
        order_o = self.origin[order_rows]
        value = t.order_value[order_o] * rng.lognormal(
            0, p.purchases.order_value_spread, len(order_rows)
        )
        value = value.astype(np.float32)
        # 满减: with a coupon in hand, members top their basket up to its threshold.
        holding = self.coupon_until[order_rows] > times
        first = np.zeros(len(order_rows), bool)
        first[np.unique(order_rows, return_index=True)[1]] = True
        uses = holding & first & (rng.random(len(order_rows)) < 0.85)
        value[uses] = np.maximum(
            value[uses],
            self.coupon_threshold[order_rows[uses]] * (1 + 0.15 * rng.random(int(uses.sum()))),
        )
        used_rows = order_rows[uses]
        codes = self.coupon_code[used_rows].copy()
        self.coupon_until[used_rows] = NEVER
        self.coupon_code[used_rows] = 0
        np.maximum.at(self.last_order, order_rows, times)
        self._today = (order_rows, times)
        for row, at in zip(order_rows.tolist(), times.tolist(), strict=True):
            kept = self.orders_of.get(row)
            if kept is not None:
                kept.append(at)

        # Only members (not twins) write events.
        real = order_rows < n
        events = [self._orders(rng, order_o[real], times[real], value[real])]
        # A coupon Tenure granted names its code; one without a code writes nothing.
        used = uses & real
        used_codes = codes[real[uses]]
        coded = used_codes > 0
        events.append(self._coupons(order_o[used][coded], times[used][coded], used_codes[coded]))
        login_o = o[logged_in & (rows < n)]
        events.extend(self._visits(rng, login_o, day))
        merged = Events.empty()
        for batch in events:
            merged = merged.merge(batch)
        return merged

    def _orders(self, rng, members, times, value) -> Events:
        p = self.params.purchases
        k = len(members)
        categories = len(self.params.population.categories)
        category = np.where(
            rng.random(k) < p.other_category,
            rng.integers(0, categories, k),
            self.traits.category[members],
        ).astype(np.int8)
        serial = self.serial + np.arange(1, k + 1)
        self.serial += k
        out = Events(members, np.full(k, ORDER, np.int8), times, value, category, serial)
        extra = []
        for kind, chance, delay in (
            (REVIEW, p.review, (0.1, 3)),
            (SHARE, p.share, (0.0, 0.2)),
            (REFUND, p.refund, (1, 7)),
        ):
            pick = rng.random(k) < chance
            m = int(pick.sum())
            later = times[pick] + rng.uniform(*delay, m)
            amount = value[pick] if kind == REFUND else np.zeros(m, np.float32)
            extra.append(
                Events(
                    members[pick],
                    np.full(m, kind, np.int8),
                    later,
                    amount,
                    category[pick],
                    serial[pick],
                )
            )
        for batch in extra:
            out = out.merge(batch)
        return out

    def _coupons(self, members, times, codes) -> Events:
        k = len(members)
        return Events(
            members,
            np.full(k, COUPON_REDEEMED, np.int8),
            times + 1e-6,
            np.zeros(k, np.float32),
            np.zeros(k, np.int8),
            codes,
        ).take(np.argsort(times, kind="stable"))

    def _visits(self, rng, members, day: int) -> list[Events]:
        t, e = self.traits, self.params.engagement
        out = []
        start = np.maximum(t.joined[members], day)
        at = start + (day + 1 - start) * population.time_of_day(rng, len(members))
        at = np.maximum(at - self._zone_shift(day, members), start)
        # App users mostly come through the app; the others log in on the web shop.
        opens = t.app[members] & (rng.random(len(members)) < e.app_open)
        out.append(self._plain(members[~opens], LOGIN, at[~opens], day))
        out.append(self._plain(members[opens], APP_OPEN, at[opens], day))
        checks = t.checkin[members] & (rng.random(len(members)) < 0.7)
        out.append(self._plain(members[checks], CHECKIN, at[checks] + 2e-5, day))
        return out

    @staticmethod
    def _plain(members, kind, times, day: int) -> Events:
        """Visits: one of a kind a member a day, numbered by the day."""
        k = len(members)
        order = np.argsort(times, kind="stable")
        return Events(
            members[order],
            np.full(k, kind, np.int8),
            times[order],
            np.zeros(k, np.float32),
            np.full(k, -1, np.int8),
            np.full(k, day, np.int64),
        )

    def _zone_shift(self, day: int, rows: np.ndarray) -> np.ndarray:
        """Days by which each member's clock is ahead of the programme's on ``day``."""
        shifts = self.zone_shifts(day)
        return shifts[self.traits.region[self.origin[rows]]]

    def zone_shifts(self, day: int) -> np.ndarray:
        """Per region, on ``day``: the same for every member and message of the day."""
        if self._shifts[0] != day:
            self._shifts = (day, self._zone_shifts(day))
        return self._shifts[1]

    def _zone_shifts(self, day: int) -> np.ndarray:
        date = self.start + dt.timedelta(days=day, hours=12)
        programme = ZoneInfo(self.zone)
        noon = dt.datetime.combine(date, dt.time(12), programme)
        base = noon.utcoffset().total_seconds()
        return np.array(
            [
                (noon.astimezone(ZoneInfo(r.timezone)).utcoffset().total_seconds() - base) / 86400
                for r in self.params.population.regions
            ]
        )

    def local_hour(self, member: int, at: float) -> float:
        day = int(np.floor(at))
        return ((at + self.zone_shifts(day)[self.traits.region[member]]) % 1) * 24

    # -- what Tenure does

    def grant(
        self,
        member: int,
        kind: str,
        at: float,
        *,
        until: float | None,
        threshold: float = 0,
        code: str | None = None,
        sources: Iterable[str] = (),
    ) -> None:
        """A benefit Tenure granted to ``member``: to them and to their twins."""
        for row in self._rows_for(member, sources):
            self._give(row, kind, at, until, threshold, code if row == member else None)

    def _give(self, row, kind, at, until, threshold, code) -> None:
        fx = self.params.effects
        if kind == "coupon":
            self.coupon_until[row] = until if until is not None else at + 30
            self.coupon_threshold[row] = threshold
            if code:
                self.codes.append(code)
                self.coupon_code[row] = len(self.codes) - 1
        elif kind == "multiplier":
            self.multiplier_until[row] = max(self.multiplier_until[row], until or at + 7)
        elif kind == "service":
            self.service_until[row] = max(self.service_until[row], at + fx.service_days)
        elif kind == "free_shipping":
            self.shipping_until[row] = max(self.shipping_until[row], until or at + 30)

    def ordered(self, member: int, at: float, sources: Iterable[str] = ()) -> None:
        """An order the member placed in answer to Tenure (a points reminder)."""
        for row in self._rows_for(member, sources):
            self.state[row] = ENGAGED
            self.last_order[row] = max(self.last_order[row], at)
            kept = self.orders_of.get(row)
            if kept is not None:
                kept.append(at)

    def message(self, member: int, at: float, sources: Iterable[str] = ()) -> None:
        """A marketing message reached ``member``: attention for two days."""
        for row in self._rows_for(member, sources):
            self.attention_until[row] = max(self.attention_until[row], at + 2)

    def annoyed(self, member: int, at: float, draw: float) -> bool:
        """Whether this message makes the member withdraw consent: more likely at night
        and above a few messages a week."""
        fx = self.params.effects
        recent = [t for t in self.recent_messages.get(member, []) if t > at - 7]
        recent.append(at)
        self.recent_messages[member] = recent
        hour = self.local_hour(member, at)
        chance = fx.annoyance_withdrawal
        if hour >= 21 or hour < 8:
            chance = max(chance, fx.quiet_hours_withdrawal)
        if len(recent) > CAP_PER_WEEK:
            chance = max(chance, fx.over_cap_withdrawal)
        return draw < chance

    def _rows_for(self, member: int, sources: Iterable[str]) -> list[int]:
        tags = set(sources)
        rows = [member]
        rows.extend(twin.row for twin in self.twins.get(member, ()) if not tags & twin.excludes)
        return rows

    # -- twins

    def enter(
        self,
        cohort: str,
        member: int,
        at: float,
        window: float,
        arm: str,
        others: dict[str, Iterable[tuple[str, dict]]],
        excludes: Iterable[str],
    ) -> None:
        """``member`` entered ``cohort`` in ``arm``; make a twin for each of the ``others``
        arms, given that arm's benefits (kind, fields) at ``at``, and not the ``excludes``
        sources' later grants and messages."""
        rows = {arm: member}
        # Today's orders after ``at`` were decided before the treatment: every arm has them.
        today_rows, today_times = self._today
        later = today_times[(today_rows == member) & (today_times > at)].tolist()
        if member not in self.orders_of:
            self.orders_of[member] = later.copy()
        for other, benefits in others.items():
            row = self._clone(member, at + window)
            self.twins.setdefault(member, []).append(Twin(row, frozenset(excludes)))
            for kind, fields in benefits:
                self._give(row, kind, at, fields.get("until"), fields.get("threshold", 0), None)
            self.orders_of[row] = later.copy()
            rows[other] = row
        self.entries.append(Entry(cohort, member, at, window, arm, rows))

    def _clone(self, member: int, until: float) -> int:
        if self.size == len(self.origin):
            grow = max(1024, self.size // 2)
            for name in _ROW_ARRAYS:
                array = getattr(self, name)
                setattr(self, name, np.concatenate([array, np.zeros(grow, array.dtype)]))
        row = self.size
        self.size += 1
        for name in _ROW_ARRAYS:
            array = getattr(self, name)
            array[row] = array[member]
        self.live_until[row] = until
        self.coupon_code[row] = 0  # a twin redeems no real coupon
        return row

    def outcome(self, entry: Entry, arm: str, until: float) -> bool | None:
        """Whether the ``arm`` row ordered within the entry's window (None: still open
        at ``until``)."""
        end = entry.at + entry.window
        if end > until:
            return None
        return self.ordered_between(entry.rows[arm], entry.at, end)

    def ordered_between(self, row: int, start: float, stop: float) -> bool:
        """Whether the row (a tracked member or a twin) ordered in (start, stop]."""
        return any(start < t <= stop for t in self.orders_of.get(row, []))


_ROW_ARRAYS = (
    "origin",
    "state",
    "last_order",
    "coupon_until",
    "coupon_threshold",
    "multiplier_until",
    "service_until",
    "shipping_until",
    "attention_until",
    "live_until",
    "coupon_code",
)
