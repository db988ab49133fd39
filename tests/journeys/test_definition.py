"""A journey's definition checked field by field: a sound one comes back cleaned, with
its defaults filled in; each bad input is refused with a message keyed by the step
and field it is about."""

from __future__ import annotations

import copy

import pytest

from journeys.definition import Known, check

KNOWN = Known(
    templates={"winback_sms": "sms", "winback_push": "push"},
    experiments={"coupon_size": ("holdout", "small", "large")},
    journeys=frozenset({"vip_care"}),
    tiers=("silver", "gold", "diamond"),
)

WINBACK = {
    "trigger": {"type": "stage_entered", "stage": "dormant"},
    "entry": {"audience": "tier in ('gold', 'diamond')"},
    "goal": {"event": "order.completed"},
    "start": "coupon",
    "steps": {
        "coupon": {
            "type": "grant",
            "benefit": "coupon",
            "value": 50,
            "threshold": 200,
            "next": "tell",
        },
        "tell": {"type": "send", "channel": "sms", "template": "winback_sms", "next": "pause"},
        "pause": {"type": "wait", "days": 1, "next": "ordered"},
        "ordered": {
            "type": "wait_for_event",
            "event": "order.completed",
            "within_days": 3,
            "matched": "done",
            "timeout": "spender",
        },
        "spender": {
            "type": "branch",
            "condition": "spend_365d >= 500",
            "yes": "size",
            "no": "halves",
        },
        "size": {
            "type": "experiment_split",
            "experiment": "coupon_size",
            "variants": {"holdout": "done", "small": "done", "large": "hand_off"},
        },
        "halves": {
            "type": "split",
            "branches": [{"percent": 50, "next": "done"}, {"percent": 50, "next": "hand_off"}],
        },
        "hand_off": {"type": "handoff", "journey": "vip_care"},
        "done": {"type": "exit"},
    },
}


def _changed(steps=None, **sections):
    """WINBACK with some sections replaced and some steps replaced or added."""
    data = copy.deepcopy(WINBACK)
    data.update(sections)
    data["steps"].update(steps or {})
    return data


def _check(data):
    return check(data, KNOWN, key="winback")


def test_a_sound_definition_is_cleaned_with_its_defaults_filled_in():
    clean, errors = _check(WINBACK)
    assert errors == {}
    assert clean["entry"] == {
        "audience": "tier in ('gold', 'diamond')",
        "reentry": "never",
        "reentry_days": None,
        "holdout_percent": "0",
        "daily_cap": None,
        "marketing": True,
        "exit": "never",
    }
    assert clean["goal"] == {"event": "order.completed", "filter": None, "within_days": 14}
    assert clean["start"] == "coupon"
    steps = clean["steps"]
    assert set(steps) == set(WINBACK["steps"])
    assert steps["coupon"] == {
        "type": "grant",
        "next": "tell",
        "benefit": "coupon",
        "value": "50",
        "threshold": "200",
        "expires_days": 7,
    }
    assert steps["pause"] == {
        "type": "wait",
        "next": "ordered",
        "days": 1,
        "hours": 0,
        "minutes": 0,
    }
    assert steps["ordered"]["within_days"] == 3
    assert steps["halves"]["branches"] == [
        {"percent": "50", "next": "done"},
        {"percent": "50", "next": "hand_off"},
    ]


def test_the_cleaned_definition_passes_the_check_again_unchanged():
    # The stored definition is the cleaned one, and publishing checks it again.
    clean, _ = _check(WINBACK)
    assert _check(clean) == (clean, {})


def test_text_numbers_are_read_as_numbers():
    data = _changed(
        entry={"holdout_percent": "10", "reentry": "after_days", "reentry_days": "30"},
        steps={"pause": {"type": "wait", "days": "2", "next": "ordered"}},
    )
    clean, errors = _check(data)
    assert errors == {}
    assert (clean["entry"]["holdout_percent"], clean["entry"]["reentry_days"]) == ("10", 30)
    assert clean["steps"]["pause"]["days"] == 2


