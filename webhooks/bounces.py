"""E-mail bounces: the VERP return path ``bounce+<attempt id>@<bounce domain>`` receives them over SMTP.

Two parts:

* ``parse_bounce`` turns one raw bounce into a ``CarrierEvent`` (carrier ``"smtp"``, the provider name of the
  e-mail channel, so ``provider_message_id`` is the Message-ID the channel recorded) or ``None`` when the
  message is not a bounce (an out-of-office reply, a human writing to the return path, a read receipt) or
  cannot be tied to any contact of ours.
* ``BounceReceiver`` is a small SMTP server (aiosmtpd) that takes mail only for bounce addresses, never
  relays, parses each message and hands it to the ingress: ``on_event(event, raw)`` for a bounce,
  ``on_unparsed(raw)`` for anything else, so nothing is lost. It answers ``250`` only after the callback
  returned, ``451`` if it raised (the sending MTA keeps the bounce and tries again).

Which attempt: the VERP recipient first (a 26-character Crockford base32 ULID after ``bounce+``); else our
Message-ID ``<contact.attempt@domain>`` found in the returned original (``message/rfc822``,
``text/rfc822-headers``, the DSN's ``X-Original-Message-ID``, headers quoted in the text, the bounce's own
``In-Reply-To``/``References``); else only the contact, from ``X-Orchestrator-Contact`` (in ``detail``).

Classification (``CarrierEvent.status`` / ``reason``, with ``detail["sub_reason"]`` and ``detail["final"]``,
the latter False only while the sending MTA is still retrying). The reasons match the Mailgun and SendGrid
modules: only ``hard_bounce`` makes the worker mark the address unusable.

* RFC 3464 delivery status notifications (``multipart/report; report-type=delivery-status``) are read field by
  field; of several recipients the worst counts (failed > delayed > delivered). A generic status (x.0.0) is
  refined by the enhanced code or the wording of the ``Diagnostic-Code``; a missing ``Action`` follows the
  status class.
* ``delivered`` / ``relayed`` / ``expanded`` -> ``"delivered"``.
* ``delayed`` (or a bare 4.x.x) -> ``"accepted"`` / ``"soft_bounce"``, ``final=False``: the MTA retries;
  ``accepted`` ranks lowest, so it never moves the attempt.
* ``failed`` + 5.x.x -> ``"bounced"`` / ``"hard_bounce"``, except: 5.2.2 mailbox full and 5.3.1 mail system
  full, transient in practice -> ``"accepted"`` / ``"soft_bounce"``, ``final=True`` (we may send again later);
  5.7.x policy / spam / reputation -> ``"failed"`` / ``"blocked"`` (says nothing about the address); 5.4.7
  delivery time expired -> ``"failed"`` / ``"retries_exhausted"``.
* ``failed`` + 4.x.x (the MTA retried until it gave up) -> ``"failed"`` / ``"retries_exhausted"``.
* Anything else (plain-text bounces from Exim, qmail, old Exchange, localised NDRs) counts as a bounce only if
  its subject or sender says so (``Undelivered Mail Returned to Sender``, ``Mail delivery failed``,
  ``Undeliverable:``, ``Kunne ikke levere``, ``MAILER-DAEMON``, ``postmaster``, ...) or its text carries a
  strong marker ("could not be delivered", "kunne ikke leveres", ...). Its human-readable part (never the
  returned original) is classified in this order: mailbox full / quota -> soft bounce; a delay notice
  ("delayed", "will retry") without "permanent" -> soft bounce, ``final=False``; a 5.x.x / 5xx code, a wording
  that names a bad address ("user unknown", "no such user", "mailbox unavailable", "RecipientNotFound",
  "finnes ikke", ...) or "permanent error" -> hard bounce (or ``blocked`` as above); a 4.x.x / 4xx code or
  "temporary" -> ``retries_exhausted``; nothing recognisable -> soft bounce with ``sub_reason="unclassified"``
  (an address is never condemned on weak evidence).
* Auto-replies (``Auto-Submitted: auto-replied`` / ``X-Autoreply`` / ``X-Autorespond`` / ``Precedence:
  auto_reply`` or an out-of-office subject: "Out of office", "Automatic reply", "Fravær", "Automatisk svar")
  are not bounces: ``None``. The headers alone do not decide, since MTAs put ``Auto-Submitted`` on bounces
  too; a bounce subject or a mailer-daemon sender wins.

Sub-reasons (``detail["sub_reason"]``): ``unknown_user`` (x.1.1, x.1.10), ``unknown_domain`` (x.1.2, x.4.4),
``bad_address``, ``mailbox_moved``, ``mailbox_disabled``, ``mailbox_unavailable``, ``mailbox_full`` (x.2.2),
``message_too_large``, ``mail_system``, ``mail_system_full``, ``network``, ``expired``, ``protocol``,
``content``, ``blocked`` (x.7.x, policy / spam / reputation), ``delayed``, ``transient``, ``other``,
``unclassified``.

Privacy: message bodies are never logged nor put into ``detail``; logs name the bounced address by its domain
only. ``detail`` holds the MTA's own status fields (``Final-Recipient``, ``Diagnostic-Code``), as stored data.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import dataclasses
import email
import email.policy
import hashlib
import logging
import quopri
import re
import weakref
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.header import Header, decode_header
from email.message import Message
from email.parser import HeaderParser
from email.utils import parseaddr, parsedate_to_datetime
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session

from orchestrator.settings import Settings
from webhooks.events import CarrierEvent, EventStatus

__all__ = [
    "CARRIER",
    "DEFAULT_MAX_MESSAGE_BYTES",
    "BounceReceiver",
    "OnEvent",
    "OnUnparsed",
    "is_bounce_address",
    "parse_bounce",
    "verp_attempt_id",
]

log = logging.getLogger(__name__)

CARRIER = "smtp"  # the e-mail channel's provider name: its provider_message_id is our Message-ID
DEFAULT_MAX_MESSAGE_BYTES = 10 * 1024 * 1024

OnEvent = Callable[[CarrierEvent, bytes], Awaitable[None]]
OnUnparsed = Callable[[bytes], Awaitable[None]]

_ULID_CHARS = "0-9A-HJKMNP-TV-Z"  # Crockford base32, no I L O U
_ULID = re.compile(rf"[0-7][{_ULID_CHARS}]{{25}}", re.IGNORECASE)  # 128 bits: the first char is at most 7
_OUR_MESSAGE_ID = re.compile(rf"<\s*({_ULID.pattern})\.({_ULID.pattern})@([^\s<>@]+)\s*>", re.IGNORECASE)
_QUOTED_MESSAGE_ID = re.compile(r"^[>\s]*Message-ID:\s*(?:>\s*)*(<[^<>\s]+>)", re.IGNORECASE | re.MULTILINE)
_QUOTED_CONTACT = re.compile(
    rf"^[>\s]*X-Orchestrator-Contact:\s*(?:>\s*)*({_ULID.pattern})\b", re.IGNORECASE | re.MULTILINE
)

_MAX_TEXT_CHARS = 64_000  # of the human-readable report that heuristics read
_MAX_DIAGNOSTIC_CHARS = 500
_FUTURE_SLACK = timedelta(hours=1)

# ------------------------------------------------------------------------------------------- addresses


def _split_address(address: str) -> tuple[str, str] | None:
    address = address.strip().strip("<>").strip()
    local, at, domain = address.rpartition("@")
    if not at or not local or not domain:
        return None
    return local, domain.rstrip(".").lower()


def _same_domain(domain: str, bounce_domain: str) -> bool:
    return domain == bounce_domain.strip().rstrip(".").lower()


def is_bounce_address(address: str, bounce_domain: str) -> bool:
    """``bounce+<tag>@<bounce domain>`` (any non-empty tag, domain case-insensitive): mail we accept.

    The tag is not validated here: a message with a garbled tag is still taken, its Message-ID may name the
    attempt.
    """
    parts = _split_address(address)
    if parts is None:
        return False
    local, domain = parts
    head, plus, tag = local.partition("+")
    return head.lower() == "bounce" and bool(plus) and bool(tag) and _same_domain(domain, bounce_domain)


def verp_attempt_id(address: str, bounce_domain: str) -> str | None:
    """The attempt id in a VERP address ``bounce+<attempt>@<bounce domain>``, upper-cased, or ``None``."""
    if not is_bounce_address(address, bounce_domain):
        return None
    parts = _split_address(address)
    assert parts is not None
    tag = parts[0].partition("+")[2]
    return tag.upper() if _ULID.fullmatch(tag) else None


def _mask(address: str | None) -> str:
    """For logs: the domain only."""
    if not address:
        return "-"
    parts = _split_address(address)
    return f"***@{parts[1]}" if parts else "***"


# --------------------------------------------------------------------------------------------- decoding


def _decode_bytes(data: bytes, charset: str | None) -> str:
    if charset and charset.lower() not in ("unknown-8bit", "x-unknown"):
        with contextlib.suppress(LookupError, UnicodeDecodeError):
            return data.decode(charset)
        with contextlib.suppress(LookupError):
            return data.decode(charset, errors="replace")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def _header_text(value: object) -> str:
    """A header value as readable text: encoded words decoded, 8-bit bytes guessed, folding undone."""
    if value is None:
        return ""
    try:
        chunks = decode_header(value if isinstance(value, Header) else str(value))
        text = "".join(
            chunk if isinstance(chunk, str) else _decode_bytes(chunk, charset) for chunk, charset in chunks
        )
    except Exception:  # malformed encoded words: keep what is there
        text = str(value)
    return " ".join(text.split())


def _get(msg: Message, name: str) -> str | None:
    value = msg.get(name)
    if value is None:
        return None
    text = _header_text(value)
    return text or None


def _part_text(part: Message) -> str:
    """The decoded text of a non-multipart part ('' if it has none)."""
    try:
        payload = part.get_payload(decode=True)
    except Exception:
        return ""
    if not isinstance(payload, bytes):
        return ""
    return _decode_bytes(payload, part.get_content_charset())


_TAG = re.compile(r"<[^>]*>")
_BLOCK_TAG = re.compile(r"<\s*(?:br|/p|/div|/tr|/li|/h\d)\b[^>]*>", re.IGNORECASE)
_SCRIPT = re.compile(r"<(style|script)\b.*?</\1\s*>", re.IGNORECASE | re.DOTALL)


def _html_to_text(html: str) -> str:
    import html as html_lib

    text = _SCRIPT.sub(" ", html)
    text = _BLOCK_TAG.sub("\n", text)
    return html_lib.unescape(_TAG.sub(" ", text))


_ORIGINAL_TYPES = ("message/rfc822", "message/global")
_HEADERS_TYPES = ("text/rfc822-headers", "message/global-headers", "message/rfc822-headers")
_DSN_TYPES = ("message/delivery-status", "message/global-delivery-status")


def _walk(msg: Message, inside_original: bool = False) -> Iterator[tuple[Message, bool]]:
    """Every part with whether it lies inside a returned original; DSN field blocks are not parts."""
    yield msg, inside_original
    ctype = msg.get_content_type()
    if ctype in _DSN_TYPES or not msg.is_multipart():
        return
    payload = msg.get_payload()
    if not isinstance(payload, list):
        return
    for sub in payload:
        if isinstance(sub, Message):
            yield from _walk(sub, inside_original or ctype in _ORIGINAL_TYPES)


# The returned original, when a plain-text bounce inlines it after one of these lines.
_ORIGINAL_SEPARATOR = re.compile(
    r"^[\s>-]*(?:"
    r"-+\s*this is a copy of the message"
    r"|-+\s*below this line is a copy of the message"
    r"|-+\s*original message"
    r"|original message follows"
    r"|-+\s*opprinnelig melding"
    r"|opprinnelig melding følger"
    r"|-+\s*the original message"
    r"|original message headers"
    r"|-+\s*returned message"
    r"|-+\s*undelivered message"
    r"|-+\s*ursprüngliche nachricht"
    r"|received:\s"
    r"|return-path:\s"
    r")",
    re.IGNORECASE | re.MULTILINE,
)


def _report_text(msg: Message) -> str:
    """The bounce's own human-readable text (plain preferred, HTML stripped otherwise), cut before any inlined
    copy of the original message. Never logged."""
    plain: list[str] = []
    html: list[str] = []
    for part, inside in _walk(msg):
        if inside or part.is_multipart():
            continue
        if part.get_content_disposition() == "attachment":
            continue
        ctype = part.get_content_type()
        if ctype == "text/plain":
            plain.append(_part_text(part))
        elif ctype == "text/html":
            html.append(_html_to_text(_part_text(part)))
    text = "\n".join(plain) if any(t.strip() for t in plain) else "\n".join(html)
    match = _ORIGINAL_SEPARATOR.search(text)
    if match:
        text = text[: match.start()]
    return text[:_MAX_TEXT_CHARS]


def _all_text(msg: Message) -> str:
    """All text of the bounce outside attached originals, not cut: where quoted original headers live."""
    texts: list[str] = []
    for part, inside in _walk(msg):
        if inside or part.is_multipart():
            continue
        ctype = part.get_content_type()
        if ctype.startswith("text/") and ctype not in _HEADERS_TYPES:
            texts.append(_part_text(part))
    return "\n".join(texts)


# ---------------------------------------------------------------------------------------------- the DSN


def _parse_blocks(text: str) -> list[Message]:
    text = text.replace("\r\n", "\n")
    parser = HeaderParser(policy=email.policy.compat32)
    return [
        parser.parsestr(block.strip("\n") + "\n") for block in re.split(r"\n[ \t]*\n", text) if block.strip()
    ]


def _dsn_blocks(part: Message) -> list[Message]:
    """The field blocks of a delivery-status part: the per-message block first, then one per recipient."""
    payload = part.get_payload()
    cte = (part.get("Content-Transfer-Encoding") or "").strip().lower()
    if isinstance(payload, list) and cte in ("base64", "quoted-printable"):
        # The parser split the still-encoded text into "blocks"; put it back together and decode it.
        pieces = []
        for block in payload:
            if isinstance(block, Message):
                head = "".join(f"{k}: {v}\n" for k, v in block.items())
                body = block.get_payload()
                pieces.append(head + ("\n" if head else "") + (body if isinstance(body, str) else ""))
        payload = "\n".join(pieces)
    if isinstance(payload, str):
        raw = payload.encode("ascii", errors="replace")
        try:
            if cte == "base64":
                raw = base64.b64decode(b"".join(raw.split()), validate=False)
            elif cte == "quoted-printable":
                raw = quopri.decodestring(raw)
        except (binascii.Error, ValueError):
            return []
        return _parse_blocks(_decode_bytes(raw, part.get_content_charset()))
    blocks: list[Message] = []
    if isinstance(payload, list):
        for block in payload:
            if not isinstance(block, Message):
                continue
            blocks.append(block)
            rest = block.get_payload()
            # message/global-delivery-status is parsed as one message: its body holds the recipient blocks
            if isinstance(rest, str) and rest.strip():
                blocks.extend(_parse_blocks(rest))
    return blocks


_ENHANCED = re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?![\d.])")
_BASIC_AND_ENHANCED = re.compile(r"(?<![\d.])([245]\d\d)[ -]#?([245]\.\d{1,3}\.\d{1,3})(?![\d.])")
_BASIC = re.compile(r"(?:^|[\s#(:;'\"])([45]\d\d)(?=[\s-]|$)", re.MULTILINE)

Code = tuple[int, int, int]


def _enhanced(text: str | None) -> Code | None:
    if not text:
        return None
    paired = _BASIC_AND_ENHANCED.search(text)
    if paired:
        cls, subject, detail = paired.group(2).split(".")
        return int(cls), int(subject), int(detail)
    match = _ENHANCED.search(text)
    return (int(match.group(1)), int(match.group(2)), int(match.group(3))) if match else None


def _basic(text: str | None) -> int | None:
    if not text:
        return None
    match = _BASIC.search(text)
    return int(match.group(1)) if match else None


def _code_str(code: Code | None) -> str | None:
    return ".".join(map(str, code)) if code else None


def _field_value(value: str | None) -> str | None:
    """``rfc822; kari@example.no`` -> ``kari@example.no``; ``dns; mx.example.no`` -> ``mx.example.no``."""
    if not value:
        return None
    _, semi, rest = value.partition(";")
    return (rest if semi else value).strip() or None


_ACTION_RANK = {"failed": 3, "delayed": 2, "delivered": 1, "relayed": 1, "expanded": 1}


@dataclass(frozen=True)
class _Recipient:
    action: str | None
    status: Code | None
    diagnostic: str | None
    final_recipient: str | None
    remote_mta: str | None
    last_attempt: str | None


def _recipients(blocks: list[Message]) -> list[_Recipient]:
    found: list[_Recipient] = []
    for block in blocks:
        action_raw = _get(block, "Action")
        status_raw = _get(block, "Status")
        if not action_raw and not status_raw:
            continue
        action = action_raw.split()[0].lower().strip(";,") if action_raw else None
        found.append(
            _Recipient(
                action=action if action in _ACTION_RANK else None,
                status=_enhanced(status_raw),
                diagnostic=_get(block, "Diagnostic-Code"),
                final_recipient=_field_value(_get(block, "Final-Recipient"))
                or _field_value(_get(block, "Original-Recipient")),
                remote_mta=_field_value(_get(block, "Remote-MTA")),
                last_attempt=_get(block, "Last-Attempt-Date"),
            )
        )
    return found


# -------------------------------------------------------------------------------------- classification

# 5.x.x codes that are transient in practice: a soft bounce even when the sending MTA gave up.
_SOFT_SUB_REASONS = frozenset({"mailbox_full", "mail_system_full"})
_BAD_ADDRESS_SUB_REASONS = frozenset(
    {
        "unknown_user",
        "unknown_domain",
        "bad_address",
        "mailbox_moved",
        "mailbox_disabled",
        "mailbox_unavailable",
    }
)
_SUBJECT_DEFAULTS = {
    1: "bad_address",
    2: "mailbox_unavailable",
    3: "mail_system",
    4: "network",
    5: "protocol",
    6: "content",
    7: "blocked",
}


def _sub_from_code(code: Code | None) -> str | None:
    """The sub-reason a specific enhanced status code (RFC 3463) names; ``None`` for generic x.y.0 codes."""
    if code is None:
        return None
    _, subject, detail = code
    specific = {
        (1, 1): "unknown_user",
        (1, 10): "unknown_user",  # Exchange RecipientNotFound; RFC 7505 null MX
        (1, 2): "unknown_domain",
        (1, 3): "bad_address",
        (1, 6): "mailbox_moved",
        (2, 1): "mailbox_disabled",
        (2, 2): "mailbox_full",
        (2, 3): "message_too_large",
        (3, 1): "mail_system_full",
        (3, 4): "message_too_large",
        (4, 4): "unknown_domain",
        (4, 7): "expired",
    }.get((subject, detail))
    if specific:
        return specific
    if detail == 0 or subject == 0:
        return None
    return _SUBJECT_DEFAULTS.get(subject)


def _phrases(*pairs: tuple[str, str]) -> list[tuple[str, re.Pattern[str]]]:
    return [(name, re.compile(pattern, re.IGNORECASE)) for name, pattern in pairs]


# Ordered: the first group that matches names the sub-reason.
_SUB_REASON_PHRASES = _phrases(
    (
        "mailbox_full",
        r"quota|mailbox (?:is )?full|full mailbox|mailbox size limit|insufficient (?:system )?storage"
        r"|storage (?:allocation|limit|space)|exceeded storage|postkassen er full|innboksen er full"
        r"|full postkasse|kvote",
    ),
    (
        "unknown_domain",
        r"host or domain name not found|domain (?:not found|does not exist|doesn'?t exist)|unknown domain"
        r"|host not found|no mx|name service error|unrouteable address|domenet finnes ikke",
    ),
    (
        "unknown_user",
        r"user unknown|unknown user|no such (?:user|mailbox|recipient|address|account)|nosuchuser"
        r"|user (?:not found|does not exist|doesn'?t exist)"
        r"|recipient(?:\s+address)? (?:not found|unknown|rejected)"
        r"|recipientnotfound|recipnotfound|unknown recipient|invalid (?:recipient|mailbox)|no mailbox here"
        r"|mailbox not found|(?:address|account|mailbox) (?:does not|doesn'?t) exist|does not exist"
        r"|(?:couldn'?t|could not|wasn'?t|was not) (?:be )?found|not a known user|finnes ikke"
        r"|ukjent (?:mottaker|bruker|adresse)|ugyldig (?:mottaker|adresse)",
    ),
    (
        "mailbox_disabled",
        r"(?:account|mailbox|user) (?:is |has been )?(?:disabled|inactive|suspended|deactivated|closed)",
    ),
    ("mailbox_unavailable", r"mailbox (?:is )?unavailable|mailbox not available"),
    ("message_too_large", r"message (?:is )?too (?:large|big)|size exceeds|message size"),
    (
        "blocked",
        r"blocked|block ?list|blacklist|spam|policy|access denied|not authori[sz]ed|reputation|\bspf\b|dmarc",
    ),
)
_DELAY = re.compile(
    r"\bdelay(?:ed)?\b|not yet been delivered|will (?:continue to )?(?:re)?try|will be retried"
    r"|still (?:being )?(?:re)?tr(?:y|ied|ying)|attempts will continue|forsinket|fortsatt forsøk",
    re.IGNORECASE,
)
_PERMANENT = re.compile(
    r"permanent(?:ly)? (?:error|failure|fatal|failed)|failed permanently|permanent feil|fatal error"
    r"|i'?ve given up|gave up",
    re.IGNORECASE,
)
_TEMPORARY = re.compile(r"temporar(?:y|ily)|try again later|greylist|midlertidig", re.IGNORECASE)


def _sub_from_text(text: str) -> str | None:
    for name, pattern in _SUB_REASON_PHRASES:
        if pattern.search(text):
            return name
    return None


@dataclass(frozen=True)
class _Verdict:
    status: EventStatus
    reason: str | None
    sub_reason: str
    final: bool


def _soft(sub_reason: str, *, final: bool) -> _Verdict:
    return _Verdict("accepted", "soft_bounce", sub_reason, final)


def _hard(sub_reason: str) -> _Verdict:
    """The address is bad: the worker marks it unusable. Refusals that say nothing about the address are
    failures with their own reason, as the Mailgun and SendGrid modules do."""
    if sub_reason == "blocked":  # the receiving server refuses us (reputation, content, policy)
        return _Verdict("failed", "blocked", sub_reason, True)
    if sub_reason == "expired":  # delivery time expired: the mailbox may well exist
        return _gave_up(sub_reason)
    return _Verdict("bounced", "hard_bounce", sub_reason, True)


def _gave_up(sub_reason: str) -> _Verdict:
    """The sending MTA retried a transient problem until it gave up: nobody retries any more."""
    return _Verdict("failed", "retries_exhausted", sub_reason, True)


def _classify_dsn(action: str | None, code: Code | None, diagnostic: str) -> _Verdict | None:
    """One DSN recipient: Action and Status decide; the diagnostic refines a generic or missing code."""
    if code is None or code[1:] == (0, 0):
        refined = _enhanced(diagnostic)
        if refined and (code is None or refined[0] == code[0]):
            code = refined
    cls = code[0] if code else None
    if cls is None:
        basic = _basic(diagnostic)
        cls = basic // 100 if basic else None
    if action is None:
        action = {5: "failed", 4: "delayed", 2: "delivered"}.get(cls or 0)
    if action is None:
        return None
    if action in ("delivered", "relayed", "expanded"):
        return _Verdict("delivered", None, action, True)
    sub = _sub_from_code(code) or _sub_from_text(diagnostic)
    if action == "delayed":
        return _soft("mailbox_full" if sub == "mailbox_full" else "delayed", final=False)
    # failed
    if sub in _SOFT_SUB_REASONS:
        return _soft(sub or "", final=True)
    if cls == 4:
        return _gave_up(sub or "transient")
    if cls == 5:
        return _hard(sub or _SUBJECT_DEFAULTS.get(code[1] if code else 0, "other"))
    # failed, no code at all: decide by the wording, never condemn an address on nothing
    if sub is None:
        return _soft("unclassified", final=True)
    if sub in _BAD_ADDRESS_SUB_REASONS or sub == "blocked" or _PERMANENT.search(diagnostic):
        return _hard(sub)
    return _soft(sub, final=True)


def _classify_text(subject: str, text: str) -> _Verdict:
    """A bounce that is not an RFC 3464 report: the documented order of the module docstring."""
    body = f"{subject}\n{text}"
    code = _enhanced(text) or _enhanced(subject)
    basic = _basic(text)
    sub = _sub_from_code(code) or _sub_from_text(body)
    if sub is None and code is None and basic in (452, 552):
        sub = "mailbox_full"
    delayed = bool(_DELAY.search(subject) or _DELAY.search(text)) and not _PERMANENT.search(body)
    cls = code[0] if code else (basic // 100 if basic else None)
    if sub in _SOFT_SUB_REASONS:
        return _soft(sub or "", final=not delayed)
    if delayed:
        return _soft("delayed", final=False)
    if cls == 5 or sub in _BAD_ADDRESS_SUB_REASONS or _PERMANENT.search(body):
        return _hard(sub or "other")
    if cls == 4 or _TEMPORARY.search(body):
        return _gave_up(sub or "transient")
    return _soft("unclassified", final=True)


# ----------------------------------------------------------------------------- bounce or auto-reply?

_BOUNCE_SUBJECT = re.compile(
    r"undeliver|undelivered mail|returned mail|returned to sender|delivery status notification"
    r"|delivery (?:has )?fail|delivery failure|failure notice|failed delivery"
    r"|mail delivery (?:failed|failure|system)"
    r"|non-?delivery|could not be delivered|couldn'?t be delivered|delivery notification|delivery report"
    r"|delayed mail|message delayed|warning: could not send|kunne ikke levere|kan ikke leveres|ikke levert"
    r"|levering mislyktes|returnert e-?post|unzustellbar|non remis|no entregado",
    re.IGNORECASE,
)
_BOUNCE_TEXT = re.compile(
    r"could not be delivered|couldn'?t be delivered|undeliverable|delivery has failed"
    r"|delivery to the following"
    r"|permanent error|wasn'?t able to deliver|was not delivered|not be delivered|returned to sender"
    r"|mail delivery failed|kunne ikke leveres|kunne ikke levere|kan ikke leveres|levering mislyktes"
    r"|ble ikke levert",
    re.IGNORECASE,
)
_DAEMON_LOCAL = re.compile(r"^(?:mailer-?daemon|mail-?daemon|postmaster|mdaemon|bounces?)$", re.IGNORECASE)
_DAEMON_NAME = re.compile(r"mail delivery|mailer.daemon|postmaster|e-?postsystem", re.IGNORECASE)
_AUTO_REPLY_SUBJECT = re.compile(
    r"out of (?:the )?office|automatic reply|auto[- ]?reply|autoreply|auto[- ]?response|autosvar"
    r"|automatisk svar|fravær|fraværsmelding|ferie|vacation|abwesenheit|away from|on leave|\booof\b",
    re.IGNORECASE,
)


def _from_daemon(msg: Message) -> bool:
    name, addr = parseaddr(_get(msg, "From") or "")
    local = addr.rpartition("@")[0] if "@" in addr else addr
    return bool(_DAEMON_LOCAL.match(local) or _DAEMON_NAME.search(name))


def _auto_reply_headers(msg: Message) -> bool:
    auto_submitted = (_get(msg, "Auto-Submitted") or "no").split(";")[0].strip().lower()
    precedence = (_get(msg, "Precedence") or "").strip().lower()
    return (
        auto_submitted != "no"
        or msg.get("X-Autoreply") is not None
        or msg.get("X-Autorespond") is not None
        or precedence == "auto_reply"
    )


# -------------------------------------------------------------------------------------- finding us


@dataclass
class _Refs:
    attempt_id: str | None = None
    provider_message_id: str | None = None
    contact_id: str | None = None
    matched_by: str | None = None


def _ours(message_id: str | None) -> tuple[str, str, str] | None:
    """(contact, attempt, normalised Message-ID) if ``message_id`` has our shape."""
    if not message_id:
        return None
    match = _OUR_MESSAGE_ID.search(message_id)
    if not match:
        return None
    contact, attempt, domain = match.group(1).upper(), match.group(2).upper(), match.group(3)
    return contact, attempt, f"<{contact}.{attempt}@{domain}>"


def _original_headers(msg: Message) -> Iterator[Message]:
    """Header sets of the returned original: attached messages and rfc822-headers parts."""
    for part, _inside in _walk(msg):
        ctype = part.get_content_type()
        if ctype in _ORIGINAL_TYPES:
            payload = part.get_payload()
            if isinstance(payload, list):
                yield from (p for p in payload if isinstance(p, Message))
        elif ctype in _HEADERS_TYPES:
            text = _part_text(part)
            if text:
                yield HeaderParser(policy=email.policy.compat32).parsestr(text.replace("\r\n", "\n"))


def _find_refs(msg: Message, dsn_blocks: list[Message], rcpt_to: str | None, bounce_domain: str) -> _Refs:
    refs = _Refs()
    if rcpt_to:
        refs.attempt_id = verp_attempt_id(rcpt_to, bounce_domain)
        if refs.attempt_id:
            refs.matched_by = "verp"

    candidates: list[tuple[str, str | None]] = []  # (source, Message-ID)
    contacts: list[str | None] = []
    for headers in _original_headers(msg):
        candidates.append(("original_message_id", _get(headers, "Message-ID")))
        contacts.append(_get(headers, "X-Orchestrator-Contact"))
    for block in dsn_blocks[:1]:
        candidates.append(("dsn_original_message_id", _get(block, "X-Original-Message-ID")))
    text = _all_text(msg)
    candidates.extend(("quoted_message_id", m.group(1)) for m in _QUOTED_MESSAGE_ID.finditer(text))
    contacts.extend(m.group(1) for m in _QUOTED_CONTACT.finditer(text))
    for name in ("In-Reply-To", "References"):
        value = _get(msg, name) or ""
        candidates.extend((name.lower(), m.group(0)) for m in _OUR_MESSAGE_ID.finditer(value))

    for source, candidate in candidates:
        ours = _ours(candidate)
        if ours:
            contact, attempt, normalised = ours
            refs.provider_message_id = normalised
            refs.contact_id = contact
            if refs.attempt_id is None:
                refs.attempt_id = attempt
                refs.matched_by = source
            break
    if refs.contact_id is None:
        for header in contacts:
            if header and _ULID.fullmatch(header.strip()):
                refs.contact_id = header.strip().upper()
                refs.matched_by = refs.matched_by or "contact_header"
                break
    return refs


# -------------------------------------------------------------------------------------------- parsing


def _aware(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)  # "-0000": UTC, zone unknown


def _event_id(msg: Message, raw: bytes) -> str:
    own = _get(msg, "Message-ID")
    if own and "<" in own and ">" in own:
        return own[own.index("<") : own.rindex(">") + 1]
    return hashlib.sha256(raw).hexdigest()


def parse_bounce(
    raw: bytes, *, rcpt_to: str | None, bounce_domain: str, received_at: datetime
) -> CarrierEvent | None:
    """One raw bounce as a ``CarrierEvent`` (carrier ``"smtp"``), or ``None``: not a bounce (an auto-reply, a
    human, a read receipt) or tied to no attempt or contact of ours.

    ``rcpt_to`` is the envelope recipient (the VERP address) when known; ``received_at`` (aware) is when we
    took the message, the event's time unless the report dates the attempt. ``event_id`` is the bounce's own
    Message-ID, else the sha256 of ``raw``. Classification rules: see the module docstring.
    """
    if received_at.tzinfo is None:
        raise ValueError("received_at must be timezone-aware")
    msg = email.message_from_bytes(raw, policy=email.policy.compat32)
    subject = _get(msg, "Subject") or ""

    dsn_blocks: list[Message] = []
    for part, inside in _walk(msg):
        if not inside and part.get_content_type() in _DSN_TYPES:
            dsn_blocks = _dsn_blocks(part)
            break
    recipients = _recipients(dsn_blocks)

    verdict: _Verdict | None = None
    chosen: _Recipient | None = None
    if recipients:
        chosen = max(recipients, key=lambda r: _ACTION_RANK.get(r.action or "", 0))
        verdict = _classify_dsn(chosen.action, chosen.status, chosen.diagnostic or "")
        if verdict is not None and chosen.status is None and chosen.diagnostic:
            chosen = dataclasses.replace(chosen, status=_enhanced(chosen.diagnostic))
    source = "dsn"
    report_text = ""
    if verdict is None:
        source = "heuristic"
        bounce_like = bool(_BOUNCE_SUBJECT.search(subject)) or _from_daemon(msg)
        auto_reply = _auto_reply_headers(msg) or bool(_AUTO_REPLY_SUBJECT.search(subject))
        if auto_reply and not bounce_like:
            log.info("bounce: auto-reply for %s, not a bounce", rcpt_to or "-")
            return None
        report_text = _report_text(msg)
        if not (bounce_like or _BOUNCE_TEXT.search(report_text)):
            return None
        verdict = _classify_text(subject, report_text)

    refs = _find_refs(msg, dsn_blocks, rcpt_to, bounce_domain)
    if refs.attempt_id is None and refs.contact_id is None:
        log.info("bounce: no attempt or contact of ours in it (rcpt %s)", rcpt_to or "-")
        return None

    at = received_at
    for candidate in (chosen.last_attempt if chosen else None, _get(msg, "Date")):
        parsed = _aware(candidate)
        if parsed is not None and parsed <= received_at + _FUTURE_SLACK:
            at = parsed
            break

    detail: dict[str, Any] = {
        "source": source,
        "sub_reason": verdict.sub_reason,
        "final": verdict.final,
        "matched_by": refs.matched_by,
    }
    if refs.contact_id:
        detail["contact_id"] = refs.contact_id
    if chosen is not None:
        detail["action"] = chosen.action
        detail["status_code"] = _code_str(chosen.status)
        if chosen.diagnostic:
            detail["diagnostic"] = chosen.diagnostic[:_MAX_DIAGNOSTIC_CHARS]
        if chosen.final_recipient:
            detail["final_recipient"] = chosen.final_recipient
        if chosen.remote_mta:
            detail["remote_mta"] = chosen.remote_mta
        reporting = _field_value(_get(dsn_blocks[0], "Reporting-MTA")) if dsn_blocks else None
        if reporting:
            detail["reporting_mta"] = reporting
    else:
        text_code = _enhanced(report_text)
        if text_code:
            detail["status_code"] = _code_str(text_code)
        failed = _get(msg, "X-Failed-Recipients")
        if failed:
            detail["final_recipient"] = failed.split(",")[0].strip()

    event = CarrierEvent(
        carrier=CARRIER,
        event_id=_event_id(msg, raw),
        status=verdict.status,
        at=at,
        attempt_id=refs.attempt_id,
        provider_message_id=refs.provider_message_id,
        reason=verdict.reason,
        detail=detail,
    )
    log.info(
        "bounce: attempt=%s status=%s reason=%s sub_reason=%s recipient=%s source=%s",
        event.attempt_id,
        event.status,
        event.reason,
        verdict.sub_reason,
        _mask(detail.get("final_recipient")),
        source,
    )
    return event


# ----------------------------------------------------------------------------------- the SMTP receiver


def _utcnow() -> datetime:
    return datetime.now(UTC)


class BounceReceiver:
    """An SMTP server for the VERP return path: aiosmtpd handler and server in one.

    Accepts ``RCPT TO:<bounce+...@<bounce_domain>>`` only (anything else: ``550 5.1.1``), never relays,
    refuses messages over ``max_message_bytes`` (``552``). Per message: ``on_event(event, raw)`` for each
    parsed bounce, else ``on_unparsed(raw)``; ``250`` once the callback returned, ``451`` if it raised, so the
    sending MTA keeps the message and retries. Use ``async with`` or ``start()`` / ``stop()``; ``port=0``
    picks a free port (read ``.port`` after start).
    """

    def __init__(
        self,
        *,
        bounce_domain: str,
        on_event: OnEvent,
        on_unparsed: OnUnparsed,
        host: str = "127.0.0.1",
        port: int = 0,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        max_recipients: int = 10,
        hostname: str | None = None,
        timeout_s: float = 300.0,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        self.bounce_domain = bounce_domain
        self.on_event = on_event
        self.on_unparsed = on_unparsed
        self.host = host
        self._requested_port = port
        self.max_message_bytes = max_message_bytes
        self.max_recipients = max_recipients
        self.hostname = hostname or bounce_domain
        self.timeout_s = timeout_s
        self.clock = clock
        self._server: asyncio.Server | None = None
        self._port: int | None = None
        self._protocols: weakref.WeakSet[Any] = weakref.WeakSet()
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @classmethod
    def from_settings(
        cls, settings: Settings, *, on_event: OnEvent, on_unparsed: OnUnparsed
    ) -> BounceReceiver | None:
        """The receiver the settings ask for, or ``None`` when ``ORCH_BOUNCE_SMTP_PORT`` is unset."""
        if settings.bounce_smtp_port is None:
            return None
        return cls(
            bounce_domain=settings.bounce_domain,
            on_event=on_event,
            on_unparsed=on_unparsed,
            host=settings.bounce_smtp_host,
            port=settings.bounce_smtp_port,
        )

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the bounce receiver is not started")
        return self._port

    async def start(self) -> None:
        if self._server is not None:
            raise RuntimeError("the bounce receiver is already started")
        # aiosmtpd logs every DATA line at DEBUG and every address at INFO; bodies and addresses stay out.
        logging.getLogger("mail.log").setLevel(logging.WARNING)
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: self._protocol(loop), self.host, self._requested_port)
        self._port = int(self._server.sockets[0].getsockname()[1])
        log.info("bounce receiver listening on %s:%d for @%s", self.host, self._port, self.bounce_domain)

    def _protocol(self, loop: asyncio.AbstractEventLoop) -> Any:
        protocol = SMTP(
            self,
            hostname=self.hostname,
            ident="orchestrator bounce receiver",
            data_size_limit=self.max_message_bytes,
            enable_SMTPUTF8=True,
            decode_data=False,
            timeout=self.timeout_s,
            loop=loop,
        )
        self._protocols.add(protocol)
        return protocol

    async def stop(self, grace_s: float = 5.0) -> None:
        """Stop listening, let messages being handed over finish (up to ``grace_s``), close connections."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), grace_s)
        for protocol in list(self._protocols):
            transport = getattr(protocol, "transport", None)
            if transport is not None:
                transport.close()
        await server.wait_closed()
        self._port = None

    async def __aenter__(self) -> BounceReceiver:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # aiosmtpd handler hooks --------------------------------------------------------------------------

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        if not is_bounce_address(address, self.bounce_domain):
            log.info("bounce receiver: refused RCPT for %s", _mask(address))
            return "550 5.1.1 Recipient address rejected: only bounce addresses are accepted here"
        if len(envelope.rcpt_tos) >= self.max_recipients:
            return "452 4.5.3 Too many recipients"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or envelope.content
        raw = content if isinstance(content, bytes) else str(content).encode("utf-8", "surrogateescape")
        self._in_flight += 1
        self._idle.clear()
        try:
            return await self._hand_over(raw, list(envelope.rcpt_tos))
        finally:
            self._in_flight -= 1
            if self._in_flight == 0:
                self._idle.set()

    async def _hand_over(self, raw: bytes, rcpt_tos: list[str]) -> str:
        received_at = self.clock()
        recipients = list(dict.fromkeys(r.strip("<>").lower() for r in rcpt_tos))
        events: list[CarrierEvent] = []
        for rcpt in recipients:
            try:
                event = await asyncio.to_thread(
                    parse_bounce, raw, rcpt_to=rcpt, bounce_domain=self.bounce_domain, received_at=received_at
                )
            except Exception:
                log.exception("bounce receiver: could not parse a message for %s", rcpt)
                event = None
            if event is not None and all(e.attempt_id != event.attempt_id for e in events):
                events.append(event)
        if len(events) > 1:  # one message for several attempts: one event each, still replay-safe
            events = [dataclasses.replace(e, event_id=f"{e.event_id}#{e.attempt_id}") for e in events]
        try:
            if events:
                for event in events:
                    await self.on_event(event, raw)
            else:
                log.info("bounce receiver: message (%d bytes) is not a bounce; kept for inspection", len(raw))
                await self.on_unparsed(raw)
        except Exception:
            log.exception("bounce receiver: handing the message over failed; the sender will retry")
            return "451 4.3.0 Temporary failure, please try again later"
        return "250 2.0.0 OK"
