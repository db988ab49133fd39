"""Journeys and their versions on a real database: a draft is checked and saved, goes
live by publication (with an admin's approval where the journey needs one), never
changes once published, and members waiting on an old version can be moved to the
live one. Every change is in the audit log."""

from __future__ import annotations

import datetime as dt
import itertools

import pytest
from sqlalchemy import func, select

from journeys import versions
from journeys.models import (
    Enrollment,
    EnrollmentState,
    Journey,
    JourneyStatus,
    JourneyVersion,
    MessageTemplate,
    VersionStatus,
)
from members.audit import AuditEntry
from members.errors import InvalidFields, NotFound
from members.lifecycle import Stage
from members.member import Member

T0 = dt.datetime(2026, 11, 23, 2, 0, tzinfo=dt.UTC)
T1 = T0 + dt.timedelta(days=1)
_names = itertools.count()

WATCH = {
    "trigger": {"type": "stage_entered", "stage": "dormant"},
    "start": "watch",
    "steps": {
        "watch": {"type": "wait", "days": 7, "next": "done"},
        "done": {"type": "exit"},
    },
}
# Version 2 of WATCH: a shorter watch, then a nudge before the end.
WATCH_AND_NUDGE = {
    "trigger": {"type": "stage_entered", "stage": "dormant"},
    "start": "watch",
    "steps": {
        "watch": {"type": "wait", "days": 3, "next": "nudge"},
        "nudge": {"type": "wait", "days": 1, "next": "done"},
        "done": {"type": "exit"},
    },
}


def _member(session, **fields) -> Member:
    fields.setdefault("external_id", f"m-{next(_names)}")
    fields.setdefault("joined_at", T0 - dt.timedelta(days=400))
    member = Member(**fields)
    session.add(member)
    session.flush()
    return member


def _create(session, definition=WATCH, key="winback", **kw) -> Journey:
    return versions.create(
        session, key=key, name="Win back", definition_data=definition, actor="ann", now=T0, **kw
    )


def _published(session, definition=WATCH, key="winback", **kw) -> Journey:
    journey = _create(session, definition, key, **kw)
    versions.publish(session, journey, actor="ann", now=T0, approver=True)
    return journey


def _actions(session, key="winback") -> list[str]:
    return list(
        session.scalars(
            select(AuditEntry.action)
            .where(AuditEntry.target_type == "journey", AuditEntry.target_id == key)
            .order_by(AuditEntry.id)
        )
    )


def _count(session, model) -> int:
    return session.scalar(select(func.count()).select_from(model))


def _enroll(session, journey, version, step, state=EnrollmentState.WAITING) -> Enrollment:
    enrollment = Enrollment(
        journey_id=journey.id,
        journey_version_id=version.id,
        member_id=_member(session).id,
        state=state,
        current_step=step,
        entered_at=T0,
        next_run_at=T0 + dt.timedelta(days=7) if state == EnrollmentState.WAITING else None,
    )
    session.add(enrollment)
    session.flush()
    return enrollment


def test_create_makes_draft_version_1_and_an_audit_row(session):
    journey = _create(session)
    assert (journey.key, journey.name, journey.status) == (
        "winback",
        "Win back",
        JourneyStatus.DRAFT,
    )
    assert journey.live_version_id is None
    [draft] = journey.versions
    assert (draft.version, draft.status, draft.created_by) == (1, VersionStatus.DRAFT, "ann")
    assert draft.definition["entry"]["reentry"] == "never"  # stored cleaned
    entry = session.scalar(select(AuditEntry).where(AuditEntry.target_type == "journey"))
    assert (entry.action, entry.actor, entry.target_id, entry.details) == (
        "journey.created",
        "ann",
        "winback",
        {"version": 1},
    )
    assert entry.at == T0


