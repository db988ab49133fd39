"""The graph of a journey's steps, and the checks it must pass before it is saved or
published: every step reachable from the start, every exit pointing at a step that
exists, every step able to end in an exit, and no loop that a member could go round
without waiting.

A graph is a mapping of step ids to steps; each step has a ``type`` and, by type,
the names of its exits (``next``; ``matched`` and ``timeout``; ``yes`` and ``no``; one
per branch of a split or variant of an experiment). Errors are keyed by where they
are (``steps.s2.next``), so that the builder puts them next to the field and the API
names it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

STEP_ID = re.compile(r"[a-z][a-z0-9_]{0,63}")
# Steps that hold a member until a time or an event: a loop must pass one of them.
WAITS = frozenset({"wait", "wait_until", "wait_for_event"})
# Steps after which a member has left the journey.
TERMINAL = frozenset({"exit", "handoff"})
# Every step type and the names of its fixed exits (splits and experiments name theirs).
EXITS: Mapping[str, tuple[str, ...]] = {
    "send": ("next",),
    "wait": ("next",),
    "wait_until": ("next",),
    "wait_for_event": ("matched", "timeout"),
    "branch": ("yes", "no"),
    "split": (),
    "experiment_split": (),
    "grant": ("next",),
    "update_attribute": ("next",),
    "webhook": ("next",),
    "handoff": (),
    "exit": (),
}
MAX_STEPS = 200


def exits(step: Mapping[str, Any]) -> Iterator[tuple[str, Any]]:
    """(where, target) for each exit of a step: ("next", "s2"), ("branches.1.next", "s5")."""
    kind = step.get("type")
    for name in EXITS.get(kind, ()):
        yield name, step.get(name)
    if kind == "split":
        for index, branch in enumerate(_list(step.get("branches"))):
            yield (
                f"branches.{index}.next",
                branch.get("next") if isinstance(branch, Mapping) else None,
            )
    if kind == "experiment_split":
        variants = step.get("variants")
        for variant, target in variants.items() if isinstance(variants, Mapping) else ():
            yield f"variants.{variant}", target


def _list(value: Any) -> list:
    return value if isinstance(value, list) else []


def check(start: Any, steps: Any) -> dict[str, str]:
    """What is wrong with a graph, as {where: message}; empty when nothing is."""
    errors: dict[str, str] = {}
    if not isinstance(steps, Mapping) or not steps:
        return {"steps": "give at least one step"}
    if len(steps) > MAX_STEPS:
        return {"steps": f"at most {MAX_STEPS} steps"}
    for step_id, step in steps.items():
        where = f"steps.{step_id}"
        if not isinstance(step_id, str) or not STEP_ID.fullmatch(step_id):
            errors[where] = "a step id is lower-case letters, digits and _, e.g. send_coupon"
        elif not isinstance(step, Mapping) or step.get("type") not in EXITS:
            errors[f"{where}.type"] = f"must be one of {', '.join(EXITS)}"
        else:
            _check_exits(step_id, step, steps, errors)
    if not isinstance(start, str) or start not in steps:
        errors["start"] = "must name the first step" if start is None else f"no step {start!r}"
    if errors:
        return errors
    reachable = _reachable(start, steps)
    for step_id in steps:
        if step_id not in reachable:
            errors[f"steps.{step_id}"] = f"cannot be reached from the start ({start})"
    for step_id in _cannot_end(steps):
        errors.setdefault(f"steps.{step_id}", "no path from here ends in an exit")
    loop = _loop_without_wait(steps)
    if loop:
        cycle = " → ".join([*loop, loop[0]])
        errors.setdefault(
            f"steps.{loop[0]}",
            f"members would go round {cycle} without waiting: add a wait to the loop",
        )
    return errors


def _check_exits(
    step_id: str, step: Mapping[str, Any], steps: Mapping[str, Any], errors: dict[str, str]
) -> None:
    kind = step["type"]
    if kind == "split":
        branches = _list(step.get("branches"))
        if len(branches) < 2:
            errors[f"steps.{step_id}.branches"] = "a split has at least two branches"
    if kind == "experiment_split" and not (
        isinstance(step.get("variants"), Mapping) and step["variants"]
    ):
        errors[f"steps.{step_id}.variants"] = "give the next step for each variant"
    for name, target in exits(step):
        where = f"steps.{step_id}.{name}"
        if target is None:
            errors[where] = "say which step comes next (an exit step ends the journey)"
        elif not isinstance(target, str) or target not in steps:
            errors[where] = f"no step {target!r}"
        elif target == step_id and kind not in WAITS:
            errors[where] = "a step cannot lead to itself"


def _targets(step: Mapping[str, Any]) -> list[str]:
    return [target for _, target in exits(step) if isinstance(target, str)]


def _reachable(start: str, steps: Mapping[str, Any]) -> set[str]:
    seen, todo = {start}, [start]
    while todo:
        for target in _targets(steps[todo.pop()]):
            if target in steps and target not in seen:
                seen.add(target)
                todo.append(target)
    return seen


def _cannot_end(steps: Mapping[str, Any]) -> list[str]:
    """Steps from which no path reaches an exit (or a hand-off)."""
    ends = {step_id for step_id, step in steps.items() if step["type"] in TERMINAL}
    changed = True
    while changed:
        changed = False
        for step_id, step in steps.items():
            if step_id not in ends and any(t in ends for t in _targets(step)):
                ends.add(step_id)
                changed = True
    return [step_id for step_id in steps if step_id not in ends]


def _loop_without_wait(steps: Mapping[str, Any]) -> list[str] | None:
    """A cycle made only of steps that do not wait, as the list of its steps, if any."""
    moving = {
        s: [t for t in _targets(step) if steps[t]["type"] not in WAITS]
        for s, step in steps.items()
        if step["type"] not in WAITS
    }
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in moving.get(node, []):
            if state.get(target) == 1:
                return path[path.index(target) :]
            if target not in state:
                found = visit(target)
                if found:
                    return found
        state[node] = 2
        path.pop()
        return None

    for node in moving:
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None
