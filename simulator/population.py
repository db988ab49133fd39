"""Who the virtual members are: traits drawn once per member, from the seed.

Everything here is a numpy array indexed by member number (0..N-1), so that a million
members take tens of megabytes. Profiles (name, phone, birthday) are made on demand,
a batch at a time, from the member's number: the same seed gives the same people.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

import numpy as np

from members.errors import InvalidField
from members.fields import normalise_phone
from simulator.params import SPRING_FESTIVAL, Params

SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何林高罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘蒋蔡余杜叶程"
GIVEN = "伟芳娜敏静丽强磊洋艳勇军杰娟涛明超霞平刚辉玲桂英华建国红梅鹏飞雪婷浩宇欣然子涵思雨嘉怡一诺"
# Mobile prefixes of the three mainland carriers; every 8-digit tail is a valid number.
CN_PREFIXES = [
    "130",
    "131",
    "132",
    "133",
    "134",
    "135",
    "136",
    "137",
    "138",
    "139",
    "150",
    "151",
    "152",
    "153",
    "155",
    "156",
    "157",
    "158",
    "159",
    "166",
    "176",
    "177",
    "178",
    "180",
    "181",
    "182",
    "183",
    "184",
    "185",
    "186",
    "187",
    "188",
    "189",
    "191",
    "198",
    "199",
]
ABROAD_PREFIXES = {
    "HK": ("+852", "5 6 9", 7),
    "SG": ("+65", "8 9", 7),
    "US": ("+1", "415 650 646", 7),
}
# A multiplier coprime to 10**8: member number -> 8-digit tail is one-to-one.
_SPREAD = 48_271
ENGAGED, DRIFTING, LAPSED = 0, 1, 2


@dataclasses.dataclass
class Traits:
    """What each member is like; fixed for life."""

    joined: np.ndarray  # float64 days since the first simulated day (negative: before it)
    rate: np.ndarray  # float32 orders a day when engaged
    login: np.ndarray  # float32 chance of a login on a day when engaged
    order_value: np.ndarray  # float32 median order value (yuan)
    category: np.ndarray  # int8 index into params.population.categories
    region: np.ndarray  # int16 index into params.population.regions
    price: np.ndarray  # bool: price-sensitive (else service-sensitive)
    app: np.ndarray  # bool: has the app
    checkin: np.ndarray  # bool: checks in for points
    sms: np.ndarray  # bool: consent to marketing SMS at joining
    push: np.ndarray  # bool
    personalised: np.ndarray  # bool: accepts automated marketing (PIPL art. 24)
    cross_border: np.ndarray  # bool
    looks: np.ndarray  # int64: picks the name and the push token
    born: np.ndarray  # int32: birthday, days after 1965-01-01

    @property
    def size(self) -> int:
        return len(self.joined)


def draw(params: Params, members: int, days: int, start: dt.date, seed: int) -> Traits:
    rng = np.random.default_rng([seed, 0])
    pop, buy = params.population, params.purchases
    categories = list(pop.categories)
    shares = np.array([pop.categories[c] for c in categories], dtype=float)
    weights = np.array([r.weight for r in pop.regions], dtype=float)
    category = rng.choice(len(categories), members, p=shares / shares.sum()).astype(np.int8)
    median = np.array([buy.order_value[c] for c in categories], dtype=np.float32)
    # Rates: gamma across members (the heterogeneity of BG/NBD's purchase process);
    # logins follow purchases loosely: keen buyers open the app more.
    rate = rng.gamma(buy.rate_shape, buy.rate_mean / buy.rate_shape, members)
    keenness = np.clip(rate / max(buy.rate_mean, 1e-9), 0.2, 3) ** 0.4
    login = np.clip(rng.beta(2, 2, members) * 2 * params.engagement.login_mean * keenness, 0, 1)
    app = rng.random(members) < pop.app_user_share
    return Traits(
        joined=join_days(params, members, days, start, rng),
        rate=rate.astype(np.float32),
        login=login.astype(np.float32),
        order_value=(median[category] * rng.lognormal(0, 0.25, members)).astype(np.float32),
        category=category,
        region=rng.choice(len(weights), members, p=weights / weights.sum()).astype(np.int16),
        price=rng.random(members) < pop.price_sensitive_share,
        app=app,
        checkin=rng.random(members) < params.engagement.checkin_share,
        sms=rng.random(members) < pop.consent_sms,
        push=app & (rng.random(members) < pop.consent_push),
        personalised=rng.random(members) >= pop.refuse_personalised,
        cross_border=rng.random(members) < pop.cross_border_consent,
        looks=rng.integers(0, 1 << 62, members),
        born=rng.integers(0, 40 * 365, members).astype(np.int32),
    )


def season(params: Params, start: dt.date, days: int) -> np.ndarray:
    """The relative level of joins and purchases on each day (1 = an ordinary day)."""
    dates = [start + dt.timedelta(days=d) for d in range(days)]
    level = np.ones(days)
    for peak in params.joining.peaks:
        centres = []
        for year in {d.year for d in dates} | {dates[0].year - 1, dates[-1].year + 1}:
            if peak.month == 0:
                festival = SPRING_FESTIVAL.get(year)
                if festival:
                    centres.append(festival + dt.timedelta(days=peak.day))
            else:
                day = min(peak.day, 28) if peak.month == 2 else min(peak.day, 30 + peak.month % 2)
                centres.append(dt.date(year, peak.month, day))
        for centre in centres:
            offset = np.array([(d - centre).days for d in dates], dtype=float)
            level += peak.height * np.exp(-0.5 * (offset / peak.width_days) ** 2)
    return np.clip(level, 0.05, None)


def join_days(
    params: Params, members: int, days: int, start: dt.date, rng: np.random.Generator
) -> np.ndarray:
    """When each member joined, in days from the first day (with a fraction: the time)."""
    joining = params.joining
    before = rng.binomial(members, joining.initial_share) if days else members
    earlier = -rng.uniform(0, joining.initial_age_days, before)
    level = season(params, start, days) if days else np.ones(1)
    day = rng.choice(len(level), members - before, p=level / level.sum())
    # Joins happen in waking hours: the fraction of the day follows the diurnal curve.
    during = day + time_of_day(rng, members - before)
    joined = np.concatenate([earlier, during])
    return np.sort(joined)  # member numbers in joining order


# Hours at which members act (their own local time): evenings and lunchtime.
_HOURLY = np.array(
    [1, 0.5, 0.3, 0.2, 0.2, 0.4, 1, 2, 3, 4, 4.5, 5, 6, 5, 4.5, 4.5, 5, 5, 5.5, 6.5, 8, 8.5, 6, 3]
)


def time_of_day(rng: np.random.Generator, n: int) -> np.ndarray:
    """Fractions of a day at which things happen, following members' waking hours."""
    hours = rng.choice(24, n, p=_HOURLY / _HOURLY.sum())
    return (hours + rng.random(n)) / 24


