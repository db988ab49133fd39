"""Charts as server-side SVG for the experiment page: a forest plot of lifts with their
intervals, lines (retention by horizon) and step lines (Kaplan-Meier curves). Pure
functions: plain numbers and already translated texts in, SVG markup out, every text
escaped; no script, so the page works without JavaScript and prints as it shows."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence

from markupsafe import Markup, escape

# Each at least 4.5:1 against white, and told apart by dashes too (the holdout's).
PALETTE = ("#1f5fbf", "#b3261e", "#1f7a44", "#7a3fb0", "#8a5300", "#4a5463")
MUTED, GRID = "#5b6575", "#e3e7ee"
GOOD, BAD, NEUTRAL = "#1f7a44", "#b3261e", "#1d2430"
FONT = 12
Format = Callable[[float], str]


@dataclasses.dataclass(frozen=True)
class Row:
    """One line of a forest plot: an estimate and its interval (None: nothing to draw)."""

    label: str
    value: float | None
    low: float | None = None
    high: float | None = None
    tone: str = "neutral"  # good | bad | neutral
    note: str = ""  # shown at the right, e.g. "+12% (3% to 21%)"; without a value, why
    group: str = ""  # a heading drawn above the first row of each group


@dataclasses.dataclass(frozen=True)
class Series:
    name: str
    points: Sequence[tuple[float, float | None]]  # (x, y); a None y breaks the line
    dashed: bool = False
    colour: int | None = None  # an index into PALETTE, so that an arm keeps its colour


def percent(value: float) -> str:
    return f"{value * 100:+.0f}%" if value else "0%"


def share(value: float) -> str:
    return f"{value * 100:.0f}%"


def ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round values (1, 2 or 5 times a power of ten apart) from at most ``low`` to at
    least ``high``."""
    if not high > low:
        high = low + 1
    raw = (high - low) / max(1, count)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw * (1 - 1e-9))
    start = math.floor(low / step + 1e-9) * step
    stop = math.ceil(high / step - 1e-9) * step
    return [round(start + i * step, 12) for i in range(round((stop - start) / step) + 1)]


def _svg(width: int, height: int, label: str, body: list[str]) -> Markup:
    title = escape(label)
    # Every text in ``body`` went through escape(); the rest are numbers and constants.
    return Markup(  # noqa: S704
        f'<svg class="chart" viewBox="0 0 {width} {height}" width="{width}" '
        f'height="{height}" role="img" aria-label="{title}" '
        f'xmlns="http://www.w3.org/2000/svg" font-size="{FONT}"><title>{title}</title>'
        + "".join(body)
        + "</svg>"
    )


def _text(x: float, y: float, content: str, *, anchor: str = "start", **attrs: str) -> str:
    extra = "".join(f' {name.replace("_", "-")}="{escape(v)}"' for name, v in attrs.items())
    return f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}"{extra}>{escape(content)}</text>'


def _scale(domain: tuple[float, float], span: tuple[float, float]) -> Callable[[float], float]:
    (d0, d1), (r0, r1) = domain, span
    width = (d1 - d0) or 1.0
    return lambda v: r0 + (v - d0) / width * (r1 - r0)


# -- forest plot


def forest(
    rows: Sequence[Row],
    *,
    label: str,
    axis: str,
    empty: str,
    fmt: Format = percent,
    width: int = 1000,
    limits: tuple[float, float] = (-1.0, 3.0),
) -> Markup:
    """Each row's estimate as a dot on its interval's line, a zero line through all;
    intervals beyond ``limits`` are cut and end in an arrow."""
    left, right, top, pitch = 300, 220, 16, 26
    groups = sum(
        1 for i, r in enumerate(rows) if r.group and (i == 0 or rows[i - 1].group != r.group)
    )
    height = top + pitch * (len(rows) + groups) + 44
    ends = [v for r in rows for v in (r.low, r.high, r.value) if v is not None]
    low = max(limits[0], min([0.0, *ends]))
    high = min(limits[1], max([0.0, *ends]))
    marks = ticks(low, high, 6)
    domain = (min(marks[0], low), max(marks[-1], high))
    x = _scale(domain, (left, width - right))
    bottom = height - 34
    body = _grid_x(marks, x, top, bottom, fmt)
    body.append(
        f'<line x1="{x(0):.1f}" y1="{top - 6}" x2="{x(0):.1f}" y2="{bottom}" '
        f'stroke="{NEUTRAL}" stroke-width="1.5"/>'
    )
    body.append(_text((left + width - right) / 2, height - 4, axis, anchor="middle", fill=MUTED))
    y = top + 4
    for index, row in enumerate(rows):
        if row.group and (index == 0 or rows[index - 1].group != row.group):
            y += pitch
            body.append(_text(8, y - 4, row.group, font_weight="600", fill=NEUTRAL))
        y += pitch
        body.append(_text(16, y - 8, row.label, fill=NEUTRAL))
        body.append(_forest_row(row, x, y - 12, domain, empty, fmt, width - right + 10))
    return _svg(width, height, label, body)


