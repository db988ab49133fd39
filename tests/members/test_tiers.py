"""The tier ladder: validation that names the field, promotion, grace and demotion in
the lifecycle run, and what a member needs to reach the next level."""

import dataclasses
import datetime as dt
from decimal import Decimal

import pytest
from sqlalchemy import select

from members import lifecycle_run, tiers
from members.errors import InvalidFields
from members.lifecycle import MemberFeatures, TierChange, Trigger
from members.member import Member
from members.tiers import DEFAULT_LADDER, Level, TierLadder
from tests import factories

T0 = dt.datetime(2026, 11, 23, 12, 0, tzinfo=dt.UTC)
DAY = dt.timedelta(days=1)


def _errors(document):
    with pytest.raises(InvalidFields) as caught:
        tiers.parse(document)
    return caught.value.errors


def _doc(**changes):
    return {**DEFAULT_LADDER.as_dict(), **changes}


def _levels(*changes):
    """The default levels, the first ones changed."""
    levels = DEFAULT_LADDER.as_dict()["levels"]
    for index, change in enumerate(changes):
        levels[index] = {**levels[index], **change}
    return levels


def test_the_default_ladder_is_valid_and_round_trips():
    assert tiers.parse(DEFAULT_LADDER.as_dict()) == DEFAULT_LADDER
    names = [(lv.name_zh, lv.name_en) for lv in DEFAULT_LADDER.levels]
    assert names == [("银卡", "Silver"), ("金卡", "Gold"), ("钻石卡", "Diamond")]


@pytest.mark.parametrize(
    ("document", "field", "words"),
    [
        (_doc(levels=_levels()[:2]), "levels", "3 to 5 levels"),
        (_doc(levels=_levels() * 2), "levels", "3 to 5 levels"),
        (
            _doc(levels=_levels({}, {}, {"min_spend": "1500"})),
            "levels.2.min_spend",
            "more than 2000",
        ),
        (_doc(levels=_levels({}, {}, {"min_orders": 6})), "levels.2.min_orders", "more than 6"),
        (_doc(levels=_levels({"min_orders": 1})), "levels.0", "leave its thresholds empty"),
        (
            _doc(
                levels=_levels(
                    {}, {"min_spend": None, "min_orders": None, "min_contributions": None}
                )
            ),
            "levels.1",
            "at least one way in",
        ),
        (_doc(levels=_levels({}, {"key": "silver"})), "levels.1.key", "already the key"),
        (_doc(levels=_levels({}, {"key": "Gold Card"})), "levels.1.key", "lower-case"),
        (_doc(levels=_levels({}, {"name_zh": " "})), "levels.1.name_zh", "required"),
        (_doc(levels=_levels({}, {"min_spend": "-5"})), "levels.1.min_spend", "at least 0"),
        (_doc(levels=_levels({}, {"min_spend": "lots"})), "levels.1.min_spend", "at least 0"),
        (_doc(levels=_levels({}, {"min_orders": 2.5})), "levels.1.min_orders", "whole number"),
        (_doc(levels=_levels({}, {"colour": "gold"})), "levels.1.colour", "unknown"),
        (_doc(window_days=60), "window_days", "30, 90, 365"),
        (_doc(grace_days=-1), "grace_days", "0 to 3650"),
        (_doc(levels="silver,gold"), "levels", "3 to 5 levels"),
    ],
    ids=lambda v: v if isinstance(v, str) and "." not in v else None,
)
def test_bad_ladders_name_the_field(document, field, words):
    errors = _errors(document)
    assert field in errors, errors
    assert words in errors[field]


def _member(session, name):
    member = Member(external_id=name, joined_at=T0 - 400 * DAY)
    session.add(member)
    session.flush()
    return member


def _order(session, member, days_ago, amount, type_="order"):
    factories.event(session, member, type_, T0 - days_ago * DAY, amount, received_at=T0)


def _tiers(session):
    session.expire_all()
    return dict(session.execute(select(Member.external_id, Member.tier)).all())


MONTHLY = TierLadder(
    levels=(
        Level("silver", "银卡", "Silver"),
        Level("gold", "金卡", "Gold", Decimal(2000), 6, None),
        Level("diamond", "钻石卡", "Diamond", Decimal(8000), None, 10),
    ),
    window_days=30,
    grace_days=30,
)


@pytest.fixture
def ladder(session):
    tiers.save(session, MONTHLY, actor="test", now=T0)
    return MONTHLY


def test_members_are_placed_by_spend_orders_or_contributions(session, ladder):
    _order(session, _member(session, "big-spender"), 5, "2500")
    frequent = _member(session, "frequent")
    for day in range(6):
        _order(session, frequent, day + 1, "10")
    reviewer = _member(session, "reviewer")
    for day in range(10):
        _order(session, reviewer, day + 1, None, "review")
    _order(session, _member(session, "old-spender"), 40, "9000")  # outside the window
    _member(session, "nothing-yet")
    session.flush()
    result = lifecycle_run.run(session, now=T0, full=True)
    assert _tiers(session) == {
        "big-spender": "gold",
        "frequent": "gold",
        "reviewer": "diamond",
        "old-spender": "silver",
        "nothing-yet": "silver",
    }
    assert result.tiers_entered == {"gold": 2, "diamond": 1, "silver": 2}
    changes = session.scalars(select(TierChange)).all()
    assert {c.from_tier for c in changes} == {None} and len(changes) == 5
    triggers = session.scalars(select(Trigger).where(Trigger.kind == "tier.changed")).all()
    assert sorted(t.value for t in triggers) == ["diamond", "gold", "gold", "silver", "silver"]
    assert lifecycle_run.run(session, now=T0, full=True).tiers_entered == {}


