"""Charts for the console's reports, drawn on the server: pure functions that turn numbers into a
:class:`Chart` (shapes with their coordinates, hover titles and a legend), which
``templates/console/_chart.svg`` writes out as inline SVG. No JavaScript and no inline styles (the console's
Content-Security-Policy forbids both): geometry travels in presentation attributes, colours in the classes
``s0`` .. ``s6`` of ``console.css``, and every text passes the template's autoescaping.

Three kinds:

- :func:`stacked_bars`: one column per category (a day), one stacked segment per series (a channel);
- :func:`horizontal_bars`: one group per row (a channel and carrier), one bar per series (a rate);
- :func:`interval_plot`: one row per arm, its rate as a point and its 95 % interval as a whisker.

Each chart has a ``<title>`` and a ``<desc>``, axes with labelled ticks, a legend naming every series, and a
``<title>`` on every bar or point with its exact value (the hover text). A chart with nothing to draw says so
("No data ...") instead of failing. The page puts the same numbers in a table beside each chart.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final, Literal

__all__ = [
    "COLOURS",
    "Chart",
    "Dot",
    "Label",
    "LegendItem",
    "Line",
    "Rect",
    "Row",
    "Series",
    "horizontal_bars",
    "interval_plot",
    "nice_step",
    "percent",
    "stacked_bars",
]

COLOURS: Final = 7  # series colour classes s0 .. s6 in console.css
WIDTH: Final = 760
_CHAR_W: Final = 6.2  # rough width of a character at the charts' 11 px font
_LEGEND_Y: Final = 14.0
Anchor = Literal["start", "middle", "end"]


def css(index: int) -> str:
    """The colour class of series ``index`` (colours repeat after seven)."""
    return f"s{index % COLOURS}"


def percent(value: float | None, digits: int = 1) -> str:
    """``0.125`` -> ``"12.5 %"``; None -> ``"–"`` (no rate: nothing to divide by)."""
    return "–" if value is None else f"{value * 100:.{digits}f} %"


def _r(value: float) -> float:
    return round(value, 1)


@dataclass(frozen=True)
class Rect:
    x: float
    y: float
    width: float
    height: float
    css: str
    title: str = ""
    kind: Literal["rect"] = field(default="rect", init=False)


@dataclass(frozen=True)
class Line:
    x1: float
    y1: float
    x2: float
    y2: float
    css: str
    stroke_width: float = 1.0
    dash: str = ""
    title: str = ""
    kind: Literal["line"] = field(default="line", init=False)


@dataclass(frozen=True)
class Dot:
    cx: float
    cy: float
    r: float
    css: str
    title: str = ""
    kind: Literal["dot"] = field(default="dot", init=False)


@dataclass(frozen=True)
class Label:
    x: float
    y: float
    text: str
    anchor: Anchor = "start"
    kind: Literal["text"] = field(default="text", init=False)


Shape = Rect | Line | Dot | Label


@dataclass(frozen=True)
class LegendItem:
    x: float
    y: float
    label: str
    css: str


@dataclass(frozen=True)
class Chart:
    """What ``_chart.svg`` draws. ``id`` must be unique on the page (it names the title and description)."""

    id: str
    title: str
    description: str
    width: int
    height: int
    shapes: tuple[Shape, ...]
    legend: tuple[LegendItem, ...]
    empty: bool = False


@dataclass(frozen=True)
class Series:
    """A named series: one value per category (or per row); None is "no value" (nothing is drawn)."""

    name: str
    values: Sequence[float | None]
    css: str = ""


@dataclass(frozen=True)
class Row:
    """One row of an interval plot: an estimate with its interval, or None when there is nothing yet."""

    label: str
    estimate: float | None
    low: float
    high: float
    title: str = ""
    note: str = ""
    css: str = "s0"


def nice_step(raw: float, *, integer: bool = False) -> float:
    """The smallest of 1, 2, 2.5, 5 × 10^k that is at least ``raw``; for counts a whole number, at least 1."""
    if raw <= 0:
        return 1.0
    exponent = math.floor(math.log10(raw))
    step = 10.0 ** (exponent + 1)
    for mantissa in (1.0, 2.0, 2.5, 5.0):
        candidate = mantissa * 10.0**exponent
        if candidate >= raw * (1 - 1e-12) and (not integer or float(candidate).is_integer()):
            step = candidate
            break
    return max(1.0, step) if integer else step


def _legend(items: Sequence[tuple[str, str]], x0: float) -> tuple[LegendItem, ...]:
    """Legend entries on one line at the top, wrapping to a second line when they do not fit."""
    out: list[LegendItem] = []
    x, y = x0, _LEGEND_Y - 10
    for label, colour in items:
        needed = 16 + len(label) * _CHAR_W + 14
        if x + needed > WIDTH - 8 and x > x0:
            x, y = x0, y + 16
        out.append(LegendItem(_r(x), _r(y), label, colour))
        x += needed
    return tuple(out)


def _legend_height(legend: Sequence[LegendItem]) -> float:
    return (max(item.y for item in legend) + 10 + 8) if legend else 4.0


def _no_data(chart_id: str, title: str, message: str) -> Chart:
    return Chart(
        id=chart_id,
        title=title,
        description=message,
        width=WIDTH,
        height=70,
        shapes=(Label(WIDTH / 2, 40, message, "middle"),),
        legend=(),
        empty=True,
    )


def _count(value: float) -> str:
    return f"{value:,.0f}".replace(",", " ") if float(value).is_integer() else f"{value:,.2f}"


def stacked_bars(
    chart_id: str,
    title: str,
    categories: Sequence[str],
    series: Sequence[Series],
    *,
    tick_labels: Sequence[str] | None = None,
    unit: str = "",
    empty_message: str = "No data in this period.",
) -> Chart:
    """A column per category, the series stacked in it (bottom first). Values are counts (None counts 0);
    a column's height is proportional to its total, each segment to its value."""
    for s in series:
        if len(s.values) != len(categories):
            raise ValueError(f"series {s.name!r} has {len(s.values)} values for {len(categories)} categories")
    totals = [sum(s.values[i] or 0 for s in series) for i in range(len(categories))]
    if not categories or not series or max(totals, default=0) <= 0:
        return _no_data(chart_id, title, empty_message)
    if any((v or 0) < 0 for s in series for v in s.values):
        raise ValueError("stacked bars need values of 0 or more")
    legend = _legend([(s.name, s.css or css(i)) for i, s in enumerate(series)], 52)
    top = _legend_height(legend) + 8
    left, right, bottom_margin = 52.0, 12.0, 34.0
    plot_h = 200.0
    height = top + plot_h + bottom_margin
    bottom = top + plot_h
    plot_w = WIDTH - left - right
    step = nice_step(max(totals) / 4, integer=True)
    y_max = step * math.ceil(max(totals) / step)
    shapes: list[Shape] = []
    ticks = round(y_max / step)
    for k in range(ticks + 1):
        value = k * step
        y = bottom - plot_h * value / y_max
        if k:
            shapes.append(Line(left, _r(y), WIDTH - right, _r(y), "grid"))
        shapes.append(Label(left - 6, _r(y + 4), _count(value), "end"))
    slot = plot_w / len(categories)
    bar_w = max(slot * 0.8, 1.0)
    for i, category in enumerate(categories):
        x = left + slot * i + (slot - bar_w) / 2
        y = bottom
        for n, s in enumerate(series):
            value = s.values[i] or 0
            if value <= 0:
                continue
            h = plot_h * value / y_max
            y -= h
            shapes.append(
                Rect(
                    _r(x),
                    round(y, 2),
                    round(bar_w, 2),
                    round(h, 2),
                    s.css or css(n),
                    f"{category} · {s.name}: {_count(value)}{unit}",
                )
            )
    labels = tick_labels if tick_labels is not None else categories
    every = max(1, math.ceil(len(categories) / 10))
    for i in range(0, len(categories), every):
        x = left + slot * i + slot / 2
        shapes.append(Line(_r(x), bottom, _r(x), bottom + 4, "axis"))
        shapes.append(Label(_r(x), bottom + 16, labels[i], "middle"))
    shapes.append(Line(left, top, left, bottom, "axis"))
    shapes.append(Line(left, bottom, WIDTH - right, bottom, "axis"))
    total = sum(totals)
    return Chart(
        id=chart_id,
        title=title,
        description=f"{len(categories)} columns, {len(series)} series, {_count(total)}{unit} in all; "
        f"the highest column is {_count(max(totals))}{unit}. The table beside the chart has every number.",
        width=WIDTH,
        height=math.ceil(height),
        shapes=tuple(shapes),
        legend=legend,
    )


