"""``orchestrator simulate``: a synthetic portfolio through the real policy, rendering and experiment code.

Nothing here re-implements a rule. Every contact goes through the real ``decide()`` (default rules, the real
template set, channel limits built the way the channel modules build them), is assigned by the real
``assign()`` with the arms the real ``allowed_arms()`` permits, is rendered by the real ``Renderer`` and is
checked by the real content guard. Only the debtors and their answers are made up: the debtors by a seeded
generator, the answers by a response model calibrated to the behavioural evidence in DOMAIN.md
(:data:`CHANNEL_BASE`, :data:`VARIANT_LIFT`). Because the model is known, an *oracle* that gives every debtor
the best lawful arm shows how much resolution each strategy leaves on the table.

Strategies, each on the same portfolio with the same random draws (a debtor resolves when its one uniform
draw falls below the rate of what it was sent), so that differences come from the strategy, not from noise:

- ``no_contact``: nobody is contacted (the floor);
- ``neutral``: everyone gets the control, as without experiments;
- ``fixed``: an experiment with equal shares over every variant written for the kind, with a holdout;
- ``adaptive``: the same experiment with Thompson sampling, its statistics refreshed between rounds from the
  outcomes seen so far, so that feedback arrives late, as it does in real life;
- ``oracle``: knows the true rates and picks, per debtor, the best arm the legal guard allows; no holdout.
"""

from __future__ import annotations

import json
import random
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, Final
from zoneinfo import ZoneInfo

from channels.base import ChannelLimits
from channels.email import EMAIL_LIMITS
from channels.outbox import LETTER_LIMITS
from channels.sms.channel import sms_limits
from channels.sms.encoding import GSM7_MULTI_SEGMENT_SEPTETS, analyse
from orchestrator.experiments.assign import Assignment, assign
from orchestrator.experiments.dispatch import allowed_arms, apply_arm, segment_stats
from orchestrator.experiments.report import Exposure, OutcomeEvent, adaptive_stats, build_report
from orchestrator.experiments.spec import ExperimentSpec
from orchestrator.policy.content_guard import check_message
from orchestrator.policy.decide import (
    ChannelOption,
    DebtorFacts,
    Decision,
    DecisionInput,
    decide,
    format_address,
)
from orchestrator.policy.rules import RulesError, RuleSet, load_rules
from orchestrator.rendering import (
    Renderer,
    RenderError,
    TemplateNotFound,
    available_templates,
    sample_context,
)
from orchestrator.variants import CONTROL_VARIANT

__all__ = [
    "CHANNEL_BASE",
    "NO_CONTACT_RATE",
    "STRATEGIES",
    "VARIANT_LIFT",
    "Calibrated",
    "Lift",
    "SimulationResult",
    "StrategyResult",
    "SyntheticDebtor",
    "channel_options",
    "cli",
    "format_table",
    "make_portfolio",
    "run_simulation",
    "true_rate",
]

OSLO: Final = ZoneInfo("Europe/Oslo")
# Every decision is taken at one moment inside a contact window (R5), a Tuesday with no holiday near, so that
# the policy's answer depends on the debtor, not on the clock. The experiment's own timeline (rounds, windows)
# is counted in days from here.
START: Final = datetime(2026, 11, 10, 10, 0, tzinfo=OSLO)
# Due three weeks before START: a reminder and an inkassovarsel are both lawful now (R1), and no fee is added.
DUE_DATE: Final = date(2026, 10, 20)
STRATEGIES: Final = ("no_contact", "neutral", "fixed", "adaptive", "oracle")
# Event types a resolution arrives as (both count for the experiment's "resolved" outcome).
PAYMENT_SHARE: Final = 0.75  # the rest agree a payment plan


# ------------------------------------------------------------------------------------------ response model


@dataclass(frozen=True)
class Calibrated:
    rate: float
    source: str


@dataclass(frozen=True)
class Lift:
    """Percentage points (as a fraction) a variant adds to its channel's base rate."""

    short_message: float  # on SMS and chat links, where the evidence for personalisation comes from
    other: float  # on e-mail, letters and digital mailboxes
    source: str


# Haynes et al. 2013 (UK court fines): "no text 5% paid". Everyone gets this without a contact, and it is the
# rate of a debtor the policy could not reach.
NO_CONTACT_RATE: Final = Calibrated(0.05, "Haynes et al. 2013: no text, 5% paid")

