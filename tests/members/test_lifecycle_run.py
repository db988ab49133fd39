"""Lifecycle runs: features, stages, transitions and triggers written set-based; a
run that changes nothing writes nothing; incremental runs find the members that moved."""

import datetime as dt

import pytest
from sqlalchemy import func, select

from members import lifecycle_run
from members.lifecycle import LifecycleRun, RunKind, Stage, StageTransition, Trigger
from members.member import Member
from tests import factories

T0 = dt.datetime(2026, 11, 23, 12, 0, tzinfo=dt.UTC)
DAY = dt.timedelta(days=1)


def _member(session, name, joined_days_ago=400):
    member = Member(external_id=name, joined_at=T0 - joined_days_ago * DAY)
    session.add(member)
    session.flush()
    return member


def _event(session, member, type_, days_ago, amount=None, received=T0):
    factories.event(session, member, type_, T0 - days_ago * DAY, amount, received_at=received)


def _orders(session, member, *days_ago, amount="100"):
    for days in days_ago:
        _event(session, member, "order", days, amount)


def _visits(session, member, *days_ago):
    for days in days_ago:
        _event(session, member, "login", days)


def _stages(session):
    session.expire_all()
    return dict(session.execute(select(Member.external_id, Member.stage)).all())


def _count(session, model):
    return session.scalar(select(func.count()).select_from(model))


@pytest.fixture
def membership(session):
    """One member for each stage under the default rules, among 20 members: the top
    10% by spend are two big spenders."""
    _member(session, "joined-last-week", joined_days_ago=7)
    _orders(session, _member(session, "bought-5-days-ago"), 5)
    slipping = _member(session, "slipping")
    _orders(session, slipping, 22)
    _visits(session, slipping, 20, 25, 30, 35, 40, 45)  # none in the last 14 days
    _orders(session, _member(session, "bought-45-days-ago"), 45)
    _orders(session, _member(session, "bought-120-days-ago"), 120)
    _member(session, "never-bought", joined_days_ago=60)
    _orders(session, _member(session, "big-spender"), 3, 50, amount="9000")
    _orders(session, _member(session, "bigger-spender"), 3, 50, amount="9900")
    erased = _member(session, "erased")
    _orders(session, erased, 1)
    erased.erased_at = T0
    for i in range(12):
        _orders(session, _member(session, f"bystander-{i}"), 10, amount="500")
    session.flush()
    return session


def test_a_full_run_puts_every_member_in_one_stage(membership):
    session = membership
    result = lifecycle_run.run(session, now=T0, full=True)
    stages = _stages(session)
    assert stages["joined-last-week"] is Stage.NEW
    assert stages["bought-5-days-ago"] is Stage.ACTIVE
    assert stages["slipping"] is Stage.AT_RISK
    assert stages["bought-45-days-ago"] is Stage.DORMANT
    assert stages["bought-120-days-ago"] is Stage.LAPSED
    assert stages["never-bought"] is Stage.DORMANT
    assert stages["big-spender"] is Stage.VIP
    assert stages["erased"] is None
    assert result.kind is RunKind.FULL
    assert (result.members, result.changed) == (20, 20)
    assert result.entered == {
        Stage.NEW: 1,
        Stage.ACTIVE: 13,
        Stage.AT_RISK: 1,
        Stage.DORMANT: 2,
        Stage.LAPSED: 1,
        Stage.VIP: 2,
    }
    # Each first stage is a transition from nothing, and a stage.entered trigger.
    transitions = session.scalars(select(StageTransition)).all()
    assert {t.from_stage for t in transitions} == {None}
    assert {t.at for t in transitions} == {T0}
    triggers = session.scalars(select(Trigger).where(Trigger.kind.like("stage.%"))).all()
    assert {t.kind for t in triggers} == {"stage.entered"}
    assert sorted(t.member_id for t in triggers) == sorted(t.member_id for t in transitions)
    member = session.scalars(select(Member).where(Member.external_id == "slipping")).one()
    assert member.stage_since == T0


def test_a_run_that_changes_nothing_writes_nothing(membership):
    session = membership
    lifecycle_run.run(session, now=T0, full=True)
    before = (_count(session, StageTransition), _count(session, Trigger))
    again = lifecycle_run.run(session, now=T0 + dt.timedelta(minutes=1), full=True)
    assert again.changed == 0
    assert (_count(session, StageTransition), _count(session, Trigger)) == before
    assert _count(session, LifecycleRun) == 2


def test_a_purchase_moves_a_dormant_member_and_emits_exit_then_entry(membership):
    session = membership
    lifecycle_run.run(session, now=T0, full=True)
    dormant = session.scalars(select(Member).where(Member.external_id == "bought-45-days-ago"))
    member = dormant.one()
    later = T0 + dt.timedelta(minutes=5)
    _event(session, member, "order", 0, "80", received=later)
    session.flush()
    result = lifecycle_run.run(session, now=later, as_of=later)
    assert result.kind is RunKind.INCREMENTAL
    assert result.changed == 1
    assert _stages(session)["bought-45-days-ago"] is Stage.ACTIVE
    moved = session.scalars(select(StageTransition).where(StageTransition.run_id == result.run_id))
    assert [(t.from_stage, t.to_stage, t.at) for t in moved] == [
        (Stage.DORMANT, Stage.ACTIVE, later)
    ]
    triggers = session.scalars(
        select(Trigger)
        .where(Trigger.member_id == member.id, Trigger.kind.like("stage.%"))
        .order_by(Trigger.id)
    ).all()
    assert [(t.kind, t.value) for t in triggers][-2:] == [
        ("stage.exited", "dormant"),
        ("stage.entered", "active"),
    ]