def profile(params: Params, traits: Traits, index: int, seed: int) -> dict:
    """The profile the shop would send for member ``index``: name, phone, birthday..."""
    region = params.population.regions[traits.region[index]]
    looks = int(traits.looks[index])
    given = GIVEN[looks % len(GIVEN)]
    if looks >> 20 & 7 < 5:  # two-character given names are the more common
        given += GIVEN[(looks >> 8) % len(GIVEN)]
    name = SURNAMES[(looks >> 24) % len(SURNAMES)] + given
    birthday = dt.date(1965, 1, 1) + dt.timedelta(days=int(traits.born[index]))
    fields = {
        "name": name,
        "phone": phone(region.country, index, seed),
        "timezone": region.timezone,
        "region": region.name,
        "birthday": birthday,
        "attributes": {
            "sensitivity": "price" if traits.price[index] else "service",
            "favourite_category": list(params.population.categories)[traits.category[index]],
        },
    }
    if traits.app[index]:
        fields["push_token"] = f"sim-{seed}-{index}-{looks:x}"
    return fields


def phone(country: str, index: int, seed: int) -> str:
    """A valid mobile number in E.164, different for every member of a run."""
    tail = (index * _SPREAD + seed * 7_919) % 10**8
    if country == "CN":
        return f"+86{CN_PREFIXES[index % len(CN_PREFIXES)]}{tail:08d}"
    code, prefixes, digits = ABROAD_PREFIXES[country]
    options = prefixes.split()
    for attempt in range(50):
        prefix = options[(index + attempt) % len(options)]
        number = f"{code}{prefix}{(tail + attempt * 104_729) % 10**digits:0{digits}d}"
        try:
            return normalise_phone(number)
        except InvalidField:
            continue
    raise AssertionError(f"no valid {country} number for member {index}")  # pragma: no cover
