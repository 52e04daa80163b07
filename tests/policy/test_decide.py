"""The first policy, ``decide`` and ``payment_deadline``, as tables (DESIGN.md habit 7; DOMAIN.md R1, R3, R5).

Channels are built from the real limits constants (``EMAIL_LIMITS``, ``SMS_LIMITS``, ``LETTER_LIMITS``); the
template set holds every (nb, kind, neutral, channel) for reminder/inkassovarsel and email/sms/letter; ``now``
is an aware datetime in Europe/Oslo.

Calendar facts used below (see ``tests/policy/test_windows.py``): 27 November 2026 is a Friday; 17 May
2027 is a Monday and a public holiday (Constitution Day and Whit Monday); 25 and 26 December 2026 (Fri, Sat)
are holidays, the 24th is not; 25 December 2027 is a Saturday; Maundy Thursday to Easter Monday 2027 is
25-29 March; 1 January 2028 is a Saturday.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from channels.email import EMAIL_LIMITS
from channels.outbox import LETTER_LIMITS, SMS_LIMITS
from orchestrator.policy.decide import (
    ALL_CHANNELS,
    ChannelOption,
    DebtorFacts,
    Decision,
    DecisionInput,
    decide,
    payment_deadline,
)
from orchestrator.policy.rules import load_rules
from orchestrator.schemas import DecisionOut

OSLO = ZoneInfo("Europe/Oslo")
RULES = load_rules()

CHANNELS: dict[str, ChannelOption] = {
    "email": ChannelOption("email", "outbox", EMAIL_LIMITS),
    "sms": ChannelOption("sms", "outbox", SMS_LIMITS),
    "letter": ChannelOption("letter", "outbox", LETTER_LIMITS),
}
TEMPLATES: frozenset[tuple[str, str, str, str]] = frozenset(
    ("nb", kind, "neutral", channel)
    for kind in ("reminder", "inkassovarsel")
    for channel in ("email", "sms", "letter")
)


def oslo(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=OSLO)


def without(channel: str, *, kind: str | None = None) -> frozenset[tuple[str, str, str, str]]:
    """The template set minus one channel (for one kind, or for all)."""
    return frozenset(t for t in TEMPLATES if not (t[3] == channel and (kind is None or t[1] == kind)))


# A Wednesday morning, inside the weekday window.
WEDNESDAY = oslo(2026, 11, 25, 10, 0)
DUE = date(2026, 11, 10)  # long past on WEDNESDAY

EMAIL = "ola.nordmann@example.no"
EMAIL_2 = "ola@jobb.example.no"
MOBILE = "+4791234567"
MOBILE_2 = "+4741234567"
ADDRESS = {"lines": ["Storgata 1"], "postal_code": "0155", "city": "Oslo", "country": "NO"}
ADDRESS_TO = "Storgata 1\n0155 Oslo"
ADDRESS_2 = {"lines": ["c/o Hansen", "Kirkegata 5"], "postal_code": "5003", "city": "Bergen"}
ADDRESS_2_TO = "c/o Hansen\nKirkegata 5\n5003 Bergen"
ADDRESS_SE = {"lines": ["Drottninggatan 1"], "postal_code": "111 51", "city": "Stockholm", "country": "SE"}
ADDRESS_SE_TO = "Drottninggatan 1\n111 51 Stockholm\nSE"


def evidence(address: str, channel: str = "email") -> dict[str, Any]:
    return {
        "channel": channel,
        "address": address,
        "basis": "debtor_used_address",
        "observed_at": "2026-10-01T12:00:00+02:00",
    }


def debtor(
    *,
    emails: Sequence[str] = (),
    mobiles: Sequence[str] = (),
    addresses: Sequence[Mapping[str, Any]] = (),
    evidence: Sequence[Mapping[str, Any]] = (),
    unusable: Sequence[str] = (),
) -> DebtorFacts:
    return DebtorFacts(
        type="person",
        emails=tuple(emails),
        mobiles=tuple(mobiles),
        addresses=tuple(addresses),
        evidence=tuple(evidence),
        unusable=frozenset(unusable),
    )


EVERYTHING = debtor(emails=[EMAIL], mobiles=[MOBILE], addresses=[ADDRESS])
EVERYTHING_WITH_EVIDENCE = debtor(
    emails=[EMAIL], mobiles=[MOBILE], addresses=[ADDRESS], evidence=[evidence(EMAIL)]
)


@dataclass(frozen=True)
class Case:
    """One call of ``decide``: the request plus the environment it is decided in."""

    debtor: DebtorFacts = EVERYTHING
    kind: str = "reminder"
    preference: str = "auto"
    now: datetime = WEDNESDAY
    not_before: datetime | None = None
    due: date = DUE
    case_status: str = "open"
    case_status_reason: str | None = None
    language: str = "nb"
    channels: Mapping[str, ChannelOption] = field(default_factory=lambda: CHANNELS)
    templates: frozenset[tuple[str, str, str, str]] = TEMPLATES

    def request(self) -> DecisionInput:
        return DecisionInput(
            kind=self.kind,
            language=self.language,
            channel_preference=self.preference,
            not_before=self.not_before,
            debtor=self.debtor,
            case_status=self.case_status,
            case_status_reason=self.case_status_reason,
            due_date=self.due,
        )

    def decide(self) -> Decision:
        return decide(
            self.request(), channels=self.channels, templates=self.templates, rules=RULES, now=self.now
        )


def rejected_of(decision: Decision) -> dict[str, str]:
    channels = [r.channel for r in decision.rejected]
    assert len(channels) == len(set(channels)), f"a channel is rejected twice: {decision.rejected}"
    return {r.channel: r.reason for r in decision.rejected}


def assert_same_instant(actual: datetime | None, expected: datetime) -> None:
    """Same instant *and* same UTC offset: aware datetimes sharing a tzinfo compare by wall time."""
    assert actual is not None
    assert actual.astimezone(UTC) == expected.astimezone(UTC), (
        f"{actual.isoformat()} != {expected.isoformat()}"
    )
    assert actual.utcoffset() == expected.utcoffset(), f"{actual.isoformat()} != {expected.isoformat()}"


NOT_CONFIGURED = {"chat_link": "channel_not_configured", "digital_mailbox": "channel_not_configured"}
CHEAPEST = ["cheapest_lawful_reachable_channel"]
STATUTORY = ["cheapest_lawful_reachable_channel", "statutory_notice_on_lawful_channel"]
SMS_LOWER = "ranked_lower:cost_nok=0.45"
EMAIL_LOWER = "ranked_lower:cost_nok=0.05"
LETTER_LOWER = "ranked_lower:cost_nok=14.50"

# ------------------------------------------------------------------------------------------ channel choice
# (case, chosen channel or None when suppressed, address or status_reason, reasons, rejected channels)
CHOICE_CASES = [
    # --- reminders: the cheapest reachable channel, e-mail first.
    pytest.param(
        Case(),
        "email",
        EMAIL,
        CHEAPEST,
        {**NOT_CONFIGURED, "sms": SMS_LOWER, "letter": LETTER_LOWER},
        id="reminder-everything-email-cheapest",
    ),
    pytest.param(
        Case(debtor=debtor(emails=[EMAIL])),
        "email",
        EMAIL,
        CHEAPEST,
        {**NOT_CONFIGURED, "sms": "no_valid_mobile", "letter": "no_postal_address"},
        id="reminder-email-only",
    ),
    pytest.param(
        Case(debtor=debtor(mobiles=[MOBILE])),
        "sms",
        MOBILE,
        CHEAPEST,
        {**NOT_CONFIGURED, "email": "no_email", "letter": "no_postal_address"},
        id="reminder-mobile-only-sms",
    ),
    pytest.param(
        Case(debtor=debtor(addresses=[ADDRESS])),
        "letter",
        ADDRESS_TO,
        CHEAPEST,
        {**NOT_CONFIGURED, "email": "no_email", "sms": "no_valid_mobile"},
        id="reminder-address-only-letter",
    ),
    pytest.param(
        Case(debtor=debtor(mobiles=[MOBILE], addresses=[ADDRESS])),
        "sms",
        MOBILE,
        CHEAPEST,
        {**NOT_CONFIGURED, "email": "no_email", "letter": LETTER_LOWER},
        id="reminder-mobile-and-address-sms-cheaper",
    ),
    pytest.param(
        Case(debtor=debtor(addresses=[ADDRESS_2, ADDRESS])),
        "letter",
        ADDRESS_2_TO,
        CHEAPEST,
        {**NOT_CONFIGURED, "email": "no_email", "sms": "no_valid_mobile"},
        id="reminder-letter-first-address-multiline",
    ),
    pytest.param(
        Case(debtor=debtor(addresses=[ADDRESS_SE])),
        "letter",
        ADDRESS_SE_TO,
        CHEAPEST,
        {**NOT_CONFIGURED, "email": "no_email", "sms": "no_valid_mobile"},
        id="reminder-letter-foreign-address-has-country-line",
    ),
    # --- unusable contact points are skipped.
    pytest.param(
        Case(debtor=debtor(emails=[EMAIL, EMAIL_2], mobiles=[MOBILE], unusable=[EMAIL])),
        "email",
        EMAIL_2,
        CHEAPEST,
        {**NOT_CONFIGURED, "sms": SMS_LOWER, "letter": "no_postal_address"},
        id="bounced-email-falls-back-to-next-email",
    ),
    pytest.param(
        Case(debtor=debtor(emails=[EMAIL], mobiles=[MOBILE], addresses=[ADDRESS], unusable=[EMAIL])),
        "sms",
        MOBILE,
        CHEAPEST,
        {**NOT_CONFIGURED, "email": "no_usable_email", "letter": LETTER_LOWER},
        id="bounced-only-email-falls-back-to-sms",
    ),
    pytest.param(
        Case(debtor=debtor(emails=[EMAIL], addresses=[ADDRESS], unusable=[EMAIL])),
        "letter",
        ADDRESS_TO,
        CHEAPEST,
        {**NOT_CONFIGURED, "email": "no_usable_email", "sms": "no_valid_mobile"},
        id="bounced-only-email-falls-back-to-letter",
    ),
    pytest.param(
        Case(debtor=debtor(mobiles=[MOBILE, MOBILE_2], unusable=[MOBILE])),
        "sms",
        MOBILE_2,
        CHEAPEST,
        {**NOT_CONFIGURED, "email": "no_email", "letter": "no_postal_address"},
        id="failed-mobile-falls-back-to-next-mobile",
    ),
    pytest.param(
        Case(debtor=debtor(mobiles=[MOBILE], addresses=[ADDRESS], unusable=[MOBILE])),
        "letter",
        ADDRESS_TO,
        CHEAPEST,
        {**NOT_CONFIGURED, "email": "no_email", "sms": "no_valid_mobile"},
        id="failed-only-mobile-falls-back-to-letter",
    ),
    pytest.param(
        Case(debtor=debtor(addresses=[ADDRESS, ADDRESS_2], unusable=[ADDRESS_TO])),
        "letter",
        ADDRESS_2_TO,
        CHEAPEST,
        {**NOT_CONFIGURED, "email": "no_email", "sms": "no_valid_mobile"},
        id="returned-letter-falls-back-to-next-address",
    ),
    pytest.param(
        Case(debtor=debtor(addresses=[ADDRESS], unusable=[ADDRESS_TO])),
        None,
        "no_reachable_channel",
        ["no_reachable_channel"],
        {
            **NOT_CONFIGURED,
            "email": "no_email",
            "sms": "no_valid_mobile",
            "letter": "no_usable_postal_address",
        },
        id="returned-only-address-suppressed",
    ),
    # --- nothing to reach.
    pytest.param(
        Case(debtor=debtor()),
        None,
        "no_reachable_channel",
        ["no_reachable_channel"],
        {**NOT_CONFIGURED, "email": "no_email", "sms": "no_valid_mobile", "letter": "no_postal_address"},
        id="no-contact-point-suppressed",
    ),
    pytest.param(
        Case(
            debtor=debtor(
                emails=[EMAIL], mobiles=[MOBILE], addresses=[ADDRESS], unusable=[EMAIL, MOBILE, ADDRESS_TO]
            )
        ),
        None,
        "no_reachable_channel",
        ["no_reachable_channel"],
        {
            **NOT_CONFIGURED,
            "email": "no_usable_email",
            "sms": "no_valid_mobile",
            "letter": "no_usable_postal_address",
        },
        id="every-contact-point-unusable-suppressed",
    ),
    # --- configuration and templates.
    pytest.param(
        Case(templates=without("email")),
        "sms",
        MOBILE,
        CHEAPEST,
        {**NOT_CONFIGURED, "email": "no_template", "letter": LETTER_LOWER},
        id="no-email-template-sms",
    ),
    pytest.param(
        Case(channels={k: v for k, v in CHANNELS.items() if k != "email"}),
        "sms",
        MOBILE,
        CHEAPEST,
        {**NOT_CONFIGURED, "email": "channel_not_configured", "letter": LETTER_LOWER},
        id="email-not-configured-sms",
    ),
    pytest.param(
        Case(language="en"),
        None,
        "no_template",
        ["no_template"],
        {**NOT_CONFIGURED, "email": "no_template", "sms": "no_template", "letter": "no_template"},
        id="no-template-in-language-suppressed",
    ),
    # --- the caller's preference.
    pytest.param(
        Case(preference="sms"),
        "sms",
        MOBILE,
        ["requested_channel"],
        {**NOT_CONFIGURED, "email": EMAIL_LOWER, "letter": LETTER_LOWER},
        id="prefer-sms-honoured",
    ),
    pytest.param(
        Case(preference="letter"),
        "letter",
        ADDRESS_TO,
        ["requested_channel"],
        {**NOT_CONFIGURED, "email": EMAIL_LOWER, "sms": SMS_LOWER},
        id="prefer-letter-honoured",
    ),
    pytest.param(
        Case(preference="email"),
        "email",
        EMAIL,
        ["requested_channel"],
        {**NOT_CONFIGURED, "sms": SMS_LOWER, "letter": LETTER_LOWER},
        id="prefer-email-honoured",
    ),
    pytest.param(
        Case(debtor=debtor(emails=[EMAIL], addresses=[ADDRESS]), preference="sms"),
        "email",
        EMAIL,
        ["requested_channel_refused:sms:no_valid_mobile", *CHEAPEST],
        {**NOT_CONFIGURED, "sms": "no_valid_mobile", "letter": LETTER_LOWER},
        id="prefer-sms-without-mobile-refused",
    ),
    pytest.param(
        Case(preference="chat_link"),
        "email",
        EMAIL,
        ["requested_channel_refused:chat_link:channel_not_configured", *CHEAPEST],
        {**NOT_CONFIGURED, "sms": SMS_LOWER, "letter": LETTER_LOWER},
        id="prefer-unconfigured-chat-link-refused",
    ),
    pytest.param(
        Case(preference="digital_mailbox"),
        "email",
        EMAIL,
        ["requested_channel_refused:digital_mailbox:channel_not_configured", *CHEAPEST],
        {**NOT_CONFIGURED, "sms": SMS_LOWER, "letter": LETTER_LOWER},
        id="prefer-unconfigured-digital-mailbox-refused",
    ),
    pytest.param(
        Case(preference="sms", templates=without("sms")),
        "email",
        EMAIL,
        ["requested_channel_refused:sms:no_template", *CHEAPEST],
        {**NOT_CONFIGURED, "sms": "no_template", "letter": LETTER_LOWER},
        id="prefer-sms-without-template-refused",
    ),
    pytest.param(
        Case(debtor=debtor(emails=[EMAIL], addresses=[ADDRESS], unusable=[EMAIL]), preference="email"),
        "letter",
        ADDRESS_TO,
        ["requested_channel_refused:email:no_usable_email", *CHEAPEST],
        {**NOT_CONFIGURED, "email": "no_usable_email", "sms": "no_valid_mobile"},
        id="prefer-bounced-email-refused",
    ),
    # --- R3: statutory notices only on a lawful channel.
    pytest.param(
        Case(kind="inkassovarsel", debtor=EVERYTHING_WITH_EVIDENCE),
        "email",
        EMAIL,
        STATUTORY,
        {**NOT_CONFIGURED, "sms": "not_lawful_for_statutory_notice", "letter": LETTER_LOWER},
        id="varsel-email-with-evidence",
    ),
    pytest.param(
        Case(kind="inkassovarsel"),
        "letter",
        ADDRESS_TO,
        STATUTORY,
        {
            **NOT_CONFIGURED,
            "email": "no_electronic_notice_evidence",
            "sms": "not_lawful_for_statutory_notice",
        },
        id="varsel-email-without-evidence-letter",
    ),
    pytest.param(
        Case(
            kind="inkassovarsel",
            debtor=debtor(
                emails=[EMAIL], addresses=[ADDRESS], evidence=[evidence("Ola.Nordmann@EXAMPLE.NO")]
            ),
        ),
        "email",
        EMAIL,
        STATUTORY,
        {**NOT_CONFIGURED, "sms": "not_lawful_for_statutory_notice", "letter": LETTER_LOWER},
        id="varsel-evidence-matches-case-insensitively",
    ),
    pytest.param(
        Case(
            kind="inkassovarsel",
            debtor=debtor(emails=[EMAIL], addresses=[ADDRESS], evidence=[evidence(EMAIL_2)]),
        ),
        "letter",
        ADDRESS_TO,
        STATUTORY,
        {
            **NOT_CONFIGURED,
            "email": "no_electronic_notice_evidence",
            "sms": "not_lawful_for_statutory_notice",
        },
        id="varsel-evidence-for-another-address-letter",
    ),
    pytest.param(
        Case(
            kind="inkassovarsel",
            debtor=debtor(emails=[EMAIL], addresses=[ADDRESS], evidence=[evidence(EMAIL, "digital_mailbox")]),
        ),
        "letter",
        ADDRESS_TO,
        STATUTORY,
        {
            **NOT_CONFIGURED,
            "email": "no_electronic_notice_evidence",
            "sms": "not_lawful_for_statutory_notice",
        },
        id="varsel-evidence-for-another-channel-letter",
    ),
    pytest.param(
        Case(
            kind="inkassovarsel",
            debtor=debtor(emails=[EMAIL, EMAIL_2], addresses=[ADDRESS], evidence=[evidence(EMAIL_2)]),
        ),
        "email",
        EMAIL_2,
        STATUTORY,
        {**NOT_CONFIGURED, "sms": "not_lawful_for_statutory_notice", "letter": LETTER_LOWER},
        id="varsel-picks-the-email-with-evidence",
    ),
    pytest.param(
        Case(
            kind="inkassovarsel",
            debtor=debtor(
                emails=[EMAIL, EMAIL_2], addresses=[ADDRESS], evidence=[evidence(EMAIL)], unusable=[EMAIL]
            ),
        ),
        "letter",
        ADDRESS_TO,
        STATUTORY,
        {
            **NOT_CONFIGURED,
            "email": "no_electronic_notice_evidence",
            "sms": "not_lawful_for_statutory_notice",
        },
        id="varsel-bounced-evidence-email-letter",
    ),
    pytest.param(
        Case(kind="inkassovarsel", preference="sms"),
        "letter",
        ADDRESS_TO,
        ["requested_channel_refused:sms:not_lawful_for_statutory_notice", *STATUTORY],
        {
            **NOT_CONFIGURED,
            "email": "no_electronic_notice_evidence",
            "sms": "not_lawful_for_statutory_notice",
        },
        id="varsel-prefer-sms-refused-letter",
    ),
    pytest.param(
        Case(kind="inkassovarsel", preference="sms", debtor=EVERYTHING_WITH_EVIDENCE),
        "email",
        EMAIL,
        ["requested_channel_refused:sms:not_lawful_for_statutory_notice", *STATUTORY],
        {**NOT_CONFIGURED, "sms": "not_lawful_for_statutory_notice", "letter": LETTER_LOWER},
        id="varsel-prefer-sms-refused-email-with-evidence",
    ),
    pytest.param(
        Case(kind="inkassovarsel", preference="letter", debtor=EVERYTHING_WITH_EVIDENCE),
        "letter",
        ADDRESS_TO,
        ["requested_channel", "statutory_notice_on_lawful_channel"],
        {**NOT_CONFIGURED, "email": EMAIL_LOWER, "sms": "not_lawful_for_statutory_notice"},
        id="varsel-prefer-letter-honoured",
    ),
    pytest.param(
        Case(kind="inkassovarsel", preference="email"),
        "letter",
        ADDRESS_TO,
        ["requested_channel_refused:email:no_electronic_notice_evidence", *STATUTORY],
        {
            **NOT_CONFIGURED,
            "email": "no_electronic_notice_evidence",
            "sms": "not_lawful_for_statutory_notice",
        },
        id="varsel-prefer-email-without-evidence-refused",
    ),
    pytest.param(
        Case(kind="inkassovarsel", debtor=debtor(mobiles=[MOBILE])),
        None,
        "no_lawful_channel",
        ["no_lawful_channel"],
        {
            **NOT_CONFIGURED,
            "email": "no_email",
            "sms": "not_lawful_for_statutory_notice",
            "letter": "no_postal_address",
        },
        id="varsel-mobile-only-no-lawful-channel",
    ),
    pytest.param(
        Case(kind="inkassovarsel", debtor=debtor(emails=[EMAIL], mobiles=[MOBILE])),
        None,
        "no_lawful_channel",
        ["no_lawful_channel"],
        {
            **NOT_CONFIGURED,
            "email": "no_electronic_notice_evidence",
            "sms": "not_lawful_for_statutory_notice",
            "letter": "no_postal_address",
        },
        id="varsel-email-without-evidence-and-mobile-no-lawful-channel",
    ),
    pytest.param(
        Case(kind="inkassovarsel", debtor=debtor()),
        None,
        "no_reachable_channel",
        ["no_reachable_channel"],
        {
            **NOT_CONFIGURED,
            "email": "no_email",
            "sms": "not_lawful_for_statutory_notice",
            "letter": "no_postal_address",
        },
        id="varsel-no-contact-point-no-reachable-channel",
    ),
    pytest.param(
        Case(kind="inkassovarsel", templates=without("letter", kind="inkassovarsel")),
        None,
        "no_template",
        ["no_template"],
        {
            **NOT_CONFIGURED,
            "email": "no_electronic_notice_evidence",
            "sms": "not_lawful_for_statutory_notice",
            "letter": "no_template",
        },
        id="varsel-no-letter-template-no-lawful-channel",
    ),
]


@pytest.mark.parametrize(("case", "channel", "address_or_status", "reasons", "rejected"), CHOICE_CASES)
def test_channel_choice(
    case: Case, channel: str | None, address_or_status: str, reasons: list[str], rejected: dict[str, str]
) -> None:
    decision = case.decide()
    assert decision.reasons == reasons
    assert rejected_of(decision) == rejected
    if channel is None:
        assert decision.outcome == "suppressed"
        assert decision.status_reason == address_or_status
        assert decision.channel is None
        assert decision.address is None
        assert decision.send_at is None
        assert decision.deadline is None
        assert set(rejected) == set(ALL_CHANNELS)
        return
    assert decision.outcome == "send"
    assert decision.channel == channel
    assert decision.address == address_or_status
    assert decision.provider == "outbox"
    assert decision.variant == "neutral"
    assert decision.template == f"{case.language}/{case.kind}/neutral/{channel}"
    assert decision.status_reason is None
    # Every channel not chosen is accounted for, exactly once.
    assert set(rejected) | {channel} == set(ALL_CHANNELS)
    assert channel not in rejected
    assert_same_instant(decision.send_at, case.now)
    assert decision.deadline == date(2026, 12, 9)  # Wednesday + 14 days


# ------------------------------------------------------------------------------------------- case status
CASE_STATUS_CASES = [
    pytest.param(
        Case(case_status="held", case_status_reason="dispute"),
        "held",
        "dispute",
        ["case_held:dispute"],
        id="held-dispute",
    ),
    pytest.param(
        Case(case_status="held", case_status_reason="bankruptcy"),
        "held",
        "bankruptcy",
        ["case_held:bankruptcy"],
        id="held-bankruptcy",
    ),
    pytest.param(Case(case_status="held"), "held", "case_held", ["case_held:case_held"], id="held-no-reason"),
    pytest.param(
        Case(case_status="held", case_status_reason="dispute", kind="inkassovarsel", due=WEDNESDAY.date()),
        "held",
        "dispute",
        ["case_held:dispute"],
        id="held-wins-over-not-due",
    ),
    pytest.param(
        Case(case_status="held", case_status_reason="dispute", now=oslo(2026, 11, 27, 22, 30)),
        "held",
        "dispute",
        ["case_held:dispute"],
        id="held-outside-window",
    ),
    pytest.param(Case(case_status="closed"), "suppressed", "case_closed", ["case_closed"], id="closed"),
    pytest.param(
        Case(case_status="closed", kind="inkassovarsel", debtor=debtor()),
        "suppressed",
        "case_closed",
        ["case_closed"],
        id="closed-wins-over-no-channel",
    ),
]


@pytest.mark.parametrize(("case", "outcome", "status_reason", "reasons"), CASE_STATUS_CASES)
def test_case_status(case: Case, outcome: str, status_reason: str, reasons: list[str]) -> None:
    decision = case.decide()
    assert decision.outcome == outcome
    assert decision.status_reason == status_reason
    assert decision.reasons == reasons
    assert decision.rejected == []
    assert (decision.channel, decision.address, decision.send_at, decision.deadline) == (
        None,
        None,
        None,
        None,
    )


# ------------------------------------------------------------------------------- R1: not before it is due
# (now, not_before, due date, outcome)
NOT_DUE_CASES = [
    pytest.param(WEDNESDAY, None, date(2026, 11, 25), "suppressed", id="due-today"),
    pytest.param(WEDNESDAY, None, date(2026, 11, 26), "suppressed", id="due-tomorrow"),
    pytest.param(WEDNESDAY, None, date(2027, 1, 15), "suppressed", id="due-in-january"),
    pytest.param(WEDNESDAY, None, date(2026, 11, 24), "send", id="due-yesterday"),
    pytest.param(oslo(2026, 11, 25, 0, 0), None, date(2026, 11, 24), "send", id="due-yesterday-midnight"),
    # Friday 22:30 goes out on Saturday: the send date, not the enqueue date, is compared.
    pytest.param(oslo(2026, 11, 27, 22, 30), None, date(2026, 11, 27), "send", id="due-friday-sent-saturday"),
    pytest.param(
        oslo(2026, 11, 27, 22, 30), None, date(2026, 11, 28), "suppressed", id="due-saturday-sent-saturday"
    ),
    pytest.param(
        WEDNESDAY, oslo(2026, 11, 26, 10, 0), date(2026, 11, 25), "send", id="due-today-not-before-tomorrow"
    ),
    pytest.param(
        WEDNESDAY, oslo(2026, 11, 26, 10, 0), date(2026, 11, 26), "suppressed", id="due-on-not-before-date"
    ),
]


@pytest.mark.parametrize(("now", "not_before", "due", "outcome"), NOT_DUE_CASES)
def test_inkassovarsel_not_before_due(
    now: datetime, not_before: datetime | None, due: date, outcome: str
) -> None:
    decision = Case(kind="inkassovarsel", now=now, not_before=not_before, due=due).decide()
    assert decision.outcome == outcome
    if outcome == "suppressed":
        assert decision.status_reason == "claim_not_due"
        assert decision.reasons == ["inkassovarsel_before_due_date"]
        assert decision.channel is None
        assert decision.deadline is None
    else:
        assert decision.channel == "letter"
        assert decision.send_at is not None
        assert decision.send_at.astimezone(OSLO).date() > due


@pytest.mark.parametrize(
    "due",
    [
        pytest.param(date(2026, 11, 25), id="reminder-due-today"),
        pytest.param(date(2026, 12, 1), id="reminder-before-due"),
    ],
)
def test_reminder_may_go_before_due(due: date) -> None:
    decision = Case(due=due).decide()
    assert decision.outcome == "send"
    assert decision.channel == "email"


# ------------------------------------------------------------------------------------------- R5: send_at
# (now, not_before, expected send_at or None for "now itself", timing reasons)
TIMING_CASES = [
    pytest.param(
        oslo(2026, 11, 27, 22, 30),
        None,
        datetime.fromisoformat("2026-11-28T09:00:00+01:00"),
        ["outside_contact_window"],
        id="fri-22:30-to-sat-09:00",
    ),
    pytest.param(
        oslo(2027, 5, 16, 21, 30),
        None,
        datetime.fromisoformat("2027-05-18T08:00:00+02:00"),
        ["outside_contact_window"],
        id="sun-16-may-2027-to-tue-past-17-may",
    ),
    pytest.param(oslo(2026, 11, 24, 20, 59), None, None, [], id="weekday-20:59-now"),
    pytest.param(
        oslo(2026, 11, 24, 21, 0),
        None,
        oslo(2026, 11, 25, 8, 0),
        ["outside_contact_window"],
        id="weekday-21:00",
    ),
    pytest.param(
        oslo(2026, 11, 24, 7, 59),
        None,
        oslo(2026, 11, 24, 8, 0),
        ["outside_contact_window"],
        id="weekday-07:59",
    ),
    pytest.param(oslo(2026, 11, 24, 8, 0), None, None, [], id="weekday-08:00-now"),
    pytest.param(oslo(2026, 11, 28, 14, 59), None, None, [], id="sat-14:59-now"),
    pytest.param(
        oslo(2026, 11, 28, 15, 0),
        None,
        oslo(2026, 11, 30, 8, 0),
        ["outside_contact_window"],
        id="sat-15:00-to-mon",
    ),
    pytest.param(
        oslo(2026, 11, 29, 12, 0), None, oslo(2026, 11, 30, 8, 0), ["outside_contact_window"], id="sun-to-mon"
    ),
    pytest.param(oslo(2026, 12, 24, 20, 0), None, None, [], id="christmas-eve-is-open"),
    pytest.param(
        oslo(2026, 12, 24, 21, 0),
        None,
        oslo(2026, 12, 28, 8, 0),
        ["outside_contact_window"],
        id="christmas-eve-21:00-to-mon-28",
    ),
    pytest.param(
        WEDNESDAY,
        oslo(2026, 11, 25, 14, 0),
        oslo(2026, 11, 25, 14, 0),
        ["not_before"],
        id="not-before-in-window",
    ),
    pytest.param(
        WEDNESDAY,
        oslo(2026, 11, 25, 22, 0),
        oslo(2026, 11, 26, 8, 0),
        ["not_before", "outside_contact_window"],
        id="not-before-after-window-closes",
    ),
    pytest.param(
        WEDNESDAY,
        oslo(2026, 11, 28, 16, 0),
        oslo(2026, 11, 30, 8, 0),
        ["not_before", "outside_contact_window"],
        id="not-before-saturday-afternoon-to-mon",
    ),
    pytest.param(
        oslo(2026, 11, 27, 22, 30),
        oslo(2026, 11, 28, 11, 0),
        oslo(2026, 11, 28, 11, 0),
        ["not_before"],
        id="not-before-saturday-morning-night-now",
    ),
    pytest.param(WEDNESDAY, oslo(2026, 11, 25, 9, 0), None, [], id="not-before-in-the-past-ignored"),
    pytest.param(WEDNESDAY, WEDNESDAY, None, [], id="not-before-equal-to-now"),
]


@pytest.mark.parametrize(("now", "not_before", "send_at", "reasons"), TIMING_CASES)
def test_send_at(
    now: datetime, not_before: datetime | None, send_at: datetime | None, reasons: list[str]
) -> None:
    decision = Case(debtor=debtor(emails=[EMAIL]), now=now, not_before=not_before).decide()
    assert decision.outcome == "send"
    assert decision.reasons == [*reasons, *CHEAPEST]
    assert_same_instant(decision.send_at, send_at or now)
    assert decision.decided_at == now
    assert decision.send_at is not None
    assert decision.send_at >= now


# --------------------------------------------------------------------------------------- payment deadline
DEADLINE_CASES = [
    pytest.param(date(2026, 11, 25), date(2026, 12, 9), id="wednesday-plain"),
    pytest.param(date(2026, 11, 27), date(2026, 12, 11), id="friday-plain"),
    pytest.param(date(2026, 11, 28), date(2026, 12, 14), id="saturday-lands-saturday-to-monday"),
    pytest.param(date(2026, 11, 29), date(2026, 12, 14), id="sunday-lands-sunday-to-monday"),
    pytest.param(date(2027, 5, 3), date(2027, 5, 18), id="lands-on-17-may-2027"),
    pytest.param(date(2026, 12, 11), date(2026, 12, 28), id="lands-on-christmas-day-2026"),
    pytest.param(date(2027, 12, 11), date(2027, 12, 27), id="lands-on-christmas-day-2027-saturday"),
    pytest.param(date(2026, 12, 10), date(2026, 12, 24), id="lands-on-christmas-eve-ordinary-day"),
    pytest.param(date(2027, 3, 11), date(2027, 3, 30), id="lands-on-maundy-thursday-easter-2027"),
    pytest.param(date(2027, 12, 17), date(2027, 12, 31), id="lands-on-new-years-eve-ordinary-day"),
    pytest.param(date(2027, 12, 18), date(2028, 1, 3), id="lands-on-new-years-day-2028-saturday"),
]


@pytest.mark.parametrize(("send_date", "expected"), DEADLINE_CASES)
def test_payment_deadline(send_date: date, expected: date) -> None:
    deadline = payment_deadline(send_date, RULES)
    assert deadline == expected
    assert (deadline - send_date).days >= RULES.statutory_deadline_days
    assert deadline.weekday() < 5


# (case, expected send date, expected deadline)
DECISION_DEADLINE_CASES = [
    pytest.param(
        Case(kind="inkassovarsel", now=oslo(2026, 11, 27, 22, 30)),
        date(2026, 11, 28),
        date(2026, 12, 14),
        id="varsel-friday-night-counts-from-saturday",
    ),
    pytest.param(
        Case(kind="inkassovarsel", now=oslo(2026, 11, 27, 20, 0)),
        date(2026, 11, 27),
        date(2026, 12, 11),
        id="varsel-friday-evening-counts-from-friday",
    ),
    pytest.param(
        Case(kind="inkassovarsel", now=oslo(2027, 5, 3, 10, 0)),
        date(2027, 5, 3),
        date(2027, 5, 18),
        id="varsel-deadline-off-17-may",
    ),
    pytest.param(
        Case(kind="inkassovarsel", now=oslo(2027, 5, 16, 21, 30)),
        date(2027, 5, 18),
        date(2027, 6, 1),
        id="varsel-sunday-night-counts-from-tuesday",
    ),
    pytest.param(
        Case(kind="inkassovarsel", now=oslo(2026, 11, 20, 10, 0), not_before=oslo(2026, 12, 11, 9, 0)),
        date(2026, 12, 11),
        date(2026, 12, 28),
        id="varsel-not-before-counts-from-not-before-christmas",
    ),
    pytest.param(
        Case(kind="reminder", now=oslo(2026, 11, 27, 22, 30)),
        date(2026, 11, 28),
        date(2026, 12, 14),
        id="reminder-carries-a-deadline-too",
    ),
    pytest.param(Case(kind="reminder"), date(2026, 11, 25), date(2026, 12, 9), id="reminder-wednesday"),
    pytest.param(
        Case(
            kind="dispute_acknowledgement",
            templates=TEMPLATES | {("nb", "dispute_acknowledgement", "neutral", "email")},
        ),
        date(2026, 11, 25),
        None,
        id="non-payment-kind-has-no-deadline",
    ),
]


@pytest.mark.parametrize(("case", "send_date", "deadline"), DECISION_DEADLINE_CASES)
def test_decision_deadline(case: Case, send_date: date, deadline: date | None) -> None:
    decision = case.decide()
    assert decision.outcome == "send"
    assert decision.send_at is not None
    assert decision.send_at.astimezone(OSLO).date() == send_date
    assert decision.deadline == deadline
    if deadline is not None:
        assert deadline == payment_deadline(send_date, RULES)


# ---------------------------------------------------------------------------------- purity and the record
PURITY_CASES = [
    pytest.param(Case(), id="send-email"),
    pytest.param(Case(kind="inkassovarsel", now=oslo(2026, 11, 27, 22, 30)), id="send-letter-deferred"),
    pytest.param(Case(kind="inkassovarsel", preference="sms"), id="send-refused-preference"),
    pytest.param(Case(case_status="held", case_status_reason="dispute"), id="held"),
    pytest.param(Case(case_status="closed"), id="closed"),
    pytest.param(Case(debtor=debtor()), id="suppressed-no-channel"),
    pytest.param(Case(kind="inkassovarsel", due=WEDNESDAY.date()), id="suppressed-not-due"),
]


@pytest.mark.parametrize("case", PURITY_CASES)
def test_same_inputs_same_decision(case: Case) -> None:
    first = case.decide()
    second = case.decide()
    assert first == second
    assert first.as_json() == second.as_json()
    # An equal but separately built request decides the same.
    rebuilt = replace(case, debtor=replace(case.debtor, unusable=frozenset(case.debtor.unusable)))
    assert rebuilt.decide() == first


@pytest.mark.parametrize("case", PURITY_CASES)
def test_as_json_validates_as_decision_out(case: Case) -> None:
    decision = case.decide()
    record = decision.as_json()
    out = DecisionOut.model_validate(record)
    assert out.outcome == decision.outcome
    assert out.channel == decision.channel
    assert out.provider == decision.provider
    assert out.template == decision.template
    assert out.variant == decision.variant
    assert out.reasons == decision.reasons
    assert [(r.channel, r.reason) for r in out.rejected] == [(r.channel, r.reason) for r in decision.rejected]
    assert out.deadline == decision.deadline
    assert out.decided_at == decision.decided_at
    if decision.send_at is None:
        assert out.send_at is None
    else:
        assert_same_instant(out.send_at, decision.send_at)
    assert out.rule_version == decision.rule_version == load_rules().version == "no-2026.12-1"
    assert record["status_reason"] == decision.status_reason
    assert record["address"] == decision.address
