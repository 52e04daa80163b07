"""VERP bounces: parse_bounce over realistic samples (tests/webhooks/bounces/*.eml) and rule tables, and the
BounceReceiver end to end over real SMTP (aiosmtplib client -> aiosmtpd server on port 0)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path

import aiosmtplib
import pytest

from orchestrator.settings import Settings
from webhooks.bounces import (
    CARRIER,
    BounceReceiver,
    is_bounce_address,
    parse_bounce,
    verp_attempt_id,
)
from webhooks.events import CarrierEvent

SAMPLES = Path(__file__).parent / "bounces"
DOMAIN = "bounces.orchestrator.invalid"
RECEIVED_AT = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
CONTACT = "01M8151N3JG5QH2HZ6FF6QVV09"
OTHER_ATTEMPT = "01M8151N2GX269ZV82509WQECD"


def verp(attempt: str) -> str:
    return f"bounce+{attempt}@{DOMAIN}"


@dataclass(frozen=True)
class Expected:
    sample: str
    attempt_id: str
    status: str | None  # None: not a bounce
    reason: str | None = None
    sub_reason: str | None = None
    final: bool = True
    matched_by: str = "verp"
    verp: bool = True  # False: the envelope recipient is unknown (rcpt_to=None)


EXPECTED = [
    Expected(
        "postfix_hard_5.1.1.eml", "01M8151N2GX269ZV82509WQECC", "bounced", "hard_bounce", "unknown_user"
    ),
    Expected(
        "postfix_delayed_4.4.1.eml",
        "01M8151N2KCM4GXR16CEEXN6DQ",
        "accepted",
        "soft_bounce",
        "delayed",
        final=False,
    ),
    Expected(
        "office365_5.1.10_recipient_not_found.eml",
        "01M8151N2QJ9X07B8N1M676PXE",
        "bounced",
        "hard_bounce",
        "unknown_user",
    ),
    Expected(
        "gmail_5.1.1_nosuchuser.eml", "01M8151N2TJDPHK9MET8JZ7QZ8", "bounced", "hard_bounce", "unknown_user"
    ),
    Expected(
        "postfix_5.2.2_mailbox_full.eml",
        "01M8151N2XHNX475FDMEPZ5HC4",
        "accepted",
        "soft_bounce",
        "mailbox_full",
    ),
    Expected(
        "exim_plain_user_unknown.eml", "01M8151N30CZYGAQV340MZMG0S", "bounced", "hard_bounce", "unknown_user"
    ),
    Expected(
        "norwegian_kunne_ikke_levere.eml",
        "01M8151N33MKVF35FK2B063T3J",
        "bounced",
        "hard_bounce",
        "unknown_user",
    ),
    Expected(
        "exchange_legacy_ndr.eml", "01M8151N3FEGV5Z3QCHB61ZF2E", "bounced", "hard_bounce", "unknown_user"
    ),
    Expected(
        "qmail_no_verp_quoted_headers.eml",
        "01M8151N3C4EG2K3K57J69F5RB",
        "bounced",
        "hard_bounce",
        "unknown_user",
        matched_by="quoted_message_id",
        verp=False,
    ),
    Expected("out_of_office_fravaer.eml", "01M8151N36S7YMWCQE2QW7DXKG", None),
    Expected("out_of_office_en.eml", "01M8151N39C5A071W5NT8TQ1E2", None),
]


def load(name: str) -> bytes:
    return (SAMPLES / name).read_bytes()


def parse(raw: bytes, rcpt_to: str | None) -> CarrierEvent | None:
    return parse_bounce(raw, rcpt_to=rcpt_to, bounce_domain=DOMAIN, received_at=RECEIVED_AT)


def test_every_sample_has_an_expectation() -> None:
    assert sorted(p.name for p in SAMPLES.glob("*.eml")) == sorted(e.sample for e in EXPECTED)


# ------------------------------------------------------------------------------------------ parse_bounce


@pytest.mark.parametrize("expected", EXPECTED, ids=[e.sample for e in EXPECTED])
def test_samples(expected: Expected) -> None:
    raw = load(expected.sample)
    event = parse(raw, verp(expected.attempt_id) if expected.verp else None)
    if expected.status is None:
        assert event is None
        return
    assert event is not None
    assert event.carrier == CARRIER == "smtp"
    assert event.status == expected.status
    assert event.reason == expected.reason
    assert event.attempt_id == expected.attempt_id
    assert event.detail["sub_reason"] == expected.sub_reason
    assert event.detail["final"] is expected.final
    assert event.detail["matched_by"] == expected.matched_by
    assert event.detail["contact_id"] == CONTACT
    assert event.provider_message_id == f"<{CONTACT}.{expected.attempt_id}@orchestrator.invalid>"
    own_id = re.search(rb"^Message-I[dD]:\s*(<[^>]+>)", raw, re.MULTILINE)
    assert own_id is not None
    assert event.event_id == own_id.group(1).decode()
    assert event.at.tzinfo is not None
    assert event.at <= RECEIVED_AT


def test_dsn_details_are_the_mta_fields_not_the_body() -> None:
    event = parse(load("postfix_hard_5.1.1.eml"), verp("01M8151N2GX269ZV82509WQECC"))
    assert event is not None
    assert event.detail["source"] == "dsn"
    assert event.detail["action"] == "failed"
    assert event.detail["status_code"] == "5.1.1"
    assert event.detail["final_recipient"] == "kari.nordmann@example.no"
    assert event.detail["remote_mta"] == "mx.example.no"
    assert event.detail["reporting_mta"] == "smtp.relay.example"
    assert event.detail["diagnostic"].startswith("smtp; 550 5.1.1")
    assert "betaling" not in repr(event.detail).lower()  # the returned original's body is never copied


def test_gmail_event_time_is_the_last_attempt() -> None:
    event = parse(load("gmail_5.1.1_nosuchuser.eml"), verp("01M8151N2TJDPHK9MET8JZ7QZ8"))
    assert event is not None
    assert event.at == datetime(2026, 11, 20, 8, 14, 6, tzinfo=UTC)


def test_the_returned_original_is_not_read_as_the_report() -> None:
    """The Exim copy of our message says "552 kr" and "452 00 000": the bounce stays hard, "user unknown"."""
    event = parse(load("exim_plain_user_unknown.eml"), verp("01M8151N30CZYGAQV340MZMG0S"))
    assert event is not None
    assert (event.status, event.detail["sub_reason"]) == ("bounced", "unknown_user")
    assert event.detail["source"] == "heuristic"
    assert event.detail["final_recipient"] == "jonas.berg@hosting.example"


def test_event_id_falls_back_to_sha256_of_the_raw_bytes() -> None:
    raw = load("postfix_hard_5.1.1.eml").replace(
        b"Message-Id: <20261120081403.7B4E21C0B12@smtp.relay.example>\n", b""
    )
    event = parse(raw, verp("01M8151N2GX269ZV82509WQECC"))
    assert event is not None
    assert event.event_id == hashlib.sha256(raw).hexdigest()


def test_verp_wins_over_the_message_id() -> None:
    event = parse(load("postfix_hard_5.1.1.eml"), verp(OTHER_ATTEMPT))
    assert event is not None
    assert event.attempt_id == OTHER_ATTEMPT
    assert event.detail["matched_by"] == "verp"
    assert event.provider_message_id == f"<{CONTACT}.01M8151N2GX269ZV82509WQECC@orchestrator.invalid>"


@pytest.mark.parametrize(
    ("sample", "source"),
    [
        ("postfix_hard_5.1.1.eml", "original_message_id"),  # message/rfc822
        ("postfix_delayed_4.4.1.eml", "original_message_id"),  # text/rfc822-headers
        ("gmail_5.1.1_nosuchuser.eml", "original_message_id"),
        ("norwegian_kunne_ikke_levere.eml", "quoted_message_id"),
    ],
)
def test_a_garbled_verp_tag_falls_back_to_the_original_message_id(sample: str, source: str) -> None:
    expected = next(e for e in EXPECTED if e.sample == sample)
    event = parse(load(sample), f"bounce+not-a-ulid@{DOMAIN}")
    assert event is not None
    assert event.attempt_id == expected.attempt_id
    assert event.detail["matched_by"] == source


def test_in_reply_to_is_the_last_resort() -> None:
    msg = EmailMessage()
    msg["From"] = "MAILER-DAEMON@relay.example"
    msg["Subject"] = "Undelivered Mail Returned to Sender"
    msg["In-Reply-To"] = f"<{CONTACT}.01M8151N2GX269ZV82509WQECC@orchestrator.invalid>"
    msg.set_content("user unknown\n")
    event = parse(msg.as_bytes(), None)
    assert event is not None
    assert event.attempt_id == "01M8151N2GX269ZV82509WQECC"
    assert event.detail["matched_by"] == "in-reply-to"


def test_only_the_contact_header_gives_an_event_without_attempt() -> None:
    msg = EmailMessage()
    msg["From"] = "Mail Delivery System <mailer-daemon@relay.example>"
    msg["Subject"] = "Mail delivery failed: returning message to sender"
    msg.set_content(
        "A message that you sent could not be delivered.\n  x@example.no\n    user unknown\n\n"
        "------ This is a copy of the message's headers. ------\n\n"
        f"Subject: Inkassovarsel\nX-Orchestrator-Contact: {CONTACT.lower()}\n"
    )
    event = parse(msg.as_bytes(), None)
    assert event is not None
    assert event.attempt_id is None
    assert event.detail["contact_id"] == CONTACT
    assert event.detail["matched_by"] == "contact_header"


def test_a_bounce_that_names_nothing_of_ours_is_none() -> None:
    msg = EmailMessage()
    msg["From"] = "MAILER-DAEMON@relay.example"
    msg["Subject"] = "Undelivered Mail Returned to Sender"
    msg.set_content("user unknown\nMessage-ID: <someone.else@example.com>\n")
    assert parse(msg.as_bytes(), None) is None
    assert parse(msg.as_bytes(), "bounce+garbled@" + DOMAIN) is None


@pytest.mark.parametrize(
    ("address", "attempt"),
    [
        (f"bounce+01M8151N2GX269ZV82509WQECC@{DOMAIN}", "01M8151N2GX269ZV82509WQECC"),
        (f"<bounce+01M8151N2GX269ZV82509WQECC@{DOMAIN}>", "01M8151N2GX269ZV82509WQECC"),
        ("bounce+01m8151n2gx269zv82509wqecc@BOUNCES.Orchestrator.INVALID", "01M8151N2GX269ZV82509WQECC"),
        (f"Bounce+01M8151N2GX269ZV82509WQECC@{DOMAIN}.", "01M8151N2GX269ZV82509WQECC"),
        ("bounce+01M8151N2GX269ZV82509WQECC@orchestrator.invalid", None),  # another domain
        (f"bounce+01M8151N2GX269ZV82509WQEC@{DOMAIN}", None),  # 25 characters
        (f"bounce+01M8151N2GX269ZV82509WQECCC@{DOMAIN}", None),  # 27 characters
        (f"bounce+01M8151N2GX269ZV82509WQEUC@{DOMAIN}", None),  # U is not Crockford base32
        (f"bounce+81M8151N2GX269ZV82509WQECC@{DOMAIN}", None),  # over 128 bits
        (f"bounce+@{DOMAIN}", None),
        (f"bounce@{DOMAIN}", None),
        (f"bounces+01M8151N2GX269ZV82509WQECC@{DOMAIN}", None),
        ("not an address", None),
    ],
)
def test_verp_attempt_id(address: str, attempt: str | None) -> None:
    assert verp_attempt_id(address, DOMAIN) == attempt


@pytest.mark.parametrize(
    ("address", "accepted"),
    [
        (verp("01M8151N2GX269ZV82509WQECC"), True),
        (f"bounce+garbled@{DOMAIN.upper()}", True),  # kept: the Message-ID may still name the attempt
        (f"bounce@{DOMAIN}", False),
        (f"postmaster@{DOMAIN}", False),
        ("bounce+01M8151N2GX269ZV82509WQECC@example.no", False),
        ("kari.nordmann@example.no", False),
    ],
)
def test_is_bounce_address(address: str, accepted: bool) -> None:
    assert is_bounce_address(address, DOMAIN) is accepted


# ----------------------------------------------------------------------------------- the DSN rule table


def dsn(*recipients: dict[str, str], status_cte: str | None = None) -> bytes:
    """A minimal RFC 3464 report with the given per-recipient fields (the envelope names the attempt)."""
    blocks = ["Reporting-MTA: dns; relay.example\n"]
    blocks += ["".join(f"{k}: {v}\n" for k, v in fields.items()) for fields in recipients]
    status = "\n".join(blocks)
    cte = ""
    if status_cte == "base64":
        status = base64.encodebytes(status.encode()).decode()
        cte = "Content-Transfer-Encoding: base64\n"
    return (
        "From: Mail Delivery System <MAILER-DAEMON@relay.example>\n"
        "Subject: Delivery Status Notification\n"
        "Message-ID: <dsn.1@relay.example>\n"
        "MIME-Version: 1.0\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\n\n'
        "--b\nContent-Type: text/plain\n\nSee the report.\n\n"
        f"--b\nContent-Type: message/delivery-status\n{cte}\n{status}\n"
        "--b--\n"
    ).encode()


@pytest.mark.parametrize(
    ("fields", "status", "reason", "sub_reason", "final"),
    [
        ({"Action": "failed", "Status": "5.1.1"}, "bounced", "hard_bounce", "unknown_user", True),
        ({"Action": "failed", "Status": "5.1.2"}, "bounced", "hard_bounce", "unknown_domain", True),
        ({"Action": "failed", "Status": "5.2.1"}, "bounced", "hard_bounce", "mailbox_disabled", True),
        (
            {
                "Action": "failed",
                "Status": "5.7.1",
                "Diagnostic-Code": "smtp; 550 5.7.1 blocked using Spamhaus",
            },
            "failed",
            "blocked",
            "blocked",
            True,
        ),
        ({"Action": "failed", "Status": "5.2.2"}, "accepted", "soft_bounce", "mailbox_full", True),
        ({"Action": "failed", "Status": "5.3.1"}, "accepted", "soft_bounce", "mail_system_full", True),
        ({"Action": "failed", "Status": "5.7.26"}, "failed", "blocked", "blocked", True),
        ({"Action": "failed", "Status": "5.4.7"}, "failed", "retries_exhausted", "expired", True),
        ({"Action": "failed", "Status": "4.4.1"}, "failed", "retries_exhausted", "network", True),
        ({"Action": "failed", "Status": "4.4.7"}, "failed", "retries_exhausted", "expired", True),
        ({"Action": "failed", "Status": "4.0.0"}, "failed", "retries_exhausted", "transient", True),
        ({"Action": "failed", "Status": "4.2.2"}, "accepted", "soft_bounce", "mailbox_full", True),
        ({"Action": "delayed", "Status": "4.4.1"}, "accepted", "soft_bounce", "delayed", False),
        ({"Action": "delayed", "Status": "4.2.2"}, "accepted", "soft_bounce", "mailbox_full", False),
        ({"Action": "delivered", "Status": "2.0.0"}, "delivered", None, "delivered", True),
        ({"Action": "relayed", "Status": "2.0.0"}, "delivered", None, "relayed", True),
        ({"Action": "expanded", "Status": "2.0.0"}, "delivered", None, "expanded", True),
        # a generic status refined by the diagnostic
        (
            {
                "Action": "failed",
                "Status": "5.0.0",
                "Diagnostic-Code": "smtp; 550 5.1.1 <x@example.no>: unknown",
            },
            "bounced",
            "hard_bounce",
            "unknown_user",
            True,
        ),
        (
            {"Action": "failed", "Status": "5.0.0", "Diagnostic-Code": "smtp; 552 Mailbox is full"},
            "accepted",
            "soft_bounce",
            "mailbox_full",
            True,
        ),
        (
            {"Action": "failed", "Status": "5.0.0", "Diagnostic-Code": "smtp; 550 No such user here"},
            "bounced",
            "hard_bounce",
            "unknown_user",
            True,
        ),
        ({"Action": "failed", "Status": "5.0.0"}, "bounced", "hard_bounce", "other", True),
        # missing fields
        ({"Status": "5.1.2"}, "bounced", "hard_bounce", "unknown_domain", True),
        ({"Status": "4.4.1"}, "accepted", "soft_bounce", "delayed", False),
        (
            {
                "Action": "failed",
                "Diagnostic-Code": "smtp; 550 Requested action not taken: mailbox unavailable",
            },
            "bounced",
            "hard_bounce",
            "mailbox_unavailable",
            True,
        ),
        (
            {"Action": "failed (bad destination mailbox address)", "Status": "5.1.1 (unknown user)"},
            "bounced",
            "hard_bounce",
            "unknown_user",
            True,
        ),
        ({"Action": "failed"}, "accepted", "soft_bounce", "unclassified", True),
    ],
)
def test_dsn_rules(
    fields: dict[str, str], status: str, reason: str | None, sub_reason: str, final: bool
) -> None:
    recipient = {"Final-Recipient": "rfc822; kari@example.no", **fields}
    event = parse(dsn(recipient), verp(OTHER_ATTEMPT))
    assert event is not None
    assert (event.status, event.reason, event.detail["sub_reason"], event.detail["final"]) == (
        status,
        reason,
        sub_reason,
        final,
    )
    assert event.detail["source"] == "dsn"


def test_of_several_recipients_the_worst_counts() -> None:
    raw = dsn(
        {"Final-Recipient": "rfc822; a@example.no", "Action": "delivered", "Status": "2.0.0"},
        {"Final-Recipient": "rfc822; b@example.no", "Action": "delayed", "Status": "4.4.1"},
        {"Final-Recipient": "rfc822; c@example.no", "Action": "failed", "Status": "5.1.1"},
    )
    event = parse(raw, verp(OTHER_ATTEMPT))
    assert event is not None
    assert (event.status, event.detail["final_recipient"]) == ("bounced", "c@example.no")


def test_a_base64_encoded_delivery_status_part() -> None:
    raw = dsn(
        {"Final-Recipient": "rfc822; a@example.no", "Action": "failed", "Status": "5.1.1"},
        status_cte="base64",
    )
    assert b"Action" not in raw
    event = parse(raw, verp(OTHER_ATTEMPT))
    assert event is not None
    assert (event.status, event.detail["source"], event.detail["status_code"]) == ("bounced", "dsn", "5.1.1")


# ------------------------------------------------------------------------------ the non-standard rules


def plain(
    subject: str, body: str, *, sender: str = "Mail Delivery System <MAILER-DAEMON@relay.example>"
) -> bytes:
    msg = EmailMessage()
    msg["From"] = sender
    msg["Subject"] = subject
    msg["Message-ID"] = "<plain.1@relay.example>"
    msg.set_content(body)
    return msg.as_bytes()


@pytest.mark.parametrize(
    ("subject", "body", "verdict", "sub_reason", "final"),
    [
        (
            "Undelivered Mail Returned to Sender",
            "<a@example.no>: 550 5.1.1 user unknown",
            "bounced/hard_bounce",
            "unknown_user",
            True,
        ),
        (
            "Returned mail: see transcript for details",
            "... User unknown",
            "bounced/hard_bounce",
            "unknown_user",
            True,
        ),
        (
            "Delivery Status Notification (Failure)",
            "Delivery to the following recipient failed permanently:\n\n  a@example.no",
            "bounced/hard_bounce",
            "other",
            True,
        ),
        (
            "failure notice",
            "a@example.no: mailbox unavailable",
            "bounced/hard_bounce",
            "mailbox_unavailable",
            True,
        ),
        (
            "Mail delivery failed",
            "SMTP error from remote mail server after RCPT TO:<a@x.no>:\n550 Unrouteable address",
            "bounced/hard_bounce",
            "unknown_domain",
            True,
        ),
        (
            "Undeliverable: Inkassovarsel",
            "Remote Server returned '550 5.7.1 Message rejected as spam by Content Filtering'",
            "failed/blocked",
            "blocked",
            True,
        ),
        (
            "Returned mail",
            "a@example.no: 552 Mailbox over quota",
            "accepted/soft_bounce",
            "mailbox_full",
            True,
        ),
        (
            "Undelivered Mail Returned to Sender",
            "The recipient's mailbox is full and can't accept messages now.",
            "accepted/soft_bounce",
            "mailbox_full",
            True,
        ),
        (
            "Kan ikke leveres: Inkassovarsel",
            "Postkassen er full.",
            "accepted/soft_bounce",
            "mailbox_full",
            True,
        ),
        (
            "Warning: message 1tDmXr-0004Qa-1Z delayed 24 hours",
            "Delivery attempts will continue to be made",
            "accepted/soft_bounce",
            "delayed",
            False,
        ),
        (
            "Delivery Status Notification (Delay)",
            "Delivery incomplete: there was a temporary problem. Will retry.",
            "accepted/soft_bounce",
            "delayed",
            False,
        ),
        (
            "Mail delivery failed: returning message to sender",
            "a@example.no\n    retry timeout exceeded\n451 Temporary local problem",
            "failed/retries_exhausted",
            "transient",
            True,
        ),
        (
            "Undelivered Mail Returned to Sender",
            "Something went wrong.",
            "accepted/soft_bounce",
            "unclassified",
            True,
        ),
        (
            "Kunne ikke levere e-post",
            "Ukjent mottaker. Dette er en permanent feil.",
            "bounced/hard_bounce",
            "unknown_user",
            True,
        ),
    ],
)
def test_heuristic_rules(subject: str, body: str, verdict: str, sub_reason: str, final: bool) -> None:
    event = parse(plain(subject, body), verp(OTHER_ATTEMPT))
    assert event is not None
    assert event.detail["source"] == "heuristic"
    assert (f"{event.status}/{event.reason}", event.detail["sub_reason"], event.detail["final"]) == (
        verdict,
        sub_reason,
        final,
    )


@pytest.mark.parametrize(
    ("subject", "headers", "body"),
    [
        ("Automatic reply: Inkassovarsel", {"Auto-Submitted": "auto-replied"}, "I am away."),
        ("Automatisk svar: Inkassovarsel", {}, "Jeg er på ferie."),
        ("Inkassovarsel", {"Precedence": "auto_reply"}, "Takk for din henvendelse."),
        ("Re: Inkassovarsel", {"X-Autorespond": "yes"}, "Vi har mottatt e-posten din."),
        ("Re: Inkassovarsel", {}, "Hei, jeg betalte i går. Hilsen Kari"),  # a human: not a bounce either
        ("Read: Inkassovarsel", {}, "Your message was read."),
    ],
)
def test_not_bounces(subject: str, headers: dict[str, str], body: str) -> None:
    msg = EmailMessage()
    msg["From"] = "Kari Nordmann <kari@example.no>"
    msg["Subject"] = subject
    msg["In-Reply-To"] = f"<{CONTACT}.{OTHER_ATTEMPT}@orchestrator.invalid>"
    for name, value in headers.items():
        msg[name] = value
    msg.set_content(body)
    assert parse(msg.as_bytes(), verp(OTHER_ATTEMPT)) is None


def test_a_bounce_subject_wins_over_auto_submitted() -> None:
    raw = plain("Mail delivery failed: returning message to sender", "user unknown")
    raw = b"Auto-Submitted: auto-replied\n" + raw
    event = parse(raw, verp(OTHER_ATTEMPT))
    assert event is not None
    assert event.status == "bounced"


def test_received_at_must_be_aware() -> None:
    with pytest.raises(ValueError, match="aware"):
        parse_bounce(
            load("postfix_hard_5.1.1.eml"),
            rcpt_to=None,
            bounce_domain=DOMAIN,
            received_at=datetime(2026, 1, 1),
        )


def test_garbage_does_not_raise() -> None:
    for raw in (
        b"",
        b"\x00\xff\xfe",
        b"Content-Type: multipart/report; boundary=x\n\n--x\n",
        b"Subject: =?bad?=\n\n",
    ):
        assert parse(raw, verp(OTHER_ATTEMPT)) is None


def test_logs_mask_the_address_and_never_carry_the_body(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="webhooks.bounces")
    for expected in EXPECTED:
        parse(load(expected.sample), verp(expected.attempt_id))
    text = caplog.text
    assert "***@example.no" in text
    assert "kari.nordmann@" not in text
    for body_words in ("betaling", "faktura", "ferie", "out of the office", "Mottakeradressen"):
        assert body_words.lower() not in text.lower()


# --------------------------------------------------------------------------------- the SMTP receiver


@dataclass
class Sink:
    events: list[tuple[CarrierEvent, bytes]] = field(default_factory=list)
    unparsed: list[bytes] = field(default_factory=list)
    fail_next: int = 0

    async def on_event(self, event: CarrierEvent, raw: bytes) -> None:
        await asyncio.sleep(0)
        if self.fail_next:
            self.fail_next -= 1
            raise RuntimeError("database unavailable")
        self.events.append((event, raw))

    async def on_unparsed(self, raw: bytes) -> None:
        if self.fail_next:
            self.fail_next -= 1
            raise RuntimeError("database unavailable")
        self.unparsed.append(raw)


@pytest.fixture
def sink() -> Sink:
    return Sink()


@pytest.fixture
async def receiver(sink: Sink) -> AsyncIterator[BounceReceiver]:
    async with BounceReceiver(
        bounce_domain=DOMAIN, on_event=sink.on_event, on_unparsed=sink.on_unparsed
    ) as r:
        yield r


async def connect(receiver: BounceReceiver) -> aiosmtplib.SMTP:
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=receiver.port, start_tls=False, timeout=10)
    await client.connect()
    return client


async def send(receiver: BounceReceiver, raw: bytes, recipients: list[str]) -> None:
    """One message with the null reverse path ``MAIL FROM:<>``, as bounces come."""
    client = await connect(receiver)
    try:
        await client.sendmail("", recipients, raw)
    finally:
        client.close()


def crlf(raw: bytes) -> bytes:
    return raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


async def test_receiver_end_to_end(receiver: BounceReceiver, sink: Sink) -> None:
    assert receiver.port > 0
    client = await connect(receiver)
    try:
        for expected in EXPECTED:
            rcpt = verp(expected.attempt_id) if expected.verp else f"bounce+garbled@{DOMAIN}"
            errors, response = await client.sendmail("", [rcpt], load(expected.sample))
            assert errors == {}
            assert response.startswith("2.0.0 OK")
    finally:
        await client.quit()

    bounces = [e for e in EXPECTED if e.status is not None]
    assert [event.attempt_id for event, _ in sink.events] == [e.attempt_id for e in bounces]
    for (event, raw), expected in zip(sink.events, bounces, strict=True):
        assert (event.status, event.reason, event.detail["sub_reason"]) == (
            expected.status,
            expected.reason,
            expected.sub_reason,
        )
        assert raw == crlf(load(expected.sample))  # the message as received, for the ingress to store
    auto_replies = [e for e in EXPECTED if e.status is None]
    assert sink.unparsed == [crlf(load(e.sample)) for e in auto_replies]


async def test_receiver_logs_no_bodies_and_no_full_addresses(
    receiver: BounceReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    await send(receiver, load("exim_plain_user_unknown.eml"), [verp("01M8151N30CZYGAQV340MZMG0S")])
    client = await connect(receiver)
    try:
        await client.mail("")
        with pytest.raises(aiosmtplib.SMTPRecipientRefused):
            await client.rcpt("kari.nordmann@example.no")
    finally:
        client.close()
    text = caplog.text.lower()
    assert "***@hosting.example" in text
    assert "***@example.no" in text
    for leaked in ("jonas.berg@", "kari.nordmann@", "ubetalt faktura", "mail delivery software"):
        assert leaked not in text


async def test_receiver_refuses_other_recipients(receiver: BounceReceiver, sink: Sink) -> None:
    client = await connect(receiver)
    try:
        await client.mail("")
        for address in (
            "kari.nordmann@example.no",
            f"postmaster@{DOMAIN}",
            "bounce+01M8151N2GX269ZV82509WQECC@example.no",
        ):
            with pytest.raises(aiosmtplib.SMTPRecipientRefused) as refused:
                await client.rcpt(address)
            assert refused.value.code == 550
            assert "5.1.1" in refused.value.message
        response = await client.rcpt(verp(OTHER_ATTEMPT))
        assert response.code == 250
        await client.rset()
        with pytest.raises(aiosmtplib.SMTPRecipientsRefused):
            await client.sendmail("", ["someone@example.org"], load("postfix_hard_5.1.1.eml"))
    finally:
        await client.quit()
    assert sink.events == []
    assert sink.unparsed == []


async def test_a_failing_callback_answers_451_and_nothing_is_lost(
    receiver: BounceReceiver, sink: Sink
) -> None:
    raw = load("postfix_hard_5.1.1.eml")
    rcpt = verp("01M8151N2GX269ZV82509WQECC")
    client = await connect(receiver)
    try:
        sink.fail_next = 1
        with pytest.raises(aiosmtplib.SMTPDataError) as failed:
            await client.sendmail("", [rcpt], raw)
        assert failed.value.code == 451
        assert sink.events == []
        # the sending MTA keeps the bounce and tries again
        errors, _ = await client.sendmail("", [rcpt], raw)
        assert errors == {}
    finally:
        await client.quit()
    assert len(sink.events) == 1
    event, stored = sink.events[0]
    assert event.attempt_id == "01M8151N2GX269ZV82509WQECC"
    assert stored == crlf(raw)


async def test_a_failing_unparsed_callback_answers_451_too(receiver: BounceReceiver, sink: Sink) -> None:
    raw = load("out_of_office_en.eml")
    sink.fail_next = 1
    with pytest.raises(aiosmtplib.SMTPDataError) as failed:
        await send(receiver, raw, [verp(OTHER_ATTEMPT)])
    assert failed.value.code == 451
    await send(receiver, raw, [verp(OTHER_ATTEMPT)])
    assert sink.unparsed == [crlf(raw)]


async def test_one_message_for_two_attempts_gives_two_events(receiver: BounceReceiver, sink: Sink) -> None:
    await send(
        receiver, load("postfix_hard_5.1.1.eml"), [verp("01M8151N2GX269ZV82509WQECC"), verp(OTHER_ATTEMPT)]
    )
    assert [e.attempt_id for e, _ in sink.events] == ["01M8151N2GX269ZV82509WQECC", OTHER_ATTEMPT]
    assert len({e.event_id for e, _ in sink.events}) == 2


async def test_size_limit(sink: Sink) -> None:
    raw = load("postfix_hard_5.1.1.eml")
    async with BounceReceiver(
        bounce_domain=DOMAIN, on_event=sink.on_event, on_unparsed=sink.on_unparsed, max_message_bytes=1000
    ) as small:
        with pytest.raises(aiosmtplib.SMTPResponseException) as refused:
            await send(small, raw, [verp(OTHER_ATTEMPT)])
        assert refused.value.code == 552
    assert sink.events == []


async def test_stop_closes_idle_connections(sink: Sink) -> None:
    receiver = BounceReceiver(bounce_domain=DOMAIN, on_event=sink.on_event, on_unparsed=sink.on_unparsed)
    await receiver.start()
    client = await connect(receiver)
    await asyncio.wait_for(receiver.stop(), 5)
    with pytest.raises(RuntimeError):
        _ = receiver.port
    with pytest.raises(aiosmtplib.SMTPException):
        await client.noop()
    client.close()


def test_from_settings(sink: Sink) -> None:
    assert (
        BounceReceiver.from_settings(Settings(), on_event=sink.on_event, on_unparsed=sink.on_unparsed) is None
    )
    settings = Settings(bounce_smtp_port=0, bounce_smtp_host="127.0.0.1", bounce_domain="b.example")
    receiver = BounceReceiver.from_settings(settings, on_event=sink.on_event, on_unparsed=sink.on_unparsed)
    assert receiver is not None
    assert (receiver.bounce_domain, receiver.host) == ("b.example", "127.0.0.1")


async def test_from_settings_starts_on_a_free_port(sink: Sink) -> None:
    settings = Settings(bounce_smtp_port=0)
    receiver = BounceReceiver.from_settings(settings, on_event=sink.on_event, on_unparsed=sink.on_unparsed)
    assert receiver is not None
    async with receiver:
        await send(
            receiver,
            load("gmail_5.1.1_nosuchuser.eml"),
            [f"bounce+01M8151N2TJDPHK9MET8JZ7QZ8@{settings.bounce_domain}"],
        )
    assert [(e.attempt_id, e.status) for e, _ in sink.events] == [("01M8151N2TJDPHK9MET8JZ7QZ8", "bounced")]
