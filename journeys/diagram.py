"""The layout of a journey's graph for the builder's diagram (drawn as SVG on the
server, no script needed): steps in rows by their distance from the start, each row
centred, and the edges between them with the name of the exit they leave by."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from journeys import graph

WIDTH, HEIGHT = 210, 64  # a step's box
GAP_X, GAP_Y = 30, 54
MARGIN = 20


@dataclasses.dataclass(frozen=True)
class Node:
    step: str
    kind: str
    label: str
    x: int
    y: int


@dataclasses.dataclass(frozen=True)
class Edge:
    source: str
    target: str
    label: str
    path: str  # SVG path data
    label_x: int
    label_y: int


@dataclasses.dataclass(frozen=True)
class Layout:
    nodes: list[Node]
    edges: list[Edge]
    width: int
    height: int


def layout(defn: Mapping[str, Any], labels: Mapping[str, str] | None = None) -> Layout:
    steps: Mapping[str, Any] = defn.get("steps") or {}
    start = defn.get("start")
    if not isinstance(start, str) or start not in steps:
        return Layout([], [], 0, 0)
    depth = {start: 0}
    order = [start]
    for step_id in order:  # breadth first: order grows as we go
        for _, target in graph.exits(steps[step_id]):
            if isinstance(target, str) and target in steps and target not in depth:
                depth[target] = depth[step_id] + 1
                order.append(target)
    for step_id in steps:  # unreachable steps go below, so that they can be seen
        if step_id not in depth:
            depth[step_id] = max(depth.values()) + 1
            order.append(step_id)
    rows: dict[int, list[str]] = {}
    for step_id in order:
        rows.setdefault(depth[step_id], []).append(step_id)
    widest = max(len(row) for row in rows.values())
    width = 2 * MARGIN + widest * WIDTH + (widest - 1) * GAP_X
    places: dict[str, tuple[int, int]] = {}
    for level, row in rows.items():
        row_width = len(row) * WIDTH + (len(row) - 1) * GAP_X
        left = (width - row_width) // 2
        for index, step_id in enumerate(row):
            places[step_id] = (left + index * (WIDTH + GAP_X), MARGIN + level * (HEIGHT + GAP_Y))
    nodes = [
        Node(
            step_id,
            steps[step_id].get("type", "?"),
            (labels or {}).get(step_id) or steps[step_id].get("name") or step_id,
            *places[step_id],
        )
        for step_id in order
    ]
    edges = []
    for step_id in order:
        for name, target in graph.exits(steps[step_id]):
            if not isinstance(target, str) or target not in places:
                continue
            edges.append(_edge(step_id, target, _exit_label(steps[step_id], name), places))
    height = 2 * MARGIN + (max(rows) + 1) * (HEIGHT + GAP_Y) - GAP_Y
    return Layout(nodes, edges, width, height)


def _exit_label(step: Mapping[str, Any], name: str) -> str:
    if name == "next":
        return ""
    if name.startswith("branches."):
        index = int(name.split(".")[1])
        branches = step.get("branches") or []
        percent = branches[index].get("percent") if index < len(branches) else None
        return f"{percent}%" if percent else name
    if name.startswith("variants."):
        return name.split(".", 1)[1]
    return name


def _edge(source: str, target: str, label: str, places: Mapping[str, tuple[int, int]]) -> Edge:
    sx, sy = places[source]
    tx, ty = places[target]
    if ty > sy:  # downwards: bottom centre to top centre
        x1, y1 = sx + WIDTH // 2, sy + HEIGHT
        x2, y2 = tx + WIDTH // 2, ty
        middle = (y1 + y2) // 2
        path = f"M{x1},{y1} C{x1},{middle} {x2},{middle} {x2},{y2}"
        return Edge(source, target, label, path, (x1 + x2) // 2 + 4, middle)
    # Back or sideways (a loop through a wait): out of the right side and round.
    x1, y1 = sx + WIDTH, sy + HEIGHT // 2
    x2, y2 = tx + WIDTH, ty + HEIGHT // 2
    bend = max(x1, x2) + 40
    path = f"M{x1},{y1} C{bend},{y1} {bend},{y2} {x2},{y2}"
    return Edge(source, target, label, path, bend - 10, (y1 + y2) // 2)
