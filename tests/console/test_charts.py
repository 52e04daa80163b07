"""The reports' SVG charts, as the console writes them (charts.py builds them, ``_chart.svg`` renders them):
well-formed, proportional, labelled, with a legend for every series, escaped, and a "no data" chart for an
empty series instead of an error."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from orchestrator.console import charts, pages

SVG = "{http://www.w3.org/2000/svg}"


def render(chart: charts.Chart) -> ET.Element:
    """The chart through the console's own template, parsed as XML (fails if it is not well-formed)."""
    root = ET.fromstring(pages.render_text("_chart.svg", chart=chart))  # noqa: S314 - our own markup
    assert root.tag == f"{SVG}svg"
    return root


def bars(root: ET.Element) -> list[ET.Element]:
    """The data bars (rects with a hover title), not the legend swatches."""
    return [rect for rect in root.iter(f"{SVG}rect") if rect.find(f"{SVG}title") is not None]


def title_of(element: ET.Element) -> str:
    found = element.find(f"{SVG}title")
    assert found is not None and found.text is not None
    return found.text


def legend(root: ET.Element) -> list[tuple[str, str]]:
    """(label, colour class) of each legend entry."""
    group = root.find(f"{SVG}g[@class='legend']")
    assert group is not None
    swatches = group.findall(f"{SVG}rect")
    labels = group.findall(f"{SVG}text")
    return [(t.text or "", r.get("class", "")) for r, t in zip(swatches, labels, strict=True)]


def texts(root: ET.Element) -> list[str]:
    return [t.text or "" for t in root.iter(f"{SVG}text")]


def test_stacked_bars_are_proportional_stacked_and_labelled() -> None:
    chart = charts.stacked_bars(
        "volume",
        "Attempts per channel per day",
        ["2026-12-01", "2026-12-02", "2026-12-03"],
        [charts.Series("email", [6, 3, 0]), charts.Series("sms", [2, 0, 4])],
    )
    root = render(chart)
    assert root.get("role") == "img" and root.get("class") == "chart"
    assert root.find(f"{SVG}title") is not None and root.find(f"{SVG}desc") is not None
    found = {title_of(rect): rect for rect in bars(root)}
    assert set(found) == {
        "2026-12-01 · email: 6",
        "2026-12-01 · sms: 2",
        "2026-12-02 · email: 3",
        "2026-12-03 · sms: 4",
    }  # no bar for a zero
    heights = {name: float(rect.get("height", "0")) for name, rect in found.items()}
    unit = heights["2026-12-02 · email: 3"] / 3
    for name, height in heights.items():
        assert height == pytest.approx(unit * int(name.rsplit(": ", 1)[1]), abs=0.02), name
    # sms sits on top of email in the same column: its bottom is email's top
    email, sms = found["2026-12-01 · email: 6"], found["2026-12-01 · sms: 2"]
    assert email.get("x") == sms.get("x")
    assert float(sms.get("y", "0")) + float(sms.get("height", "0")) == pytest.approx(
        float(email.get("y", "0")), abs=0.02
    )
    # colours per series, and the legend names each one in its colour
    assert {email.get("class"), sms.get("class")} == {"s0", "s1"}
    assert legend(root) == [("email", email.get("class")), ("sms", sms.get("class"))]
    # the value axis is labelled up to at least the highest column (8), the days along the bottom
    ticks = [float(t) for t in texts(root) if t.replace(".", "").isdigit()]
    assert max(ticks) >= 8 and min(ticks) == 0
    assert "2026-12-03" in texts(root)


def test_a_series_keeps_the_colour_it_is_given() -> None:
    chart = charts.stacked_bars("v", "t", ["a"], [charts.Series("sms", [1], css="s2")])
    root = render(chart)
    assert [rect.get("class") for rect in bars(root)] == ["s2"]
    assert legend(root) == [("sms", "s2")]