# The neutral message's rate per channel. Only the SMS rate is measured (Haynes et al. 2013: plain text 23%).
# ASSUMPTION for the rest, which no row of the evidence table measures: an SMS is read within minutes and was
# what moved payment in Haynes's trial, while an e-mail may sit unread or in a spam folder and a letter comes
# days later, so both are held below SMS; a digital mailbox carries the letter with an alert, between the two.
CHANNEL_BASE: Final[Mapping[str, Calibrated]] = {
    "sms": Calibrated(0.23, "Haynes et al. 2013: plain text, 23% paid"),
    "chat_link": Calibrated(0.23, "travels as an SMS: the SMS rate (Haynes et al. 2013)"),
    "email": Calibrated(0.17, "assumption: below SMS (may go unread or to spam); no trial in the table"),
    "letter": Calibrated(0.15, "assumption: below SMS (arrives days later); no trial in the table"),
    "digital_mailbox": Calibrated(0.17, "assumption: the letter with an alert, as e-mail; no trial"),
}
SHORT_MESSAGE_CHANNELS: Final = frozenset({"sms", "chat_link"})

# What each tone variant adds to the neutral message, per the evidence table's rows.
VARIANT_LIFT: Final[Mapping[str, Lift]] = {
    "neutral": Lift(0.0, 0.0, "the control"),
    # ASSUMPTION off SMS: the neutral e-mail and letter already greet the debtor by name, so only the named
    # handler is new there: a third of the SMS effect. On SMS the full Haynes effect is credited although our
    # neutral SMS already says "Hei <first name>": read the simulated gain of personalisation as a ceiling.
    "personalisation": Lift(0.10, 0.03, "Haynes et al. 2013: 23% -> 33% with the debtor's name (SMS)"),
    "simplicity": Lift(0.04, 0.04, "John & Blume 2018: simplified letter +4 points"),
    "truthful_consequences": Lift(0.032, 0.032, "Antinyan & Asatryan 2025: truthful consequences +3.2"),
    "social_norm": Lift(
        -0.01, -0.01, "John & Blume 2018: did nothing, then backfired; Holzmeister et al. 2021: harmful"
    ),
    "loss_framing": Lift(
        -0.005, -0.005, "Holzmeister et al. 2021: deterrence ineffective or harmful vs the agency letter"
    ),
    "reciprocity": Lift(0.044, 0.044, "Bursztyn et al. 2019: moral appeal, delinquency -4.4 points"),
    "commitment": Lift(0.027, 0.027, "DellaVigna & Linos 2022; Antinyan & Asatryan 2025: reminders +2.7"),
    "commission_framing": Lift(0.0, 0.0, "no trial in the table: no effect assumed"),
}


def true_rate(channel: str | None, variant: str | None) -> float:
    """The model's probability that a debtor resolves within the window after (channel, variant); None for
    no contact. A variant the table does not know has no evidence, so no effect."""
    if channel is None:
        return NO_CONTACT_RATE.rate
    base = CHANNEL_BASE[channel].rate
    lift = VARIANT_LIFT.get(variant or CONTROL_VARIANT)
    if lift is None:
        return base
    return base + (lift.short_message if channel in SHORT_MESSAGE_CHANNELS else lift.other)


def response_model_json() -> dict[str, Any]:
    return {
        "no_contact": {"rate": NO_CONTACT_RATE.rate, "source": NO_CONTACT_RATE.source},
        "channel_base": {k: {"rate": v.rate, "source": v.source} for k, v in CHANNEL_BASE.items()},
        "variant_lift": {
            k: {"short_message": v.short_message, "other": v.other, "source": v.source}
            for k, v in VARIANT_LIFT.items()
        },
    }


# ---------------------------------------------------------------------------------------------- portfolio

# Reach, per debtor type. Collectors get a mobile for most persons and an e-mail for some; organisations more
# often give an e-mail than a mobile. A postal address is nearly always known (the registers give one).
ORGANISATION_SHARE: Final = 0.10
MOBILE_SHARE: Final[Mapping[str, float]] = {"person": 0.85, "organisation": 0.45}
EMAIL_SHARE: Final[Mapping[str, float]] = {"person": 0.35, "organisation": 0.80}
EVIDENCE_SHARE: Final = 0.40  # of e-mail addresses: the debtor wrote from it recently (R3)
POSTAL_SHARE: Final = 0.98
# Per-debtor heterogeneity, kept simple: a multiplier on every rate (ability and will to pay), mean 1. It
# scales all arms alike, so the best arm for a debtor is the best arm of the model.
PROPENSITY_RANGE: Final = (0.5, 1.5)

