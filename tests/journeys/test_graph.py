"""The checks a journey's graph passes before it is saved or published."""

import pytest

from journeys import graph

WIN_BACK = {
    "send_coupon": {"type": "send", "next": "wait_3d"},
    "wait_3d": {"type": "wait", "next": "ordered"},
    "ordered": {"type": "wait_for_event", "matched": "done", "timeout": "price"},
    "price": {"type": "branch", "yes": "double_points", "no": "callback"},
    "double_points": {"type": "grant", "next": "done"},
    "callback": {"type": "split", "branches": [{"next": "done"}, {"next": "hand_off"}]},
    "hand_off": {"type": "handoff"},
    "done": {"type": "exit"},
}


def test_a_sound_graph_passes():
    assert graph.check("send_coupon", WIN_BACK) == {}


def _with(**steps):
    return {**WIN_BACK, **steps}


@pytest.mark.parametrize(
    ("start", "steps", "where", "words"),
    [
        ("send_coupon", _with(lonely={"type": "exit"}), "steps.lonely", "cannot be reached"),
        (
            "send_coupon",
            _with(wait_3d={"type": "wait", "next": "nowhere"}),
            "steps.wait_3d.next",
            "no step 'nowhere'",
        ),
        (
            "send_coupon",
            _with(wait_3d={"type": "wait"}),
            "steps.wait_3d.next",
            "say which step comes next",
        ),
        (
            "send_coupon",
            _with(double_points={"type": "grant", "next": "send_coupon"}),
            "steps.send_coupon",
            None,
        ),
        (
            "send_coupon",
            _with(double_points={"type": "grant", "next": "price"}),
            "steps.price",
            "without waiting",
        ),
        (
            "send_coupon",
            _with(double_points={"type": "grant", "next": "double_points"}),
            "steps.double_points.next",
            "cannot lead to itself",
        ),
        (
            "send_coupon",
            _with(callback={"type": "split", "branches": [{"next": "done"}]}),
            "steps.callback.branches",
            "at least two",
        ),
        (
            "send_coupon",
            _with(callback={"type": "teleport"}),
            "steps.callback.type",
            "must be one of",
        ),
        ("nope", WIN_BACK, "start", "no step 'nope'"),
        (None, WIN_BACK, "start", "must name the first step"),
        ("s", {}, "steps", "at least one step"),
        ("send_coupon", _with(**{"Bad Id": {"type": "exit"}}), "steps.Bad Id", "lower-case"),
    ],
    ids=[
        "unreachable",
        "dangling",
        "missing-next",
        "loop-with-wait",
        "loop-without-wait",
        "self",
        "one-branch",
        "type",
        "start",
        "no-start",
        "empty",
        "id",
    ],
)
def test_bad_graphs_name_the_step_and_field(start, steps, where, words):
    errors = graph.check(start, steps)
    if words is None:  # a loop back through a wait is allowed
        assert errors == {}
        return
    assert where in errors, errors
    assert words in errors[where]


def test_a_step_that_cannot_reach_an_exit_is_named():
    steps = {
        "a": {"type": "send", "next": "b"},
        "b": {"type": "wait", "next": "a"},  # waits, but never ends
        "c": {"type": "exit"},
    }
    errors = graph.check("a", steps)
    assert "no path from here ends in an exit" in errors["steps.a"]
    assert "cannot be reached" in errors["steps.c"]


def test_an_experiment_split_has_an_exit_per_variant():
    steps = {
        "split": {"type": "experiment_split", "variants": {"service": "done", "discount": "gone"}},
        "done": {"type": "exit"},
    }
    assert graph.check("split", steps) == {"steps.split.variants.discount": "no step 'gone'"}
    assert graph.check("split", {**steps, "split": {"type": "experiment_split"}}) == {
        "steps.split.variants": "give the next step for each variant"
    }