def test_horizontal_bars_are_proportional_with_every_series_in_the_legend() -> None:
    chart = charts.horizontal_bars(
        "rates",
        "Rates",
        ["email · smtp", "sms · linkmobility"],
        [
            charts.Series("delivery rate", [0.5, 1.0], "s1"),
            charts.Series("bounce rate", [0.25, 0.0], "s2"),
            charts.Series("return rate", [None, None], "s3"),
        ],
        as_percent=True,
    )
    root = render(chart)
    assert [label for label, _ in legend(root)] == ["delivery rate", "bounce rate", "return rate"]
    widths = {title_of(rect): float(rect.get("width", "0")) for rect in bars(root)}
    assert set(widths) == {
        "email · smtp · delivery rate: 50.0 %",
        "email · smtp · bounce rate: 25.0 %",
        "sms · linkmobility · delivery rate: 100.0 %",
    }
    full = widths["sms · linkmobility · delivery rate: 100.0 %"]
    assert widths["email · smtp · delivery rate: 50.0 %"] == pytest.approx(full / 2, abs=0.02)
    assert widths["email · smtp · bounce rate: 25.0 %"] == pytest.approx(full / 4, abs=0.02)
    shown = texts(root)
    assert "0 %" in shown and "100 %" in shown  # the axis
    assert "no value" in shown  # a rate with nothing to divide by is said, not drawn as 0
    assert "email · smtp" in shown and "sms · linkmobility" in shown


def test_horizontal_count_bars_use_a_count_axis() -> None:
    chart = charts.horizontal_bars(
        "r", "Returned", ["re-sent", "asked", "unresolved"], [charts.Series("letters", [3, 1, 0])]
    )
    root = render(chart)
    widths = {title_of(rect): float(rect.get("width", "0")) for rect in bars(root)}
    assert set(widths) == {"re-sent · letters: 3", "asked · letters: 1"}
    assert widths["re-sent · letters: 3"] == pytest.approx(3 * widths["asked · letters: 1"], abs=0.02)
    assert "0" in texts(root) and "3" in texts(root)


@pytest.mark.parametrize(
    "chart",
    [
        charts.stacked_bars("a", "Volume", [], []),
        charts.stacked_bars("b", "Volume", ["2026-12-01"], [charts.Series("email", [0])]),
        charts.horizontal_bars("c", "Rates", [], [], as_percent=True),
        charts.horizontal_bars("d", "Rates", ["x"], [charts.Series("rate", [None])], as_percent=True),
        charts.horizontal_bars("e", "Letters", ["x"], [charts.Series("letters", [0])]),
        charts.interval_plot("f", "Experiment", []),
        charts.interval_plot("g", "Experiment", [charts.Row("control", None, 0.0, 1.0)]),
    ],
)
def test_an_empty_series_gives_a_no_data_chart_not_an_error(chart: charts.Chart) -> None:
    root = render(chart)
    assert chart.empty and root.get("data-empty") == "true"
    assert bars(root) == []
    assert any(text.startswith("No ") for text in texts(root)), texts(root)