_FIRST_NAMES: Final = (
    "Kari", "Ola", "Ingrid", "Per", "Anne", "Lars", "Sigrid", "Jon", "Marit", "Knut", "Nora", "Emil",
    "Astrid", "Håkon", "Solveig", "Øystein", "Ragnhild", "Bjørn", "Åse", "Magnus",
)  # fmt: skip
_SURNAMES: Final = (
    "Nordmann", "Hansen", "Johansen", "Olsen", "Larsen", "Andersen", "Pedersen", "Nilsen", "Kristiansen",
    "Jensen", "Karlsen", "Johnsen", "Pettersen", "Eriksen", "Berg", "Haugen", "Hagen", "Bakken", "Sæther",
)  # fmt: skip
_COMPANY_WORDS: Final = ("Fjord", "Nordlys", "Vestland", "Tinde", "Bølge", "Furu", "Elv", "Skog", "Havn")
_COMPANY_TRADES: Final = ("Bakeri", "Bygg", "Regnskap", "Transport", "Frisør", "Elektro", "Maling", "Data")
_STREETS: Final = ("Storgata", "Kirkeveien", "Skolegata", "Fjordveien", "Bakkeveien", "Strandgata")
_PLACES: Final = (("0155", "OSLO"), ("5003", "BERGEN"), ("7011", "TRONDHEIM"), ("9008", "TROMSØ"))


@dataclass(frozen=True)
class SyntheticDebtor:
    id: str
    case_id: str
    name: str
    type: str
    facts: DebtorFacts
    round: int
    propensity: float
    draw: float  # the common random number: resolves when draw < rate of what it was sent
    delay: float  # when a resolution arrives, as a fraction of the outcome window
    outcome_type: str  # the case event a resolution arrives as

    def rate(self, channel: str | None, variant: str | None) -> float:
        return min(1.0, true_rate(channel, variant) * self.propensity)


def _name(rng: random.Random, kind: str) -> str:
    if kind == "organisation":
        return f"{rng.choice(_COMPANY_WORDS)}{rng.choice(_COMPANY_TRADES).lower()} AS"
    return f"{rng.choice(_FIRST_NAMES)} {rng.choice(_SURNAMES)}"


def _facts(rng: random.Random, debtor_type: str, index: int) -> DebtorFacts:
    mobiles: tuple[str, ...] = ()
    if rng.random() < MOBILE_SHARE[debtor_type]:
        mobiles = (f"+47{rng.choice('49')}{rng.randrange(10**7):07d}",)  # Norwegian mobiles are 4x and 9x
    emails: tuple[str, ...] = ()
    evidence: tuple[dict[str, Any], ...] = ()
    if rng.random() < EMAIL_SHARE[debtor_type]:
        emails = (f"debitor{index}@example.no",)
        if rng.random() < EVIDENCE_SHARE:
            seen = START - timedelta(days=rng.randrange(1, 300))
            evidence = (
                {
                    "channel": "email",
                    "address": emails[0],
                    "basis": "debtor_used_address",
                    "observed_at": seen.isoformat(),
                },
            )
    addresses: tuple[dict[str, Any], ...] = ()
    if rng.random() < POSTAL_SHARE:
        postal_code, city = rng.choice(_PLACES)
        street = f"{rng.choice(_STREETS)} {rng.randrange(1, 120)}"
        addresses = ({"lines": [street], "postal_code": postal_code, "city": city, "country": "NO"},)
    return DebtorFacts(
        type=debtor_type, emails=emails, mobiles=mobiles, addresses=addresses, evidence=evidence
    )


