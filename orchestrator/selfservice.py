"""The debtor's self-service page behind a chat link: the claim and how to pay, or, behind the link of an
address request, only a form for a new postal address.

Public (the token is the credential). A link that is unknown, expired or revoked gets the same plain page and
reveals nothing, not even whether it ever existed. Every opening is recorded in the debtor's timeline.

The page speaks the language of the contact that issued the link (nb, nn or en; bokmål when no contact did):
one template per page (``templates/selfservice/<page>.html``) takes its words from the language's text module
(``templates/selfservice/_text/<language>.html``); amounts and dates are written the language's way (filters
``money`` and ``long_date``). A page that cannot know its reader (an unknown link) is in bokmål with a line in
English.

An address given on the form is stored on the debtor with its provenance (``source: "debtor"``), the case's
letters that came back are sent again to it (once each: a letter returned twice is never sent a third time),
and the link is spent. The page never shows an address we hold: whoever holds the link may not be the debtor.

Commitment (the ``commitment`` tone variant points here): on the page of an open case the debtor may choose
the date they will pay (today up to the horizon) or propose a monthly payment plan
(:mod:`orchestrator.commitments`); each is recorded as a case event from ``self_service``. One plan per case:
a second proposal shows the first. Like the objection, these forms do nothing for a link that no longer works
or a case that is held or closed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Final

from aiohttp import web
from jinja2 import FileSystemLoader, StrictUndefined, pass_context, select_autoescape
from jinja2.runtime import Context
from jinja2.sandbox import SandboxedEnvironment
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from orchestrator import case_events, chat_links, commitments, queue
from orchestrator import contact_log as store
from orchestrator.appkeys import REDIS, SESSIONS, SETTINGS
from orchestrator.db import write_session
from orchestrator.identifiers import redact_national_ids
from orchestrator.models import Case, CaseEvent, ChatLink, utcnow
from orchestrator.policy.decide import format_address
from orchestrator.policy.rules import rules_for
from orchestrator.rendering import FILTERS, cost_label, date_en, date_no, nok, nok_en, templates_root
from orchestrator.schemas import Address

__all__ = ["LANGUAGES", "link_language", "render", "routes"]

LANGUAGES: Final = ("nb", "nn", "en")
DEFAULT_LANGUAGE: Final = "nb"
_MONEY: Final[Mapping[str, Callable[..., str]]] = {"nb": nok, "nn": nok, "en": nok_en}
_DATES: Final[Mapping[str, Callable[..., str]]] = {"nb": date_no, "nn": date_no, "en": date_en}

routes = web.RouteTableDef()
_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Robots-Tag": "noindex, nofollow",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'",
}


@pass_context
def _money(context: Context, value: Any) -> str:
    return _MONEY.get(context.get("language", DEFAULT_LANGUAGE), nok)(value)


@pass_context
def _long_date(context: Context, value: Any) -> str:
    return _DATES.get(context.get("language", DEFAULT_LANGUAGE), date_no)(value)


_env = SandboxedEnvironment(
    loader=FileSystemLoader(templates_root() / "selfservice"),
    undefined=StrictUndefined,
    autoescape=select_autoescape(["html"]),
)
_env.filters.update(FILTERS)
_env.filters.update({"money": _money, "long_date": _long_date})


def render(name: str, language: str | None = None, **context: Any) -> str:
    """A self-service page in ``language``; without one, in bokmål with a line in English (if the page has
    one): for pages that cannot know who reads them."""
    if language is not None:
        context["language"] = language if language in LANGUAGES else DEFAULT_LANGUAGE
    return _env.get_template(name).render(**context)


def _page(name: str, status: int, language: str | None = None, **context: Any) -> web.Response:
    body = render(name, language, **context)
    return web.Response(text=body, status=status, content_type="text/html", headers=_HEADERS)


def _invalid(language: str | None = None) -> web.Response:
    """The page of a link that does not work. Without a language (unknown, expired, revoked: nothing to
    learn from probing) it is always the same page."""
    return _page("invalid.html", 410, language)


async def link_language(session: AsyncSession, link: ChatLink) -> str:
    """The language of the contact that issued the link; bokmål when none did."""
    if link.contact_id is None:
        return DEFAULT_LANGUAGE
    contact = await store.get_contact(session, link.contact_id)
    if contact is None or contact.language not in LANGUAGES:
        return DEFAULT_LANGUAGE
    return contact.language


def _usable(link: ChatLink | None, now: datetime) -> bool:
    return link is not None and link.revoked_at is None and link.expires_at > now


async def _case_link(session: AsyncSession, token: str, now: datetime) -> tuple[ChatLink, Case] | None:
    """The link and its case, if ``token`` is a claim link that still works."""
    link = await store.find_chat_link(session, chat_links.hash_token(token))
    if link is None or not _usable(link, now) or link.purpose != "case":
        return None
    case = await store.get_case(session, link.case_id)
    assert case is not None
    return link, case


async def _open_case(session: AsyncSession, token: str, now: datetime) -> tuple[Case, str] | web.Response:
    """The case and page language of a claim link that still works on an open case; else the invalid page
    (a commitment is recorded only while the case is open)."""
    found = await _case_link(session, token, now)
    if found is None:
        return _invalid()
    link, case = found
    language = await link_language(session, link)
    if case.status != "open":
        return _invalid(language)
    return case, language


def _claim(case: Case, language: str) -> dict[str, Any]:
    details = case.details
    costs: list[dict[str, Any]] = [
        {"label": cost_label(c["kind"], language), "amount": Decimal(c["amount"])}
        for c in details.get("costs", [])
    ]
    principal = Decimal(details["principal"])
    return {
        "creditor": details["creditor"]["name"],
        "reference": details["reference"],
        "principal": principal,
        "costs": costs,
        "total": principal + sum((c["amount"] for c in costs), Decimal("0")),
        "due_date": date.fromisoformat(details["due_date"]),
        "kid": details.get("kid"),
        "account_number": details.get("account_number"),
    }


def _recorded_plan(event: CaseEvent) -> dict[str, Any]:
    return {
        "installments": int(event.data["installments"]),
        "monthly_amount": Decimal(event.data["monthly_amount"]),
    }


async def _case_page(
    session: AsyncSession,
    case: Case,
    token: str,
    language: str,
    now: datetime,
    *,
    status: int = 200,
    date_error: commitments.DateProblem | None = None,
    plan_error: bool = False,
) -> web.Response:
    claim = _claim(case, language)
    chosen = await store.latest_self_service_event(session, case.id, "payment_date_chosen")
    plan = await store.latest_self_service_event(session, case.id, "payment_plan_agreed")
    path = f"{chat_links.PATH_PREFIX}{token}"
    return _page(
        "case.html",
        status,
        language,
        **claim,
        case_open=case.status == "open",
        actions={
            "dispute": f"{path}/dispute",
            "payment_date": f"{path}/payment-date",
            "payment_plan": f"{path}/payment-plan",
        },
        window=commitments.date_window(now),
        chosen_date=date.fromisoformat(chosen.data["date"]) if chosen else None,
        date_error=date_error,
        date_value=date_error.given.isoformat() if date_error and date_error.given else "",
        plan=_recorded_plan(plan) if plan else None,
        plan_choices=commitments.installment_choices(claim["total"]),
        plan_error=plan_error,
    )


@routes.get(chat_links.PATH_PREFIX + "{token}", name="self_service")
async def self_service(request: web.Request) -> web.Response:
    token = request.match_info["token"]
    now = utcnow()
    async with write_session(request.app[SESSIONS]) as session:
        link = await store.find_chat_link(session, chat_links.hash_token(token))
        if link is None or link.revoked_at is not None or link.expires_at <= now:
            # Same answer for unknown, expired and revoked: nothing to learn from probing.
            return _invalid()
        if link.purpose == "address":
            return await _open_address_form(session, link, now)
        if link.purpose != "case":  # an e-mail's unsubscribe link (orchestrator.unsubscribe) opens no claim
            return _invalid()
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
        return await _case_page(session, case, token, await link_language(session, link), now)


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
    return _page("address.html", 200, await link_language(session, link), errors=[], form={})


_ADDRESS_FIELDS: Final = ("lines", "postal_code", "city")


def _form_errors(error: ValidationError) -> list[str]:
    """The address fields that are wrong, in the form's order (the page words it in its language)."""
    wrong = {str(e["loc"][0]) for e in error.errors() if e["loc"]}
    return [field for field in _ADDRESS_FIELDS if field in wrong] or ["lines"]