def test_ci_whiskers_span_the_interval_and_the_point_sits_at_the_rate() -> None:
    chart = charts.interval_plot(
        "exp",
        "Paid rate per arm",
        [
            charts.Row("control · baseline", 0.2, 0.1, 0.4, css="s6"),
            charts.Row("personal", 0.3, 0.15, 0.5),
            charts.Row("late", None, 0.0, 1.0, note="no matured exposures"),
        ],
        reference=0.2,
        reference_label="baseline rate 20.0 %",
    )
    root = render(chart)
    # the axis: 0 % at the plot's left edge, 50 % (the smallest scale holding 0.5) at its right
    axis = {t.text: float(t.get("x", "0")) for t in root.iter(f"{SVG}text") if (t.text or "").endswith(" %")}
    zero, top = axis["0 %"], axis["50 %"]

    def x_of(share: float) -> float:
        return zero + (top - zero) * share / 0.5

    whiskers = [
        line
        for line in root.iter(f"{SVG}line")
        if line.get("stroke-width") == "2" and line.find(f"{SVG}title") is not None
    ]
    assert len(whiskers) == 2
    dots = list(root.iter(f"{SVG}circle"))
    assert len(dots) == 2
    for whisker, dot, (low, rate, high) in zip(
        whiskers, dots, [(0.1, 0.2, 0.4), (0.15, 0.3, 0.5)], strict=True
    ):
        assert float(whisker.get("x1", "0")) == pytest.approx(x_of(low), abs=0.1)
        assert float(whisker.get("x2", "0")) == pytest.approx(x_of(high), abs=0.1)
        assert float(dot.get("cx", "0")) == pytest.approx(x_of(rate), abs=0.1)
        assert dot.get("cy") == whisker.get("y1") == whisker.get("y2")
    assert [d.get("class") for d in dots] == ["s6", "s0"]
    assert "personal: 30.0 % (95 % interval 15.0 % – 50.0 %)" in [title_of(d) for d in dots]
    assert "no matured exposures" in texts(root)  # the arm without a rate is said, not drawn
    dashed = [line for line in root.iter(f"{SVG}line") if line.get("stroke-dasharray")]
    assert len(dashed) == 1 and float(dashed[0].get("x1", "0")) == pytest.approx(x_of(0.2), abs=0.1)
    assert [label for label, _ in legend(root)] == ["Rate and its 95 % interval"]


def test_values_are_escaped() -> None:
    nasty = 'email <script>alert("x")</script> & co'
    chart = charts.stacked_bars("x", "A <b>title</b> & more", ["<day>"], [charts.Series(nasty, [2])])
    markup = pages.render_text("_chart.svg", chart=chart)
    assert "<script>" not in markup and "<b>" not in markup
    root = render(chart)
    assert root.find(f"{SVG}title") is not None and root.findtext(f"{SVG}title") == "A <b>title</b> & more"
    assert legend(root) == [(nasty, "s0")]
    assert title_of(bars(root)[0]) == f"<day> · {nasty}: 2"
    rows = charts.interval_plot("y", "t", [charts.Row('arm "a" <1>', 0.5, 0.2, 0.8)])
    assert 'arm "a" <1>' in texts(render(rows))


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match="2 values for 1 categories"):
        charts.stacked_bars("x", "t", ["a"], [charts.Series("s", [1, 2])])
    with pytest.raises(ValueError, match="0 or more"):
        charts.stacked_bars("x", "t", ["a", "b"], [charts.Series("s", [3, -1])])
    with pytest.raises(ValueError, match="at most 1"):
        charts.horizontal_bars("x", "t", ["a"], [charts.Series("s", [1.5])], as_percent=True)
    with pytest.raises(ValueError, match="low <= estimate <= high"):
        charts.interval_plot("x", "t", [charts.Row("a", 0.9, 0.1, 0.5)])


@pytest.mark.parametrize(
    ("raw", "integer", "step"),
    [
        (0.3, False, 0.5),
        (0.3, True, 1.0),
        (1.75, True, 2.0),
        (2.2, True, 2.5 * 2),
        (7.0, False, 10.0),
        (40, True, 50.0),
        (0, True, 1.0),
    ],
)
def test_nice_steps(raw: float, integer: bool, step: float) -> None:
    assert charts.nice_step(raw, integer=integer) == step


def test_many_days_keep_the_axis_readable() -> None:
    days = [f"day-{n:03d}" for n in range(366)]
    chart = charts.stacked_bars("y", "A year", days, [charts.Series("letter", [n % 5 for n in range(366)])])
    root = render(chart)
    assert len(bars(root)) == sum(1 for n in range(366) if n % 5)
    day_labels = [t for t in texts(root) if t.startswith("day-")]
    assert 5 <= len(day_labels) <= 11  # about ten labels, not 366 on top of each other
    widths = {float(rect.get("width", "0")) for rect in bars(root)}
    assert min(widths) >= 1