def make_portfolio(debtors: int, rounds: int, seed: int) -> list[SyntheticDebtor]:
    """``debtors`` synthetic debtors from ``seed``, spread evenly over ``rounds`` (in order)."""
    rng = random.Random(seed)
    portfolio: list[SyntheticDebtor] = []
    for index in range(debtors):
        debtor_type = "organisation" if rng.random() < ORGANISATION_SHARE else "person"
        portfolio.append(
            SyntheticDebtor(
                id=f"sim{seed}-{index:06d}",
                case_id=f"sim{seed}-case-{index:06d}",
                name=_name(rng, debtor_type),
                type=debtor_type,
                facts=_facts(rng, debtor_type, index),
                round=index * rounds // debtors,
                propensity=rng.uniform(*PROPENSITY_RANGE),
                draw=rng.random(),
                # Most who pay do so early: squaring a uniform puts half the payments in the first quarter.
                delay=rng.random() ** 2,
                outcome_type="payment_received" if rng.random() < PAYMENT_SHARE else "payment_plan_agreed",
            )
        )
    return portfolio


# --------------------------------------------------------------------------------------------- the machinery


def channel_options(sms_max_segments: int = 2) -> dict[str, ChannelOption]:
    """The channels a default install registers (orchestrator.channel_registry), with their limits built as
    the channel modules build them; no carrier is contacted."""
    sms = sms_limits(sms_max_segments)
    # As ChatLinkChannel.__init__ builds it from its SMS carrier's limits.
    chat_link = ChannelLimits(
        max_body_chars=sms.max_body_chars,
        supports_subject=False,
        supports_html=False,
        cost_nok=sms.cost_nok,
        statutory="never",
        reaches=sms.reaches,
        supports_links=True,
    )
    limits = {"email": EMAIL_LIMITS, "sms": sms, "chat_link": chat_link, "letter": LETTER_LIMITS}
    return {name: ChannelOption(name, "simulated", value) for name, value in limits.items()}


@dataclass
class _Tally:
    """What one strategy did, counted as it goes."""

    contacted: int = 0
    suppressed: int = 0
    resolved: int = 0
    rendered: int = 0
    guard_violations: int = 0
    render_failures: int = 0
    too_long: int = 0
    channels: Counter[str] = field(default_factory=Counter)
    variants: Counter[str] = field(default_factory=Counter)
    suppressed_reasons: Counter[str] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)  # the first few violations and failures, for the report


@dataclass
class _World:
    """Everything that is the same for every strategy: the rules, channels, templates and the experiment."""

    kind: str
    language: str
    rules: RuleSet
    channels: Mapping[str, ChannelOption]
    templates: frozenset[tuple[str, str, str, str]]
    renderer: Renderer
    fixed: ExperimentSpec
    adaptive: ExperimentSpec
    render_every: int
    # decide() and allowed_arms() are pure, and a debtor's inputs differ between strategies only in what an
    # arm changes (variant, channel preference, send hour): each is asked once per debtor and arm and the
    # answer shared by every strategy. That halves the run and changes nothing.
    _decisions: dict[tuple[str, str, str, datetime | None], Decision] = field(default_factory=dict)
    _allowed: dict[tuple[str, str], set[str]] = field(default_factory=dict)

    def inputs(self, debtor: SyntheticDebtor) -> DecisionInput:
        return DecisionInput(
            kind=self.kind,
            language=self.language,
            channel_preference="auto",
            not_before=None,
            debtor=debtor.facts,
            case_status="open",
            case_status_reason=None,
            due_date=DUE_DATE,
        )

    def decide(self, debtor: SyntheticDebtor, inputs: DecisionInput) -> Decision:
        key = (debtor.id, inputs.variant, inputs.channel_preference, inputs.not_before)
        if key not in self._decisions:
            self._decisions[key] = decide(
                inputs, channels=self.channels, templates=self.templates, rules=self.rules, now=START
            )
        return self._decisions[key]

    def allowed(self, spec: ExperimentSpec, debtor: SyntheticDebtor, inputs: DecisionInput) -> set[str]:
        """The arms the legal guard allows this debtor (the fixed and adaptive specs share id and arms)."""
        key = (spec.id, debtor.id)
        if key not in self._allowed:
            self._allowed[key] = allowed_arms(
                spec, inputs, channels=self.channels, templates=self.templates, rules=self.rules, now=START
            )
        return self._allowed[key]


def _spec(
    kind: str, variants: Sequence[str], holdout: float, mode: str, renderer: Renderer
) -> ExperimentSpec:
    """One arm per variant written for the kind, equal shares; the same id in both modes, so that the holdout
    (hashed on experiment and debtor) is the same debtors in the fixed and the adaptive run."""
    raw = {
        "id": f"simulate-{kind}",
        "name": f"Simulated tone experiment ({kind})",
        "kinds": [kind],
        "arms": [{"name": variant, "variant": variant, "share": 1.0} for variant in variants],
        "holdout_share": holdout,
        "mode": mode,
        "outcome": "resolved",
    }
    return ExperimentSpec.model_validate(raw, context={"catalogue": renderer.catalogue})