def horizontal_bars(
    chart_id: str,
    title: str,
    rows: Sequence[str],
    series: Sequence[Series],
    *,
    as_percent: bool = False,
    empty_message: str = "No data in this period.",
) -> Chart:
    """A group of horizontal bars per row, one bar per series, length proportional to the value.
    ``as_percent``: values are shares (0 to 1) on a 0–100 % axis; else counts on a nice axis."""
    for s in series:
        if len(s.values) != len(rows):
            raise ValueError(f"series {s.name!r} has {len(s.values)} values for {len(rows)} rows")
    values = [v for s in series for v in s.values if v is not None]
    if not rows or not series or not values:
        return _no_data(chart_id, title, empty_message)
    if any(v < 0 for v in values) or (as_percent and any(v > 1 for v in values)):
        raise ValueError("bars need values of 0 or more (shares at most 1)")
    if not as_percent and max(values) <= 0:
        return _no_data(chart_id, title, empty_message)
    longest = max(len(label) for label in rows)
    left = float(min(max(70, 12 + longest * _CHAR_W), 300))
    right = 64.0
    legend = _legend([(s.name, s.css or css(i)) for i, s in enumerate(series)], left)
    top = _legend_height(legend) + 8
    bar_h, gap = 14.0, 12.0
    group_h = bar_h * len(series) + gap
    plot_h = group_h * len(rows)
    bottom = top + plot_h
    height = bottom + 28
    plot_w = WIDTH - left - right
    if as_percent:
        x_max, step = 1.0, 0.25
    else:
        step = nice_step(max(values) / 4, integer=True)
        x_max = step * math.ceil(max(values) / step)
    shapes: list[Shape] = []
    for k in range(round(x_max / step) + 1):
        tick = k * step
        x = left + plot_w * tick / x_max
        if k:
            shapes.append(Line(_r(x), top, _r(x), bottom, "grid"))
        shapes.append(Label(_r(x), bottom + 16, percent(tick, 0) if as_percent else _count(tick), "middle"))
    for r, label in enumerate(rows):
        y0 = top + group_h * r + gap / 2
        shapes.append(Label(left - 6, _r(y0 + bar_h * len(series) / 2 + 4), label, "end"))
        for n, s in enumerate(series):
            value = s.values[r]
            y = y0 + bar_h * n
            shown = "no value" if value is None else percent(value) if as_percent else _count(value)
            if value is not None and value > 0:
                w = plot_w * value / x_max
                shapes.append(
                    Rect(
                        left,
                        _r(y + 1),
                        round(w, 2),
                        bar_h - 2,
                        s.css or css(n),
                        f"{label} · {s.name}: {shown}",
                    )
                )
            else:
                w = 0.0
            shapes.append(Label(_r(left + w + 4), _r(y + bar_h - 3), shown))
    shapes.append(Line(left, top, left, bottom, "axis"))
    shapes.append(Line(left, bottom, WIDTH - right, bottom, "axis"))
    return Chart(
        id=chart_id,
        title=title,
        description=f"{len(rows)} rows, {len(series)} bars each ({', '.join(s.name for s in series)}). "
        "The table beside the chart has every number.",
        width=WIDTH,
        height=math.ceil(height),
        shapes=tuple(shapes),
        legend=legend,
    )