def test_an_incremental_run_sees_recency_thresholds_crossed_without_events(membership):
    session = membership
    lifecycle_run.run(session, now=T0, full=True)
    # 26 days on, the member who bought 5 days ago has not bought for 31 days.
    later = T0 + 26 * DAY
    result = lifecycle_run.run(session, now=later)
    assert result.kind is RunKind.INCREMENTAL
    stages = _stages(session)
    assert stages["bought-5-days-ago"] is Stage.DORMANT
    assert stages["joined-last-week"] is Stage.DORMANT  # 33 days a member, never bought
    # The incremental run covered the members with events (all, the first time it
    # looks) and those crossing a threshold; a full run at the same moment agrees.
    full = lifecycle_run.run(session, now=later, full=True)
    assert full.changed == 0


def test_an_incremental_run_only_looks_at_members_with_new_events(membership):
    session = membership
    first = lifecycle_run.run(session, now=T0, full=True)
    settled = T0 + dt.timedelta(minutes=2)
    lifecycle_run.run(session, now=settled)  # sees the events received at T0 once more
    quiet = lifecycle_run.run(session, now=settled + dt.timedelta(minutes=1))
    assert first.members == 20
    assert quiet.members == 0 and quiet.changed == 0
    member = session.scalars(select(Member).where(Member.external_id == "never-bought")).one()
    _event(session, member, "login", 0, received=settled)
    session.flush()
    one = lifecycle_run.run(session, now=settled + dt.timedelta(minutes=2))
    assert one.members == 1


def test_a_member_created_without_events_gets_a_stage_in_the_next_incremental_run(
    membership,
):
    session = membership
    lifecycle_run.run(session, now=T0, full=True)
    _member(session, "signed-up-just-now", joined_days_ago=0)
    session.flush()
    result = lifecycle_run.run(session, now=T0 + dt.timedelta(minutes=3))
    assert result.entered == {Stage.NEW: 1}
    assert _stages(session)["signed-up-just-now"] is Stage.NEW


def test_new_rules_apply_from_the_next_run(membership):
    import dataclasses

    from members import stages

    session = membership
    lifecycle_run.run(session, now=T0, full=True)
    rules = dataclasses.replace(stages.StageRules(), vip_top_percent=0)
    stages.save(session, rules, actor="test", now=T0)
    result = lifecycle_run.run(session, now=T0, full=True)
    assert _stages(session)["big-spender"] is Stage.ACTIVE
    assert result.entered == {Stage.ACTIVE: 2}  # the two VIPs
    assert session.get(LifecycleRun, result.run_id).rules_version == 1


def test_times_must_be_aware(session):
    with pytest.raises(ValueError, match="aware"):
        lifecycle_run.run(session, now=T0.replace(tzinfo=None))


def test_two_runs_at_once_never_both_write(committed_app):
    """PostgreSQL: the second run finds the lock taken and gives up. SQLite: it waits
    for the first to commit, then runs on what the first wrote."""
    import threading

    from app.extensions import db

    sessionmaker = db.state(committed_app).sessionmaker
    first, second = sessionmaker(), sessionmaker()
    try:
        _orders(first, _member(first, "buyer"), 2)
        first.commit()
        lifecycle_run.run(first, now=T0, full=True)  # holds the lock until commit
        outcome = {}

        def run_second():
            try:
                outcome["result"] = lifecycle_run.run(second, now=T0, full=True)
                second.commit()
            except lifecycle_run.LifecycleBusy as busy:
                outcome["busy"] = busy
                second.rollback()

        thread = threading.Thread(target=run_second)
        thread.start()
        thread.join(timeout=1.0)
        first.commit()
        thread.join(timeout=30)
        assert not thread.is_alive()
        if first.get_bind().dialect.name == "postgresql":
            assert "another lifecycle run" in str(outcome["busy"])
            assert _count(first, LifecycleRun) == 1
        else:
            assert outcome["result"].changed == 0  # it saw the first run's stages
            assert _count(first, LifecycleRun) == 2
        assert _count(first, StageTransition) == 1
    finally:
        first.close()
        second.close()