def _context(world: _World, debtor: SyntheticDebtor, decision: Decision) -> dict[str, Any]:
    """The sample context (rendering.sample_context) with this debtor, this decision's deadline and dates, and
    a self-service link only where the channel carries one (as the worker issues them)."""
    context = sample_context(world.language, world.kind)
    first_name = debtor.name.split()[0] if debtor.type == "person" else debtor.name
    context["debtor"] = {"name": debtor.name, "first_name": first_name, "type": debtor.type}
    option = world.channels[decision.channel or ""]
    if option.limits.reaches == "postal" and decision.address:
        lines = decision.address.split("\n")
    else:
        lines = format_address(debtor.facts.addresses[0]).split("\n") if debtor.facts.addresses else []
    context["recipient"] = {"name": debtor.name, "address_lines": lines}
    context["case"]["id"] = debtor.case_id
    context["case"]["due_date"] = DUE_DATE
    context["case"]["interest"]["from"] = DUE_DATE
    context["deadline"] = decision.deadline
    context["send_date"] = (decision.send_at or START).astimezone(OSLO).date()
    if not option.limits.supports_links:
        context["self_service_url"] = None
    return context


def _render_and_check(world: _World, debtor: SyntheticDebtor, decision: Decision, tally: _Tally) -> None:
    """Render the message the decision names, for real, and run the content guard on it (R7, R9)."""
    assert decision.channel is not None
    limits = world.channels[decision.channel].limits
    try:
        rendered = world.renderer.render(
            language=world.language,
            kind=world.kind,
            variant=decision.variant or CONTROL_VARIANT,
            channel=decision.channel,
            context=_context(world, debtor, decision),
        )
    except (TemplateNotFound, RenderError) as exc:
        tally.render_failures += 1
        _note(tally, f"{decision.template}: {exc}")
        return
    tally.rendered += 1
    violations = check_message(rendered, limits)
    tally.guard_violations += len(violations)
    for violation in violations:
        _note(tally, f"{rendered.template}: {violation}")
    # A short message longer than the channel carries would be refused at send (sms_too_long): counted apart.
    short = limits.max_body_chars is not None and not limits.supports_html
    if short and analyse(rendered.text).segments * GSM7_MULTI_SEGMENT_SEPTETS > (limits.max_body_chars or 0):
        tally.too_long += 1
        _note(tally, f"{rendered.template}: too long for {decision.channel} ({len(rendered.text)} chars)")


def _note(tally: _Tally, problem: str) -> None:
    if len(tally.problems) < 10:
        tally.problems.append(problem)


def _contact(world: _World, debtor: SyntheticDebtor, inputs: DecisionInput, tally: _Tally) -> Decision | None:
    """Decide, render and check one contact; None when the policy does not send (the debtor not reached)."""
    decision = world.decide(debtor, inputs)
    if decision.outcome != "send":
        tally.suppressed += 1
        tally.suppressed_reasons[decision.status_reason or decision.outcome] += 1
        return None
    tally.contacted += 1
    tally.channels[decision.channel or ""] += 1
    tally.variants[decision.variant or CONTROL_VARIANT] += 1
    if (tally.contacted - 1) % world.render_every == 0:
        _render_and_check(world, debtor, decision, tally)
    return decision


def _resolved(debtor: SyntheticDebtor, decision: Decision | None) -> bool:
    if decision is None:
        return debtor.draw < debtor.rate(None, None)
    return debtor.draw < debtor.rate(decision.channel, decision.variant)


# ------------------------------------------------------------------------------------------------ strategies


@dataclass
class _Run:
    tally: _Tally
    exposures: list[Exposure] = field(default_factory=list)
    events: list[OutcomeEvent] = field(default_factory=list)


def _no_contact(world: _World, portfolio: Sequence[SyntheticDebtor]) -> _Run:
    tally = _Tally()
    tally.resolved = sum(_resolved(debtor, None) for debtor in portfolio)
    return _Run(tally)


def _neutral(world: _World, portfolio: Sequence[SyntheticDebtor]) -> _Run:
    tally = _Tally()
    for debtor in portfolio:
        decision = _contact(world, debtor, world.inputs(debtor), tally)
        tally.resolved += _resolved(debtor, decision)
    return _Run(tally)


