"""The decision: which channel, which address, when, with which template — and why. Pure: no I/O, ``now`` is
an argument, the same inputs always give the same decision. It runs when a contact is first picked up and
again right before sending, so a rule that changed in between (a window closed, a hold) still applies.

Channels are described by data (``ChannelLimits``): what they reach, what they cost, whether they may carry a
statutory notice. Nothing here asks which channel is which by name.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any, Literal

from channels.base import ChannelLimits
from orchestrator.policy.rules import RuleSet
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


def _has_evidence(evidence: Sequence[Mapping[str, Any]], channel: str, address: str) -> bool:
    return any(
        e.get("channel") == channel and str(e.get("address", "")).lower() == address.lower() for e in evidence
    )


def _address_for(option: ChannelOption, facts: DebtorFacts, statutory: bool) -> tuple[str | None, str | None]:
    """(address, None) when the channel reaches the debtor lawfully, else (None, reason)."""
    limits = option.limits
    if statutory and limits.statutory == "never":
        return None, "not_lawful_for_statutory_notice"
    if limits.reaches == "email":
        bad = {u.lower() for u in facts.unusable}
        usable = [e for e in facts.emails if e.lower() not in bad]
        if not usable:
            return None, "no_usable_email" if facts.emails else "no_email"
        if statutory and limits.statutory == "with_evidence":
            with_evidence = [e for e in usable if _has_evidence(facts.evidence, "email", e)]
            if not with_evidence:
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


_UNLAWFUL = frozenset({"not_lawful_for_statutory_notice", "no_electronic_notice_evidence"})


def _suppression_reason(rejected: Sequence[Rejected], facts: DebtorFacts, statutory: bool) -> str:
    """The one reason an operator should act on when no channel is left."""
    if any(r.reason == "no_template" for r in rejected):
        return "no_template"  # a lawful, reachable channel exists but has no template in this language
    reachable_electronically = bool(set(facts.emails) - facts.unusable or set(facts.mobiles) - facts.unusable)
    if statutory and reachable_electronically and any(r.reason in _UNLAWFUL for r in rejected):
        return "no_lawful_channel"
    return "no_reachable_channel"


def payment_deadline(send_date: date, rules: RuleSet) -> date:
    """At least ``statutory_deadline_days`` after the send date (R1/R2); a deadline that would fall on a
    Saturday, Sunday or public holiday moves to the next working day, as statutory deadlines do."""
    deadline = send_date + timedelta(days=rules.statutory_deadline_days)
    while deadline.weekday() >= 5 or is_public_holiday(deadline, rules.contact_windows):
        deadline += timedelta(days=1)
    return deadline


def decide(
    request: DecisionInput,
    *,
    channels: Mapping[str, ChannelOption],
    templates: frozenset[tuple[str, str, str, str]],
    rules: RuleSet,
    now: datetime,
) -> Decision:
    """Rank every channel for ``request`` and pick the cheapest lawful, reachable one (the caller's preference
    first when it is lawful), at the next moment the contact windows allow."""
    if request.case_status == "held":
        reason = request.case_status_reason or "case_held"
        return Decision(
            outcome="held",
            reasons=[f"case_held:{reason}"],
            rejected=[],
            status_reason=reason,
            rule_version=rules.version,
            decided_at=now,
        )
    if request.case_status == "closed":
        return Decision(
            outcome="suppressed",
            reasons=["case_closed"],
            rejected=[],
            status_reason="case_closed",
            rule_version=rules.version,
            decided_at=now,
        )

    reasons: list[str] = []
    start = now
    if request.not_before is not None and request.not_before > now:
        start = request.not_before
        reasons.append("not_before")
    send_at = next_opening(start, rules.contact_windows)
    if send_at != start:
        reasons.append("outside_contact_window")
    zone = rules.contact_windows.zone
    send_date = send_at.astimezone(zone).date()

    statutory = request.kind in STATUTORY_KINDS
    if request.kind == "inkassovarsel" and send_date <= request.due_date:
        return Decision(
            outcome="suppressed",
            reasons=["inkassovarsel_before_due_date"],
            rejected=[],
            status_reason="claim_not_due",
            rule_version=rules.version,
            decided_at=now,
        )

    eligible: list[tuple[float, str, ChannelOption, str]] = []
    rejected: list[Rejected] = []
    for name in ALL_CHANNELS:
        option = channels.get(name)
        if option is None:
            rejected.append(Rejected(name, "channel_not_configured"))
            continue
        address, why = _address_for(option, request.debtor, statutory)
        if address is None:
            rejected.append(Rejected(name, why or "unreachable"))
            continue
        if (request.language, request.kind, DEFAULT_VARIANT, name) not in templates:
            rejected.append(Rejected(name, "no_template"))
            continue
        cost = rules.channel_costs_nok.get(name, option.limits.cost_nok)
        eligible.append((cost, name, option, address))

    if not eligible:
        why = _suppression_reason(rejected, request.debtor, statutory)
        return Decision(
            outcome="suppressed",
            reasons=[*reasons, why],
            rejected=rejected,
            status_reason=why,
            rule_version=rules.version,
            decided_at=now,
        )

    eligible.sort(key=lambda item: (item[0], item[1]))
    chosen = eligible[0]
    preference = request.channel_preference
    if preference != "auto":
        preferred = [item for item in eligible if item[1] == preference]
        if preferred:
            chosen = preferred[0]
            reasons.append("requested_channel")
        else:
            refusal = next((r.reason for r in rejected if r.channel == preference), "not_eligible")
            reasons.append(f"requested_channel_refused:{preference}:{refusal}")
            reasons.append("cheapest_lawful_reachable_channel")
    else:
        reasons.append("cheapest_lawful_reachable_channel")
    if statutory:
        reasons.append("statutory_notice_on_lawful_channel")
    for cost, name, _option, _address in eligible:
        if name != chosen[1]:
            rejected.append(Rejected(name, f"ranked_lower:cost_nok={cost:.2f}"))

    deadline = None
    if request.kind in PAYMENT_KINDS:
        deadline = payment_deadline(send_date, rules)
    _cost, name, option, address = chosen
    return Decision(
        outcome="send",
        reasons=reasons,
        rejected=rejected,
        channel=name,
        provider=option.provider,
        address=address,
        send_at=send_at,
        template=f"{request.language}/{request.kind}/{DEFAULT_VARIANT}/{name}",
        variant=DEFAULT_VARIANT,
        deadline=deadline,
        rule_version=rules.version,
        decided_at=now,
    )
