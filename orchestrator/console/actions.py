"""What operators do to cases and contacts: resolve a dispute, hold a case and release that hold, try a
failed contact again, settle a contact that waits for reconciliation, correct a postal address.

Every action is a form POST (role ``operator``; the console's guard checks the role and the CSRF token first)
and, in one transaction, makes the change, writes an ``operator_<action>`` entry in the debtor's timeline
(who, in which role, and the note saying why) and an entry in the console's access log. Jobs are enqueued
only after the commit, and every change is a conditional update on the state the operator saw: two operators
clicking at once (or an operator and the worker) make one change, and the other is told that the page was
stale (409) with nothing changed. Success is a 303 to the debtor's page with ``?done=<code>``.

Case actions go through :func:`orchestrator.case_events.apply`, the same function the API and the debtor's
self-service page use, so a hold is a hold wherever it comes from; the operator's username is stored in the
case event itself as well. An operator's release lifts only an operator's hold, never a dispute (R4) or a
bankruptcy (R8): a dispute is lifted by resolving it, which a person must do.

Retrying a contact (failed, bounced, expired, returned) reopens the SAME contact: it goes back to ``queued``
with the reason ``operator_retry`` and the worker decides again from scratch, with the legal guard, the
contact windows and the pressure cap, exactly as for a new contact. The attempts already made stay as they
are, as evidence. Why the same contact and not a new one: upstream's idempotency key names this contact, and
a second contact for the same message would count twice in the pressure cap and the reports. What is reset:
the channels the fallback chain already tried (``tried_channels``, or the fresh decision would only say
"fallback exhausted") and the count of carrier tries (a fresh budget of ``send_max_tries``). What is kept:
the debtor's unusable addresses, so a bounced e-mail address or a letter address that came back is not
used again (the policy skips them; when nothing else is left, the decision says so); and a letter that came
back twice stays excluded, so a retry never sends it a third time. The update is conditional on the status
the operator saw and on the case being open; arq's job id is the contact's (``contact:<id>``), so even a
duplicate enqueue collapses, and the worker's claim is conditional too: one retry is one send at most.

Settling: a contact ``sending`` with ``needs_reconciliation`` (a worker lost the carrier's answer) or
``sent`` with ``no_delivery_report`` (no carrier report came) waits for a person who checked with the
carrier. ``sent``: the contact (and its attempt in flight) is recorded as sent, reason
``operator_confirmed_sent``; it is never sent again, and a later carrier report still moves it forward.
``not_sent``: that attempt is marked failed (``operator_confirmed_not_sent``) and the contact goes back to
``queued`` for the worker to decide again. The operator's word is the evidence, so the note should say how
they know.

Correcting an address stores it on the debtor ahead of the others with its provenance (``source:
operator``, who, how they learned it, the note, when), so the next letter decision takes it; then every
letter of the debtor's open cases that came back is sent again once to it, as the debtor's own self-service
address form does (a letter that came back twice is never sent a third time); and the operator task it
answers, if named, is resolved.

The constants and predicates at the top are the contract with the pages that show the forms (``debtors``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Final, NoReturn

from aiohttp import web
from aiohttp.web_request import FileField
from multidict import MultiDictProxy
from sqlalchemy.ext.asyncio import AsyncSession

from orchestrator import case_events, contact_log, queue
from orchestrator.appkeys import REDIS, SESSIONS, SETTINGS
from orchestrator.console import action_store, pages
from orchestrator.db import write_session
from orchestrator.identifiers import redact_national_ids, validate_postal_code
from orchestrator.models import Case, Contact, utcnow
from orchestrator.policy.decide import format_address
from orchestrator.policy.rules import rules_for
from orchestrator.returned_mail import RESENT_REASON

routes = web.RouteTableDef()
ROLES: Final[dict[str, str]] = {
    "console_resolve_dispute": "operator",
    "console_hold_case": "operator",
    "console_release_hold": "operator",
    "console_retry_contact": "operator",
    "console_settle": "operator",
    "console_correct_address": "operator",
}

# a contact that ended without reaching the debtor may be tried again by an operator
RETRYABLE_STATUSES: Final = ("failed", "bounced", "expired", "returned")
# why a contact waits for an operator to say whether the carrier took it
SETTLEMENT_REASONS: Final = ("needs_reconciliation", "no_delivery_report")
# how an operator learned of a corrected postal address (kept with the address: its provenance)
ADDRESS_PROVENANCE: Final = {
    "debtor_by_phone": "The debtor, on the phone",
    "debtor_in_writing": "The debtor, in writing",
    "registry_manual": "A registry, looked up by hand",
    "creditor": "The creditor",
    "other": "Other (say which in the note)",
}
SETTLEMENT_OUTCOMES: Final = ("sent", "not_sent")
NOTE_MAX_CHARS: Final = 2000
RETRY_REASON: Final = "operator_retry"
CONFIRMED_SENT: Final = "operator_confirmed_sent"
CONFIRMED_NOT_SENT: Final = "operator_confirmed_not_sent"
_SETTLE_FROM: Final = {"sending": "needs_reconciliation", "sent": "no_delivery_report"}
_COUNTRY = re.compile(r"[A-Z]{2}")
_LINE_MAX_CHARS: Final = 100
_MAX_LINES: Final = 4
_NOTHING_CHANGED: Final = "Nothing was changed."
# a posted form, as aiohttp gives it
Form = MultiDictProxy[str | bytes | bytearray | FileField]


def may_retry(contact: Contact) -> bool:
    return contact.status in RETRYABLE_STATUSES


def needs_settlement(contact: Contact) -> bool:
    """Waits for a person to say whether the carrier took it: ``sending`` with ``needs_reconciliation`` (a
    worker lost the carrier's answer) or ``sent`` with ``no_delivery_report``."""
    return contact.status in _SETTLE_FROM and _SETTLE_FROM[contact.status] == contact.status_reason


def case_actions(case: Case) -> list[str]:
    """The case actions that apply now: ``resolve_dispute``, ``release_hold``, ``hold_case``."""
    if case.status == "held" and case.status_reason == "dispute":
        return ["resolve_dispute"]
    if case.status == "held" and case.status_reason == "operator":
        return ["release_hold"]
    if case.status == "open":
        return ["hold_case"]
    return []


# ---- reading the form ----


def _bad(message: str) -> web.HTTPBadRequest:
    return web.HTTPBadRequest(text=f"{message} {_NOTHING_CHANGED}")


def _stale(message: str) -> web.HTTPConflict:
    return web.HTTPConflict(text=f"{message} {_NOTHING_CHANGED}")


def _text(form: Form, name: str) -> str:
    value = form.get(name, "")
    return value.strip() if isinstance(value, str) else ""


def _required(form: Form, name: str, max_chars: int = 200) -> str:
    value = _text(form, name)
    if not value:
        raise _bad(f"{name} is required.")
    if len(value) > max_chars:
        raise _bad(f"{name} is at most {max_chars} characters.")
    return value


def note_of(form: Form, *, required: bool, why: str = "") -> str:
    """The operator's note: at most 2000 characters, a national id in it masked before it is stored (R9)."""
    note = _text(form, "note")
    if required and not note:
        raise _bad(f"note is required{why}: say why, for whoever reads the timeline later.")
    if len(note) > NOTE_MAX_CHARS:
        raise _bad(f"note is at most {NOTE_MAX_CHARS} characters (it has {len(note)}).")
    return redact_national_ids(note)


def _case_state(case: Case) -> str:
    if case.status == "held":
        return {
            "dispute": "held for a dispute",
            "bankruptcy": "held for bankruptcy",
            "winding_up": "held: the company is being wound up",
            "organisation_deleted": "held: the company is deleted from the register",
            "operator": "held by an operator",
        }.get(case.status_reason or "", f"held ({case.status_reason})")
    if case.status == "closed":
        return f"closed ({case.status_reason})" if case.status_reason else "closed"
    return case.status


def _done(ref: str | None, code: str) -> web.HTTPSeeOther:
    return pages.redirect(f"/console/debtors/{ref}?done={code}" if ref else "/console/search")


async def _enqueue(request: web.Request, contact_ids: list[str]) -> None:
    if contact_ids:
        await queue.enqueue_contacts(request.app[REDIS], request.app[SETTINGS].queue_name, contact_ids)


# ---- case actions ----


def _refuse_resolve(case: Case) -> str | None:
    if case.status == "held" and case.status_reason == "dispute":
        return None
    return f"This case is {_case_state(case)}, not held for a dispute: there is no dispute to resolve."


def _refuse_hold(case: Case) -> str | None:
    if case.status == "open":
        return None
    return f"This case is {_case_state(case)}: an operator's hold is put only on an open case."


def _refuse_release(case: Case) -> str | None:
    if case.status == "held" and case.status_reason == "operator":
        return None
    if case.status == "held" and case.status_reason == "dispute":
        return (
            "This case is held for a dispute: releasing an operator's hold never lifts a dispute (R4). "
            "Resolve the dispute instead, once it is settled."
        )
    if case.status == "held":
        return (
            f"This case is {_case_state(case)}: only an operator's hold can be released here; this hold "
            "stays until upstream reports the case's outcome (R8)."
        )
    return f"This case is {_case_state(case)}, not held by an operator: there is no hold to release."


async def _case_action(
    request: web.Request,
    *,
    event: str,
    action: str,
    note_required: bool,
    refuse: Callable[[Case], str | None],
) -> NoReturn:
    """One of the case actions: the case locked, the hold checked, the event applied, and who did it."""
    form = await request.post()
    case_id = _required(form, "case_id")
    note = note_of(form, required=note_required, why=" to hold a case" if note_required else "")
    operator = pages.me(request)
    settings = request.app[SETTINGS]
    now = utcnow()
    async with write_session(request.app[SESSIONS]) as session:
        case = await action_store.lock_case(session, case_id)
        if case is None:
            raise web.HTTPNotFound(text=f"There is no case with the id {case_id!r}. {_NOTHING_CHANGED}")
        refusal = refuse(case)
        if refusal is not None:
            raise _stale(refusal)
        applied = await case_events.apply(
            session,
            case,
            type=event,
            at=now,
            # the case event itself names the operator too, so the case's own record says who
            data={"operator": operator.username, **({"note": note} if note else {})},
            source="operator",
            now=now,
            holds=rules_for(settings.rules_file).holds,
        )
        await contact_log.add_timeline(
            session,
            [
                pages.operator_event(
                    request,
                    action=action,
                    debtor_id=case.debtor_id,
                    case_id=case.id,
                    status=applied.case_status,
                    detail={"note": note, "case_event_id": applied.event_id, "contacts": applied.affected},
                    at=now,
                )
            ],
        )
        await pages.audit_in(
            session,
            request,
            action,
            debtor_id=case.debtor_id,
            case_id=case.id,
            contacts=len(applied.affected),
        )
        ref = await action_store.debtor_ref(session, case.debtor_id)
    # after the commit: the worker decides each resumed contact again under the normal rules
    await _enqueue(request, applied.resumed)
    raise _done(ref, action)


@routes.post("/console/actions/resolve-dispute", name="console_resolve_dispute")
async def resolve_dispute(request: web.Request) -> web.StreamResponse:
    """A person looked at the debtor's objection and the claim goes on (R4): the held contacts resume."""
    await _case_action(
        request,
        event="dispute_resolved",
        action="dispute_resolved",
        note_required=False,
        refuse=_refuse_resolve,
    )


@routes.post("/console/actions/hold-case", name="console_hold_case")
async def hold_case(request: web.Request) -> web.StreamResponse:
    """Stop everything queued or scheduled for an open case until an operator releases it."""
    await _case_action(
        request, event="operator_hold", action="case_held", note_required=True, refuse=_refuse_hold
    )


@routes.post("/console/actions/release-hold", name="console_release_hold")
async def release_hold(request: web.Request) -> web.StreamResponse:
    """Lift an operator's hold (only that): the held contacts resume."""
    await _case_action(
        request, event="hold_released", action="hold_released", note_required=False, refuse=_refuse_release
    )


# ---- contact actions ----


async def _contact_and_case(session: AsyncSession, contact_id: str) -> tuple[Contact, Case]:
    contact = await action_store.get_contact(session, contact_id)
    if contact is None:
        raise web.HTTPNotFound(text=f"There is no contact with the id {contact_id!r}. {_NOTHING_CHANGED}")
    case = await action_store.lock_case(session, contact.case_id)
    assert case is not None  # a contact's case is a foreign key
    # read again under the case's lock: another operator's action on it has committed by now
    fresh = await action_store.get_contact(session, contact_id)
    assert fresh is not None
    return fresh, case


def _status_of(contact: Contact) -> str:
    return f"{contact.status} ({contact.status_reason})" if contact.status_reason else contact.status


@routes.post("/console/actions/retry-contact", name="console_retry_contact")
async def retry_contact(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    contact_id = _required(form, "contact_id", 26)
    note = note_of(form, required=False)
    now = utcnow()
    async with write_session(request.app[SESSIONS]) as session:
        contact, case = await _contact_and_case(session, contact_id)
        if not may_retry(contact):
            raise _stale(
                f"This contact is {_status_of(contact)}: only a contact that failed, bounced, expired or "
                "came back can be tried again (someone may have retried it just now)."
            )
        if case.status != "open":
            raise _stale(
                f"The contact's case is {_case_state(case)}: nothing is sent for it until the hold is lifted."
            )
        # never a third letter: a letter that came back twice stays out of the fresh decision
        returned_twice = await contact_log.count_returned_attempts(session, contact.id, "letter") >= 2
        if not await action_store.reopen_for_retry(
            session,
            contact.id,
            expected_status=contact.status,
            reason=RETRY_REASON,
            tried_channels=["letter"] if returned_twice else None,
            now=now,
        ):
            raise _stale("This contact was changed just now by someone else; reload the page.")
        await contact_log.add_timeline(
            session,
            [
                pages.operator_event(
                    request,
                    action="contact_retried",
                    debtor_id=contact.debtor_id,
                    case_id=contact.case_id,
                    contact_id=contact.id,
                    status="queued",
                    detail={
                        "note": note,
                        "reason": RETRY_REASON,
                        "previous_status": contact.status,
                        "previous_reason": contact.status_reason,
                        "letter_excluded": returned_twice,
                    },
                    at=now,
                )
            ],
        )
        await pages.audit_in(
            session, request, "contact_retried", debtor_id=contact.debtor_id, contact_id=contact.id
        )
        ref = await action_store.debtor_ref(session, contact.debtor_id)
    await _enqueue(request, [contact.id])
    raise _done(ref, "contact_retried")


@routes.post("/console/actions/settle", name="console_settle")
async def settle(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    contact_id = _required(form, "contact_id", 26)
    outcome = _text(form, "outcome")
    if outcome not in SETTLEMENT_OUTCOMES:
        raise _bad("outcome must be 'sent' (the carrier took it) or 'not_sent' (it never left).")
    note = note_of(form, required=False)
    now = utcnow()
    async with write_session(request.app[SESSIONS]) as session:
        contact, _case = await _contact_and_case(session, contact_id)
        if not needs_settlement(contact):
            raise _stale(
                f"This contact is {_status_of(contact)}: it does not wait to be settled (already settled, "
                "or a carrier report settled it)."
            )
        status = contact.status
        if outcome == "sent":
            moved = await action_store.settle_contact(
                session,
                contact.id,
                from_status=status,
                from_reasons=SETTLEMENT_REASONS,
                to_status="sent",
                reason=CONFIRMED_SENT,
                now=now,
            )
            # an attempt still "sending" is the one the carrier took; one already "sent" stays as it is
            attempts = (
                await action_store.settle_attempts(
                    session,
                    contact.id,
                    from_status="sending",
                    to_status="sent",
                    reason=CONFIRMED_SENT,
                    now=now,
                )
                if moved
                else []
            )
            new_status = "sent"
        else:
            moved = await action_store.settle_contact(
                session,
                contact.id,
                from_status=status,
                from_reasons=SETTLEMENT_REASONS,
                to_status="queued",
                reason=CONFIRMED_NOT_SENT,
                now=now,
                send_at=None,
            )
            # the attempt that never reached the debtor: failed, so that it counts for nothing (R6, reports)
            # and a late carrier report cannot move it on
            attempts = (
                await action_store.settle_attempts(
                    session,
                    contact.id,
                    from_status=status,
                    to_status="failed",
                    reason=CONFIRMED_NOT_SENT,
                    now=now,
                )
                if moved
                else []
            )
            new_status = "queued"
        if not moved:
            raise _stale("This contact was settled just now by someone else; reload the page.")
        await contact_log.add_timeline(
            session,
            [
                pages.operator_event(
                    request,
                    action="settled",
                    debtor_id=contact.debtor_id,
                    case_id=contact.case_id,
                    contact_id=contact.id,
                    attempt_id=attempts[-1] if attempts else None,
                    status=new_status,
                    detail={
                        "outcome": outcome,
                        "note": note,
                        "reason": CONFIRMED_SENT if outcome == "sent" else CONFIRMED_NOT_SENT,
                        "previous_status": status,
                        "previous_reason": contact.status_reason,
                        "attempts": attempts,
                    },
                    at=now,
                )
            ],
        )
        await pages.audit_in(
            session, request, "settled", debtor_id=contact.debtor_id, contact_id=contact.id, outcome=outcome
        )
        ref = await action_store.debtor_ref(session, contact.debtor_id)
    if outcome == "not_sent":
        await _enqueue(request, [contact.id])
    raise _done(ref, "settled")


# ---- addresses ----


def address_of(form: Form) -> dict[str, object]:
    """The postal address in the form, each field checked (400 naming the field and its rule)."""
    given: list[str] = []
    for value in form.getall("lines", []):
        if isinstance(value, str):
            given.extend(value.splitlines())  # one textarea, or one field per line
    lines = [line.strip() for line in given if line.strip()]
    if not lines:
        raise _bad("lines: at least one address line is required.")
    if len(lines) > _MAX_LINES:
        raise _bad(f"lines: at most {_MAX_LINES} address lines (there are {len(lines)}).")
    for number, line in enumerate(lines, 1):
        if len(line) > _LINE_MAX_CHARS:
            raise _bad(f"lines: line {number} is longer than {_LINE_MAX_CHARS} characters.")
    country = (_text(form, "country") or "NO").upper()
    if not _COUNTRY.fullmatch(country):
        raise _bad("country must be a two-letter country code (ISO 3166-1), e.g. NO.")
    try:
        postal_code = validate_postal_code(_text(form, "postal_code"), country)
    except ValueError as exc:
        raise _bad(f"postal_code: {exc}.") from None
    city = _text(form, "city").upper()
    if not city:
        raise _bad("city is required.")
    if len(city) > _LINE_MAX_CHARS:
        raise _bad(f"city is at most {_LINE_MAX_CHARS} characters.")
    return {"lines": lines, "postal_code": postal_code, "city": city, "country": country}


@routes.post("/console/actions/correct-address", name="console_correct_address")
async def correct_address(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    ref = _required(form, "debtor_ref", 26)
    address = address_of(form)
    provenance = _text(form, "provenance")
    if provenance not in ADDRESS_PROVENANCE:
        raise _bad(
            "provenance is required: say how you learned of the address ("
            + ", ".join(ADDRESS_PROVENANCE)
            + ")."
        )
    note = note_of(form, required=provenance == "other", why=" when the provenance is 'other'")
    task_id = _text(form, "task_id")
    operator = pages.me(request)
    formatted = format_address(address)
    now = utcnow()
    resent: list[str] = []
    async with write_session(request.app[SESSIONS]) as session:
        debtor = await action_store.debtor_by_ref(session, ref)
        if debtor is None:
            raise web.HTTPNotFound(text=f"There is no debtor {ref!r}. {_NOTHING_CHANGED}")
        task = await action_store.get_task(session, task_id) if task_id else None
        if task_id and (task is None or task.debtor_id != debtor.id):
            raise _bad("task_id: this debtor has no task with that id.")
        if task is not None and task.resolved_at is not None:
            who = (task.resolution or {}).get("operator", "someone")
            raise _stale(f"The task was already resolved by {who} at {pages.oslo(task.resolved_at)}.")
        if formatted in (debtor.unusable_addresses or []):
            raise _stale(
                "Mail to this address already came back: no letter goes to it again. Check the address "
                "with the debtor."
            )
        await action_store.put_address_first(
            session,
            debtor.id,
            {
                **address,
                "source": "operator",
                "operator": operator.username,
                "provenance": provenance,
                "note": note,
                "found_at": now.isoformat(),
            },
            now=now,
        )
        twice: list[str] = []
        for contact in await action_store.returned_contacts_in_open_cases(session, debtor.id):
            if await contact_log.count_returned_attempts(session, contact.id, "letter") >= 2:
                twice.append(contact.id)  # never a third letter
                continue
            if await contact_log.reopen_returned_contact(session, contact.id, reason=RESENT_REASON, now=now):
                resent.append(contact.id)
                await contact_log.log_contact_event(
                    session,
                    contact,
                    type=RESENT_REASON,
                    status="queued",
                    source="operator",
                    detail={
                        "reason": RESENT_REASON,
                        "source": "operator",
                        "operator": operator.username,
                        "address": formatted,
                    },
                    at=now,
                )
        if task is not None and not await action_store.resolve_task(
            session,
            task.id,
            resolution={"operator": operator.username, "outcome": "address_corrected", "note": note},
            now=now,
        ):
            raise _stale("The task was resolved just now by someone else; reload the page.")
        await contact_log.add_timeline(
            session,
            [
                pages.operator_event(
                    request,
                    action="address_corrected",
                    debtor_id=debtor.id,
                    case_id=task.case_id if task is not None else None,
                    detail={
                        "address": formatted,
                        "provenance": provenance,
                        "note": note,
                        "resent": resent,
                        "not_resent_returned_twice": twice,
                        "task_id": task.id if task is not None else None,
                    },
                    at=now,
                )
            ],
        )
        await pages.audit_in(
            session,
            request,
            "address_corrected",
            debtor_id=debtor.id,
            provenance=provenance,
            resent=len(resent),
            task_id=task.id if task is not None else None,
        )
    await _enqueue(request, resent)
    raise _done(ref, "address_corrected")