def _exposed_at(debtor: SyntheticDebtor) -> datetime:
    return START + timedelta(days=debtor.round)


def _experiment(world: _World, portfolio: Sequence[SyntheticDebtor], spec: ExperimentSpec) -> _Run:
    """Round by round: assign with the statistics known at the round's start (only outcomes that have arrived
    by then), contact, and record the exposure and, when the debtor resolves, its outcome event."""
    run = _Run(_Tally())
    window = timedelta(days=spec.window_days)
    rounds = max((debtor.round for debtor in portfolio), default=-1) + 1
    by_round: list[list[SyntheticDebtor]] = [[] for _ in range(rounds)]
    for debtor in portfolio:
        by_round[debtor.round].append(debtor)
    for number, batch in enumerate(by_round):
        now = START + timedelta(days=number)
        stats = None
        if spec.mode == "adaptive":
            known = [event for event in run.events if event.at <= now]
            stats = adaptive_stats(spec, run.exposures, known, now)
        for debtor in batch:
            inputs = world.inputs(debtor)
            # The segment, as the worker finds it: the channel the control would go on.
            segment = (
                segment_stats(stats, world.decide(debtor, inputs).channel) if stats is not None else None
            )
            arm = assign(spec, debtor.id, allowed=world.allowed(spec, debtor, inputs), stats=segment)
            decision = _contact(world, debtor, apply_arm(inputs, arm, START, world.rules), run.tally)
            resolved = _resolved(debtor, decision)
            run.tally.resolved += resolved
            if decision is None:
                continue
            exposed_at = _exposed_at(debtor)
            run.exposures.append(
                Exposure(
                    debtor.id, arm.arm, arm.variant, arm.holdout, debtor.case_id, exposed_at, decision.channel
                )
            )
            if resolved:
                run.events.append(
                    OutcomeEvent(debtor.case_id, debtor.outcome_type, exposed_at + window * debtor.delay)
                )
    return run


def _oracle(world: _World, portfolio: Sequence[SyntheticDebtor]) -> _Run:
    """Per debtor, every arm the legal guard allows is decided, and the one whose decision (channel, variant)
    has the highest true rate is sent; the control wins ties. No holdout: the oracle needs no baseline."""
    tally = _Tally()
    spec = world.fixed
    for debtor in portfolio:
        inputs = world.inputs(debtor)
        allowed = world.allowed(spec, debtor, inputs) | {spec.control_arm.name}
        best: tuple[float, DecisionInput] | None = None
        for arm in spec.arms:
            if arm.name not in allowed:
                continue
            choice = Assignment(
                experiment_id=spec.id,
                arm=arm.name,
                variant=arm.variant,
                holdout=False,
                mode="oracle",
                reason="oracle",
                channel=arm.channel,
                send_hour=arm.send_hour,
            )
            trial = apply_arm(inputs, choice, START, world.rules)
            decision = world.decide(debtor, trial)
            rate = debtor.rate(decision.channel, decision.variant) if decision.outcome == "send" else 0.0
            if best is None or rate > best[0]:
                best = (rate, trial)
        assert best is not None
        tally.resolved += _resolved(debtor, _contact(world, debtor, best[1], tally))
    return _Run(tally)


# ------------------------------------------------------------------------------------------------- results