def _forest_row(row: Row, x, y: float, domain, empty: str, fmt: Format, note_x: float) -> str:
    colour = {"good": GOOD, "bad": BAD}.get(row.tone, NEUTRAL)
    if row.value is None:
        return _text(x(0) + 8, y + 4, row.note or empty, fill=MUTED, font_style="italic")
    tip = escape(f"{row.label}: {row.note or fmt(row.value)}")
    parts = [f"<g><title>{tip}</title>"]
    if row.low is not None and row.high is not None:
        low, high = max(domain[0], row.low), min(domain[1], row.high)
        parts.append(
            f'<line x1="{x(low):.1f}" y1="{y}" x2="{x(high):.1f}" y2="{y}" '
            f'stroke="{colour}" stroke-width="2"/>'
        )
        for end, cut, sign in ((low, row.low < domain[0], -1), (high, row.high > domain[1], 1)):
            if cut:
                tip_x = x(end)
                parts.append(f'<path d="M{tip_x:.1f},{y} l{-6 * sign},-4 v8 z" fill="{colour}"/>')
            else:
                parts.append(
                    f'<line x1="{x(end):.1f}" y1="{y - 5}" x2="{x(end):.1f}" y2="{y + 5}" '
                    f'stroke="{colour}" stroke-width="2"/>'
                )
    value = min(domain[1], max(domain[0], row.value))
    parts.append(
        f'<rect x="{x(value) - 5:.1f}" y="{y - 5}" width="10" height="10" fill="{colour}"/>'
    )
    parts.append(_text(note_x, y + 4, row.note or fmt(row.value), fill=colour))
    parts.append("</g>")
    return "".join(parts)


def _grid_x(marks: Sequence[float], x, top: float, bottom: float, fmt: Format) -> list[str]:
    body = [
        f'<line x1="{x(marks[0]):.1f}" y1="{bottom}" x2="{x(marks[-1]):.1f}" y2="{bottom}" '
        f'stroke="{MUTED}"/>'
    ]
    for mark in marks:
        body.append(
            f'<line x1="{x(mark):.1f}" y1="{top}" x2="{x(mark):.1f}" y2="{bottom}" '
            f'stroke="{GRID}"/>'
        )
        body.append(_text(x(mark), bottom + 16, fmt(mark), anchor="middle", fill=MUTED))
    return body


# -- lines and steps


def lines(
    series: Sequence[Series],
    *,
    label: str,
    x_label: str,
    y_label: str,
    x_marks: Sequence[float],
    x_fmt: Format = lambda v: f"{v:g}",
    y_fmt: Format = share,
    width: int = 760,
    height: int = 300,
) -> Markup:
    """Each series as a line through its points, a dot with its value at each."""
    frame = _Frame(series, label, x_label, y_label, x_marks, x_fmt, y_fmt, width, height)
    for index, one in enumerate(series):
        colour, dash = _style(index, one)
        for segment in _segments(one.points):
            path = " ".join(
                f"{'M' if i == 0 else 'L'}{frame.x(px):.1f},{frame.y(py):.1f}"
                for i, (px, py) in enumerate(segment)
            )
            frame.body.append(
                f'<path d="{path}" fill="none" stroke="{colour}" stroke-width="2"{dash}/>'
            )
        for px, py in one.points:
            if py is None:
                continue
            tip = escape(f"{one.name}, {x_fmt(px)}: {y_fmt(py)}")
            frame.body.append(
                f'<circle cx="{frame.x(px):.1f}" cy="{frame.y(py):.1f}" r="4" '
                f'fill="{colour}"><title>{tip}</title></circle>'
            )
    return frame.done()