_LOOP = {  # spender -> halves -> again -> spender
    "halves": {
        "type": "split",
        "branches": [{"percent": 50, "next": "done"}, {"percent": 50, "next": "again"}],
    },
    "again": {"type": "grant", "benefit": "points", "points": 100, "next": "spender"},
}
_SCHEDULE = {"type": "schedule"}


@pytest.mark.parametrize(
    ("data", "where", "words"),
    [
        pytest.param(
            _changed(steps={"lonely": {"type": "exit"}}),
            "steps.lonely",
            "cannot be reached from the start (coupon)",
            id="unreachable-step",
        ),
        pytest.param(
            _changed(steps=_LOOP),
            "steps.spender",
            "members would go round spender → halves → again → spender without waiting",
            id="loop-without-wait",
        ),
        pytest.param(
            _changed(
                steps={
                    "tell": {
                        "type": "send",
                        "channel": "sms",
                        "template": "winback_sms",
                        "next": "nowhere",
                    }
                }
            ),
            "steps.tell.next",
            "no step 'nowhere'",
            id="next-names-no-step",
        ),
        pytest.param(
            _changed(steps={"tell": {"type": "send", "channel": "sms", "template": "winback_sms"}}),
            "steps.tell.next",
            "say which step comes next",
            id="next-missing",
        ),
        pytest.param(
            _changed(steps={"ordered": {**WINBACK["steps"]["ordered"], "timeout": None}}),
            "steps.ordered.timeout",
            "say which step comes next",
            id="timeout-missing",
        ),
        pytest.param(
            _changed(steps={"tell": {"type": "send", "channel": "sms", "next": "pause"}}),
            "steps.tell.template",
            "is required",
            id="template-missing",
        ),
        pytest.param(
            _changed(
                steps={
                    "tell": {
                        "type": "send",
                        "channel": "sms",
                        "template": "winback_email",
                        "next": "pause",
                    }
                }
            ),
            "steps.tell.template",
            "no message template 'winback_email'",
            id="template-unknown",
        ),
        pytest.param(
            _changed(
                steps={
                    "tell": {
                        "type": "send",
                        "channel": "push",
                        "template": "winback_sms",
                        "next": "pause",
                    }
                }
            ),
            "steps.tell.template",
            "'winback_sms' is a sms template, not push",
            id="template-of-other-channel",
        ),
        pytest.param(
            _changed(trigger={**_SCHEDULE, "cron": "61 * * * *"}),
            "trigger.cron",
            "is not a cron expression",
            id="cron-minute-61",
        ),
        pytest.param(
            _changed(trigger={**_SCHEDULE, "cron": "every day"}),
            "trigger.cron",
            "is not a cron expression",
            id="cron-words",
        ),
        pytest.param(
            _changed(trigger={**_SCHEDULE, "cron": "0 10 * * * *"}),
            "trigger.cron",
            "five fields",
            id="cron-six-fields",
        ),
        pytest.param(
            _changed(trigger={**_SCHEDULE, "cron": "0 10 * * 1", "daily_at": "10:00"}),
            "trigger.cron",
            "give either a cron expression or a daily time",
            id="cron-and-daily-at",
        ),
        pytest.param(
            _changed(trigger=_SCHEDULE),
            "trigger.cron",
            "give either a cron expression or a daily time",
            id="neither-cron-nor-daily-at",
        ),
        pytest.param(
            _changed(trigger={**_SCHEDULE, "daily_at": "25:00"}),
            "trigger.daily_at",
            "must be a time of day as HH:MM",
            id="daily-at-25h",
        ),
        pytest.param(
            _changed(
                trigger={"type": "event", "event": "order.completed", "filter": "amout >= 200"}
            ),
            "trigger.filter",
            "unknown field 'amout'",
            id="event-filter-unknown-field",
        ),
        pytest.param(
            _changed(entry={"audience": "spnd_365d > 3"}),
            "entry.audience",
            "unknown field 'spnd_365d'",
            id="audience-unknown-field",
        ),
        pytest.param(
            _changed(entry={"audience": "stage = 'sleepy'"}),
            "entry.audience",
            "no stage 'sleepy'",
            id="audience-unknown-stage",
        ),
        pytest.param(
            _changed(entry={"audience": "stage in ('dormant', 'asleep')"}),
            "entry.audience",
            "no stage 'asleep'",
            id="audience-unknown-stage-in-list",
        ),
        pytest.param(
            _changed(trigger={"type": "stage_entered", "stage": "sleepy"}),
            "trigger.stage",
            "new, active, at_risk, dormant, lapsed, vip",
            id="trigger-unknown-stage",
        ),
        pytest.param(
            _changed(entry={"holdout_percent": -1}),
            "entry.holdout_percent",
            "must be a number from 0 to 50",
            id="holdout-negative",
        ),
        pytest.param(
            _changed(entry={"holdout_percent": 51}),
            "entry.holdout_percent",
            "must be a number from 0 to 50",
            id="holdout-51",
        ),
        pytest.param(
            _changed(entry={"holdout_percent": "abc"}),
            "entry.holdout_percent",
            "must be a number from 0 to 50",
            id="holdout-text",
        ),
        pytest.param(
            _changed(
                steps={
                    "halves": {
                        "type": "split",
                        "branches": [
                            {"percent": 60, "next": "done"},
                            {"percent": 30, "next": "hand_off"},
                        ],
                    }
                }
            ),
            "steps.halves.branches",
            "the percentages add up to 90, not 100",
            id="split-not-100",
        ),
        pytest.param(
            _changed(
                steps={
                    "size": {
                        "type": "experiment_split",
                        "experiment": "coupon_size",
                        "variants": {"small": "done", "large": "hand_off"},
                    }
                }
            ),
            "steps.size.variants",
            "say where holdout go next",
            id="experiment-variant-missing",
        ),
        pytest.param(
            _changed(steps={"size": {**WINBACK["steps"]["size"], "experiment": "colour_test"}}),
            "steps.size.experiment",
            "no experiment 'colour_test'",
            id="experiment-unknown",
        ),
        pytest.param(
            _changed(steps={"hand_off": {"type": "handoff", "journey": "winback"}}),
            "steps.hand_off.journey",
            "a journey cannot hand off to itself",
            id="handoff-to-itself",
        ),
        pytest.param(
            _changed(steps={"hand_off": {"type": "handoff", "journey": "birthday"}}),
            "steps.hand_off.journey",
            "no journey 'birthday'",
            id="handoff-to-unknown-journey",
        ),
        pytest.param(
            _changed(steps={"coupon": {"type": "grant", "benefit": "coupon", "next": "tell"}}),
            "steps.coupon.value",
            "give the coupon's value",
            id="coupon-without-value",
        ),
        pytest.param(
            _changed(steps={"pause": {"type": "wait", "days": 0, "next": "ordered"}}),
            "steps.pause.days",
            "give how long: days, hours or minutes above 0",
            id="wait-0-days",
        ),
        pytest.param(
            _changed(steps={"pause": {"type": "wait", "days": 400, "next": "ordered"}}),
            "steps.pause.days",
            "must be a whole number from 0 to 365",
            id="wait-400-days",
        ),
        pytest.param(
            _changed(entry={"reentry": "after_days"}),
            "entry.reentry_days",
            "say after how many days a member may enter again",
            id="reentry-after-days-without-days",
        ),
        pytest.param(
            _changed(goal=None, entry={"exit": "on_conversion"}),
            "goal",
            "exit on conversion needs a goal",
            id="exit-on-conversion-without-goal",
        ),
        pytest.param(
            _changed(goal=None, entry={"exit": "either", "audience": "orders_90d >= 1"}),
            "goal",
            "exit on conversion needs a goal",
            id="exit-either-without-goal",
        ),
        pytest.param(
            _changed(entry={"exit": "when_unmatched"}),
            "entry.audience",
            "needs an audience",
            id="exit-when-unmatched-without-audience",
        ),
        pytest.param(
            _changed(trigger={"type": "tier_changed", "to": "platinum"}),
            "trigger.to",
            "no tier 'platinum' (tiers: silver, gold, diamond)",
            id="tier-unknown",
        ),
        pytest.param(
            _changed(start="nowhere"),
            "start",
            "no step 'nowhere'",
            id="start-names-no-step",
        ),
    ],
)
def test_a_bad_definition_is_refused_where_it_is_wrong(data, where, words):
    _, errors = _check(data)
    assert list(errors) == [where], errors  # that one problem, and nothing else
    assert words in errors[where]