@dataclass(frozen=True)
class StrategyResult:
    name: str
    debtors: int
    contacted: int
    suppressed: int  # contacts the policy did not send (no lawful, reachable channel)
    resolved: int
    resolution_rate: float
    ratio_to_oracle: float
    holdout_share: float | None  # observed, among exposures (experiments only)
    traffic_share: dict[str, float] | None  # per arm (and "holdout") in the last round (experiments only)
    channels: dict[str, int]
    variants: dict[str, int]  # the variant actually sent
    suppressed_reasons: dict[str, int]
    rendered: int
    guard_violations: int
    render_failures: int
    too_long: int

    def as_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class SimulationResult:
    debtors: int
    rounds: int
    seed: int
    kind: str
    language: str
    holdout_share: float
    render_every: int
    rule_version: str
    catalogue_version: str
    arms: list[str]  # the variants the experiment tests (written for the kind)
    unavailable: list[str]  # of those, the ones with no template in this language: never sent
    strategies: dict[str, StrategyResult]
    report: dict[str, Any]  # orchestrator.experiments.report.build_report for the adaptive run
    problems: list[str]  # the first content-guard violations, render failures and over-long messages

    @property
    def guard_violations(self) -> int:
        return sum(s.guard_violations for s in self.strategies.values())

    @property
    def render_failures(self) -> int:
        return sum(s.render_failures for s in self.strategies.values())

    @property
    def rendered(self) -> int:
        return sum(s.rendered for s in self.strategies.values())

    def as_json(self) -> dict[str, Any]:
        return {
            "debtors": self.debtors,
            "rounds": self.rounds,
            "seed": self.seed,
            "kind": self.kind,
            "language": self.language,
            "holdout_share": self.holdout_share,
            "render_every": self.render_every,
            "rule_version": self.rule_version,
            "catalogue_version": self.catalogue_version,
            "arms": list(self.arms),
            "unavailable": list(self.unavailable),
            "strategies": {name: s.as_json() for name, s in self.strategies.items()},
            "rendered": self.rendered,
            "guard_violations": self.guard_violations,
            "render_failures": self.render_failures,
            "problems": list(self.problems),
            "response_model": response_model_json(),
            "report": self.report,
        }


def _shares(counts: Mapping[str, int]) -> dict[str, float]:
    total = sum(counts.values())
    return {key: count / total for key, count in sorted(counts.items())} if total else {}


def _experiment_figures(exposures: Sequence[Exposure]) -> tuple[float | None, dict[str, float] | None]:
    """Observed holdout share over the run, and each arm's share of the last round's traffic."""
    if not exposures:
        return None, None
    holdout = sum(e.holdout for e in exposures) / len(exposures)
    last = max(e.exposed_at for e in exposures)
    traffic = Counter("holdout" if e.holdout else e.arm for e in exposures if e.exposed_at == last)
    return holdout, _shares(traffic)


def _strategy_result(
    name: str, debtors: int, run: _Run, oracle_rate: float, experiment: bool
) -> StrategyResult:
    tally = run.tally
    rate = tally.resolved / debtors if debtors else 0.0
    holdout, traffic = _experiment_figures(run.exposures) if experiment else (None, None)
    return StrategyResult(
        name=name,
        debtors=debtors,
        contacted=tally.contacted,
        suppressed=tally.suppressed,
        resolved=tally.resolved,
        resolution_rate=rate,
        ratio_to_oracle=rate / oracle_rate if oracle_rate else 0.0,
        holdout_share=holdout,
        traffic_share=traffic,
        channels=dict(sorted(tally.channels.items())),
        variants=dict(sorted(tally.variants.items())),
        suppressed_reasons=dict(sorted(tally.suppressed_reasons.items())),
        rendered=tally.rendered,
        guard_violations=tally.guard_violations,
        render_failures=tally.render_failures,
        too_long=tally.too_long,
    )


_RUNNERS: Final[Mapping[str, Callable[[_World, Sequence[SyntheticDebtor]], _Run]]] = {
    "no_contact": _no_contact,
    "neutral": _neutral,
    "fixed": lambda world, portfolio: _experiment(world, portfolio, world.fixed),
    "adaptive": lambda world, portfolio: _experiment(world, portfolio, world.adaptive),
    "oracle": _oracle,
}


