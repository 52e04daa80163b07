"""What the worker asks of experiments for one contact: is it in one, and under which arm?

A contact is in at most one running experiment (the first, oldest, that covers its kind and language). Its
debtor is assigned once (``assign``, stored with insert-if-absent so two workers agree) and keeps that arm.
Only arms the legal guard allows for this contact are offered: the variant must be written for the kind, and
an arm that asks for a channel must be one ``decide()`` would honour for this debtor right now. The arm shapes
the decision's input (variant, channel preference, send hour); the decision itself still applies every rule.

Running experiments and the adaptive mode's statistics are read at most once a minute per worker: a ranking
input, not a legal one, so a minute's staleness is fine.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, time, timedelta
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from orchestrator.db import write_session
from orchestrator.experiments import store
from orchestrator.experiments.assign import Assignment, assign
from orchestrator.experiments.report import ALL_CHANNELS, adaptive_stats
from orchestrator.experiments.spec import Arm, ExperimentSpec
from orchestrator.policy.decide import ChannelOption, DecisionInput, decide
from orchestrator.policy.rules import RuleSet

__all__ = ["ExperimentCache", "allowed_arms", "apply_arm", "assignment_for", "load_spec", "segment_stats"]

READ_EVERY = timedelta(minutes=1)


def load_spec(raw: Mapping[str, Any]) -> ExperimentSpec:
    return ExperimentSpec.model_validate(raw)


@dataclass
class ExperimentCache:
    read_at: datetime | None = None
    running: list[ExperimentSpec] = field(default_factory=list)
    # experiment → channel ("*": all) → arm → (successes, trials)
    stats: dict[str, dict[str, dict[str, tuple[float, float]]]] = field(default_factory=dict)

    def clear(self) -> None:
        self.read_at = None

    async def refresh(self, sessions: async_sessionmaker[AsyncSession], now: datetime) -> None:
        if self.read_at is not None and self.read_at + READ_EVERY > now:
            return
        async with sessions() as session:
            rows = await store.list_experiments(session, status="running")
            specs = [load_spec(row.spec) for row in sorted(rows, key=lambda row: (row.created_at, row.id))]
            stats: dict[str, dict[str, dict[str, tuple[float, float]]]] = {}
            for spec in specs:
                if spec.mode == "adaptive":
                    found = await store.exposures(session, spec.id)
                    events = await store.outcome_events(session, spec.id)
                    stats[spec.id] = adaptive_stats(spec, found, events, now)
        self.running, self.stats, self.read_at = specs, stats, now


def next_send_hour(now: datetime, hour: int, zone: ZoneInfo) -> datetime:
    """The start of the next ``hour`` o'clock (Oslo), or ``now`` while inside that hour."""
    local = now.astimezone(zone)
    if local.hour == hour:
        return now
    day = local.date() if local.hour < hour else local.date() + timedelta(days=1)
    return datetime.combine(day, time(hour), zone)


def apply_arm(inputs: DecisionInput, assignment: Assignment, now: datetime, rules: RuleSet) -> DecisionInput:
    """The decision's input under an arm: its variant, its channel (only asked for when upstream said "auto"),
    its send hour (not before it; the contact windows still apply)."""
    changed = replace(inputs, variant=assignment.variant)
    if assignment.channel is not None and inputs.channel_preference == "auto":
        changed = replace(changed, channel_preference=assignment.channel)
    if assignment.send_hour is not None:
        at = next_send_hour(now, assignment.send_hour, rules.contact_windows.zone)
        if inputs.not_before is None or inputs.not_before < at:
            changed = replace(changed, not_before=at)
    return changed


@lru_cache(maxsize=8)
def _written(templates: frozenset[tuple[str, str, str, str]]) -> frozenset[tuple[str, str, str]]:
    """(language, kind, variant) with a template on some channel, once per template set."""
    return frozenset((language, kind, variant) for language, kind, variant, _channel in templates)


