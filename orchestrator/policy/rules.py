"""The versioned rule set: contact windows, deadlines, caps and channel costs, loaded from TOML.

The law is changing (Prop. 3 L (2025–2026)), so every number lives here, not in code. The packaged default is
``default_rules.toml``; ``ORCH_RULES_FILE`` replaces it. The version is written on every decision.
"""

from __future__ import annotations

import tomllib
from datetime import time
from functools import cache
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

DEFAULT_RULES_FILE = Path(__file__).with_name("default_rules.toml")
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


class RulesError(ValueError):
    """The rule file cannot be used; the message says where and why."""


class Window(BaseModel):
    """One opening on a day, ``start`` inclusive and ``end`` exclusive (21:00 is already closed)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    start: time
    end: time

    @model_validator(mode="after")
    def _ordered(self) -> Window:
        if self.end <= self.start:
            raise ValueError(f"window ends ({self.end}) before it starts ({self.start})")
        return self


class ContactWindows(BaseModel):
    """R5: when a debtor may be contacted. A day that is absent (or a public holiday) has no window."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    timezone: str = "Europe/Oslo"
    holidays_country: str = "NO"
    closed_on_public_holidays: bool = True
    days: dict[str, Window] = Field(default_factory=dict)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value

    @field_validator("holidays_country")
    @classmethod
    def _known_country(cls, value: str) -> str:
        import holidays

        if value not in holidays.list_supported_countries():
            raise ValueError(f"the holidays package has no calendar for country {value!r}")
        return value

    @field_validator("days")
    @classmethod
    def _known_days(cls, value: dict[str, Window]) -> dict[str, Window]:
        unknown = sorted(set(value) - set(WEEKDAYS))
        if unknown:
            raise ValueError(f"unknown day name(s) {unknown}; use {list(WEEKDAYS)}")
        return value

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def window_for_weekday(self, weekday: int) -> Window | None:
        """``weekday`` as ``date.weekday()``: 0 is Monday."""
        return self.days.get(WEEKDAYS[weekday])


class PressureCap(BaseModel):
    """R6: no unreasonable pressure. Contacts per debtor across every channel, case and upstream system;
    statutory notices count towards it but are never held back by it."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    max_per_day: int = Field(1, ge=1)
    max_per_7_days: int = Field(3, ge=1)
    # "defer": send when the cap allows again (the next opening after); "suppress": do not send at all.
    when_reached: Literal["defer", "suppress"] = "defer"
    # A contact that the cap would defer further than this is suppressed instead.
    max_defer_days: int = Field(14, ge=1)
    # Not pressure, so neither counted nor held back: what the debtor asked for, and address requests.
    exempt_kinds: tuple[str, ...] = (
        "address_request",
        "dispute_acknowledgement",
        "payment_confirmation",
        "payment_plan_confirmation",
    )


class FeeRules(BaseModel):
    """R10: a reminder or varsel fee only when sent at least ``min_days_after_due`` after the due date, and
    at most ``max_fee_reminders`` fee-bearing reminders per claim."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    min_days_after_due: int = Field(14, ge=14)
    max_fee_reminders: int = Field(2, ge=0)
    fee_kinds: tuple[str, ...] = ("reminder_fee", "varsel_fee")


class Ranking(BaseModel):
    """How lawful, reachable channels are ranked: expected cost per response. A channel's observed response
    rate (payments, plans, disputes after a contact, for comparable debtors) is used once it rests on
    ``min_observations``; before that the prior is used, and with equal priors cost alone decides."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    min_observations: int = Field(200, ge=1)
    prior_response_rate: float = Field(0.1, gt=0, le=1)
    # What counts as a response, and how long after the send: outcomes, never opens.
    response_events: tuple[str, ...] = (
        "payment_received",
        "paid_in_full",
        "payment_plan_agreed",
        "dispute_raised",
    )
    response_window_days: int = Field(14, ge=1)
    history_days: int = Field(180, ge=1)
    # The debtor's own stated preference wins over cost unless it costs more than this many times as much.
    preference_max_cost_ratio: float = Field(50.0, ge=1)


class Fallback(BaseModel):
    """When the chosen channel fails, bounces, returns or stays silent, the next eligible channel is tried
    (inside the windows and the cap); a statutory notice only on channels lawful for it."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    enabled: bool = True
    max_channels: int = Field(4, ge=1, description="Channels tried per contact, the first included.")


class Holds(BaseModel):
    """R4/R8 hold every message of a held case, and a closed case gets nothing more, except the messages
    about the hold or the closing themselves: a dispute's acknowledgement, a payment's confirmation."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    sendable_while_held: tuple[str, ...] = ("dispute_acknowledgement",)
    sendable_when_closed: tuple[str, ...] = ("payment_confirmation", "dispute_acknowledgement")

    def case_statuses(self, kind: str) -> tuple[str, ...]:
        """The case statuses a message of ``kind`` may still be sent in."""
        statuses = ["open"]
        if kind in self.sendable_while_held:
            statuses.append("held")
        if kind in self.sendable_when_closed:
            statuses.append("closed")
        return tuple(statuses)


class RuleSet(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    version: str = Field(min_length=1)
    contact_windows: ContactWindows
    statutory_deadline_days: int = Field(14, ge=14, description="R1/R2: at least 14 days from the send date.")
    print_if_unread_after_days: int = Field(
        7,
        ge=1,
        description="R3: a statutory notice in a digital mailbox that is still unread is printed then.",
    )
    channel_costs_nok: dict[str, float] = Field(default_factory=dict)
    electronic_evidence_max_age_days: int = Field(
        365,
        ge=1,
        description="R3: evidence that an electronic address is reliable (the debtor wrote from it, read a "
        "notice there) counts for a statutory notice only if observed within this many days of sending.",
    )
    pressure_cap: PressureCap = Field(default_factory=lambda: PressureCap())
    fees: FeeRules = Field(default_factory=lambda: FeeRules())
    ranking: Ranking = Field(default_factory=lambda: Ranking())
    fallback: Fallback = Field(default_factory=lambda: Fallback())
    holds: Holds = Field(default_factory=lambda: Holds())


@cache
def rules_for(path: Path | None = None) -> RuleSet:
    """The rule set of ``path``, read once per process (for web handlers that apply case events)."""
    return load_rules(path)


def load_rules(path: Path | None = None) -> RuleSet:
    """Read and validate a rule file; a bad file raises ``RulesError`` naming the file and the field."""
    source = path or DEFAULT_RULES_FILE
    try:
        raw = tomllib.loads(source.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise RulesError(f"rule file {source} does not exist") from exc
    except tomllib.TOMLDecodeError as exc:
        raise RulesError(f"rule file {source} is not valid TOML: {exc}") from exc
    try:
        return RuleSet.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors(include_url=False)
        )
        raise RulesError(f"rule file {source} is invalid: {problems}") from exc