def test_runs_keep_the_stage_history_per_day_and_the_flows_per_week(membership):
    from members import stage_history

    session = membership
    # 12:00 UTC on Monday 23 November is 20:00 in Shanghai: the same day.
    lifecycle_run.run(session, now=T0, full=True)
    member = session.scalars(select(Member).where(Member.external_id == "bought-45-days-ago"))
    buyer = member.one()
    # Tuesday 10:00 in Shanghai: an order makes the dormant member active.
    tuesday = T0 + dt.timedelta(hours=14)
    _event(session, buyer, "order", -14 / 24, "80", received=tuesday)
    session.flush()
    lifecycle_run.run(session, now=tuesday + dt.timedelta(minutes=1))  # first run of Tuesday
    _event(session, buyer, "refund", -14 / 24, "80", received=tuesday)
    later = tuesday + dt.timedelta(hours=1)
    slipping = session.scalars(select(Member).where(Member.external_id == "slipping")).one()
    _orders(session, slipping, -0.6)  # at-risk member orders again: active
    session.flush()
    lifecycle_run.run(session, now=later)  # a later run the same day: counted by deltas

    monday, tuesday_date = dt.date(2026, 11, 23), dt.date(2026, 11, 24)
    days = stage_history.daily(session, monday - dt.timedelta(days=1), tuesday_date)
    assert [d.day for d in days] == [monday - dt.timedelta(days=1), monday, tuesday_date]
    assert sum(days[0].members.values()) == 0  # before the first run
    assert days[1].members[Stage.ACTIVE] == 13 and days[1].members[Stage.DORMANT] == 2
    assert days[2].members[Stage.ACTIVE] == 15 and days[2].members[Stage.DORMANT] == 1
    assert days[2].members[Stage.AT_RISK] == 0
    # The deltas agree with a count of every member.
    exact = dict.fromkeys(Stage, 0)
    for stage in session.scalars(select(Member.stage).where(Member.erased_at.is_(None))):
        exact[stage] += 1
    assert days[2].members == exact
    # Days after the last run carry its counts.
    ahead = stage_history.daily(session, tuesday_date, tuesday_date + dt.timedelta(days=2))
    assert ahead[2].members == exact

    flows = stage_history.weekly_flows(session, monday, monday)
    moved = {(f.from_stage, f.to_stage): f.members for f in flows}
    assert moved[(None, Stage.ACTIVE)] == 13  # first stages
    assert moved[(Stage.DORMANT, Stage.ACTIVE)] == 1
    assert moved[(Stage.AT_RISK, Stage.ACTIVE)] == 1
    assert {f.week for f in flows} == {monday}
    assert sum(n for (src, _), n in moved.items() if src is None) == 20


def test_the_programme_calendar_decides_the_day(session):
    from members import stage_history

    late = dt.datetime(2026, 11, 22, 17, 0, tzinfo=dt.UTC)  # Monday 01:00 in Shanghai
    assert stage_history.calendar(late, "Asia/Shanghai") == (
        dt.date(2026, 11, 23),
        dt.date(2026, 11, 23),
    )
    assert stage_history.calendar(late, "Europe/Berlin") == (
        dt.date(2026, 11, 22),
        dt.date(2026, 11, 16),
    )


def test_an_event_dated_ahead_counts_once_its_time_has_come(membership):
    session = membership
    lifecycle_run.run(session, now=T0, full=True)
    member = session.scalars(select(Member).where(Member.external_id == "bought-120-days-ago"))
    lapsed = member.one()
    # Stored at T0+5min, dated T0+30min (clocks differ; ingest accepts an hour ahead).
    _event(session, lapsed, "order", -30 / 1440, "50", received=T0 + dt.timedelta(minutes=5))
    session.flush()
    early = lifecycle_run.run(session, now=T0 + dt.timedelta(minutes=10))
    assert early.changed == 0  # not yet: it is dated later
    lifecycle_run.run(session, now=T0 + dt.timedelta(minutes=20))  # the watermark moves on
    due = lifecycle_run.run(session, now=T0 + dt.timedelta(minutes=40))
    assert due.entered == {Stage.ACTIVE: 1}
    assert _stages(session)["bought-120-days-ago"] is Stage.ACTIVE


def test_new_rules_make_the_next_run_a_full_one(membership):
    import dataclasses

    from members import stages, tiers

    session = membership
    lifecycle_run.run(session, now=T0, full=True)
    no_vip = dataclasses.replace(stages.StageRules(), vip_top_percent=0)
    stages.save(session, no_vip, actor="test", now=T0)
    result = lifecycle_run.run(session, now=T0 + dt.timedelta(minutes=5))
    assert result.kind is RunKind.FULL and result.entered == {Stage.ACTIVE: 2}
    assert lifecycle_run.run(session, now=T0 + dt.timedelta(minutes=6)).kind is RunKind.INCREMENTAL
    tiers.save(session, dataclasses.replace(tiers.DEFAULT_LADDER, grace_days=10), actor="t", now=T0)
    assert lifecycle_run.run(session, now=T0 + dt.timedelta(minutes=7)).kind is RunKind.FULL


def test_a_run_for_a_past_moment_leaves_the_watermark(membership):
    session = membership
    first = lifecycle_run.run(session, now=T0 + dt.timedelta(minutes=5), full=True)
    past = lifecycle_run.run(session, now=T0 + dt.timedelta(minutes=6), as_of=T0 - DAY)
    assert session.get(LifecycleRun, past.run_id).event_watermark == (
        session.get(LifecycleRun, first.run_id).event_watermark
    )