@pytest.mark.parametrize(
    ("key", "definition", "field", "words"),
    [
        pytest.param("Win Back", WATCH, "key", "lower-case letters", id="bad-key"),
        pytest.param(
            "existing", WATCH, "key", "a journey 'existing' exists already", id="duplicate-key"
        ),
        pytest.param(
            "winback",
            {
                **WATCH,
                "steps": {**WATCH["steps"], "watch": {"type": "wait", "days": 0, "next": "done"}},
            },
            "definition.steps.watch.days",
            "above 0",
            id="wait-of-0-days",
        ),
        pytest.param(
            "winback",
            {
                **WATCH,
                "steps": {
                    "watch": {
                        "type": "send",
                        "channel": "sms",
                        "template": "nobody",
                        "next": "done",
                    },
                    "done": {"type": "exit"},
                },
            },
            "definition.steps.watch.template",
            "no message template 'nobody'",
            id="unknown-template",
        ),
        pytest.param(
            "winback",
            {**WATCH, "trigger": {"type": "schedule", "cron": "61 * * * *"}},
            "definition.trigger.cron",
            "is not a cron expression",
            id="bad-cron",
        ),
    ],
)
def test_create_refuses_bad_input_by_field_and_writes_nothing(
    session, key, definition, field, words
):
    _create(session, key="existing")
    journeys, versions_, audits = (
        _count(session, m) for m in (Journey, JourneyVersion, AuditEntry)
    )
    with pytest.raises(InvalidFields) as raised:
        _create(session, definition, key=key)
    assert list(raised.value.errors) == [field]
    assert words in raised.value.errors[field]
    assert (
        _count(session, Journey),
        _count(session, JourneyVersion),
        _count(session, AuditEntry),
    ) == (
        journeys,
        versions_,
        audits,
    )


def test_a_send_step_names_a_template_of_its_channel(session):
    definition = {
        **WATCH,
        "start": "tell",
        "steps": {
            "tell": {"type": "send", "channel": "push", "template": "winback_sms", "next": "done"},
            "done": {"type": "exit"},
        },
    }
    session.add(MessageTemplate(key="winback_sms", name="SMS", channel="sms", body="Hi"))
    session.flush()
    with pytest.raises(InvalidFields) as raised:
        _create(session, definition)
    assert raised.value.errors == {
        "definition.steps.tell.template": "'winback_sms' is a sms template, not push"
    }
    definition["steps"]["tell"]["channel"] = "sms"
    journey = _create(session, definition)
    assert journey.versions[0].definition["steps"]["tell"]["template"] == "winback_sms"


def test_a_definition_that_is_not_an_object_is_named_as_the_definition(session):
    with pytest.raises(InvalidFields) as raised:
        _create(session, ["not", "an", "object"])
    assert list(raised.value.errors) == ["definition"]


def test_publish_makes_version_1_live(session):
    journey = _create(session)
    published = versions.publish(session, journey, actor="bob", now=T1, approver=False)
    assert published.version == 1
    assert (published.status, published.published_by, published.published_at) == (
        VersionStatus.PUBLISHED,
        "bob",
        T1,
    )
    assert journey.live_version_id == published.id
    assert journey.status == JourneyStatus.ACTIVE
    assert versions.live(journey) is published
    assert _actions(session) == ["journey.created", "journey.published"]


def test_an_edit_after_publication_makes_version_2_and_leaves_version_1_as_it_was(session):
    journey = _published(session)
    v1 = versions.version(journey, 1)
    before = dict(v1.definition)

    v2 = versions.save_draft(session, journey, WATCH_AND_NUDGE, actor="bob", now=T1)

    assert (v2.version, v2.status, v2.created_by) == (2, VersionStatus.DRAFT, "bob")
    assert "nudge" in v2.definition["steps"]
    session.expire_all()  # read both back from the database
    v1 = versions.version(journey, 1)
    assert v1.definition == before
    assert "nudge" not in v1.definition["steps"]
    assert v1.status == VersionStatus.PUBLISHED
    assert journey.live_version_id == v1.id
    assert [v.version for v in journey.versions] == [1, 2]
    assert _actions(session)[-1] == "journey.draft_saved"


