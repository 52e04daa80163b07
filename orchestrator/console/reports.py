"""Reports (``/console/reports``, role viewer): over a period of Oslo calendar days,

1. volume: messages handed to carriers (attempts) per channel per day;
2. rates: per channel and carrier, attempts by outcome and the delivery, bounce and return rates;
3. returned mail: what the returned-mail loop did with the letters that came back;
4. experiments: every experiment's arms with each outcome's rate, its 95 % interval and the difference to the
   baseline (:func:`orchestrator.experiments.report.build_report`, the same report the API serves).

Each section has a server-drawn SVG chart (:mod:`orchestrator.console.charts`), the same numbers in a table,
and a CSV export (audited as ``export_report``). The period comes from ``since`` and ``until``
(``YYYY-MM-DD``, both included, at most 366 days: ``report_store.MAX_DAYS``; default the last 30 days).
URLs carry only dates and experiment ids. All SQL is in :mod:`orchestrator.console.report_store`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any, Final
from urllib.parse import urlencode

from aiohttp import web

from orchestrator.appkeys import SESSIONS
from orchestrator.console import charts, pages
from orchestrator.console import report_store as store
from orchestrator.console.report_store import MAX_DAYS, OPEN, Period
from orchestrator.experiments.report import report_csv
from orchestrator.experiments.spec import REPORTED_OUTCOMES
from orchestrator.models import utcnow
from orchestrator.schemas import CHANNELS

routes = web.RouteTableDef()
ROLES: Final[dict[str, str]] = {
    "console_reports": "viewer",
    "console_reports_volume_csv": "viewer",
    "console_reports_rates_csv": "viewer",
    "console_reports_returned_csv": "viewer",
    "console_reports_experiment_csv": "viewer",
}
DEFAULT_DAYS: Final = 30
EARLIEST: Final = date(2000, 1, 1)
LATEST: Final = date(2999, 12, 31)
_DATE: Final = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")

# An attempt's status, in the columns of the rates report.
DELIVERED: Final = frozenset({"delivered", "read"})
BOUNCED: Final = frozenset({"bounced"})
RETURNED: Final = frozenset({"returned"})
FAILED: Final = frozenset({"failed", "expired"})
# Everything else (sending, sent) has no final report yet: pending.

# What the returned-mail loop did (orchestrator.returned_mail), in three groups.
RETURNED_GROUPS: Final = (
    ("resent", "Re-sent to a new address"),
    ("asked", "Asked for an address (SMS or e-mail)"),
    ("unresolved", "Unresolved"),
)
RETURNED_OUTCOMES: Final[dict[str, tuple[str, str]]] = {
    "resent": ("resent", "Re-sent to an address found after the return"),
    "address_request": ("asked", "Asked the debtor for a postal address by SMS or e-mail"),
    "no_address_found": ("unresolved", "No new address and no way to ask: operator task"),
    "graded_address": ("unresolved", "Graded (protected) address: operator task"),
    "held": ("unresolved", "Case held (bankruptcy, winding-up or removed): operator task"),
    "address_stored": (
        "unresolved",
        "Address found and stored, letter not re-sent (the contact had moved on)",
    ),
    OPEN: ("unresolved", "Not handled yet (the returned-mail job has not run)"),
}
OUTCOME_NAMES: Final[dict[str, str]] = {
    "paid": "paid",
    "payment_plan_agreed": "payment plan",
    "resolved": "resolved",
    "dispute": "dispute",
    "complaint": "complaint",
}


class PeriodError(ValueError):
    """The period form was filled in wrongly; the message says exactly how."""


def _day(name: str, raw: str) -> date:
    shown = raw if len(raw) <= 40 else raw[:40] + "…"
    if not _DATE.fullmatch(raw):
        raise PeriodError(
            f"“{name}” is “{shown}”, which is not a date: write it as YYYY-MM-DD, for example 2026-11-05."
        )
    try:
        day = date.fromisoformat(raw)
    except ValueError as exc:
        raise PeriodError(f"“{name}” is “{shown}”, which is not a day of the calendar ({exc}).") from None
    if not EARLIEST <= day <= LATEST:
        raise PeriodError(f"“{name}” is {day}; reports cover days from {EARLIEST} to {LATEST}.")
    return day


def parse_period(query: Mapping[str, str], today: date) -> Period:
    """``since`` and ``until`` from the form (empty or missing: the last 30 days up to ``today``)."""
    raw_since = query.get("since", "").strip()
    raw_until = query.get("until", "").strip()
    until = _day("until", raw_until) if raw_until else today
    since = _day("since", raw_since) if raw_since else until - timedelta(days=DEFAULT_DAYS - 1)
    if since > until:
        raise PeriodError(f"“since” ({since}) is after “until” ({until}): the period would be empty.")
    length = (until - since).days + 1
    if length > MAX_DAYS:
        raise PeriodError(
            f"The period from {since} to {until} is {length} days; a report covers at most {MAX_DAYS} days. "
            "Choose a shorter period."
        )
    return Period(since, until)


def _today() -> date:
    return utcnow().astimezone(pages.OSLO).date()


def _period(request: web.Request) -> Period:
    try:
        return parse_period(request.query, _today())
    except PeriodError as exc:
        raise web.HTTPBadRequest(text=str(exc)) from None


def _channel_order(channel: str) -> tuple[int, str]:
    return (CHANNELS.index(channel), "") if channel in CHANNELS else (len(CHANNELS), channel)


def _channel_css(channel: str) -> str:
    return charts.css(CHANNELS.index(channel)) if channel in CHANNELS else charts.css(charts.COLOURS - 1)


def _share(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def _decimal(value: float | None) -> str:
    return "" if value is None else f"{value:.6f}"


# ---- 1. volume ----


@dataclass(frozen=True)
class Volume:
    period: Period
    channels: list[str]
    counts: dict[tuple[date, str], int]

    def rows(self) -> list[tuple[date, list[int], int]]:
        """Days with attempts: (day, attempts per channel in ``channels`` order, total)."""
        out = []
        for day in self.period.days():
            values = [self.counts.get((day, channel), 0) for channel in self.channels]
            if any(values):
                out.append((day, values, sum(values)))
        return out

    def totals(self) -> list[int]:
        return [sum(n for (_, c), n in self.counts.items() if c == channel) for channel in self.channels]

    def chart(self) -> charts.Chart:
        days = self.period.days()
        series = [
            charts.Series(
                channel, [self.counts.get((day, channel), 0) for day in days], css=_channel_css(channel)
            )
            for channel in self.channels
        ]
        return charts.stacked_bars(
            "chart-volume",
            f"Attempts per channel per day, {self.period.since} to {self.period.until}",
            [day.isoformat() for day in days],
            series,
            tick_labels=[day.strftime("%d.%m.") for day in days],
            unit=" attempts",
            empty_message="No attempts in this period.",
        )


def volume(rows: Sequence[tuple[date, str, int]], period: Period) -> Volume:
    channels = sorted({channel for _, channel, _ in rows}, key=_channel_order)
    return Volume(period, channels, {(day, channel): n for day, channel, n in rows})


# ---- 2. rates ----


@dataclass
class Rates:
    channel: str
    carrier: str
    attempts: int = 0
    delivered: int = 0
    bounced: int = 0
    returned: int = 0
    failed: int = 0
    pending: int = 0

    def add(self, status: str, n: int) -> None:
        self.attempts += n
        if status in DELIVERED:
            self.delivered += n
        elif status in BOUNCED:
            self.bounced += n
        elif status in RETURNED:
            self.returned += n
        elif status in FAILED:
            self.failed += n
        else:
            self.pending += n

    @property
    def label(self) -> str:
        return f"{self.channel} · {self.carrier}"

    @property
    def delivery_rate(self) -> float | None:
        return _share(self.delivered, self.attempts)

    @property
    def bounce_rate(self) -> float | None:
        return _share(self.bounced, self.attempts)

    @property
    def return_rate(self) -> float | None:
        return _share(self.returned, self.attempts)


def rates(rows: Sequence[tuple[str, str, str, int]]) -> tuple[list[Rates], Rates]:
    """Per (channel, carrier), and all together."""
    found: dict[tuple[str, str], Rates] = {}
    total = Rates("all channels", "all carriers")
    for channel, carrier, status, n in rows:
        found.setdefault((channel, carrier), Rates(channel, carrier)).add(status, n)
        total.add(status, n)
    ordered = sorted(found.values(), key=lambda r: (_channel_order(r.channel), r.carrier))
    return ordered, total


RATE_SERIES: Final = (("delivery rate", "s1"), ("bounce rate", "s2"), ("return rate", "s3"))


def rates_chart(rows: Sequence[Rates], period: Period) -> charts.Chart:
    return charts.horizontal_bars(
        "chart-rates",
        f"Delivery, bounce and return rates per channel and carrier, {period.since} to {period.until}",
        [row.label for row in rows],
        [
            charts.Series(RATE_SERIES[0][0], [row.delivery_rate for row in rows], RATE_SERIES[0][1]),
            charts.Series(RATE_SERIES[1][0], [row.bounce_rate for row in rows], RATE_SERIES[1][1]),
            charts.Series(RATE_SERIES[2][0], [row.return_rate for row in rows], RATE_SERIES[2][1]),
        ],
        as_percent=True,
        empty_message="No attempts in this period.",
    )


# ---- 3. returned mail ----


@dataclass(frozen=True)
class ReturnedRow:
    outcome: str
    group: str
    label: str
    letters: int


@dataclass(frozen=True)
class Returned:
    rows: list[ReturnedRow]
    groups: list[tuple[str, str, int]]  # (group, label, letters)
    total: int


def returned(found: Sequence[tuple[str, int]]) -> Returned:
    counts = dict(found)
    outcomes = list(RETURNED_OUTCOMES) + sorted(set(counts) - set(RETURNED_OUTCOMES))
    rows = []
    for outcome in outcomes:
        group, label = RETURNED_OUTCOMES.get(outcome, ("unresolved", f"Other: {outcome}"))
        rows.append(ReturnedRow(outcome, group, label, counts.get(outcome, 0)))
    order = [group for group, _ in RETURNED_GROUPS]
    rows.sort(key=lambda row: order.index(row.group))
    groups = [(g, label, sum(r.letters for r in rows if r.group == g)) for g, label in RETURNED_GROUPS]
    return Returned(rows, groups, sum(counts.values()))


def returned_chart(data: Returned, period: Period) -> charts.Chart:
    return charts.horizontal_bars(
        "chart-returned",
        f"Returned letters by what was done, letters sent {period.since} to {period.until}",
        [label for _, label, _ in data.groups],
        [charts.Series("returned letters", [n for _, _, n in data.groups], "s3")],
        empty_message="No letter sent in this period has come back.",
    )


# ---- 4. experiments ----


def _pp(value: float, sign: bool = True) -> str:
    """A difference of shares in percentage points."""
    text = f"{value * 100:+.1f}" if sign else f"{value * 100:.1f}"
    return text.replace("-", "−") + " pp"


@dataclass(frozen=True)
class OutcomeCell:
    outcome: str
    successes: int
    matured: int
    rate: str
    interval: str
    early: int


@dataclass(frozen=True)
class ArmRow:
    arm: str
    variant: str
    holdout: bool
    is_baseline: bool
    exposed: int
    matured: int
    pending: int
    outcomes: list[OutcomeCell]
    difference: str
    difference_interval: str


@dataclass(frozen=True)
class ExperimentView:
    report: dict[str, Any]
    arms: list[ArmRow]
    chart: charts.Chart

    @property
    def id(self) -> str:
        return str(self.report["experiment"])


def experiment_view(report: Mapping[str, Any]) -> ExperimentView:
    """The report as the page shows it: rates and intervals as text, and the chart of the primary outcome."""
    primary = str(report["outcome"])
    matured = {str(arm["arm"]): int(arm["matured"]) for arm in report["arms"]}
    baseline = str(report["baseline"])
    rows: list[ArmRow] = []
    points: list[charts.Row] = []
    for arm in report["arms"]:
        cells = []
        for outcome in REPORTED_OUTCOMES:
            stat = arm["outcomes"][outcome]
            low, high = stat["ci95"]
            has_rate = stat["rate"] is not None
            cells.append(
                OutcomeCell(
                    outcome,
                    int(stat["successes"]),
                    int(arm["matured"]),
                    charts.percent(stat["rate"]),
                    f"{charts.percent(low)} – {charts.percent(high)}" if has_rate else "",
                    int(stat["early_successes"]),
                )
            )
        diff = arm["difference"]
        if diff is None:
            difference, interval = "baseline", ""
        elif not arm["matured"] or not matured.get(str(diff["against"])):
            difference, interval = "–", ""
        else:
            difference = _pp(float(diff["difference"]))
            interval = f"{_pp(float(diff['ci95'][0]))} to {_pp(float(diff['ci95'][1]))}"
        rows.append(
            ArmRow(
                str(arm["arm"]),
                str(arm["variant"]),
                bool(arm["holdout"]),
                bool(arm["is_baseline"]),
                int(arm["exposed"]),
                int(arm["matured"]),
                int(arm["pending"]),
                cells,
                difference,
                interval,
            )
        )
        stat = arm["outcomes"][primary]
        low, high = (float(v) for v in stat["ci95"])
        label = f"{arm['arm']} ({arm['variant']})" + (" · baseline" if arm["is_baseline"] else "")
        successes, n = int(stat["successes"]), int(arm["matured"])
        points.append(
            charts.Row(
                label,
                None if stat["rate"] is None else float(stat["rate"]),
                low,
                high,
                title=(
                    f"{arm['arm']}: {primary} {charts.percent(stat['rate'])} ({successes} of {n} matured), "
                    f"95 % interval {charts.percent(low)} – {charts.percent(high)}"
                    if stat["rate"] is not None
                    else ""
                ),
                note="" if stat["rate"] is not None else f"no matured exposures ({arm['pending']} pending)",
                css="s6" if arm["is_baseline"] else "s0",
            )
        )
    base_rate = next(
        (arm["outcomes"][primary]["rate"] for arm in report["arms"] if arm["arm"] == baseline), None
    )
    chart = charts.interval_plot(
        f"chart-experiment-{report['experiment']}",
        f"{report['name']}: {OUTCOME_NAMES.get(primary, primary)} rate per arm with its 95 % interval",
        points,
        legend=(("arm: rate and 95 % interval", "s0"), (f"baseline ({baseline})", "s6")),
        reference=None if base_rate is None else float(base_rate),
        reference_label=f"baseline rate {charts.percent(base_rate)}",
        empty_message="No exposures yet: nobody has been sent a message under this experiment.",
    )
    return ExperimentView(dict(report), rows, chart)


# ---- handlers ----


def _query(period: Period) -> str:
    return urlencode({"since": period.since.isoformat(), "until": period.until.isoformat()})


def _filename(name: str, period: Period) -> str:
    return f"report-{name}-{period.since}-to-{period.until}.csv"


@routes.get("/console/reports", name="console_reports")
async def console_reports(request: web.Request) -> web.Response:
    form = {"since": request.query.get("since", ""), "until": request.query.get("until", "")}
    try:
        period = parse_period(request.query, _today())
    except PeriodError as exc:
        return pages.render(
            request, "reports.html", status=400, error=str(exc), form=form, period=None, max_days=MAX_DAYS
        )
    async with request.app[SESSIONS]() as session:
        volume_rows = await store.volume_by_day(session, period)
        status_rows = await store.status_counts(session, period)
        returned_rows = await store.returned_outcomes(session, period)
        experiment_reports = await store.experiment_reports(session, utcnow())
    by_carrier, total = rates(status_rows)
    returned_data = returned(returned_rows)
    volume_data = volume(volume_rows, period)
    return pages.render(
        request,
        "reports.html",
        error=None,
        form={"since": period.since.isoformat(), "until": period.until.isoformat()},
        period=period,
        query=_query(period),
        max_days=MAX_DAYS,
        volume=volume_data,
        volume_chart=volume_data.chart(),
        rates=by_carrier,
        rates_total=total,
        rates_chart=rates_chart(by_carrier, period),
        percent=charts.percent,
        returned=returned_data,
        returned_chart=returned_chart(returned_data, period),
        experiments=[experiment_view(report) for report in experiment_reports],
        outcome_names=OUTCOME_NAMES,
        reported_outcomes=REPORTED_OUTCOMES,
    )


@routes.get("/console/reports/volume.csv", name="console_reports_volume_csv")
async def volume_csv(request: web.Request) -> web.Response:
    period = _period(request)
    async with request.app[SESSIONS]() as session:
        rows = await store.volume_by_day(session, period)
    await pages.audit(
        request,
        "export_report",
        report="volume",
        since=period.since.isoformat(),
        until=period.until.isoformat(),
    )
    return pages.csv_response(
        _filename("volume", period),
        ["day", "channel", "attempts"],
        sorted(rows, key=lambda row: (row[0], _channel_order(row[1]))),
    )


@routes.get("/console/reports/rates.csv", name="console_reports_rates_csv")
async def rates_csv(request: web.Request) -> web.Response:
    period = _period(request)
    async with request.app[SESSIONS]() as session:
        rows = await store.status_counts(session, period)
    by_carrier, _ = rates(rows)
    await pages.audit(
        request,
        "export_report",
        report="rates",
        since=period.since.isoformat(),
        until=period.until.isoformat(),
    )
    return pages.csv_response(
        _filename("rates", period),
        [
            "channel",
            "carrier",
            "attempts",
            "delivered",
            "bounced",
            "returned",
            "failed",
            "pending",
            "delivery_rate",
            "bounce_rate",
            "return_rate",
        ],
        [
            [
                r.channel,
                r.carrier,
                r.attempts,
                r.delivered,
                r.bounced,
                r.returned,
                r.failed,
                r.pending,
                _decimal(r.delivery_rate),
                _decimal(r.bounce_rate),
                _decimal(r.return_rate),
            ]
            for r in by_carrier
        ],
    )


@routes.get("/console/reports/returned.csv", name="console_reports_returned_csv")
async def returned_csv(request: web.Request) -> web.Response:
    period = _period(request)
    async with request.app[SESSIONS]() as session:
        found = await store.returned_outcomes(session, period)
    data = returned(found)
    await pages.audit(
        request,
        "export_report",
        report="returned",
        since=period.since.isoformat(),
        until=period.until.isoformat(),
    )
    return pages.csv_response(
        _filename("returned", period),
        ["group", "outcome", "description", "letters"],
        [[row.group, row.outcome, row.label, row.letters] for row in data.rows],
    )


@routes.get("/console/reports/experiments/{experiment_id}.csv", name="console_reports_experiment_csv")
async def experiment_csv(request: web.Request) -> web.Response:
    experiment_id = request.match_info["experiment_id"]
    async with request.app[SESSIONS]() as session:
        report = await store.experiment_report(session, experiment_id, utcnow())
    if report is None:
        raise web.HTTPNotFound(text="There is no experiment with that id.")
    await pages.audit(request, "export_report", report="experiment", experiment=experiment_id)
    # The experiments API's own CSV (every cell a validated slug, a boolean or a number, so nothing a
    # spreadsheet could run), with the BOM that lets Excel in Norway open it as UTF-8.
    return web.Response(
        body=("\ufeff" + report_csv(report)).encode("utf-8"),
        headers={
            "Content-Type": "text/csv; charset=utf-8",
            "Content-Disposition": f'attachment; filename="experiment-{report["experiment"]}.csv"',
        },
    )