@routes.post(chat_links.PATH_PREFIX + "{token}", name="self_service_address")
async def self_service_address(request: web.Request) -> web.Response:
    token = request.match_info["token"]
    form = await request.post()
    fields = {k: str(form.get(k, "")).strip() for k in ("line1", "line2", "postal_code", "city")}
    now = utcnow()
    async with request.app[SESSIONS]() as session:
        link = await store.find_chat_link(session, chat_links.hash_token(token))
        if not _usable(link, now) or link is None or link.purpose != "address":
            return _invalid()
        language = await link_language(session, link)
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
        return _page("address.html", 422, language, errors=_form_errors(exc), form=fields)
    given = address.model_dump()
    resent: list[str] = []
    async with write_session(request.app[SESSIONS]) as session:
        fresh = await store.find_chat_link(session, chat_links.hash_token(token))
        if not _usable(fresh, now):  # spent by a parallel submission
            return _invalid()
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
    return _page("address_saved.html", 200, language)


@routes.post(chat_links.PATH_PREFIX + "{token}/dispute", name="self_service_dispute")
async def self_service_dispute(request: web.Request) -> web.Response:
    """The debtor objects (R4): the case is held at once, whatever is queued or scheduled for it."""
    token = request.match_info["token"]
    form = await request.post()
    # Kept for the operator, never with a national id in it (R9).
    note = redact_national_ids(str(form.get("note", "")).strip())[:2000]
    now = utcnow()
    async with write_session(request.app[SESSIONS]) as session:
        found = await _case_link(session, token, now)
        if found is None:
            return _invalid()
        link, case = found
        language = await link_language(session, link)
        if case.status == "open":
            await case_events.apply(
                session,
                case,
                type="dispute_raised",
                at=now,
                data={"note": note} if note else {},
                source="self_service",
                now=now,
                holds=rules_for(request.app[SETTINGS].rules_file).holds,
            )
    return _page("dispute_received.html", 200, language)


