"""Commitment on the self-service page (the tone library's ``commitment`` variant): the debtor chooses the
date they will pay, or proposes a monthly payment plan. The rules are pure functions of the time and the
claim; the routes that record them as case events are in :mod:`orchestrator.selfservice`.

- A payment date lies from today to today + :data:`PAYMENT_DATE_HORIZON_DAYS` (both included, Europe/Oslo).
- A plan has :data:`MIN_INSTALLMENTS` to :data:`MAX_INSTALLMENTS` monthly instalments of the total divided by
  their number, rounded up to whole kroner; the last instalment is what remains, so it is never more than the
  others and the plan never adds up to more than the claim. A claim so small that the last instalment would
  be nothing offers fewer instalments (always a range: from the fewest to the most it allows).
- One plan per case from the self-service page: the debtor's first proposal stands (a person changes it).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import ROUND_CEILING, Decimal
from typing import Final, Literal
from zoneinfo import ZoneInfo

__all__ = [
    "MAX_INSTALLMENTS",
    "MIN_INSTALLMENTS",
    "PAYMENT_DATE_HORIZON_DAYS",
    "ZONE",
    "DateProblem",
    "DateWindow",
    "Plan",
    "date_window",
    "installment_choices",
    "parse_installments",
    "parse_payment_date",
    "plan_for",
]

PAYMENT_DATE_HORIZON_DAYS: Final = 30
MIN_INSTALLMENTS: Final = 2
MAX_INSTALLMENTS: Final = 12
ZONE: Final = ZoneInfo("Europe/Oslo")  # the debtor's "today"
_KRONE: Final = Decimal(1)


@dataclass(frozen=True)
class DateWindow:
    first: date  # today
    last: date  # the last date the debtor may choose
    days: int


def date_window(now: datetime, horizon_days: int = PAYMENT_DATE_HORIZON_DAYS) -> DateWindow:
    today = now.astimezone(ZONE).date()
    return DateWindow(first=today, last=today + timedelta(days=horizon_days), days=horizon_days)


@dataclass(frozen=True)
class DateProblem:
    code: Literal["missing", "not_a_date", "before_today", "after_horizon"]
    given: date | None = None  # the date given, when it was one


def parse_payment_date(raw: str, window: DateWindow) -> date | DateProblem:
    """The date from the form (``YYYY-MM-DD``, what a date input sends), or what is wrong with it."""
    text = raw.strip()
    if not text:
        return DateProblem("missing")
    try:
        chosen = date.fromisoformat(text)
    except ValueError:
        return DateProblem("not_a_date")
    if len(text) != 10:  # fromisoformat also takes "20261101"; the form's field does not send that
        return DateProblem("not_a_date")
    if chosen < window.first:
        return DateProblem("before_today", chosen)
    if chosen > window.last:
        return DateProblem("after_horizon", chosen)
    return chosen


@dataclass(frozen=True)
class Plan:
    installments: int
    monthly_amount: Decimal  # whole kroner
    last_amount: Decimal  # what remains for the last instalment (at most monthly_amount)
    total: Decimal


def plan_for(total: Decimal, installments: int) -> Plan:
    monthly = (total / installments).quantize(_KRONE, rounding=ROUND_CEILING)
    return Plan(
        installments=installments,
        monthly_amount=monthly,
        last_amount=total - monthly * (installments - 1),
        total=total,
    )


def installment_choices(total: Decimal) -> list[Plan]:
    """The plans the page offers: from the fewest instalments up to the first number whose last instalment
    would be nothing (only claims of a few hundred kroner or less stop before the most)."""
    if total <= 0:
        return []
    plans = (plan_for(total, n) for n in range(MIN_INSTALLMENTS, MAX_INSTALLMENTS + 1))
    return list(itertools.takewhile(lambda plan: plan.last_amount > 0, plans))


def parse_installments(raw: str, total: Decimal) -> Plan | None:
    """The plan for the number of instalments chosen on the form, or None if the page does not offer it."""
    text = raw.strip()
    if not text.isascii() or not text.isdigit():
        return None
    return next((plan for plan in installment_choices(total) if plan.installments == int(text)), None)
