"""The debtor's self-service page behind a chat link: the claim and how to pay.

Public (the token is the credential). A link that is unknown, expired or revoked gets the same plain page and
reveals nothing, not even whether it ever existed. Every opening is recorded in the debtor's timeline.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

from aiohttp import web
from jinja2 import FileSystemLoader, StrictUndefined, select_autoescape
from jinja2.sandbox import SandboxedEnvironment

from orchestrator import chat_links
from orchestrator import contact_log as store
from orchestrator.appkeys import SESSIONS
from orchestrator.db import write_session
from orchestrator.message_context import COST_LABELS_NB
from orchestrator.models import utcnow
from orchestrator.rendering import FILTERS, templates_root

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
    )
