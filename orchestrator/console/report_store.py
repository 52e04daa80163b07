"""All SQL of the console's reports: counts of attempts per Oslo day and channel, per channel, carrier and
status, and what became of returned letters, over a period of Oslo calendar days; and the experiments'
reports (through :mod:`orchestrator.experiments.store`, which owns the experiments' SQL).

An attempt belongs to the moment it was recorded (when it was handed to the carrier): its id is a ULID, so a
period is a range over the primary key (``ulid_floor``) and no index beyond it is needed. Every count is a
``GROUP BY`` in the database: at most (days × channels), (channels × carriers × statuses) or (outcomes) rows
come back, however many attempts the period holds. The period is capped at :data:`MAX_DAYS` days.

Oslo days on every backend without time-zone functions in SQL: the start of each Oslo day of the period is
turned into an id bound in Python (``zoneinfo`` knows the summer-time changes), and an attempt's day is a
``CASE`` that searches those bounds as a balanced tree (about nine comparisons for a year), the same SQL on
SQLite and PostgreSQL.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any, Final
from zoneinfo import ZoneInfo

from sqlalchemy import ColumnElement, String, and_, case, func, literal, select
from sqlalchemy.ext.asyncio import AsyncSession

from orchestrator.experiments import store as experiments
from orchestrator.experiments.report import build_report
from orchestrator.experiments.spec import ExperimentSpec
from orchestrator.models import Attempt, Experiment, ReturnedLetter, ulid_floor

OSLO: Final = ZoneInfo("Europe/Oslo")
MAX_DAYS: Final = 366
OPEN: Final = "open"  # a returned letter the returned-mail job has not handled (yet)


@dataclass(frozen=True)
class Period:
    """Oslo calendar days ``since`` to ``until``, both included."""

    since: date
    until: date

    def __post_init__(self) -> None:
        if self.until < self.since:
            raise ValueError("until is before since")
        if self.length > MAX_DAYS:
            raise ValueError(f"the period is longer than {MAX_DAYS} days")

    @property
    def length(self) -> int:
        return (self.until - self.since).days + 1

    def days(self) -> list[date]:
        return [self.since + timedelta(days=n) for n in range(self.length)]

    @staticmethod
    def start_of(day: date) -> datetime:
        """Midnight in Oslo (which always exists: the clocks change at 02:00 and 03:00)."""
        return datetime.combine(day, time(0), tzinfo=OSLO)

    def id_range(self) -> tuple[str, str]:
        """[low, high) over ULID primary keys: every id recorded from the first midnight to the last."""
        return (
            ulid_floor(self.start_of(self.since)),
            ulid_floor(self.start_of(self.until + timedelta(days=1))),
        )


def _in_period(period: Period) -> ColumnElement[bool]:
    low, high = period.id_range()
    return and_(Attempt.id >= low, Attempt.id < high)


def _oslo_day(period: Period) -> ColumnElement[str]:
    """The Oslo day (``YYYY-MM-DD``) of an attempt of ``period``, from its id: a balanced CASE tree."""
    days = period.days()
    bounds = [ulid_floor(period.start_of(day)) for day in days]

    def node(lo: int, hi: int) -> ColumnElement[str]:
        if hi - lo == 1:
            return literal(days[lo].isoformat(), String)
        mid = (lo + hi) // 2
        return case((Attempt.id < bounds[mid], node(lo, mid)), else_=node(mid, hi))

    return node(0, len(days))


async def volume_by_day(session: AsyncSession, period: Period) -> list[tuple[date, str, int]]:
    """(Oslo day, channel, attempts) for every day and channel with attempts in the period."""
    inner = (
        select(_oslo_day(period).label("day"), Attempt.channel.label("channel"))
        .where(_in_period(period))
        .subquery()
    )
    rows = await session.execute(
        select(inner.c.day, inner.c.channel, func.count())
        .group_by(inner.c.day, inner.c.channel)
        .order_by(inner.c.day, inner.c.channel)
    )
    return [(date.fromisoformat(day), channel, int(count)) for day, channel, count in rows.all()]


async def status_counts(session: AsyncSession, period: Period) -> list[tuple[str, str, str, int]]:
    """(channel, carrier, status, attempts) in the period."""
    rows = await session.execute(
        select(Attempt.channel, Attempt.provider, Attempt.status, func.count())
        .where(_in_period(period))
        .group_by(Attempt.channel, Attempt.provider, Attempt.status)
        .order_by(Attempt.channel, Attempt.provider, Attempt.status)
    )
    return [(channel, provider, status, int(n)) for channel, provider, status, n in rows.all()]


async def returned_outcomes(session: AsyncSession, period: Period) -> list[tuple[str, int]]:
    """(outcome, letters) for attempts of the period that came back (status ``returned``): the outcome the
    returned-mail loop recorded, or :data:`OPEN` while it has not handled the letter."""
    outcome = func.coalesce(ReturnedLetter.outcome, OPEN)
    inner = (
        select(outcome.label("outcome"))
        .select_from(Attempt)
        .outerjoin(ReturnedLetter, ReturnedLetter.attempt_id == Attempt.id)
        .where(_in_period(period), Attempt.status == "returned")
        .subquery()
    )
    rows = await session.execute(
        select(inner.c.outcome, func.count()).group_by(inner.c.outcome).order_by(inner.c.outcome)
    )
    return [(str(name), int(n)) for name, n in rows.all()]


async def _report(session: AsyncSession, row: Experiment, now: datetime) -> dict[str, Any]:
    spec = ExperimentSpec.model_validate(row.spec)
    exposures = await experiments.exposures(session, spec.id)
    events = await experiments.outcome_events(session, spec.id)
    return build_report(spec, exposures, events, now, status=row.status)


async def experiment_reports(session: AsyncSession, now: datetime) -> list[dict[str, Any]]:
    """Every experiment's report (running and stopped, newest first), as the experiments API builds it."""
    return [await _report(session, row, now) for row in await experiments.list_experiments(session)]


async def experiment_report(
    session: AsyncSession, experiment_id: str, now: datetime
) -> dict[str, Any] | None:
    row = await experiments.get_experiment(session, experiment_id)
    return None if row is None else await _report(session, row, now)
