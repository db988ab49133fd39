"""The dry run walks a member through every kind of step without writing anything, and
takes the path the engine takes; an experiment split assigns by the experiment's hash,
stickily, and the engine follows the variant's exit."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from sqlalchemy import func, select

from experiments import assignment, manage
from experiments.models import Assignment, Experiment, ExperimentStatus, Variant
from journeys import control, dry_run, engine, versions
from journeys.models import Enrollment, MessageTemplate, StepRun
from members.lifecycle import MemberFeatures
from members.member import Member

T0 = dt.datetime(2026, 11, 23, 2, 0, tzinfo=dt.UTC)
EVERYTHING = {
    "trigger": {"type": "api"},
    "entry": {"audience": "orders_90d >= 1", "reentry": "never"},
    "start": "pick",
    "steps": {
        "pick": {
            "type": "experiment_split",
            "experiment": "pack",
            "variants": {"holdout": "split", "discount": "split", "service": "split"},
        },
        "split": {
            "type": "split",
            "branches": [{"percent": 50, "next": "tag"}, {"percent": 50, "next": "tag"}],
        },
        "tag": {"type": "update_attribute", "attribute": "round", "value": 2, "next": "gift"},
        "gift": {"type": "grant", "benefit": "points", "points": 100, "next": "tell"},
        "tell": {"type": "send", "channel": "push", "template": "pts", "next": "rest"},
        "rest": {"type": "wait", "days": 1, "hours": 2, "next": "ten"},
        "ten": {"type": "wait_until", "time": "10:00", "field": "birthday", "next": "watch"},
        "watch": {
            "type": "wait_for_event",
            "event": "order",
            "filter": "amount >= 100",
            "within_days": 3,
            "matched": "call",
            "timeout": "check",
        },
        "check": {
            "type": "branch",
            "condition": "outcome.watch = 'timeout' and events_in_window < 1",
            "window": {"event": "login", "days": 7},
            "yes": "call",
            "no": "bye",
        },
        "call": {"type": "webhook", "url": "https://shop.example/hook", "next": "pass"},
        "pass": {"type": "handoff", "journey": "other"},
        "bye": {"type": "exit"},
    },
}


def _setup(session):
    control.SETTING.save(session, control.ControlGroup(percent=0), actor="t", now=T0)
    session.add(
        MessageTemplate(
            key="pts",
            name="pts",
            channel="push",
            title="{{ member.name }}",
            body="+{{ benefit.value }}",
        )
    )
    experiment = Experiment(key="pack", name="pack", salt="s1", status=ExperimentStatus.RUNNING)
    experiment.holdout_percent = Decimal(10)
    experiment.variants = [
        Variant(key="discount", weight=1, is_control=True),
        Variant(key="service", weight=1),
    ]
    session.add(experiment)
    other = {"trigger": {"type": "api"}, "start": "end", "steps": {"end": {"type": "exit"}}}
    versions.create(session, key="other", name="other", definition_data=other, actor="t", now=T0)
    member = Member(external_id="d-1", name="周杰", birthday=dt.date(1990, 5, 2))
    session.add(member)
    session.flush()
    session.add(MemberFeatures(member_id=member.id, computed_at=T0, orders_90d=2))
    journey = versions.create(
        session, key="all", name="all", definition_data=EVERYTHING, actor="t", now=T0
    )
    session.flush()
    return journey, member, experiment


def test_a_dry_run_describes_every_step_and_writes_nothing(session):
    journey, member, experiment = _setup(session)
    trial = dry_run.run(
        session,
        journey_id=journey.id,
        journey_key=journey.key,
        defn=versions.latest(journey).definition,
        member=member,
        now=T0,
    )
    assert trial.refusal is None
    assert [stop.step for stop in trial.stops] == [
        "pick",
        "split",
        "tag",
        "gift",
        "tell",
        "rest",
        "ten",
        "watch",
        "check",
        "call",
        "pass",
    ]
    stops = {stop.step: stop for stop in trial.stops}
    expected = assignment.variant_for(experiment, assignment.bucket("s1", "d-1"))
    assert stops["pick"].outcome == (expected.key if expected else "holdout")
    assert (stops["tell"].title, stops["tell"].message) == ("周杰", "+100")
    assert stops["rest"].note == "waits 1 days, 2 hours"
    assert stops["watch"].outcome == "timeout"
    assert stops["check"].outcome == "yes"
    assert session.scalar(select(func.count()).select_from(Assignment)) == 0
    assert session.scalar(select(func.count()).select_from(Enrollment)) == 0


def test_the_entry_rules_in_a_dry_run(session):
    journey, member, _ = _setup(session)
    defn = versions.latest(journey).definition
    outsider = Member(external_id="d-2")
    session.add(outsider)
    session.flush()
    assert dry_run.entry_refusal(session, journey.id, defn, outsider, T0) == "audience"
    session.add(
        Enrollment(
            journey_id=journey.id,
            journey_version_id=versions.latest(journey).id,
            member_id=member.id,
            entered_at=T0,
        )
    )
    session.flush()
    assert dry_run.entry_refusal(session, journey.id, defn, member, T0) == "reentry"


def test_an_experiment_split_assigns_once_and_the_member_follows_the_variant(session):
    journey, member, experiment = _setup(session)
    versions.publish(session, journey, actor="t", now=T0, approver=True)
    live = next(x for x in engine.live_journeys(session) if x.journey_id == journey.id)
    engine.admit(session, live, [engine.Candidate(member.id)], now=T0, timezone="UTC")
    engine.tick(session, now=T0, timezone="UTC")
    recorded = session.scalar(select(Assignment))
    assert recorded.bucket == assignment.bucket("s1", "d-1")
    outcome = session.scalar(select(StepRun.outcome).where(StepRun.step == "pick"))
    variant = next((v.key for v in experiment.variants if v.id == recorded.variant_id), "holdout")
    assert outcome == variant
    # Sticky: asked again, the same answer, and still one row.
    again = manage.place(session, experiment, member, now=T0 + dt.timedelta(days=1))
    assert again.variant == variant and not again.new
    assert session.scalar(select(func.count()).select_from(Assignment)) == 1


def test_buckets_are_shared_out_by_the_weights():
    experiment = Experiment(key="w", name="w", salt="salt", holdout_percent=Decimal(20))
    experiment.variants = [Variant(key="a", weight=3), Variant(key="b", weight=1)]
    counts = {"holdout": 0, "a": 0, "b": 0}
    for number in range(assignment.BUCKETS):
        variant = assignment.variant_for(experiment, number)
        counts[variant.key if variant else "holdout"] += 1
    assert counts == {"holdout": 2000, "a": 6000, "b": 2000}


def test_a_dry_run_sends_a_member_outside_the_experiment_s_audience_down_the_control_s_path(
    session,
):
    journey, member, experiment = _setup(session)
    experiment.audience = {"condition": "stage = 'vip'"}
    session.flush()
    trial = dry_run.run(
        session,
        journey_id=journey.id,
        journey_key=journey.key,
        defn=versions.latest(journey).definition,
        member=member,
        now=T0,
    )
    pick = next(stop for stop in trial.stops if stop.step == "pick")
    assert "not in experiment pack's audience" in pick.note
    assert pick.outcome == "discount"  # the control's path
    assert session.scalar(select(func.count()).select_from(Assignment)) == 0
