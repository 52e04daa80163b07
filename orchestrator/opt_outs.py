"""Debtors' replies and opt-outs (issue 5).

A debtor may stop the messages the law does not require on one reach (``mobile``: SMS and chat links;
``email``), never the statutory notices (inkassovarsel, betalingsoppfordring: ``STATUTORY_KINDS``), which the
policy still sends on their lawful channel. Two ways in:

* an SMS reply. Carriers post it to our webhooks (``webhooks/twilio.py``, ``webhooks/linkmobility.py``) as a
  carrier event with status ``inbound``; the worker hands it here (``process_inbound_reply``). The sender is
  found among the debtors we texted at that number (``contact_log.debtors_texted_at``) and every such debtor
  gets an ``inbound_reply`` in the timeline, with the text (national ids masked) and the message it answers.
  A text that is, as a whole, an opt-out keyword (``STOP``, ``STOPP``, ``AVMELD``, ... in any case, with
  surrounding blanks and punctuation ignored; "jeg vil ikke stoppe betalingen" is a reply, not an opt-out)
  opts the debtor out of ``mobile`` (``source: "sms_reply"``) when the number is still one of theirs. Any
  other text changes nothing: an operator reads it (and may raise a dispute through
  ``POST /v1/cases/{id}/events``). A number that matches no debtor is kept as a recorded carrier event and
  logged without number or text;
* an e-mail unsubscribe link (``orchestrator.unsubscribe``, RFC 8058 one-click).

Replies' texts never reach a log line (they are personal data and may hold anything).
"""

from __future__ import annotations

import unicodedata
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from orchestrator import contact_log as store
from orchestrator.identifiers import normalize_phone, redact_national_ids
from orchestrator.logs import get_logger
from orchestrator.models import CarrierEvent
from webhooks.events import INBOUND

__all__ = [
    "INBOUND",
    "OPT_OUT_KEYWORDS",
    "is_opt_out",
    "normalise_reply",
    "process_inbound_reply",
    "record_opt_out",
    "sender_number",
]

log = get_logger(__name__)

# Whole-message keywords, Norwegian and English (compared after ``normalise_reply``). The English ones are
# those carriers treat as opt-outs on their own (Twilio's default STOP handling; CTIA).
OPT_OUT_KEYWORDS = frozenset(
    {
        "STOP",
        "STOPP",
        "STOP ALL",
        "STOPALL",
        "STOPP ALT",
        "AVMELD",
        "MELD AV",
        "AVSLUTT",
        "SLUTT",
        "UNSUBSCRIBE",
        "OPT OUT",
        "OPTOUT",
        "CANCEL",
        "END",
        "QUIT",
    }
)
# Blanks and punctuation a keyword may be wrapped in ("Stopp!", "«STOP».").
_WRAPPING = " \t\r\n.!?,;:-_*\"'«»“”‘’()[]"
MOBILE = "mobile"
SMS_REPLY = "sms_reply"


def normalise_reply(text: str) -> str:
    """``text`` as keywords are compared: NFKC, outer blanks and punctuation stripped, inner blanks collapsed,
    upper case."""
    folded = unicodedata.normalize("NFKC", text).strip(_WRAPPING)
    return " ".join(folded.split()).upper()


def is_opt_out(text: str) -> bool:
    """Whether the whole message is an opt-out keyword."""
    return normalise_reply(text) in OPT_OUT_KEYWORDS


def sender_number(raw: Any) -> str | None:
    """The sender as E.164 (``+4791234567``), however the carrier wrote it (``4791234567``, ``0047...``,
    national); None when it is no phone number (an alphanumeric sender)."""
    if not isinstance(raw, str) or not raw.strip():
        return None
    candidate = "".join(raw.split())
    tries = [candidate]
    if candidate.isascii() and candidate.isdigit():
        tries.append("+" + candidate)
    for attempt in tries:
        try:
            return normalize_phone(attempt)
        except ValueError:
            continue
    return None


async def record_opt_out(
    session: AsyncSession,
    *,
    debtor_id: str,
    reach: str,
    source: str,
    timeline_source: str,
    now: datetime,
    case_id: str | None = None,
    contact_id: str | None = None,
    detail: dict[str, Any] | None = None,
) -> bool:
    """Opt the debtor out of ``reach`` and say so in the timeline, once: True if it is new."""
    added = await store.add_opt_out(session, debtor_id, reach, source=source, now=now)
    if added:
        await store.add_timeline(
            session,
            [
                store.timeline_row(
                    debtor_id=debtor_id,
                    case_id=case_id,
                    contact_id=contact_id,
                    type="opted_out",
                    source=timeline_source,
                    detail={"reach": reach, "source": source, **(detail or {})},
                    at=now,
                )
            ],
        )
    return added


def _phones(contact_points: dict[str, Any]) -> set[str]:
    found = set()
    for phone in contact_points.get("phones", []):
        number = sender_number(phone)
        if number is not None:
            found.add(number)
    return found


async def process_inbound_reply(
    session: AsyncSession, row: CarrierEvent, event: dict[str, Any], *, now: datetime
) -> str:
    """Apply one recorded ``inbound`` carrier event (within the caller's transaction)."""
    if not await store.mark_carrier_event_processed(session, row.id, attempt_id=None, now=now):
        return "skipped"
    detail: dict[str, Any] = dict(event.get("detail") or {})
    number = sender_number(detail.get("from"))
    raw_text = detail.get("text")
    text = raw_text if isinstance(raw_text, str) else ""
    matches = await store.debtors_texted_at(session, number) if number is not None else []
    if not matches:
        log.warning("inbound SMS matches no debtor", carrier=row.carrier, event_id=row.event_id)
        return "unmatched"
    assert number is not None
    stop = is_opt_out(text)
    opted_out = 0
    for debtor, attempt, case_id in matches:
        outcome = "reply"
        if stop:
            if number not in _phones(debtor.contact_points):
                outcome = "number_no_longer_on_file"  # upstream changed the debtor's phones since
            else:
                added = await record_opt_out(
                    session,
                    debtor_id=debtor.id,
                    reach=MOBILE,
                    source=SMS_REPLY,
                    timeline_source=row.carrier,
                    now=now,
                    case_id=case_id,
                    contact_id=attempt.contact_id,
                    detail={"number": number, "keyword": normalise_reply(text), "event_id": row.event_id},
                )
                outcome = "opted_out" if added else "already_opted_out"
                opted_out += added
        await store.add_timeline(
            session,
            [
                store.timeline_row(
                    debtor_id=debtor.id,
                    case_id=case_id,
                    contact_id=attempt.contact_id,
                    type="inbound_reply",
                    source=row.carrier,
                    detail={
                        "channel": "sms",
                        "from": number,
                        "to": detail.get("to"),
                        "text": redact_national_ids(text),
                        "in_reply_to": attempt.id,
                        "opt_out_keyword": stop,
                        "outcome": outcome,
                        "event_id": row.event_id,
                        "carrier_at": event.get("at"),
                    },
                    at=now,
                )
            ],
        )
    log.info(
        "inbound SMS",
        carrier=row.carrier,
        event_id=row.event_id,
        debtors=len(matches),
        opt_out_keyword=stop,
        opted_out=opted_out,
    )
    return "opted_out" if opted_out else "inbound_reply"