def steps(
    series: Sequence[Series],
    *,
    label: str,
    x_label: str,
    y_label: str,
    x_end: float,
    x_fmt: Format = lambda v: f"{v:g}",
    y_fmt: Format = share,
    width: int = 760,
    height: int = 300,
) -> Markup:
    """Each series as a step line from (0, its first y): flat until the next point's x,
    then straight down (or up) to its y; the last step runs on to ``x_end``."""
    marks = ticks(0, x_end, 9)
    frame = _Frame(
        series, label, x_label, y_label, marks, x_fmt, y_fmt, width, height, from_zero=False
    )
    for index, one in enumerate(series):
        colour, dash = _style(index, one)
        points = [(px, py) for px, py in one.points if py is not None]
        if not points:
            continue
        path = [f"M{frame.x(0):.1f},{frame.y(points[0][1]):.1f}"]
        for px, py in points[1:]:
            path.append(f"H{frame.x(px):.1f} V{frame.y(py):.1f}")
        path.append(f"H{frame.x(max(x_end, points[-1][0])):.1f}")
        tip = escape(f"{one.name}: {y_fmt(points[-1][1])} {x_fmt(points[-1][0])}")
        frame.body.append(
            f'<path d="{" ".join(path)}" fill="none" stroke="{colour}" stroke-width="2"{dash}>'
            f"<title>{tip}</title></path>"
        )
    return frame.done()


def _style(index: int, one: Series) -> tuple[str, str]:
    if one.colour is not None:
        colour = PALETTE[one.colour % len(PALETTE)]
    else:
        colour = PALETTE[-1] if one.dashed else PALETTE[index % (len(PALETTE) - 1)]
    return colour, ' stroke-dasharray="6 4"' if one.dashed else ""


def _segments(points: Sequence[tuple[float, float | None]]) -> list[list[tuple[float, float]]]:
    found: list[list[tuple[float, float]]] = [[]]
    for px, py in points:
        if py is None:
            found.append([])
        else:
            found[-1].append((px, py))
    return [segment for segment in found if segment]


class _Frame:
    """The axes of a lines or steps chart: y from 0 (or, ``from_zero`` false, from a round
    value below the lowest point: the ticks say where it starts) to a round top, x over
    the marks, a legend above the plot."""

    def __init__(
        self,
        series,
        label,
        x_label,
        y_label,
        x_marks,
        x_fmt,
        y_fmt,
        width,
        height,
        *,
        from_zero: bool = True,
    ):
        self.width, self.height, self.label = width, height, label
        left, right, top, bottom = 56, 16, 22 + 18 * math.ceil(len(series) / 3), height - 44
        ys = [py for one in series for _, py in one.points if py is not None]
        floor = 0.0 if from_zero or not ys else min(ys)
        y_marks = ticks(floor, max([floor, *ys]) or 1.0, 5)
        self.x = _scale((min(x_marks), max(x_marks)), (left, width - right))
        self.y = _scale((y_marks[0], y_marks[-1]), (bottom, top))
        body = [
            f'<line x1="{left}" y1="{bottom}" x2="{width - right}" y2="{bottom}" '
            f'stroke="{MUTED}"/>',
            f'<line x1="{left}" y1="{top}" x2="{left}" y2="{bottom}" stroke="{MUTED}"/>',
        ]
        for mark in x_marks:
            body.append(_text(self.x(mark), bottom + 16, x_fmt(mark), anchor="middle", fill=MUTED))
        for mark in y_marks:
            body.append(
                f'<line x1="{left}" y1="{self.y(mark):.1f}" x2="{width - right}" '
                f'y2="{self.y(mark):.1f}" stroke="{GRID}"/>'
            )
            body.append(_text(left - 6, self.y(mark) + 4, y_fmt(mark), anchor="end", fill=MUTED))
        body.append(_text((left + width - right) / 2, height - 6, x_label, anchor="middle"))
        body.append(
            _text(
                14,
                (top + bottom) / 2,
                y_label,
                anchor="middle",
                transform=f"rotate(-90 14 {(top + bottom) / 2:.1f})",
            )
        )
        for index, one in enumerate(series):
            colour, dash = _style(index, one)
            lx, ly = left + (index % 3) * 190, 14 + 18 * (index // 3)
            body.append(
                f'<line x1="{lx}" y1="{ly - 4}" x2="{lx + 22}" y2="{ly - 4}" stroke="{colour}" '
                f'stroke-width="3"{dash}/>'
            )
            body.append(_text(lx + 28, ly, one.name, fill=NEUTRAL))
        self.body = body

    def done(self) -> Markup:
        return _svg(self.width, self.height, self.label, self.body)
