"""The versioned rule set: contact windows, deadlines, caps and channel costs, loaded from TOML.

The law is changing (Prop. 3 L (2025–2026)), so every number lives here, not in code. The packaged default is
``default_rules.toml``; ``ORCH_RULES_FILE`` replaces it. The version is written on every decision.
"""

from __future__ import annotations

import tomllib
from datetime import time
from pathlib import Path
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