def run_simulation(
    *,
    debtors: int = 30_000,  # a month of reminders at a mid-sized agency
    rounds: int = 30,  # sent over 30 days, so that outcomes arrive while the experiment runs
    seed: int = 1,
    kind: str = "reminder",
    language: str = "nb",
    holdout: float = 0.1,
    render_every: int = 1,
    sms_max_segments: int = 2,
    rules: RuleSet | None = None,
    renderer: Renderer | None = None,
) -> SimulationResult:
    """Run every strategy on one synthetic portfolio; deterministic for a given seed (and template set)."""
    if debtors < 1 or rounds < 1 or render_every < 1:
        raise ValueError("debtors, rounds and render_every must be at least 1")
    renderer = renderer or Renderer()
    rounds = min(rounds, debtors)
    variants = renderer.catalogue.variants_for(kind)
    world = _World(
        kind=kind,
        language=language,
        rules=rules or load_rules(),
        channels=channel_options(sms_max_segments),
        templates=available_templates(renderer),
        renderer=renderer,
        fixed=_spec(kind, variants, holdout, "fixed", renderer),
        adaptive=_spec(kind, variants, holdout, "adaptive", renderer),
        render_every=render_every,
    )
    portfolio = make_portfolio(debtors, rounds, seed)
    runs = {name: runner(world, portfolio) for name, runner in _RUNNERS.items()}
    oracle_rate = runs["oracle"].tally.resolved / debtors
    strategies = {
        name: _strategy_result(name, debtors, run, oracle_rate, name in ("fixed", "adaptive"))
        for name, run in runs.items()
    }
    adaptive = runs["adaptive"]
    # Every window has closed by then: the report's rates are final.
    end = START + timedelta(days=rounds + world.adaptive.window_days)
    written = {variant for lang, k, variant, _ in world.templates if (lang, k) == (language, kind)}
    return SimulationResult(
        debtors=debtors,
        rounds=rounds,
        seed=seed,
        kind=kind,
        language=language,
        holdout_share=holdout,
        render_every=render_every,
        rule_version=world.rules.version,
        catalogue_version=renderer.catalogue.version,
        arms=list(variants),
        unavailable=[variant for variant in variants if variant not in written],
        strategies=strategies,
        report=build_report(world.adaptive, adaptive.exposures, adaptive.events, end, status="simulated"),
        problems=[problem for run in runs.values() for problem in run.tally.problems][:10],
    )


# ------------------------------------------------------------------------------------------------ the table


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _rows(result: SimulationResult) -> Iterable[list[str]]:
    yield ["strategy", "resolved", "rate", "vs oracle", "contacted", "suppressed", "holdout"]
    for s in result.strategies.values():
        yield [
            s.name,
            str(s.resolved),
            _percent(s.resolution_rate),
            _percent(s.ratio_to_oracle),
            str(s.contacted),
            str(s.suppressed),
            _percent(s.holdout_share),
        ]


def format_table(result: SimulationResult) -> str:
    """The result as a small aligned table, then the adaptive run's traffic and the content guard's count."""
    rows = list(_rows(result))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        f"{result.debtors} debtors, {result.rounds} rounds, seed {result.seed}, kind {result.kind}, "
        f"language {result.language}, rules {result.rule_version}, variants {result.catalogue_version}",
        "",
    ]
    for row in rows:
        cells = [
            row[0].ljust(widths[0]),
            *(cell.rjust(width) for cell, width in zip(row[1:], widths[1:], strict=True)),
        ]
        lines.append("  ".join(cells))
    lines.append("")
    for name in ("fixed", "adaptive"):
        traffic = result.strategies[name].traffic_share or {}
        shown = ", ".join(f"{arm} {_percent(share)}" for arm, share in sorted(traffic.items(), key=_by_share))
        lines.append(f"{name} traffic in the last round: {shown or '-'}")
    if result.unavailable:
        lines.append(f"never sent (no {result.language} template): {', '.join(result.unavailable)}")
    too_long = sum(s.too_long for s in result.strategies.values())
    every = "every contact" if result.render_every == 1 else f"1 contact in {result.render_every}"
    lines.append(
        f"rendered {result.rendered} messages ({every}): "
        f"{result.guard_violations} content-guard violations, {result.render_failures} render failures, "
        f"{too_long} too long for their channel"
    )
    lines.extend(f"  {problem}" for problem in result.problems)
    return "\n".join(lines)


def _by_share(item: tuple[str, float]) -> tuple[float, str]:
    return -item[1], item[0]


def cli(
    *,
    debtors: int,
    rounds: int,
    seed: int,
    kind: str,
    language: str,
    holdout: float,
    render_every: int,
    as_json: bool,
    rules_file: Path | None = None,
    sms_max_segments: int = 2,
) -> int:
    """``orchestrator simulate``: print the table (or the whole result as JSON); 2 on a bad argument."""
    try:
        rules = load_rules(rules_file)
        result = run_simulation(
            debtors=debtors,
            rounds=rounds,
            seed=seed,
            kind=kind,
            language=language,
            holdout=holdout,
            render_every=render_every,
            sms_max_segments=sms_max_segments,
            rules=rules,
        )
    except (ValueError, RulesError) as exc:  # pydantic's ValidationError is a ValueError
        print(f"orchestrator simulate: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result.as_json(), indent=2, ensure_ascii=False) if as_json else format_table(result))
    return 0
