"""Timeline entries and reason codes in plain words, for the debtor's page and the previews: every entry type
the orchestrator writes gets its own wording (:func:`entry`), so the templates only lay them out. Codes stay
visible beside the words, since they are what the API, the logs and the rule set name; a code with no words
yet is shown as it is, never hidden.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Final

from orchestrator.console import actions, pages
from orchestrator.models import TimelineEvent
from orchestrator.policy.decide import format_address

CHANNELS: Final = {
    "email": "e-mail",
    "sms": "SMS",
    "letter": "letter",
    "digital_mailbox": "digital mailbox",
    "chat_link": "chat link (by SMS)",
    "auto": "chosen by the orchestrator",
    "*": "every channel",
}

# Reason codes (decisions, statuses, carriers, registries) in plain words. A code not listed here is shown
# as it is: the page never hides a reason because it has no words for it yet.
WORDS: Final = {
    # why a channel was chosen
    "cheapest_lawful_reachable_channel": "the cheapest lawful channel that reaches the debtor",
    "lowest_cost_per_response": "the lowest cost per response among the lawful channels",
    "requested_channel": "the channel upstream asked for",
    "requested_channel_refused": "the channel upstream asked for was refused",
    "debtor_preference": "the channel the debtor prefers",
    "debtor_preference_too_costly": "the debtor's preferred channel costs too much more",
    "fallback": "a fallback after channels that failed",
    "statutory_notice_on_lawful_channel": "a statutory notice, on a channel the law allows (R3)",
    "not_before": "upstream said not before a given time",
    "fee_not_before_14_days_after_due": "a fee may be charged only 14 days after the due date (R10)",
    "outside_contact_window": "outside the contact window, so deferred to its next opening (R5)",
    "pressure_cap_deferred": "deferred by the pressure cap (R6)",
    "variant_not_written_for_channel": "the tone variant has no template for this channel; the neutral one "
    "was used",
    "sent_on_held_case": "this kind may be sent while the case is held",
    "sent_on_closed_case": "this kind may be sent after the case is closed",
    "inkassovarsel_before_due_date": "an inkassovarsel may not go out before the claim is due (R1)",
    # why a channel was rejected
    "channel_not_configured": "no carrier is configured for this channel",
    "already_tried": "already tried for this contact",
    "not_lawful_for_statutory_notice": "not lawful for a statutory notice (R3)",
    "opted_out": "the debtor opted out of it",
    "no_usable_email": "every e-mail address bounced",
    "no_email": "no e-mail address",
    "electronic_notice_evidence_too_old": "the evidence for electronic notices is too old (R3)",
    "no_electronic_notice_evidence": "no evidence that the debtor uses this address (R3)",
    "no_valid_mobile": "no valid mobile number",
    "no_national_id": "no national id to find the debtor's digital mailbox",
    "no_usable_postal_address": "every postal address returned mail",
    "no_postal_address": "no postal address",
    "channel_cannot_reach_debtor": "this channel cannot reach the debtor",
    "no_template": "no template for this kind and language",
    "ranked_lower": "ranked lower than the chosen channel",
    # contact and case statuses
    "dispute": "a dispute (R4)",
    "bankruptcy": "bankruptcy (R8)",
    "operator": "held by an operator",
    "claim_not_due": "the claim is not due yet",
    "pressure_cap": "the pressure cap (R6)",
    "no_reachable_channel": "no channel reaches the debtor",
    "no_lawful_channel": "no lawful channel for a statutory notice (R3)",
    "fallback_exhausted": "every channel was tried",
    "fee_reminder_limit_reached": "the limit of fee-bearing reminders is reached (R10)",
    "case_closed": "the case is closed",
    "paid_in_full": "paid in full",
    "needs_reconciliation": "we do not know whether the carrier took it",
    "no_delivery_report": "the carrier never reported on it",
    "template_error": "the template could not be rendered",
    "address_updated_resent": "sent again to a new address",
    "returned_no_new_address": "the letter came back and no new address was found",
    "forwarded_new_address": "Posten forwarded it to a new address",
    # carriers
    "hard_bounce": "a hard bounce: the address does not exist",
    "soft_bounce": "a soft bounce: try again later",
    "soft_bounce_retries_exhausted": "soft bounces, and the retries are used up",
    "retry": "to be tried again",
    "returned_moved": "returned: the addressee has moved",
    "returned_unknown_addressee": "returned: unknown addressee",
    "returned_insufficient_address": "returned: the address is insufficient",
    "returned_refused": "returned: refused by the addressee",
    "returned_not_collected": "returned: not collected",
    "returned_deceased": "returned: the addressee is deceased",
    "returned_other": "returned for another reason",
    # returned mail and registries
    "not_configured": "not configured",
    "no_organisation_number": "no organisation number",
    "not_found": "not found",
    "address_found": "an address was found",
    "no_address": "no address",
    "graded_address": "a graded (protected) address: nothing is stored or shown (R9)",
    "unknown_residence": "unknown residence",
    "address_not_new": "the address is not new",
    "letter_returned_twice": "the letter came back twice; never a third time",
    "no_new_address": "no new address",
    "contact_not_returned": "the contact had not come back",
    "no_new_address_no_electronic_channel": "no new address, and no e-mail or mobile to ask for one",
    "address_request_invalid": "the address request could not be made",
    "address_request_refused": "the address request was refused",
    "no_address_found": "no address found",
    "stop_collection": "stop collection",
}
STEPS: Final = {
    "looked_up": "looked up",
    "skipped": "skipped",
    "failed": "lookup failed",
    "reported": "reported a new address with the return",
    "address_file": "gave a new address in its address-update file",
    "compared": "compared with the returned address",
    "resend_refused": "not sent again",
}
CASE_EVENTS: Final = {
    "dispute_raised": "Dispute raised",
    "dispute_resolved": "Dispute resolved",
    "payment_received": "Payment received",
    "paid_in_full": "Paid in full",
    "payment_plan_agreed": "Payment plan agreed",
    "bankrupt": "Bankruptcy",
    "closed": "Case closed",
    "operator_hold": "Case put on hold",
    "hold_released": "Hold released",
    "payment_date_chosen": "The debtor chose a payment date",
}
SOURCES: Final = {
    "upstream": "upstream",
    "operator": "an operator",
    "self_service": "the self-service page",
    "inbound_reply": "a reply from the debtor",
}
REACHES: Final = {"mobile": "SMS to their mobile", "email": "e-mail", "postal": "letters"}
_HOLDS: Final = frozenset({"case_held", "case_dispute_raised", "case_bankrupt", "case_operator_hold"})
_INBOUND: Final = frozenset({"inbound_reply", "opted_out", "self_service_opened", "address_given"})
_CARRIER: Final = frozenset({"attempt", "carrier_event", "reconciled"})


_OK: Final = frozenset({"sent", "delivered", "read", "open"})
_BAD: Final = frozenset({"failed", "bounced", "returned", "expired", "suppressed"})
_WARN: Final = frozenset({"held", "scheduled", "sending", "queued"})


def status_class(status: object) -> str:
    """The pill a status wears: ok, bad, warn, or plain."""
    if status in _OK:
        return "ok"
    if status in _BAD:
        return "bad"
    return "warn" if status in _WARN else ""


def words(code: object) -> str:
    """A reason code in plain words; ``prefix:rest`` codes keep their rest in brackets."""
    if code is None or code == "":
        return ""
    text = str(code)
    if text in WORDS:
        return WORDS[text]
    head, sep, rest = text.partition(":")
    if sep and head in WORDS:
        return f"{WORDS[head]} ({rest})"
    return text.replace("_", " ")


def cap(text: object) -> str:
    """The first letter upper case, the rest as it is (jinja's ``capitalize`` would write "Sms")."""
    shown = str(text or "")
    return shown[:1].upper() + shown[1:]


def channel_words(channel: object) -> str:
    return CHANNELS.get(str(channel), str(channel)) if channel else ""


@dataclass(frozen=True)
class Said:
    """A code and its plain words (the page shows both)."""

    code: str
    words: str


def said(code: object) -> Said:
    return Said(str(code), words(code))


def when_text(value: object) -> str:
    """An ISO time from a detail, in Oslo time; anything else as it is."""
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            moment = datetime.fromisoformat(value)
            if moment.tzinfo is not None:
                return pages.oslo(moment, "%Y-%m-%d %H:%M:%S")
    return plain(value)


def plain(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ", ".join(plain(v) for v in value)
    if isinstance(value, dict):
        if {"lines", "postal_code"} <= value.keys():
            return format_address(value).replace("\n", ", ")
        return "; ".join(f"{k}: {plain(v)}" for k, v in value.items())
    return str(value).replace("\n", ", ")


# ------------------------------------------------------------------------------------------- the timeline


@dataclass
class Entry:
    """One timeline entry, in words."""

    id: str
    at: datetime
    type: str
    family: str
    source: str
    status: str | None
    contact_id: str | None
    attempt_id: str | None
    title: str = ""
    facts: list[tuple[str, str]] = field(default_factory=list)
    reasons: list[Said] = field(default_factory=list)
    rejected: list[tuple[str, Said]] = field(default_factory=list)
    text: str | None = None  # what the debtor wrote (national ids masked)
    related_contact_id: str | None = None
    task: bool = False

    def fact(self, label: str, value: object, *, when: bool = False) -> None:
        shown = when_text(value) if when else plain(value)
        if shown:
            self.facts.append((label, shown))


def _family(event: TimelineEvent) -> str:
    if (event.type.startswith("operator_") and event.type != "operator_task") or event.source == "operator":
        return "operator"
    if event.type in _INBOUND or event.source in ("self_service", "inbound_reply"):
        return "inbound"
    if event.type in _HOLDS or event.status == "held":
        return "hold"
    if event.type in _CARRIER:
        return "carrier"
    return ""


def decision_lines(e: Entry, d: dict[str, Any]) -> None:
    outcome = d.pop("outcome", None)
    channel = channel_words(d.pop("channel", None))
    provider = d.pop("provider", None)
    send_at = d.pop("send_at", None)
    status_reason = d.pop("status_reason", None)
    if outcome == "send":
        e.title = f"Decision: send by {channel}" + (f" through {provider}" if provider else "")
    elif outcome == "scheduled":
        e.title = f"Decision: send by {channel} at {when_text(send_at)}"
    elif outcome in ("held", "suppressed"):
        e.title = f"Decision: not sent ({outcome}): {words(status_reason)}"
    else:
        e.title = f"Decision: {outcome or e.status}"
    e.fact("Channel", channel)
    e.fact("Provider", provider)
    e.fact("Address", d.pop("address", None))
    e.fact("Send at", send_at, when=True)
    e.fact("Template", d.pop("template", None))
    e.fact("Variant", d.pop("variant", None))
    e.fact("Rule version", d.pop("rule_version", None))
    e.fact("Payment deadline", d.pop("deadline", None))
    e.fact("Why not sent", status_reason and f"{words(status_reason)} ({status_reason})")
    e.fact("Decided at", d.pop("decided_at", None), when=True)
    e.reasons = [said(r) for r in d.pop("reasons", None) or []]
    e.rejected = [
        (channel_words(r.get("channel")), said(r.get("reason"))) for r in d.pop("rejected", None) or []
    ]
    d.pop("inputs", None)  # what it was made from: ``orchestrator explain`` replays it


def _contact_received(e: Entry, d: dict[str, Any]) -> None:
    e.title = f"Contact received from {e.source}: {words(d.pop('kind', ''))}"
    e.fact("Channel asked for", channel_words(d.pop("channel", None)))
    e.fact("Idempotency key", d.pop("idempotency_key", None))


def _scheduled(e: Entry, d: dict[str, Any]) -> None:
    if "outcome" in d:
        decision_lines(e, d)
        return
    e.title = f"Scheduled again: {words(d.pop('reason', ''))}"
    e.fact("Send at", d.pop("send_at", None), when=True)


def _attempt(e: Entry, d: dict[str, Any]) -> None:
    channel = channel_words(d.pop("channel", None))
    if e.status == "sent":
        e.title = f"Handed to {e.source}" + (f" ({channel})" if channel else "")
    else:
        e.title = f"Sending failed: {words(d.get('reason'))}"
        if d.get("retry_at"):
            e.title += f"; tried again at {when_text(d['retry_at'])}"
    e.fact("Address", d.pop("address", None))
    e.fact("Provider message id", d.pop("provider_message_id", None))
    e.fact("Reason", d.pop("reason", None))
    e.fact("Error", d.pop("error", None))
    e.fact("Retry at", d.pop("retry_at", None), when=True)


def _carrier_event(e: Entry, d: dict[str, Any]) -> None:
    reason = d.pop("reason", None)
    e.title = f"Report from {e.source}: {e.status}" + (f" ({words(reason)})" if reason else "")
    moved = d.pop("moved", None)
    if moved is False:
        e.fact("Status changed", "no: a late or repeated report moves nothing back")
    e.fact("Carrier's time", d.pop("carrier_at", None), when=True)
    e.fact("Carrier event id", d.pop("event_id", None))
    e.fact("Carrier's reason", reason)


def _reconciled(e: Entry, d: dict[str, Any]) -> None:
    e.title = f"Settled with {e.source}'s status: {d.pop('carrier_status', e.status)}"
    e.fact("Why it was asked", d.pop("why", None))
    e.fact("Status before", d.pop("was", None))
    e.fact("Reason", words(d.pop("reason", None)))
    e.fact("Carrier's time", d.pop("carrier_at", None), when=True)


def _needs_reconciliation(e: Entry, d: dict[str, Any]) -> None:
    e.title = "Waiting to be settled: we do not know whether the carrier took it"
    e.fact("Why", d.pop("why", None))
    e.fact("Reason", words(d.pop("reason", None)))


def _fallback(e: Entry, d: dict[str, Any]) -> None:
    source = channel_words(d.pop("from_channel", None))
    target = d.pop("to_channel", None)
    if target:
        e.title = f"Fallback: from {source} to {channel_words(target)}"
    else:
        e.title = f"No other channel after {source}: {words(d.pop('outcome', None))}"
    e.fact("Why", words(d.pop("reason", None)))
    e.fact("Channels tried", [channel_words(c) for c in d.pop("tried_channels", None) or []])
    e.fact("Send at", d.pop("send_at", None), when=True)
    e.rejected = [
        (channel_words(r.get("channel")), said(r.get("reason"))) for r in d.pop("rejected", None) or []
    ]


def _legal_guard(e: Entry, d: dict[str, Any]) -> None:
    e.title = f"Refused by the legal guard: {words(d.pop('reason', None))}"
    e.fact("Channel", channel_words(d.pop("channel", None)))


def _failed(e: Entry, d: dict[str, Any]) -> None:
    e.title = f"Not sent: {words(d.pop('reason', None))}"


def _returned_mail(e: Entry, d: dict[str, Any]) -> None:
    step = d.pop("step", None)
    reason = d.pop("reason", None)
    e.title = f"Returned letter, {e.source}: {STEPS.get(str(step), str(step))}: {words(reason)}"


def _address_found(e: Entry, d: dict[str, Any]) -> None:
    source = d.pop("source", e.source)
    if e.type == "address_updated_resent":
        e.title = f"Sent again to the address found ({source})"
    else:
        e.title = f"New address stored from {source}"
    e.fact("Address", d.pop("address", None))
    e.fact("Why", d.pop("why", None))
    d.pop("reason", None)


def _address_request(e: Entry, d: dict[str, Any]) -> None:
    e.title = "No new address found: the debtor is asked for it by SMS or e-mail"
    e.related_contact_id = d.pop("address_request_contact_id", None)
    d.pop("reason", None)


def _operator_task(e: Entry, d: dict[str, Any]) -> None:
    e.title = f"Task for an operator: {words(d.pop('kind', None))} ({words(d.pop('reason', None))})"
    e.task = True
    d.pop("task_id", None)


def _case_held(e: Entry, d: dict[str, Any]) -> None:
    e.title = f"Case held: {words(d.pop('reason', None))}"
    _affected(e, d)


def _affected(e: Entry, d: dict[str, Any]) -> None:
    affected = d.pop("contacts_affected", None)
    if affected:
        e.fact("Contacts affected", len(affected))


def _case_event(e: Entry, d: dict[str, Any]) -> None:
    kind = str(d.pop("type", e.type.removeprefix("case_")))
    e.title = f"{CASE_EVENTS.get(kind, cap(words(kind)))} (from {SOURCES.get(e.source, e.source)})"
    e.fact("Happened at", d.pop("at", None), when=True)
    amount = d.pop("amount", None)
    if amount is not None:
        with contextlib.suppress(InvalidOperation, ValueError):
            amount = pages.money(Decimal(str(amount)))
        e.fact("Amount", amount)
    e.fact("Note", d.pop("note", None))
    _affected(e, d)


def _self_service_opened(e: Entry, d: dict[str, Any]) -> None:
    page = d.pop("page", None)
    e.title = "The debtor opened the self-service page" + (" for their address" if page == "address" else "")
    e.fact("Times opened", d.pop("opened", None))
    d.pop("link_id", None)


def _address_given(e: Entry, d: dict[str, Any]) -> None:
    e.title = "The debtor gave a postal address on the self-service page"
    e.fact("Address", d.pop("address", None))
    d.pop("link_id", None)


def _inbound_reply(e: Entry, d: dict[str, Any]) -> None:
    outcome = d.pop("outcome", None)
    e.title = f"Reply from the debtor by {channel_words(d.pop('channel', 'sms'))}"
    if outcome == "opted_out":
        e.title += ": an opt-out"
    e.text = plain(d.pop("text", None))
    e.fact("From", d.pop("from", None))
    e.fact("To", d.pop("to", None))
    e.fact("Opt-out word", d.pop("opt_out_keyword", None))
    e.fact("Carrier's time", d.pop("carrier_at", None), when=True)
    d.pop("in_reply_to", None)
    d.pop("event_id", None)


def _opted_out(e: Entry, d: dict[str, Any]) -> None:
    reach = d.pop("reach", None)
    e.title = f"Opted out of {REACHES.get(str(reach), str(reach))}"
    e.fact("How", words(d.pop("source", None)))


def _operator(e: Entry, d: dict[str, Any]) -> None:
    action = e.type.removeprefix("operator_")
    e.title = f"Operator action: {words(action)}"
    who, role = d.pop("operator", None), d.pop("role", None)
    e.fact("By", f"{who} ({role})" if role else who)
    e.fact("Note", d.pop("note", None))
    provenance = d.pop("provenance", None)
    if provenance:
        e.fact("Where the address comes from", actions.ADDRESS_PROVENANCE.get(str(provenance), provenance))
    e.fact("Outcome", words(d.pop("outcome", None)))
    contacts = d.pop("contacts", None)
    if contacts:
        e.fact("Contacts affected", len(contacts))
    d.pop("case_event_id", None)  # the case event beside this entry says the same


_BUILDERS: Final[dict[str, Callable[[Entry, dict[str, Any]], None]]] = {
    "contact_received": _contact_received,
    "decision": decision_lines,
    "scheduled": _scheduled,
    "attempt": _attempt,
    "carrier_event": _carrier_event,
    "reconciled": _reconciled,
    "needs_reconciliation": _needs_reconciliation,
    "fallback": _fallback,
    "legal_guard_refused": _legal_guard,
    "failed": _failed,
    "returned_mail": _returned_mail,
    "address_stored": _address_found,
    "address_updated_resent": _address_found,
    "address_request": _address_request,
    "operator_task": _operator_task,
    "case_held": _case_held,
    "self_service_opened": _self_service_opened,
    "address_given": _address_given,
    "inbound_reply": _inbound_reply,
    "opted_out": _opted_out,
}


def entry(event: TimelineEvent) -> Entry:
    """A timeline event in words: a title, facts, reasons and rejected channels; what a builder does not
    know is listed as it is, so nothing recorded is left out."""
    e = Entry(
        id=event.id,
        at=event.at,
        type=event.type,
        family=_family(event),
        source=event.source,
        status=event.status,
        contact_id=event.contact_id,
        attempt_id=event.attempt_id,
    )
    detail = dict(event.detail or {})
    builder = _BUILDERS.get(event.type)
    if builder is None and event.type.startswith("operator_"):
        builder = _operator
    elif builder is None and event.type.startswith("case_"):
        builder = _case_event
    if builder is not None:
        builder(e, detail)
    else:
        e.title = cap(words(event.type))
    for key, value in detail.items():
        e.fact(cap(key.replace("_", " ")), value, when=key.endswith("_at"))
    return e
