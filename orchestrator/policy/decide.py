"""The decision: which channel, which address, when, with which template — and why. Pure: no I/O, ``now`` is
an argument, the same inputs always give the same decision. It runs when a contact is first picked up and
again right before sending, so a rule that changed in between (a window closed, a hold) still applies.

Channels are described by data (``ChannelLimits``): what they reach, what they cost, whether they may carry a
statutory notice. Nothing here asks which channel is which by name.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

from channels.base import ChannelLimits
from orchestrator.policy.rules import PressureCap, Ranking, RuleSet
from orchestrator.policy.windows import is_public_holiday, next_opening

ALL_CHANNELS = ("letter", "email", "sms", "chat_link", "digital_mailbox")
STATUTORY_KINDS = frozenset({"inkassovarsel", "betalingsoppfordring"})
# Kinds that ask for a payment and therefore carry a deadline.
PAYMENT_KINDS = frozenset({"reminder", "inkassovarsel", "betalingsoppfordring"})
DEFAULT_VARIANT = "neutral"


@dataclass(frozen=True)
class ChannelOption:
    name: str
    provider: str
    limits: ChannelLimits


@dataclass(frozen=True)
class DebtorFacts:
    """What the policy knows of a debtor: validated contact points, and which of them are known bad."""

    type: str
    emails: Sequence[str] = ()
    mobiles: Sequence[str] = ()  # E.164, already known to be mobile numbers
    addresses: Sequence[Mapping[str, Any]] = ()
    evidence: Sequence[Mapping[str, Any]] = ()  # electronic_notice_evidence, as given at intake
    unusable: frozenset[str] = frozenset()  # addresses that bounced or returned mail
    national_id_masked: str | None = None  # set when upstream gave a national id (digital mailbox, R9)
    # Reaches ("mobile", "email") the debtor opted out of (an SMS "STOP", an e-mail unsubscribe): no
    # non-statutory message there any more.
    opted_out: frozenset[str] = frozenset()
    preferred_channel: str | None = None  # what the debtor said they prefer


@dataclass(frozen=True)
class DecisionInput:
    kind: str
    language: str
    channel_preference: str  # "auto" or a channel name
    not_before: datetime | None
    debtor: DebtorFacts
    case_status: str  # open | held | closed
    case_status_reason: str | None
    due_date: date
    # R6: when this debtor was last reached (messages sent and not failed, bounced or returned), any case,
    # any upstream system, statutory notices included.
    recent_contacts: Sequence[datetime] = ()
    carries_fee: bool = False  # R10: the message adds a reminder or varsel fee
    fee_reminders_sent: int = 0  # R10: fee-bearing reminders already sent for this claim
    tried_channels: frozenset[str] = frozenset()  # fallback: channels that failed for this contact
    # Observed outcomes for comparable debtors, per channel: (responses, contacts).
    response_rates: Mapping[str, tuple[int, int]] = field(default_factory=dict)
    # The tone variant (an experiment's arm, else the control); where it is not written for the chosen
    # channel, the control goes.
    variant: str = DEFAULT_VARIANT

    def as_json(self) -> dict[str, Any]:
        """What the decision was made from, stored beside it so ``orchestrator explain`` can replay it."""
        return {
            "kind": self.kind,
            "language": self.language,
            "channel_preference": self.channel_preference,
            "not_before": self.not_before.isoformat() if self.not_before else None,
            "debtor": {
                "type": self.debtor.type,
                "emails": list(self.debtor.emails),
                "mobiles": list(self.debtor.mobiles),
                "addresses": [dict(a) for a in self.debtor.addresses],
                "evidence": [dict(e) for e in self.debtor.evidence],
                "unusable": sorted(self.debtor.unusable),
                "national_id_masked": self.debtor.national_id_masked,
                "opted_out": sorted(self.debtor.opted_out),
                "preferred_channel": self.debtor.preferred_channel,
            },
            "case_status": self.case_status,
            "case_status_reason": self.case_status_reason,
            "due_date": self.due_date.isoformat(),
            "recent_contacts": [t.isoformat() for t in self.recent_contacts],
            "carries_fee": self.carries_fee,
            "fee_reminders_sent": self.fee_reminders_sent,
            "tried_channels": sorted(self.tried_channels),
            "response_rates": {k: list(v) for k, v in self.response_rates.items()},
            "variant": self.variant,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> DecisionInput:
        debtor = data["debtor"]
        return cls(
            kind=data["kind"],
            language=data["language"],
            channel_preference=data["channel_preference"],
            not_before=datetime.fromisoformat(data["not_before"]) if data.get("not_before") else None,
            debtor=DebtorFacts(
                type=debtor["type"],
                emails=tuple(debtor.get("emails", ())),
                mobiles=tuple(debtor.get("mobiles", ())),
                addresses=tuple(debtor.get("addresses", ())),
                evidence=tuple(debtor.get("evidence", ())),
                unusable=frozenset(debtor.get("unusable", ())),
                national_id_masked=debtor.get("national_id_masked"),
                opted_out=frozenset(debtor.get("opted_out", ())),
                preferred_channel=debtor.get("preferred_channel"),
            ),
            case_status=data["case_status"],
            case_status_reason=data.get("case_status_reason"),
            due_date=date.fromisoformat(data["due_date"]),
            recent_contacts=tuple(datetime.fromisoformat(t) for t in data.get("recent_contacts", ())),
            carries_fee=bool(data.get("carries_fee", False)),
            fee_reminders_sent=int(data.get("fee_reminders_sent", 0)),
            tried_channels=frozenset(data.get("tried_channels", ())),
            response_rates={k: (int(v[0]), int(v[1])) for k, v in data.get("response_rates", {}).items()},
            variant=str(data.get("variant", DEFAULT_VARIANT)),
        )


@dataclass(frozen=True)
class Rejected:
    channel: str
    reason: str


@dataclass(frozen=True)
class Decision:
    outcome: Literal["send", "held", "suppressed"]
    rule_version: str
    decided_at: datetime
    reasons: list[str]
    rejected: list[Rejected]
    channel: str | None = None
    provider: str | None = None
    address: str | None = None
    send_at: datetime | None = None
    template: str | None = None
    variant: str | None = None
    deadline: date | None = None
    status_reason: str | None = None  # for held / suppressed
    extra: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            "outcome": self.outcome,
            "channel": self.channel,
            "provider": self.provider,
            "address": self.address,
            "send_at": self.send_at.isoformat() if self.send_at else None,
            "template": self.template,
            "variant": self.variant,
            "rule_version": self.rule_version,
            "reasons": list(self.reasons),
            "rejected": [{"channel": r.channel, "reason": r.reason} for r in self.rejected],
            "deadline": self.deadline.isoformat() if self.deadline else None,
            "status_reason": self.status_reason,
            "decided_at": self.decided_at.isoformat(),
        }


def format_address(address: Mapping[str, Any]) -> str:
    """A postal address as the lines on the envelope; also how a returned or unusable address is named."""
    lines = [*address.get("lines", []), f"{address.get('postal_code', '')} {address.get('city', '')}".strip()]
    if address.get("country", "NO") != "NO":
        lines.append(str(address["country"]))
    return "\n".join(line for line in lines if line)


def _observed_at(item: Mapping[str, Any]) -> datetime | None:
    raw = item.get("observed_at")
    try:
        moment = raw if isinstance(raw, datetime) else datetime.fromisoformat(str(raw))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None


def _evidence_state(
    evidence: Sequence[Mapping[str, Any]], channel: str, address: str, oldest: datetime
) -> Literal["fresh", "stale", "none"]:
    """Whether stored evidence makes ``address`` reliable for a statutory notice (R3), recently enough."""
    found: Literal["fresh", "stale", "none"] = "none"
    for item in evidence:
        if item.get("channel") != channel or str(item.get("address", "")).lower() != address.lower():
            continue
        observed = _observed_at(item)
        if observed is not None and observed >= oldest:
            return "fresh"
        found = "stale"
    return found


def _address_for(
    option: ChannelOption, facts: DebtorFacts, statutory: bool, evidence_after: datetime
) -> tuple[str | None, str | None]:
    """(address, None) when the channel reaches the debtor lawfully, else (None, reason)."""
    limits = option.limits
    if statutory and limits.statutory == "never":
        return None, "not_lawful_for_statutory_notice"
    if not statutory and limits.reaches in facts.opted_out:
        return None, "opted_out"
    if limits.reaches == "email":
        bad = {u.lower() for u in facts.unusable}
        usable = [e for e in facts.emails if e.lower() not in bad]
        if not usable:
            return None, "no_usable_email" if facts.emails else "no_email"
        if statutory and limits.statutory == "with_evidence":
            states = {e: _evidence_state(facts.evidence, "email", e, evidence_after) for e in usable}
            with_evidence = [e for e in usable if states[e] == "fresh"]
            if not with_evidence:
                if any(state == "stale" for state in states.values()):
                    return None, "electronic_notice_evidence_too_old"
                return None, "no_electronic_notice_evidence"
            return with_evidence[0], None
        return usable[0], None
    if limits.reaches == "mobile":
        usable = [m for m in facts.mobiles if m not in facts.unusable]
        return (usable[0], None) if usable else (None, "no_valid_mobile")
    if limits.reaches == "national_id":
        # A digital mailbox is addressed by national id; whether the person has one is asked at send time,
        # and the carrier falls back to print. The log shows the id masked only (R9).
        if facts.national_id_masked is None:
            return None, "no_national_id"
        return f"national id {facts.national_id_masked}", None
    if limits.reaches == "postal":
        formatted = [format_address(a) for a in facts.addresses]
        usable = [a for a in formatted if a not in facts.unusable]
        if not usable:
            return None, "no_usable_postal_address" if formatted else "no_postal_address"
        return usable[0], None
    return None, "channel_cannot_reach_debtor"


_UNLAWFUL = frozenset(
    {"not_lawful_for_statutory_notice", "no_electronic_notice_evidence", "electronic_notice_evidence_too_old"}
)


def _suppression_reason(rejected: Sequence[Rejected], facts: DebtorFacts, statutory: bool) -> str:
    """The one reason an operator should act on when no channel is left."""
    if any(r.reason == "no_template" for r in rejected):
        return "no_template"  # a lawful, reachable channel exists but has no template in this language
    if any(r.reason.startswith("already_tried") for r in rejected):
        return "fallback_exhausted"
    if statutory and any(r.reason in _UNLAWFUL for r in rejected) and _reachable_electronically(facts):
        return "no_lawful_channel"
    if any(r.reason == "opted_out" for r in rejected):
        return "opted_out"
    return "no_reachable_channel"


def _reachable_electronically(facts: DebtorFacts) -> bool:
    return bool(set(facts.emails) - facts.unusable or set(facts.mobiles) - facts.unusable)


def payment_deadline(send_date: date, rules: RuleSet) -> date:
    """At least ``statutory_deadline_days`` after the send date (R1/R2); a deadline that would fall on a
    Saturday, Sunday or public holiday moves to the next working day, as statutory deadlines do."""
    deadline = send_date + timedelta(days=rules.statutory_deadline_days)
    while deadline.weekday() >= 5 or is_public_holiday(deadline, rules.contact_windows):
        deadline += timedelta(days=1)
    return deadline


def _day_start(moment: datetime, zone: ZoneInfo) -> datetime:
    local = moment.astimezone(zone)
    return datetime.combine(local.date(), time(0), zone)


def pressure_cap_allows(recent: Sequence[datetime], at: datetime, cap: PressureCap, zone: ZoneInfo) -> bool:
    """R6: may one more contact reach the debtor at ``at``?"""
    today = _day_start(at, zone)
    tomorrow = datetime.combine(today.date() + timedelta(days=1), time(0), zone)
    in_day = sum(1 for t in recent if today <= t < tomorrow)
    in_week = sum(1 for t in recent if at - timedelta(days=7) < t <= at)
    return in_day < cap.max_per_day and in_week < cap.max_per_7_days


def next_allowed_by_cap(recent: Sequence[datetime], start: datetime, rules: RuleSet) -> datetime | None:
    """The first moment at or after ``start``, inside a contact window, when the cap lets one more contact
    through; None when that is further away than ``max_defer_days``."""
    cap, windows = rules.pressure_cap, rules.contact_windows
    zone = windows.zone
    # Elapsed time in UTC: "7 days" is 168 hours even across a DST switch, whatever zone the inputs carry.
    recent = [t.astimezone(UTC) for t in recent]
    limit = start + timedelta(days=cap.max_defer_days)
    at = next_opening(start, windows).astimezone(zone)
    while at <= limit:
        if pressure_cap_allows(recent, at, cap, zone):
            return at
        # Either a new day or the oldest contact of the week dropping out frees a place: try the earlier.
        candidates = [datetime.combine(at.astimezone(zone).date() + timedelta(days=1), time(0), zone)]
        week = sorted(t for t in recent if at - timedelta(days=7) < t <= at)
        if week:
            candidates.append(week[0] + timedelta(days=7))
        at = next_opening(min(c for c in candidates if c > at), windows).astimezone(zone)
    return None


def _rate(request: DecisionInput, name: str, ranking: Ranking) -> float:
    """The prior until ``min_observations`` back a channel; then the observed rate shrunk towards the prior
    (a Beta prior worth ``min_observations`` contacts), so that "no response yet" on a young channel never
    reads as "never answers"."""
    responses, contacts = request.response_rates.get(name, (0, 0))
    prior, weight = ranking.prior_response_rate, ranking.min_observations
    if contacts < weight:
        return prior
    return (responses + prior * weight) / (contacts + weight)


def _held(reason: str, rules: RuleSet, now: datetime) -> Decision:
    return Decision(
        outcome="held",
        reasons=[f"case_held:{reason}"],
        rejected=[],
        status_reason=reason,
        rule_version=rules.version,
        decided_at=now,
    )


def _suppressed(
    reasons: list[str], why: str, rules: RuleSet, now: datetime, rejected: list[Rejected]
) -> Decision:
    return Decision(
        outcome="suppressed",
        reasons=[*reasons, why],
        rejected=rejected,
        status_reason=why,
        rule_version=rules.version,
        decided_at=now,
    )


def decide(
    request: DecisionInput,
    *,
    channels: Mapping[str, ChannelOption],
    templates: frozenset[tuple[str, str, str, str]],
    rules: RuleSet,
    now: datetime,
) -> Decision:
    """Rank every channel for ``request`` and pick the lawful, reachable one with the lowest expected cost
    per response (the caller's preference first when it is lawful, then the debtor's), at the first moment
    the contact windows, the fee rules and the pressure cap allow."""
    exempt = request.case_status in rules.holds.case_statuses(request.kind)
    if request.case_status == "held" and not exempt:
        return _held(request.case_status_reason or "case_held", rules, now)
    if request.case_status == "closed" and not exempt:
        return _suppressed([], "case_closed", rules, now, [])

    reasons: list[str] = (
        [f"sent_on_{request.case_status}_case:{request.kind}"]
        if exempt and request.case_status != "open"
        else []
    )
    zone = rules.contact_windows.zone
    statutory = request.kind in STATUTORY_KINDS
    start = now
    schedule_reason: str | None = None
    if request.not_before is not None and request.not_before > now:
        start = request.not_before
        reasons.append("not_before")
        schedule_reason = "not_before"
    # R10: a fee only when sent at least min_days_after_due after the due date.
    fee_rules = rules.fees
    if request.carries_fee:
        if request.fee_reminders_sent >= fee_rules.max_fee_reminders:
            return _suppressed(reasons, "fee_reminder_limit_reached", rules, now, [])
        fee_from = datetime.combine(
            request.due_date + timedelta(days=fee_rules.min_days_after_due), time(0), zone
        )
        if fee_from > start:
            start = fee_from
            reasons.append("fee_not_before_14_days_after_due")
            schedule_reason = "fee_gate"
    send_at = next_opening(start, rules.contact_windows)
    if send_at != start:
        reasons.append("outside_contact_window")
        schedule_reason = schedule_reason or "outside_contact_window"
    # R6: statutory notices and exempt kinds count towards the cap but are never held back by it.
    capped = not statutory and request.kind not in rules.pressure_cap.exempt_kinds
    if capped and not pressure_cap_allows(request.recent_contacts, send_at, rules.pressure_cap, zone):
        allowed = next_allowed_by_cap(request.recent_contacts, send_at, rules)
        if allowed is None or rules.pressure_cap.when_reached == "suppress":
            return _suppressed(reasons, "pressure_cap", rules, now, [])
        send_at = allowed
        reasons.append("pressure_cap_deferred")
        schedule_reason = "pressure_cap"
    send_date = send_at.astimezone(zone).date()

    if request.kind == "inkassovarsel" and send_date <= request.due_date:
        return Decision(
            outcome="suppressed",
            reasons=["inkassovarsel_before_due_date"],
            rejected=[],
            status_reason="claim_not_due",
            rule_version=rules.version,
            decided_at=now,
        )

    evidence_after = send_at - timedelta(days=rules.electronic_evidence_max_age_days)
    eligible: list[tuple[float, str, ChannelOption, str]] = []  # (expected cost per response, ...)
    costs: dict[str, float] = {}
    rejected: list[Rejected] = []
    tried = request.tried_channels
    tried_reaches = {channels[c].limits.reaches for c in tried if c in channels} - {None}
    for name in ALL_CHANNELS:
        option = channels.get(name)
        if option is None:
            rejected.append(Rejected(name, "channel_not_configured"))
            continue
        if name in tried or option.limits.reaches in tried_reaches:
            # The same number or mailbox by another channel (an SMS after a failed chat link) is no fallback.
            rejected.append(Rejected(name, "already_tried"))
            continue
        address, why = _address_for(option, request.debtor, statutory, evidence_after)
        if address is None:
            rejected.append(Rejected(name, why or "unreachable"))
            continue
        if (request.language, request.kind, DEFAULT_VARIANT, name) not in templates:
            rejected.append(Rejected(name, "no_template"))
            continue
        costs[name] = rules.channel_costs_nok.get(name, option.limits.cost_nok)
        eligible.append((costs[name] / _rate(request, name, rules.ranking), name, option, address))

    if tried and len(tried) >= rules.fallback.max_channels:
        eligible = []
        rejected.append(Rejected("*", "already_tried:fallback_limit"))
    if not eligible:
        why = _suppression_reason(rejected, request.debtor, statutory)
        if why == "no_reachable_channel" and tried:
            why = "fallback_exhausted"
        return _suppressed(reasons, why, rules, now, rejected)

    eligible.sort(key=lambda item: (item[0], item[1]))
    observed = any(
        request.response_rates.get(item[1], (0, 0))[1] >= rules.ranking.min_observations for item in eligible
    )
    best = "lowest_cost_per_response" if observed else "cheapest_lawful_reachable_channel"
    chosen = eligible[0]
    preference = request.channel_preference
    stated = request.debtor.preferred_channel
    if preference != "auto":
        preferred = [item for item in eligible if item[1] == preference]
        if preferred:
            chosen = preferred[0]
            reasons.append("requested_channel")
        else:
            refusal = next((r.reason for r in rejected if r.channel == preference), "not_eligible")
            reasons.append(f"requested_channel_refused:{preference}:{refusal}")
            reasons.append(best)
    elif stated is not None and any(item[1] == stated for item in eligible):
        preferred_item = next(item for item in eligible if item[1] == stated)
        if preferred_item[0] <= chosen[0] * rules.ranking.preference_max_cost_ratio:
            chosen = preferred_item
            reasons.append("debtor_preference")
        else:
            reasons.append(f"debtor_preference_too_costly:{stated}")
            reasons.append(best)
    else:
        reasons.append(best)
    if tried:
        reasons.append("fallback:" + ",".join(sorted(tried)))
    if statutory:
        reasons.append("statutory_notice_on_lawful_channel")
    for score, name, _option, _address in eligible:
        if name != chosen[1]:
            shown = f"cost_per_response_nok={score:.2f}" if observed else f"cost_nok={costs[name]:.2f}"
            rejected.append(Rejected(name, f"ranked_lower:{shown}"))

    deadline = None
    if request.kind in PAYMENT_KINDS:
        deadline = payment_deadline(send_date, rules)
    _score, name, option, address = chosen
    variant = request.variant
    if (request.language, request.kind, variant, name) not in templates:
        reasons.append(f"variant_not_written_for_channel:{variant}")
        variant = DEFAULT_VARIANT
    return Decision(
        outcome="send",
        reasons=reasons,
        rejected=rejected,
        channel=name,
        provider=option.provider,
        address=address,
        send_at=send_at,
        template=f"{request.language}/{request.kind}/{variant}/{name}",
        variant=variant,
        deadline=deadline,
        rule_version=rules.version,
        decided_at=now,
        status_reason=schedule_reason if send_at > now else None,
    )