def test_a_second_edit_changes_the_open_draft_not_a_new_version(session):
    journey = _published(session)
    versions.save_draft(session, journey, WATCH_AND_NUDGE, actor="bob", now=T1)
    again = versions.save_draft(session, journey, WATCH, actor="bob", now=T1, expected_version=2)
    assert again.version == 2
    assert "nudge" not in again.definition["steps"]
    assert len(journey.versions) == 2
    with pytest.raises(versions.Conflict):
        versions.save_draft(session, journey, WATCH, actor="bob", now=T1, expected_version=1)


def test_a_published_version_is_not_editable(session):
    journey = _create(session)
    assert versions.editable(journey, 1).version == 1  # a draft is
    versions.publish(session, journey, actor="ann", now=T0, approver=True)
    with pytest.raises(versions.Conflict, match="version 1 is published"):
        versions.editable(journey, 1)
    with pytest.raises(NotFound):
        versions.editable(journey, 9)


def test_publishing_version_2_supersedes_version_1(session):
    journey = _published(session)
    v2 = versions.save_draft(session, journey, WATCH_AND_NUDGE, actor="bob", now=T1)
    versions.publish(session, journey, actor="bob", now=T1, approver=False)
    v1 = versions.version(journey, 1)
    assert (v1.status, v2.status) == (VersionStatus.SUPERSEDED, VersionStatus.PUBLISHED)
    assert journey.live_version_id == v2.id
    with pytest.raises(versions.Conflict, match="version 1 is superseded"):
        versions.editable(journey, 1)
    with pytest.raises(versions.Conflict, match="live already"):  # nothing left to publish
        versions.publish(session, journey, actor="bob", now=T1, approver=False)


def test_a_journey_that_needs_approval_goes_live_once_an_approver_publishes_it(session):
    journey = _create(session, needs_approval=True)
    with pytest.raises(versions.NeedsApproval):
        versions.publish(session, journey, actor="mia", now=T0, approver=False)
    assert (journey.live_version_id, journey.status) == (None, JourneyStatus.DRAFT)

    submitted = versions.submit(session, journey, actor="mia", now=T0)
    assert (submitted.status, submitted.submitted_by, submitted.submitted_at) == (
        VersionStatus.PENDING_APPROVAL,
        "mia",
        T0,
    )
    with pytest.raises(versions.NeedsApproval):  # submitting does not let her publish
        versions.publish(session, journey, actor="mia", now=T0, approver=False)

    published = versions.publish(session, journey, actor="ada", now=T1, approver=True)
    assert (published.status, published.published_by) == (VersionStatus.PUBLISHED, "ada")
    assert journey.live_version_id == published.id
    assert _actions(session) == [
        "journey.created",
        "journey.submitted",
        "journey.approved",
        "journey.published",
    ]
    approved = session.scalar(select(AuditEntry).where(AuditEntry.action == "journey.approved"))
    assert (approved.actor, approved.details) == ("ada", {"version": 1})


def test_an_approver_may_publish_their_own_draft_without_an_approval_entry(session):
    """Approval is a second pair of eyes on a marketer's version: an admin's own draft
    goes live when the admin publishes it, and no approval is recorded for it."""
    journey = _create(session, needs_approval=True)
    versions.publish(session, journey, actor="ada", now=T1, approver=True)
    assert journey.status == JourneyStatus.ACTIVE
    actions = session.scalars(select(AuditEntry.action).order_by(AuditEntry.id)).all()
    assert "journey.approved" not in actions


def test_a_rejected_version_goes_back_to_draft(session):
    journey = _create(session, needs_approval=True)
    with pytest.raises(versions.Conflict, match="no version is waiting"):
        versions.reject(session, journey, actor="ada", now=T0, reason="too soon")
    versions.submit(session, journey, actor="mia", now=T0)

    rejected = versions.reject(session, journey, actor="ada", now=T1, reason="coupon too large")

    assert (rejected.status, rejected.submitted_by, rejected.submitted_at) == (
        VersionStatus.DRAFT,
        None,
        None,
    )
    assert journey.live_version_id is None
    entry = session.scalar(select(AuditEntry).where(AuditEntry.action == "journey.rejected"))
    assert (entry.actor, entry.details) == ("ada", {"version": 1, "reason": "coupon too large"})