def test_a_loop_through_a_wait_is_accepted():
    loop = {**_LOOP, "again": {"type": "wait", "days": 1, "next": "spender"}}
    clean, errors = _check(_changed(steps=loop))
    assert errors == {}
    assert clean["steps"]["again"]["next"] == "spender"


@pytest.mark.parametrize(
    "trigger",
    [
        pytest.param({**_SCHEDULE, "cron": "0 10 * * 1"}, id="cron"),
        pytest.param({**_SCHEDULE, "daily_at": "09:30"}, id="daily-at"),
    ],
)
def test_a_schedule_takes_a_cron_expression_or_a_daily_time(trigger):
    clean, errors = _check(_changed(trigger=trigger))
    assert errors == {}
    assert clean["trigger"] == trigger


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(None, id="none"),
        pytest.param([WINBACK], id="list"),
        pytest.param("winback", id="text"),
    ],
)
def test_a_definition_that_is_not_an_object_is_refused(data):
    assert _check(data) == (
        {},
        {"definition": "must be an object with trigger, entry, goal, start and steps"},
    )


@pytest.mark.parametrize(
    ("data", "where"),
    [
        pytest.param(
            _changed(
                entry={"audience": "attributes.vip_level >= 3 and attributes.city = 'Shanghai'"}
            ),
            None,
            id="audience-number-and-text",
        ),
        pytest.param(
            _changed(entry={"audience": "attributes.city in ('Shanghai', 'Hangzhou')"}),
            None,
            id="audience-text-list",
        ),
        pytest.param(
            _changed(
                steps={
                    "spender": {
                        "type": "branch",
                        "condition": "attributes.vip_level = 3 or attributes.city != 'Beijing'",
                        "yes": "size",
                        "no": "halves",
                    }
                }
            ),
            None,
            id="branch-number-and-text",
        ),
        pytest.param(
            _changed(entry={"audience": "attributes.city > 'Shanghai'"}),
            "entry.audience",
            id="audience-text-compared-with-greater-than",
        ),
        pytest.param(
            _changed(entry={"audience": "attributes.vip_level >= gold"}),
            "entry.audience",
            id="audience-unquoted-word",
        ),
    ],
)
def test_attribute_conditions_accept_numbers_and_text(data, where):
    _, errors = _check(data)
    if where is None:
        assert errors == {}
    else:
        assert list(errors) == [where]


@pytest.mark.parametrize(
    "days",
    [
        pytest.param(
            "--5",
            id="double-minus",
        ),
        pytest.param(
            "²",
            id="superscript-two",
        ),
        pytest.param("two", id="word"),
        pytest.param(1.5, id="fraction"),
    ],
)
def test_a_whole_number_that_is_not_one_gets_a_message_not_a_crash(days):
    data = _changed(steps={"pause": {"type": "wait", "days": days, "hours": 1, "next": "ordered"}})
    _, errors = _check(data)
    assert errors == {"steps.pause.days": "must be a whole number from 0 to 365"}


def test_an_attribute_list_mixing_numbers_and_text_is_refused():
    _, errors = _check(_changed(entry={"audience": "attributes.level in (3, 'gold')"}))
    assert list(errors) == ["entry.audience"]