@routes.post(chat_links.PATH_PREFIX + "{token}/payment-date", name="self_service_payment_date")
async def self_service_payment_date(request: web.Request) -> web.Response:
    """The debtor says by which date they will pay (commitment): today up to the horizon, else the page again
    with what is wrong (422) and nothing recorded."""
    token = request.match_info["token"]
    form = await request.post()
    raw = str(form.get("date", ""))[:40]  # never stored or shown unless it is a date
    now = utcnow()
    async with write_session(request.app[SESSIONS]) as session:
        opened = await _open_case(session, token, now)
        if isinstance(opened, web.Response):
            return opened
        case, language = opened
        chosen = commitments.parse_payment_date(raw, commitments.date_window(now))
        if isinstance(chosen, commitments.DateProblem):
            return await _case_page(session, case, token, language, now, status=422, date_error=chosen)
        await case_events.apply(
            session,
            case,
            type="payment_date_chosen",
            at=now,
            data={"date": chosen.isoformat()},
            source="self_service",
            now=now,
        )
    claim = _claim(case, language)
    return _page(
        "payment_date_chosen.html",
        200,
        language,
        chosen=chosen,
        total=claim["total"],
        creditor=claim["creditor"],
        account_number=claim["account_number"],
        kid=claim["kid"],
        back=f"{chat_links.PATH_PREFIX}{token}",
    )


@routes.post(chat_links.PATH_PREFIX + "{token}/payment-plan", name="self_service_payment_plan")
async def self_service_payment_plan(request: web.Request) -> web.Response:
    """The debtor proposes a monthly payment plan (commitment), recorded as agreed with ``proposed_by:
    debtor``. One per case: once one is recorded, a proposal shows it and records nothing."""
    token = request.match_info["token"]
    form = await request.post()
    raw = str(form.get("installments", ""))[:10]
    now = utcnow()
    async with write_session(request.app[SESSIONS]) as session:
        opened = await _open_case(session, token, now)
        if isinstance(opened, web.Response):
            return opened
        case, language = opened
        claim = _claim(case, language)
        page = {
            "creditor": claim["creditor"],
            "account_number": claim["account_number"],
            "kid": claim["kid"],
            "back": f"{chat_links.PATH_PREFIX}{token}",
        }
        # Two proposals at once must not both find no plan (PostgreSQL; SQLite writes are serial already).
        await store.lock_debtor(session, case.debtor_id)
        existing = await store.latest_self_service_event(session, case.id, "payment_plan_agreed")
        if existing is not None:
            proposed_on = existing.at.astimezone(commitments.ZONE).date()
            return _page(
                "payment_plan_saved.html",
                200,
                language,
                plan=_recorded_plan(existing),
                proposed_on=proposed_on,
                **page,
            )
        plan = commitments.parse_installments(raw, claim["total"])
        if plan is None:
            return await _case_page(session, case, token, language, now, status=422, plan_error=True)
        await case_events.apply(
            session,
            case,
            type="payment_plan_agreed",
            at=now,
            data={
                "installments": plan.installments,
                "monthly_amount": f"{plan.monthly_amount:.2f}",
                "proposed_by": "debtor",
            },
            source="self_service",
            now=now,
        )
    return _page("payment_plan_saved.html", 200, language, plan=plan, proposed_on=None, **page)