def test_an_edit_withdraws_a_submission(session):
    journey = _create(session, needs_approval=True)
    versions.submit(session, journey, actor="mia", now=T0)
    draft = versions.save_draft(session, journey, WATCH_AND_NUDGE, actor="mia", now=T1)
    assert (draft.version, draft.status, draft.submitted_by) == (1, VersionStatus.DRAFT, None)


def test_pause_resume_and_archive(session):
    journey = _published(session)
    versions.set_status(session, journey, JourneyStatus.PAUSED, actor="bob", now=T1)
    assert journey.status == JourneyStatus.PAUSED
    versions.set_status(session, journey, JourneyStatus.ACTIVE, actor="bob", now=T1)
    assert journey.status == JourneyStatus.ACTIVE
    versions.set_status(session, journey, JourneyStatus.ARCHIVED, actor="bob", now=T1)
    assert journey.status == JourneyStatus.ARCHIVED
    assert _actions(session)[-3:] == ["journey.paused", "journey.active", "journey.archived"]
    entry = session.scalar(select(AuditEntry).where(AuditEntry.action == "journey.archived"))
    assert entry.details == {"before": "active"}


@pytest.mark.parametrize(
    ("published", "path", "status"),
    [
        pytest.param(False, [], JourneyStatus.PAUSED, id="pause-a-draft"),
        pytest.param(False, [], JourneyStatus.ACTIVE, id="resume-a-draft"),
        pytest.param(True, [], JourneyStatus.ACTIVE, id="resume-an-active"),
        pytest.param(True, [JourneyStatus.PAUSED], JourneyStatus.PAUSED, id="pause-a-paused"),
        pytest.param(True, [JourneyStatus.ARCHIVED], JourneyStatus.ACTIVE, id="resume-an-archived"),
        pytest.param(True, [JourneyStatus.ARCHIVED], JourneyStatus.PAUSED, id="pause-an-archived"),
        pytest.param(True, [JourneyStatus.ARCHIVED], JourneyStatus.ARCHIVED, id="archive-twice"),
    ],
)
def test_an_illegal_status_change_is_a_conflict(session, published, path, status):
    journey = _published(session) if published else _create(session)
    for step in path:
        versions.set_status(session, journey, step, actor="bob", now=T0)
    before, audits = journey.status, _count(session, AuditEntry)
    with pytest.raises(versions.Conflict):
        versions.set_status(session, journey, status, actor="bob", now=T1)
    assert journey.status == before
    assert _count(session, AuditEntry) == audits


def test_a_journey_cannot_go_back_to_draft(session):
    journey = _published(session)
    with pytest.raises(versions.Conflict):
        versions.set_status(session, journey, JourneyStatus.DRAFT, actor="bob", now=T1)


def test_a_draft_journey_may_be_archived(session):
    journey = _create(session)
    versions.set_status(session, journey, JourneyStatus.ARCHIVED, actor="bob", now=T1)
    assert journey.status == JourneyStatus.ARCHIVED


def test_an_archived_journey_takes_no_edit_and_no_publication(session):
    journey = _published(session)
    versions.set_status(session, journey, JourneyStatus.ARCHIVED, actor="bob", now=T1)
    with pytest.raises(versions.Conflict, match="archived"):
        versions.save_draft(session, journey, WATCH_AND_NUDGE, actor="bob", now=T1)
    with pytest.raises(versions.Conflict, match="archived"):
        versions.publish(session, journey, actor="bob", now=T1, approver=True)


