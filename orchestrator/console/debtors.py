"""A debtor's page (who they are, how they can be reached, their cases, contacts, open tasks and the whole
timeline) and a contact's page (its decision and every attempt with the carrier's events).

The timeline is shown oldest first, as a complaints board reads it, :data:`TIMELINE_PAGE` entries a page with
a link to the next. Every entry is put in plain words by :mod:`orchestrator.console.timeline_words`, so the
template only lays them out: the decision with its reasons and the channels it rejected and why, each attempt
and carrier report, replies, self-service, returned-mail lookups, holds and operators' actions.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, Final

from aiohttp import web

from orchestrator import contact_log
from orchestrator.appkeys import SESSIONS
from orchestrator.console import actions, debtor_store, pages
from orchestrator.console.timeline_words import (
    Entry,
    cap,
    channel_words,
    decision_lines,
    entry,
    plain,
    status_class,
    when_text,
    words,
)
from orchestrator.identifiers import is_mobile
from orchestrator.models import Attempt, Case, Contact, Debtor, TimelineEvent
from orchestrator.policy.decide import format_address

routes = web.RouteTableDef()
ROLES: Final[dict[str, str]] = {"console_debtor": "viewer", "console_contact": "viewer"}

TIMELINE_PAGE: Final = 500
_EVENT_ID: Final = re.compile(r"[0-9A-HJKMNP-TV-Z]{26}")  # a ULID: where the next page of the timeline starts
CONTACTS_SHOWN: Final = 200

# what ``?done=<code>`` says after an operator's action (the action handlers redirect here)
DONE: Final = {
    "dispute_resolved": "The dispute is resolved. Contacts held by it go out again as the rules allow.",
    "case_held": "The case is on hold. Nothing more is sent for it until the hold is released.",
    "hold_released": "The hold is released. Contacts held by it go out again as the rules allow.",
    "contact_retried": "The contact will be tried again; the orchestrator decides the channel anew.",
    "settled": "The contact is settled as you said.",
    "address_corrected": "The postal address is stored with its provenance; the next letter uses it.",
}

# ------------------------------------------------------------------------------------------- the debtor


@dataclass(frozen=True)
class Point:
    """One way to reach the debtor, and why it may not work."""

    kind: str
    value: str
    unusable: bool = False
    opted_out: str = ""
    evidence: tuple[str, ...] = ()


def contact_points(debtor: Debtor) -> list[Point]:
    points = debtor.contact_points or {}
    unusable = {str(u).lower() for u in debtor.unusable_addresses or []}
    opted = {str(o.get("reach")): o for o in debtor.opted_out or []}

    def opt_out(reach: str) -> str:
        item = opted.get(reach)
        if item is None:
            return ""
        return f"opted out ({words(item.get('source'))}, {when_text(item.get('at'))})"

    out = [
        Point("Postal address", plain(a), format_address(a).lower() in unusable)
        for a in points.get("addresses", [])
    ]
    for phone in points.get("phones", []):
        mobile = is_mobile(phone)
        out.append(
            Point(
                "Mobile" if mobile else "Phone (not a mobile: no SMS)",
                phone,
                phone.lower() in unusable,
                opt_out("mobile") if mobile else "",
            )
        )
    evidence = points.get("electronic_notice_evidence", [])
    for email in points.get("emails", []):
        shown = tuple(
            f"{words(item.get('basis'))}, observed {when_text(item.get('observed_at'))}"
            for item in evidence
            if str(item.get("address", "")).lower() == email.lower()
        )
        out.append(Point("E-mail", email, email.lower() in unusable, opt_out("email"), shown))
    return out


@dataclass(frozen=True)
class FoundAddress:
    """An address found after returned mail (registry, Posten) or given by an operator; its provenance."""

    address: str
    source: str
    found_at: str
    by: str
    note: str
    unusable: bool


def found_addresses(debtor: Debtor) -> list[FoundAddress]:
    unusable = {str(u).lower() for u in debtor.unusable_addresses or []}
    out = []
    for item in debtor.registry_addresses or []:
        source = str(item.get("provenance") or item.get("source") or "")
        out.append(
            FoundAddress(
                address=plain({k: item[k] for k in ("lines", "postal_code", "city", "country") if k in item}),
                source=actions.ADDRESS_PROVENANCE.get(source, source),
                found_at=when_text(item.get("found_at") or item.get("at")),
                by=plain(item.get("operator") or item.get("by")),
                note=plain(item.get("note")),
                unusable=format_address(item).lower() in unusable,
            )
        )
    return out


@dataclass(frozen=True)
class CaseView:
    case: Case
    reference: str
    creditor_organisation_number: str
    principal: str
    costs: list[tuple[str, str]]
    total: str
    interest: str
    due_date: str
    kid: str
    account_number: str
    actions: list[str]


def _decimal(value: object) -> Decimal:
    try:
        return Decimal(str(value))
    except (InvalidOperation, ValueError):
        return Decimal(0)


def case_view(case: Case) -> CaseView:
    details = case.details or {}
    costs = [(words(c.get("kind")), pages.money(_decimal(c.get("amount")))) for c in details.get("costs", [])]
    total = _decimal(details.get("principal")) + sum(
        (_decimal(c.get("amount")) for c in details.get("costs", [])), Decimal(0)
    )
    interest = details.get("interest") or {}
    return CaseView(
        case=case,
        reference=plain(details.get("reference")),
        creditor_organisation_number=plain((details.get("creditor") or {}).get("organisation_number")),
        principal=pages.money(_decimal(details.get("principal"))),
        costs=costs,
        total=pages.money(total),
        interest=f"{interest.get('rate_percent', '')} % from {interest.get('from', '')}" if interest else "",
        due_date=plain(details.get("due_date")),
        kid=plain(details.get("kid")),
        account_number=plain(details.get("account_number")),
        actions=actions.case_actions(case),
    )


def _not_found(what: str) -> web.HTTPNotFound:
    return web.HTTPNotFound(text=f"There is no {what} with this id in the contact log.")


@routes.get("/console/debtors/{ref}", name="console_debtor")
async def console_debtor(request: web.Request) -> web.Response:
    ref = request.match_info["ref"]
    after = request.query.get("after") or None
    if after is not None and not _EVENT_ID.fullmatch(after):
        raise web.HTTPBadRequest(text="The timeline's page is named by an entry's id; this is not one.")
    async with request.app[SESSIONS]() as session:
        debtor = await debtor_store.debtor_by_ref(session, ref)
        if debtor is None:
            raise _not_found("debtor")
        cases = await debtor_store.cases_of(session, debtor.id)
        contacts, contacts_total = await debtor_store.contacts_of(session, debtor.id, limit=CONTACTS_SHOWN)
        tasks = await debtor_store.open_tasks_of(session, debtor.id)
        events, more = await debtor_store.timeline_page(
            session, debtor.id, after_id=after, limit=TIMELINE_PAGE
        )
    await pages.audit(request, "view_timeline", debtor_id=debtor.id, page_after=after)
    done = request.query.get("done", "")
    return pages.render(
        request,
        "debtor.html",
        debtor=debtor,
        preferred_channel=channel_words((debtor.contact_points or {}).get("preferred_channel")),
        points=contact_points(debtor),
        found=found_addresses(debtor),
        cases=[case_view(c) for c in cases],
        contacts=contacts,
        contacts_total=contacts_total,
        tasks=tasks,
        timeline=[entry(e) for e in events],
        timeline_after=after,
        timeline_next=events[-1].id if more and events else None,
        timeline_page=TIMELINE_PAGE,
        done=DONE.get(done, ""),
        # from the task queue's "correct the address" link: the form then closes that task too
        task_id=next((t.id for t in tasks if t.id == request.query.get("task_id")), None),
        provenance=actions.ADDRESS_PROVENANCE,
        words=words,
        channel_words=channel_words,
        status_class=status_class,
        cap=cap,
    )


# ------------------------------------------------------------------------------------------- a contact


@dataclass
class AttemptView:
    attempt: Attempt
    events: list[Entry]
    assignment: list[tuple[str, str]]
    carrier: list[tuple[str, str]]  # what the carrier said when it took the message


def _pairs(values: dict[str, Any] | None) -> list[tuple[str, str]]:
    return [
        (cap(key.replace("_", " ")), when_text(value) if key.endswith("_at") else plain(value))
        for key, value in (values or {}).items()
    ]


def decision_view(contact: Contact) -> Entry | None:
    """The contact's decision as the timeline shows one (its stored JSON, with the inputs left out)."""
    if not contact.decision:
        return None
    view = Entry(
        id=contact.id,
        at=contact.updated_at,
        type="decision",
        family="",
        source="orchestrator",
        status=contact.status,
        contact_id=contact.id,
        attempt_id=None,
    )
    detail = dict(contact.decision)
    decision_lines(view, detail)
    for key, value in detail.items():
        view.fact(cap(key.replace("_", " ")), value, when=key.endswith("_at"))
    return view