def test_falling_short_starts_a_grace_period_then_demotes(session, ladder):
    gold = _member(session, "gold")
    _order(session, gold, 5, "2500")
    session.flush()
    lifecycle_run.run(session, now=T0, full=True)
    # 26 days on, the order is 31 days old: gold no longer qualifies, but keeps its tier.
    later = T0 + 26 * DAY
    lifecycle_run.run(session, now=later, full=True)
    session.expire_all()
    assert gold.tier == "gold" and gold.tier_grace_until == later + 30 * DAY
    grace = session.scalars(select(Trigger).where(Trigger.kind == "tier.grace_started")).one()
    assert (grace.member_id, grace.value, grace.at) == (gold.id, "gold", later)
    # Nothing more happens while the grace lasts; an incremental run finds its end.
    lifecycle_run.run(session, now=later + 10 * DAY, full=True)
    assert _tiers(session)["gold"] == "gold"
    end = later + 30 * DAY
    result = lifecycle_run.run(session, now=end + dt.timedelta(minutes=5))
    assert result.kind.value == "incremental" and result.tiers_entered == {"silver": 1}
    session.expire_all()
    assert (
        gold.tier == "silver" and gold.tier_grace_until is None and gold.tier_since == result.as_of
    )
    moves = session.scalars(select(TierChange).order_by(TierChange.id)).all()
    assert [(c.from_tier, c.to_tier) for c in moves] == [(None, "gold"), ("gold", "silver")]


def test_qualifying_again_during_grace_ends_it(session, ladder):
    gold = _member(session, "gold")
    _order(session, gold, 5, "2500")
    session.flush()
    lifecycle_run.run(session, now=T0, full=True)
    later = T0 + 26 * DAY
    lifecycle_run.run(session, now=later, full=True)
    _order(session, gold, -26, "2100")  # bought again on that day
    session.flush()
    lifecycle_run.run(session, now=later + dt.timedelta(hours=1), full=True)
    session.expire_all()
    assert gold.tier == "gold" and gold.tier_grace_until is None


def test_a_ladder_without_grace_demotes_at_once_and_a_removed_level_is_replaced(session):
    tiers.save(session, dataclasses.replace(MONTHLY, grace_days=0), actor="test", now=T0)
    gold = _member(session, "gold")
    _order(session, gold, 5, "2500")
    session.flush()
    lifecycle_run.run(session, now=T0, full=True)
    lifecycle_run.run(session, now=T0 + 26 * DAY, full=True)
    assert _tiers(session)["gold"] == "silver"
    renamed = dataclasses.replace(
        MONTHLY, levels=(Level("member", "会员", "Member"), *MONTHLY.levels[1:])
    )
    tiers.save(session, renamed, actor="test", now=T0)
    lifecycle_run.run(session, now=T0 + 27 * DAY, full=True)
    assert _tiers(session)["gold"] == "member"


def test_what_a_member_needs_for_the_next_tier(session):
    features = MemberFeatures(spend_365d=Decimal("1500.00"), orders_365d=4, contributions_365d=25)
    silver = tiers.next_tier(DEFAULT_LADDER, "silver", features)
    assert silver.level.key == "gold"
    assert (silver.spend_more, silver.orders_more, silver.contributions_more) == (
        Decimal("500.00"),
        2,
        0,
    )
    assert tiers.next_tier(DEFAULT_LADDER, "gold", features).spend_more == Decimal("6500.00")
    assert tiers.next_tier(DEFAULT_LADDER, "diamond", features) is None
    # No tier yet (before the first run): the next is the entry level, asking nothing.
    entry = tiers.next_tier(DEFAULT_LADDER, None, None)
    assert entry.level.key == "silver" and entry.spend_more is None


def test_the_top_tier_can_make_a_member_vip(session, ladder):
    from members import stages
    from members.lifecycle import Stage

    reviewer = _member(session, "reviewer")  # diamond by contributions, spends nothing
    for day in range(10):
        _order(session, reviewer, day + 1, None, "review")
    for i in range(9):
        _order(session, _member(session, f"buyer-{i}"), 3, str(100 * (i + 1)))
    session.flush()
    lifecycle_run.run(session, now=T0, full=True)
    session.expire_all()
    assert reviewer.tier == "diamond" and reviewer.stage is Stage.LAPSED  # never bought
    rules = stages.StageRules(vip_top_tier=True)
    stages.save(session, rules, actor="t", now=T0)
    assert stages.preview(session, rules, "diamond")[Stage.VIP] == 2  # and the top spender
    lifecycle_run.run(session, now=T0, full=True)
    session.expire_all()
    assert reviewer.stage is Stage.VIP


def test_qualifying_again_clears_a_grace_left_from_before(session, ladder):
    gold = _member(session, "gold")
    _order(session, gold, 5, "2500")
    session.flush()
    tiers.save(session, dataclasses.replace(MONTHLY, grace_days=0), actor="t", now=T0)
    lifecycle_run.run(session, now=T0, full=True)
    gold.tier_grace_until = T0 - DAY  # as a ladder with grace once left it
    session.flush()
    lifecycle_run.run(session, now=T0 + dt.timedelta(minutes=5), full=True)
    session.expire_all()
    assert gold.tier == "gold" and gold.tier_grace_until is None