def test_archiving_exits_the_members_inside(session):
    journey = _published(session)
    v1 = versions.live(journey)
    waiting = _enroll(session, journey, v1, "watch")
    active = _enroll(session, journey, v1, "watch", state=EnrollmentState.ACTIVE)
    completed = _enroll(session, journey, v1, "done", state=EnrollmentState.COMPLETED)
    other = _published(session, key="other")
    elsewhere = _enroll(session, other, versions.live(other), "watch")

    versions.set_status(session, journey, JourneyStatus.ARCHIVED, actor="bob", now=T1)

    for enrollment in (waiting, active, completed, elsewhere):
        session.refresh(enrollment)
    for enrollment in (waiting, active):
        assert (enrollment.state, enrollment.exit_reason, enrollment.exited_at) == (
            EnrollmentState.EXITED,
            "archived",
            T1,
        )
        assert enrollment.next_run_at is None
    assert (completed.state, completed.exit_reason) == (EnrollmentState.COMPLETED, None)
    assert (elsewhere.state, elsewhere.next_run_at) == (
        EnrollmentState.WAITING,
        T0 + dt.timedelta(days=7),
    )


def _on_version_2(session):
    """winback live at version 2, with members on version 1: two waiting at watch, one
    that has left, one completed."""
    journey = _published(session)
    v1 = versions.live(journey)
    waiting = [_enroll(session, journey, v1, "watch") for _ in range(2)]
    left = _enroll(session, journey, v1, "watch", state=EnrollmentState.EXITED)
    done = _enroll(session, journey, v1, "done", state=EnrollmentState.COMPLETED)
    versions.save_draft(session, journey, WATCH_AND_NUDGE, actor="bob", now=T0)
    v2 = versions.publish(session, journey, actor="bob", now=T0, approver=True)
    return journey, v1, v2, waiting, left, done


def test_members_keep_their_version_when_a_new_one_is_published(session):
    _, v1, _, waiting, left, done = _on_version_2(session)
    for enrollment in (*waiting, left, done):
        session.refresh(enrollment)
        assert enrollment.journey_version_id == v1.id


def test_migration_preview_counts_the_members_waiting_at_each_mapped_step(session):
    journey, *_ = _on_version_2(session)
    moves = versions.migration_preview(session, journey, 1, {"watch": "nudge", "done": "done"})
    assert moves == [versions.Move(1, "watch", "nudge", 2), versions.Move(1, "done", "done", 0)]


def test_migrate_moves_the_waiting_members_to_the_mapped_step_of_the_live_version(session):
    journey, v1, v2, waiting, left, done = _on_version_2(session)
    before = [(e.state, e.next_run_at, e.step_at) for e in waiting]

    moves = versions.migrate(session, journey, 1, {"watch": "nudge"}, actor="bob", now=T1)

    assert moves == [versions.Move(1, "watch", "nudge", 2)]
    for enrollment, kept in zip(waiting, before, strict=True):
        session.refresh(enrollment)
        assert (enrollment.journey_version_id, enrollment.current_step) == (v2.id, "nudge")
        # A wait onto a wait goes on from when it began.
        assert (enrollment.state, enrollment.next_run_at, enrollment.step_at) == kept
    for enrollment in (left, done):
        session.refresh(enrollment)
        assert enrollment.journey_version_id == v1.id
    entry = session.scalar(
        select(AuditEntry).where(AuditEntry.action == "journey.members_migrated")
    )
    assert entry.details == {
        "from_version": 1,
        "to_version": 2,
        "moves": [{"from_version": 1, "from_step": "watch", "to_step": "nudge", "members": 2}],
    }
    assert versions.migration_preview(session, journey, 1, {"watch": "nudge"})[0].members == 0


@pytest.mark.parametrize(
    ("mapping", "errors"),
    [
        pytest.param(
            {"wait": "nudge"}, {"mapping.wait": "version 1 has no step 'wait'"}, id="from-step"
        ),
        pytest.param(
            {"watch": "nudg"}, {"mapping.watch": "version 2 has no step 'nudg'"}, id="to-step"
        ),
        pytest.param({}, {"mapping": "map at least one step"}, id="empty"),
    ],
)
def test_a_migration_names_the_steps_that_do_not_exist(session, mapping, errors):
    journey, v1, _, waiting, _, _ = _on_version_2(session)
    for move in (versions.migration_preview, versions.migrate):
        kw = {"actor": "bob", "now": T1} if move is versions.migrate else {}
        with pytest.raises(InvalidFields) as raised:
            move(session, journey, 1, mapping, **kw)
        assert raised.value.errors == errors
    session.refresh(waiting[0])
    assert (waiting[0].journey_version_id, waiting[0].current_step) == (v1.id, "watch")
    assert "journey.members_migrated" not in _actions(session)