def attempt_views(attempts: Iterable[Attempt], events: dict[str, list[TimelineEvent]]) -> list[AttemptView]:
    return [
        AttemptView(a, [entry(e) for e in events.get(a.id, [])], _pairs(a.assignment), _pairs(a.detail))
        for a in attempts
    ]


@routes.get("/console/contacts/{contact_id}", name="console_contact")
async def console_contact(request: web.Request) -> web.Response:
    contact_id = request.match_info["contact_id"]
    async with request.app[SESSIONS]() as session:
        contact = await contact_log.get_contact(session, contact_id)
        if contact is None:
            raise _not_found("contact")
        debtor = await debtor_store.debtor_by_id(session, contact.debtor_id)
        case = await contact_log.get_case(session, contact.case_id)
        attempts = await contact_log.get_attempts(session, contact.id)
        events = await contact_log.get_events_for_attempts(session, [a.id for a in attempts])
    assert debtor is not None  # a contact's debtor is a foreign key
    await pages.audit(request, "view_contact", debtor_id=debtor.id, contact_id=contact.id)
    return pages.render(
        request,
        "contact.html",
        contact=contact,
        debtor=debtor,
        case=case,
        decision=decision_view(contact),
        attempts=attempt_views(attempts, events),
        may_retry=actions.may_retry(contact),
        needs_settlement=actions.needs_settlement(contact),
        words=words,
        channel_words=channel_words,
        status_class=status_class,
        cap=cap,
    )