_INTERVAL_SCALES: Final = (0.01, 0.02, 0.05, 0.1, 0.2, 0.25, 0.5, 1.0)


def interval_plot(
    chart_id: str,
    title: str,
    rows: Sequence[Row],
    *,
    legend: Sequence[tuple[str, str]] = (("Rate and its 95 % interval", "s0"),),
    reference: float | None = None,
    reference_label: str = "",
    empty_message: str = "No exposures yet.",
) -> Chart:
    """A row per group: its rate as a point, its interval as a whisker from ``low`` to ``high`` (shares
    between 0 and 1), on a percent axis scaled to the largest interval. ``reference`` draws a dashed line
    (the baseline's rate)."""
    if not rows:
        return _no_data(chart_id, title, empty_message)
    for row in rows:
        if not 0 <= row.low <= row.high <= 1 or (
            row.estimate is not None and not row.low - 1e-9 <= row.estimate <= row.high + 1e-9
        ):
            raise ValueError(f"row {row.label!r}: need 0 <= low <= estimate <= high <= 1")
    shown = [row for row in rows if row.estimate is not None]
    if not shown:
        return _no_data(chart_id, title, empty_message)
    highest = max(row.high for row in shown)
    x_max = next(scale for scale in _INTERVAL_SCALES if scale >= highest - 1e-12)
    longest = max(len(row.label) for row in rows)
    left = float(min(max(70, 12 + longest * _CHAR_W), 300))
    right = 150.0
    legend_items = _legend(legend, left)
    top = _legend_height(legend_items) + 8
    row_h = 26.0
    bottom = top + row_h * len(rows)
    height = bottom + 28
    plot_w = WIDTH - left - right

    def at(value: float) -> float:
        return _r(left + plot_w * min(value, x_max) / x_max)

    shapes: list[Shape] = []
    step = x_max / 4
    for k in range(5):
        x = at(k * step)
        if k:
            shapes.append(Line(x, top, x, bottom, "grid"))
        digits = 0 if (k * step * 100).is_integer() else 1
        shapes.append(Label(x, bottom + 16, percent(k * step, digits), "middle"))
    if reference is not None:
        shapes.append(
            Line(at(reference), top, at(reference), bottom, "axis", dash="4 3", title=reference_label)
        )
    for i, row in enumerate(rows):
        y = _r(top + row_h * i + row_h / 2)
        shapes.append(Label(left - 6, y + 4, row.label, "end"))
        if row.estimate is None:
            shapes.append(Label(left + 4, y + 4, row.note or "no value yet"))
            continue
        tip = row.title or (
            f"{row.label}: {percent(row.estimate)} (95 % interval {percent(row.low)} – {percent(row.high)})"
        )
        lo, hi = at(row.low), at(row.high)
        shapes.append(Line(lo, y, hi, y, row.css, stroke_width=2, title=tip))
        shapes.append(Line(lo, y - 5, lo, y + 5, row.css, stroke_width=2))
        shapes.append(Line(hi, y - 5, hi, y + 5, row.css, stroke_width=2))
        shapes.append(Dot(at(row.estimate), y, 4.5, row.css, tip))
        text = f"{percent(row.estimate)} [{percent(row.low)}, {percent(row.high)}]"
        if row.note:
            text += f" {row.note}"
        shapes.append(Label(WIDTH - right + 8, y + 4, text))
    shapes.append(Line(left, top, left, bottom, "axis"))
    shapes.append(Line(left, bottom, WIDTH - right, bottom, "axis"))
    return Chart(
        id=chart_id,
        title=title,
        description=f"{len(rows)} rows; each point is a rate and its whisker the 95 % interval. "
        "The table beside the chart has every number.",
        width=WIDTH,
        height=math.ceil(height),
        shapes=tuple(shapes),
        legend=legend_items,
    )