# How many trials' worth the all-channel rate weighs in a channel's own statistics: a channel with little
# traffic of its own (letters) starts from what every channel has shown, and its own data takes over.
SEGMENT_PRIOR_TRIALS = 10.0


def segment_stats(
    stats: Mapping[str, Mapping[str, tuple[float, float]]] | None, channel: str | None
) -> Mapping[str, tuple[float, float]] | None:
    """The statistics of the channel a contact would go on (the control's decision), shrunk towards every
    channel's together; every channel's together when the channel is unknown."""
    if stats is None:
        return None
    overall = stats.get(ALL_CHANNELS, {})
    own = stats.get(channel) if channel is not None else None
    if own is None:
        return overall
    combined: dict[str, tuple[float, float]] = {}
    for arm in set(overall) | set(own):
        s_all, n_all = overall.get(arm, (0.0, 0.0))
        s_own, n_own = own.get(arm, (0.0, 0.0))
        if n_all <= 0:
            combined[arm] = (s_own, n_own)
            continue
        rate = s_all / n_all
        combined[arm] = (s_own + SEGMENT_PRIOR_TRIALS * rate, n_own + SEGMENT_PRIOR_TRIALS)
    return combined


def allowed_arms(
    spec: ExperimentSpec,
    inputs: DecisionInput,
    *,
    channels: Mapping[str, ChannelOption],
    templates: frozenset[tuple[str, str, str, str]],
    rules: RuleSet,
    now: datetime,
) -> set[str]:
    allowed: set[str] = set()
    written = _written(templates)
    for arm in spec.arms:
        if (inputs.language, inputs.kind, arm.variant) not in written:
            continue
        if arm.channel is not None and not _channel_lawful(arm, inputs, channels, templates, rules, now):
            continue
        allowed.add(arm.name)
    return allowed


def _channel_lawful(
    arm: Arm,
    inputs: DecisionInput,
    channels: Mapping[str, ChannelOption],
    templates: frozenset[tuple[str, str, str, str]],
    rules: RuleSet,
    now: datetime,
) -> bool:
    if inputs.channel_preference != "auto":
        return False  # upstream asked for a channel: an experiment does not overrule it
    trial = replace(inputs, channel_preference=arm.channel or "auto", variant=arm.variant)
    decision = decide(trial, channels=channels, templates=templates, rules=rules, now=now)
    return decision.outcome == "send" and decision.channel == arm.channel


async def assignment_for(
    cache: ExperimentCache,
    sessions: async_sessionmaker[AsyncSession],
    *,
    debtor_id: str,
    inputs: DecisionInput,
    channels: Mapping[str, ChannelOption],
    templates: frozenset[tuple[str, str, str, str]],
    rules: RuleSet,
    now: datetime,
) -> Assignment | None:
    """The arm this contact goes out under, assigning the debtor on first contact; None outside any."""
    await cache.refresh(sessions, now)
    spec = next((s for s in cache.running if s.applies_to(inputs.kind, inputs.language)), None)
    if spec is None:
        return None
    async with sessions() as session:
        stored = await store.get_assignment(session, spec.id, debtor_id)
    if stored is None:
        allowed = allowed_arms(spec, inputs, channels=channels, templates=templates, rules=rules, now=now)
        stats = None
        if spec.mode == "adaptive":
            # The segment: the channel the control would go on for this debtor now.
            control = decide(inputs, channels=channels, templates=templates, rules=rules, now=now)
            stats = segment_stats(cache.stats.get(spec.id), control.channel)
        fresh = assign(spec, debtor_id, allowed=allowed, stats=stats)
        async with write_session(sessions) as session:
            await store.insert_assignment(
                session, experiment_id=spec.id, debtor_id=debtor_id, detail=fresh.as_json(), now=now
            )
            stored = await store.get_assignment(session, spec.id, debtor_id)
        assert stored is not None
    return Assignment.from_json(stored.detail)
