"""The debtor's self-service page behind a chat link: the claim and how to pay, or, behind the link of an
address request, only a form for a new postal address.

Public (the token is the credential). A link that is unknown, expired or revoked gets the same plain page and
reveals nothing, not even whether it ever existed. Every opening is recorded in the debtor's timeline.

An address given on the form is stored on the debtor with its provenance (``source: "debtor"``), the case's
letters that came back are sent again to it (once each: a letter returned twice is never sent a third time),
and the link is spent. The page never shows an address we hold: whoever holds the link may not be the debtor.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any

from aiohttp import web
from jinja2 import FileSystemLoader, StrictUndefined, select_autoescape
from jinja2.sandbox import SandboxedEnvironment
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from orchestrator import case_events, chat_links, queue
from orchestrator import contact_log as store
from orchestrator.appkeys import REDIS, SESSIONS, SETTINGS
from orchestrator.db import write_session
from orchestrator.identifiers import redact_national_ids
from orchestrator.message_context import COST_LABELS_NB
from orchestrator.models import ChatLink, utcnow
from orchestrator.policy.decide import format_address
from orchestrator.rendering import FILTERS, templates_root
from orchestrator.schemas import Address

routes = web.RouteTableDef()
_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Robots-Tag": "noindex, nofollow",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'",
}
_env = SandboxedEnvironment(
    loader=FileSystemLoader(templates_root() / "selfservice"),
    undefined=StrictUndefined,
    autoescape=select_autoescape(["html"]),
)
_env.filters.update(FILTERS)


def _page(name: str, status: int, **context: Any) -> web.Response:
    body = _env.get_template(name).render(**context)
    return web.Response(text=body, status=status, content_type="text/html", headers=_HEADERS)


@routes.get(chat_links.PATH_PREFIX + "{token}", name="self_service")
async def self_service(request: web.Request) -> web.Response:
    token = request.match_info["token"]
    now = utcnow()
    async with write_session(request.app[SESSIONS]) as session:
        link = await store.find_chat_link(session, chat_links.hash_token(token))
        if link is None or link.revoked_at is not None or link.expires_at <= now:
            # Same answer for unknown, expired and revoked: nothing to learn from probing.
            return _page("invalid.html", 410)
        if link.purpose == "address":
            return await _open_address_form(session, link, now)
        if link.purpose != "case":  # an e-mail's unsubscribe link (orchestrator.unsubscribe) opens no claim
            return _page("invalid.html", 410)
        case = await store.get_case(session, link.case_id)
        assert case is not None
        await store.record_chat_link_open(session, link.id, now=now)
        await store.add_timeline(
            session,
            [
                store.timeline_row(
                    debtor_id=link.debtor_id,
                    case_id=link.case_id,
                    contact_id=link.contact_id,
                    type="self_service_opened",
                    source="self_service",
                    detail={"link_id": link.id, "opened": link.opened_count + 1},
                    at=now,
                )
            ],
        )
    details = case.details
    costs = [
        {"label": COST_LABELS_NB.get(c["kind"], c["kind"]), "amount": Decimal(c["amount"])}
        for c in details.get("costs", [])
    ]
    principal = Decimal(details["principal"])
    return _page(
        "case.html",
        200,
        creditor=details["creditor"]["name"],
        reference=details["reference"],
        principal=principal,
        costs=costs,
        total=principal + sum((c["amount"] for c in costs), Decimal("0")),
        due_date=date.fromisoformat(details["due_date"]),
        kid=details.get("kid"),
        account_number=details.get("account_number"),
        case_open=case.status == "open",
        dispute_action=f"{chat_links.PATH_PREFIX}{token}/dispute",
    )


def _usable(link: ChatLink | None, now: datetime) -> bool:
    return link is not None and link.revoked_at is None and link.expires_at > now


async def _open_address_form(session: AsyncSession, link: ChatLink, now: datetime) -> web.Response:
    await store.record_chat_link_open(session, link.id, now=now)
    await store.add_timeline(
        session,
        [
            store.timeline_row(
                debtor_id=link.debtor_id,
                case_id=link.case_id,
                contact_id=link.contact_id,
                type="self_service_opened",
                source="self_service",
                detail={"link_id": link.id, "opened": link.opened_count + 1, "page": "address"},
                at=now,
            )
        ],
    )
    return _page("address.html", 200, errors=[], form={})


def _form_errors(error: ValidationError) -> list[str]:
    labels = {"lines": "Adresse", "postal_code": "Postnummer", "city": "Poststed"}
    return [f"{labels.get(str(e['loc'][0]), str(e['loc'][0]))}: {e['msg']}" for e in error.errors()]


@routes.post(chat_links.PATH_PREFIX + "{token}", name="self_service_address")
async def self_service_address(request: web.Request) -> web.Response:
    token = request.match_info["token"]
    form = await request.post()
    fields = {k: str(form.get(k, "")).strip() for k in ("line1", "line2", "postal_code", "city")}
    now = utcnow()
    async with request.app[SESSIONS]() as session:
        link = await store.find_chat_link(session, chat_links.hash_token(token))
    if not _usable(link, now) or link is None or link.purpose != "address":
        return _page("invalid.html", 410)
    try:
        address = Address.model_validate(
            {
                "lines": [line for line in (fields["line1"], fields["line2"]) if line],
                "postal_code": fields["postal_code"],
                "city": fields["city"].upper(),
                "country": "NO",
            }
        )
    except ValidationError as exc:
        return _page("address.html", 422, errors=_form_errors(exc), form=fields)
    given = address.model_dump()
    resent: list[str] = []
    async with write_session(request.app[SESSIONS]) as session:
        fresh = await store.find_chat_link(session, chat_links.hash_token(token))
        if not _usable(fresh, now):  # spent by a parallel submission
            return _page("invalid.html", 410)
        await store.revoke_link(session, link.id, now=now)
        await store.add_registry_address(
            session, link.debtor_id, {**given, "source": "debtor", "found_at": now.isoformat()}, now=now
        )
        await store.add_timeline(
            session,
            [
                store.timeline_row(
                    debtor_id=link.debtor_id,
                    case_id=link.case_id,
                    contact_id=link.contact_id,
                    type="address_given",
                    source="self_service",
                    detail={"address": format_address(given), "link_id": link.id},
                    at=now,
                )
            ],
        )
        for contact in await store.returned_contacts(session, link.case_id):
            if await store.count_returned_attempts(session, contact.id, "letter") >= 2:
                continue  # never a third letter
            if await store.reopen_returned_contact(
                session, contact.id, reason="address_updated_resent", now=now
            ):
                resent.append(contact.id)
                await store.log_contact_event(
                    session,
                    contact,
                    type="address_updated_resent",
                    status="queued",
                    source="self_service",
                    detail={
                        "reason": "address_updated_resent",
                        "source": "debtor",
                        "address": format_address(given),
                    },
                    at=now,
                )
    for contact_id in resent:
        await queue.enqueue_contact(request.app[REDIS], request.app[SETTINGS].queue_name, contact_id)
    return _page("address_saved.html", 200)


@routes.post(chat_links.PATH_PREFIX + "{token}/dispute", name="self_service_dispute")
async def self_service_dispute(request: web.Request) -> web.Response:
    """The debtor objects (R4): the case is held at once, whatever is queued or scheduled for it."""
    token = request.match_info["token"]
    form = await request.post()
    # Kept for the operator, never with a national id in it (R9).
    note = redact_national_ids(str(form.get("note", "")).strip())[:2000]
    now = utcnow()
    async with write_session(request.app[SESSIONS]) as session:
        link = await store.find_chat_link(session, chat_links.hash_token(token))
        if not _usable(link, now) or link is None or link.purpose != "case":
            return _page("invalid.html", 410)
        case = await store.get_case(session, link.case_id)
        assert case is not None
        if case.status == "open":
            await case_events.apply(
                session,
                case,
                type="dispute_raised",
                at=now,
                data={"note": note} if note else {},
                source="self_service",
                now=now,
            )
    return _page("dispute_received.html", 200)
