"""The experiments API's responses, as pydantic models (the OpenAPI document is built from them)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel

from orchestrator.experiments.spec import ExperimentSpec


class ExperimentOut(BaseModel):
    id: str
    name: str
    status: str  # running | stopped
    spec: ExperimentSpec
    created_at: datetime
    stopped_at: datetime | None
    links: dict[str, str]


class ExperimentList(BaseModel):
    items: list[ExperimentOut]


class OutcomeStat(BaseModel):
    successes: int
    rate: float | None  # over matured exposures; None before any window has closed
    ci95: list[float]  # Wilson score interval
    early_successes: int  # successes among exposures whose window is still open


class Difference(BaseModel):
    against: str
    outcome: str
    difference: float
    ci95: list[float]  # Newcombe's hybrid score interval


class ArmReport(BaseModel):
    arm: str
    variant: str
    holdout: bool
    is_baseline: bool
    exposed: int
    matured: int
    pending: int
    outcomes: dict[str, OutcomeStat]
    difference: Difference | None


class ExperimentReport(BaseModel):
    experiment: str
    name: str
    status: str
    mode: str
    outcome: str
    window_days: int
    holdout_share: float
    baseline: str
    generated_at: datetime
    arms: list[ArmReport]
