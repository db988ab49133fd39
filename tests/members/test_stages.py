"""Stage rules: validation that names the field, and SQL that agrees with a plain Python
reading of the rules for any features and any valid rules."""

import dataclasses
import datetime as dt
import random
from decimal import Decimal

import pytest
from sqlalchemy import select

from members import stages
from members.errors import InvalidFields
from members.lifecycle import MemberFeatures, Stage
from members.member import Member
from members.stages import StageRules

AS_OF = dt.datetime(2026, 11, 23, 12, 0, tzinfo=dt.UTC)


def _errors(**changes):
    document = {**StageRules().as_dict(), **changes}
    with pytest.raises(InvalidFields) as caught:
        stages.parse(document)
    return caught.value.errors


def test_the_defaults_are_valid_and_round_trip():
    rules = StageRules()
    assert stages.parse(rules.as_dict()) == rules
    assert rules.as_dict()["precedence"] == ["vip", "at_risk", "active", "new", "dormant"]


@pytest.mark.parametrize(
    ("changes", "field", "words"),
    [
        ({"dormant_days": 45}, "dormant_days", "30 to 44 days old would have no stage"),
        ({"active_days": 20, "at_risk_days": 10}, "dormant_days", "no stage"),
        ({"lapsed_days": 30}, "lapsed_days", "deep end of dormant"),
        ({"at_risk_days": 30}, "at_risk_days", "no member could be at risk"),
        ({"new_days": -1}, "new_days", "must not be negative"),
        ({"new_days": 0}, "new_days", "at least 1 day"),
        ({"active_days": "30"}, "active_days", "whole number"),
        ({"active_days": 30.5}, "active_days", "whole number"),
        ({"vip_top_percent": True}, "vip_top_percent", "whole number"),
        ({"vip_top_percent": 60}, "vip_top_percent", "at most 50"),
        ({"at_risk_visit_percent": 101}, "at_risk_visit_percent", "at most 100"),
        ({"lapsed_days": None}, "lapsed_days", "required"),
        ({"colour": "red"}, "colour", "unknown setting"),
        ({"precedence": ["vip", "active", "new", "dormant"]}, "precedence", "at_risk missing"),
        (
            {"precedence": ["vip", "vip", "active", "new", "dormant"]},
            "precedence",
            "at_risk missing",
        ),
        (
            {"precedence": ["vip", "at_risk", "active", "new", "dormant", "vip"]},
            "precedence",
            "vip twice",
        ),
        ({"precedence": ["vip", "lapsed", "active", "new", "dormant"]}, "precedence", "'lapsed'"),
        ({"precedence": "vip,active"}, "precedence", "must list the stages"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_bad_rules_name_the_field(changes, field, words):
    errors = _errors(**changes)
    assert field in errors
    assert words in errors[field]


def test_a_missing_document_names_every_field():
    with pytest.raises(InvalidFields) as caught:
        stages.parse({})
    assert set(caught.value.errors) == {*stages.NUMBERS, "precedence"}


def reference(rules: StageRules, f: dict, threshold) -> Stage:
    """The rules as DOMAIN.md states them, one member at a time."""
    since = f["days_since_last_order"]
    bought_within = since is not None and since < rules.active_days
    visits_fell = f["logins_14d"] / 14 < rules.at_risk_visit_percent / 100 * (
        f["logins_prev_42d"] / 42
    )
    matches = {
        Stage.VIP: threshold is not None and f["spend_365d"] > max(threshold, 0),
        Stage.AT_RISK: bought_within and since >= rules.at_risk_days and visits_fell,
        Stage.ACTIVE: bought_within,
        Stage.NEW: f["days_since_joined"] < rules.new_days
        and f["lifetime_orders"] <= rules.new_max_orders,
        Stage.DORMANT: since is None or since >= rules.dormant_days,
    }
    winner = next(stage for stage in rules.precedence if matches[stage])
    if winner is Stage.DORMANT:
        lapsed = (since if since is not None else f["days_since_joined"]) >= rules.lapsed_days
        return Stage.LAPSED if lapsed else Stage.DORMANT
    return winner


def _random_rules(rng: random.Random) -> StageRules:
    active = rng.randint(2, 60)
    precedence = list(stages.RANKED)
    rng.shuffle(precedence)
    dormant = rng.randint(1, active)
    return StageRules(
        new_days=rng.randint(1, 60),
        new_max_orders=rng.randint(0, 3),
        active_days=active,
        at_risk_days=rng.randint(0, active - 1),
        at_risk_visit_percent=rng.randint(0, 100),
        dormant_days=dormant,
        lapsed_days=rng.randint(dormant + 1, 200),
        vip_top_percent=rng.randint(0, 50),
        precedence=tuple(precedence),
    )


def _random_features(rng: random.Random) -> dict:
    since = rng.choice([None, rng.randint(0, 250)])
    orders = 0 if since is None else rng.randint(1, 6)
    return {
        "days_since_last_order": since,
        "days_since_joined": rng.randint(0 if since is None else since, 400),
        "lifetime_orders": orders,
        "spend_365d": Decimal(rng.choice([0, rng.randint(1, 5000)])),
        "logins_14d": rng.randint(0, 10),
        "logins_prev_42d": rng.randint(0, 30),
    }


def test_sql_agrees_with_the_reference_for_any_valid_rules(session):
    rng = random.Random(5)
    rows = []
    for i in range(150):
        member = Member(external_id=f"s-{i}", joined_at=AS_OF)
        session.add(member)
        session.flush()
        values = _random_features(rng)
        session.add(MemberFeatures(member_id=member.id, computed_at=AS_OF, **values))
        rows.append((member.id, values))
    session.flush()
    for _ in range(25):
        rules = stages.parse(_random_rules(rng).as_dict())
        threshold = stages.vip_threshold(session, rules)
        stage = stages.expression(rules, threshold)
        got = dict(session.execute(select(MemberFeatures.member_id, stage)).all())
        for member_id, values in rows:
            assert Stage(got[member_id]) == reference(rules, values, threshold), (rules, values)
        counts = stages.preview(session, rules)
        assert sum(counts.values()) == len(rows)


def test_vip_is_the_top_share_by_365_day_spend(session):
    for i in range(40):
        member = Member(external_id=f"v-{i}", joined_at=AS_OF)
        session.add(member)
        session.flush()
        spend = Decimal(100 * i)  # 0, 100, ... 3900
        session.add(MemberFeatures(member_id=member.id, computed_at=AS_OF, spend_365d=spend))
    session.flush()
    rules = StageRules()
    assert stages.vip_threshold(session, rules) == Decimal(3500)  # the top 4 of 40 exceed it
    assert stages.preview(session, rules)[Stage.VIP] == 4
    top_fifth = dataclasses.replace(rules, vip_top_percent=20)
    assert stages.preview(session, top_fifth)[Stage.VIP] == 8
    none = dataclasses.replace(rules, vip_top_percent=0)
    assert stages.vip_threshold(session, none) is None
    assert stages.preview(session, none)[Stage.VIP] == 0


def test_save_versions_the_rules_in_the_audit_log(session):
    from members.audit import AuditEntry

    assert stages.load(session) == (StageRules(), 0)
    changed = dataclasses.replace(StageRules(), at_risk_days=15)
    assert stages.save(session, changed, actor="user:a@shop.example", now=AS_OF).version == 1
    assert stages.save(session, changed, actor="user:a@shop.example", now=AS_OF) is None
    assert stages.load(session) == (changed, 1)
    entry = session.scalars(
        select(AuditEntry).where(AuditEntry.action == "stage_rules.update")
    ).one()
    assert entry.details["before"] is None
    assert entry.details["after"]["at_risk_days"] == 15


def test_the_top_tier_switch_must_be_a_boolean():
    assert "vip_top_tier" in _errors(vip_top_tier="yes")
    assert stages.parse({**StageRules().as_dict(), "vip_top_tier": True}).vip_top_tier is True