def test_a_migration_needs_an_old_published_version_and_a_live_one(session):
    journey = _create(session)
    with pytest.raises(versions.Conflict, match="publish a version"):
        versions.migration_preview(session, journey, 1, {"watch": "watch"})
    versions.publish(session, journey, actor="bob", now=T0, approver=True)
    with pytest.raises(versions.Conflict, match="live version already"):
        versions.migration_preview(session, journey, 1, {"watch": "watch"})
    versions.save_draft(session, journey, WATCH_AND_NUDGE, actor="bob", now=T0)
    with pytest.raises(versions.Conflict, match="never published"):
        versions.migration_preview(session, journey, 2, {"watch": "watch"})
    with pytest.raises(NotFound):
        versions.migration_preview(session, journey, 7, {"watch": "watch"})


def _for(audience):
    return {**WATCH, "entry": {"audience": audience}}


def test_publish_refuses_an_audience_that_matches_no_member(session):
    _member(session, stage=Stage.DORMANT)
    _member(session, stage=Stage.VIP, erased_at=T0)  # erased members do not count
    journey = _create(session, _for("stage = 'vip'"))
    for attempt in (versions.publish, versions.submit):
        kw = {"approver": True} if attempt is versions.publish else {}
        with pytest.raises(InvalidFields) as raised:
            attempt(session, journey, actor="bob", now=T0, **kw)
        assert raised.value.errors == {"definition.entry.audience": "matches no member today"}
    assert (journey.live_version_id, journey.versions[0].status) == (None, VersionStatus.DRAFT)

    _member(session, stage=Stage.VIP)
    versions.publish(session, journey, actor="bob", now=T0, approver=True)
    assert journey.status == JourneyStatus.ACTIVE


@pytest.mark.parametrize(
    "audience",
    [
        pytest.param("attributes.vip_level >= 3", id="number"),
        pytest.param("attributes.city = 'Shanghai'", id="text"),
        pytest.param("attributes.city in ('Hangzhou', 'Shanghai')", id="text-list"),
        pytest.param("attributes.vip_level in (4, 5)", id="number-list"),
    ],
)
def test_an_audience_on_attributes_counts_numbers_and_text(session, audience):
    _member(session, attributes={"vip_level": "5", "city": "Beijing"})  # text, not a number
    journey = _create(session, _for(audience))
    with pytest.raises(InvalidFields):
        versions.publish(session, journey, actor="bob", now=T0, approver=True)
    _member(session, attributes={"vip_level": 5, "city": "Shanghai"})
    versions.publish(session, journey, actor="bob", now=T0, approver=True)
    assert journey.status == JourneyStatus.ACTIVE


def test_an_attribute_list_mixing_numbers_and_text_is_refused_not_a_database_error(session):
    _member(session, attributes={"level": "gold"})
    with pytest.raises(InvalidFields) as raised:
        journey = _create(session, _for("attributes.level in (3, 'gold')"))
        versions.publish(session, journey, actor="bob", now=T0, approver=True)
    assert list(raised.value.errors) == ["definition.entry.audience"]


def test_migrating_onto_another_kind_of_step_starts_it_now(session):
    journey, _, _, waiting, *_ = _on_version_2(session)
    versions.migrate(session, journey, 1, {"watch": "done"}, actor="bob", now=T1)
    for enrollment in waiting:
        session.refresh(enrollment)
        assert (enrollment.current_step, enrollment.state) == ("done", EnrollmentState.ACTIVE)
        assert (enrollment.next_run_at, enrollment.step_at) == (T1, T1)
