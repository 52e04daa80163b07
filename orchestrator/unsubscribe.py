"""One-click unsubscribe from e-mail (RFC 8058): ``GET /u/{token}`` and ``POST /u/{token}``.

Every e-mail that is not a statutory notice carries ``List-Unsubscribe: <{base}/u/{token}>`` and
``List-Unsubscribe-Post: List-Unsubscribe=One-Click`` (``channels.mime``). The token is a chat link with the
purpose ``unsubscribe`` (``orchestrator.chat_links``: 192 random bits, only its SHA-256 stored), issued with
the attempt (``issue``) and valid for ``unsubscribe_link_ttl_days``.

- ``POST`` opts the debtor out of e-mail (``add_opt_out(reach="email", source="email_unsubscribe")``) and says
  so in the timeline once; a second POST changes nothing and answers the same (idempotent, 200). Mail
  providers post ``List-Unsubscribe=One-Click``; any body, or none, is accepted.
- ``GET`` only shows a page with a button that posts: mail scanners and link previews fetch URLs, so a GET
  never opts anyone out.

The opt-out stops reminders and other non-statutory messages on e-mail; statutory notices (inkassovarsel,
betalingsoppfordring) still go on their lawful channel, which the pages say without naming the claim (R7).
A link of a case that was paid or closed keeps working (revocation guards the claim page; this one reveals
nothing); an unknown, expired or other link gets the same plain page as the self-service links (410).
"""

from __future__ import annotations

import dataclasses
from datetime import datetime

from aiohttp import web

from channels.base import ChannelLimits
from orchestrator import chat_links, selfservice
from orchestrator import contact_log as store
from orchestrator.appkeys import SESSIONS
from orchestrator.db import write_session
from orchestrator.models import ChatLink, Contact, utcnow
from orchestrator.opt_outs import record_opt_out
from orchestrator.policy.decide import STATUTORY_KINDS
from orchestrator.settings import Settings

__all__ = ["PATH_PREFIX", "PURPOSE", "issue", "routes"]

PATH_PREFIX = "/u/"
PURPOSE = "unsubscribe"
REACH = "email"  # what the link opts out of: the channels that reach the debtor's e-mail
SOURCE = "email_unsubscribe"
ONE_CLICK = "List-Unsubscribe=One-Click"

routes = web.RouteTableDef()
_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Robots-Tag": "noindex, nofollow",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'",
}


def issue(
    settings: Settings, contact: Contact, limits: ChannelLimits, now: datetime
) -> chat_links.IssuedLink | None:
    """The unsubscribe link for a message of ``contact`` on a channel with ``limits``: one for e-mail that the
    debtor may refuse, None for a statutory notice (an opt-out cannot stop it) or another reach."""
    if limits.reaches != REACH or contact.kind in STATUTORY_KINDS:
        return None
    link = chat_links.issue(
        purpose=PURPOSE,
        base_url=settings.resolved_public_base_url,
        debtor_id=contact.debtor_id,
        case_id=contact.case_id,
        contact_id=contact.id,
        now=now,
        ttl_days=settings.unsubscribe_link_ttl_days,
    )
    return dataclasses.replace(
        link, url=f"{settings.resolved_public_base_url.rstrip('/')}{PATH_PREFIX}{link.token}"
    )


def _page(name: str, status: int, language: str | None = None) -> web.Response:
    # The self-service pages' templates and languages: the page speaks the language of the e-mail it came in.
    body = selfservice.render(name, language)
    return web.Response(text=body, status=status, content_type="text/html", headers=_HEADERS)


def _usable(link: ChatLink | None, now: datetime) -> bool:
    return link is not None and link.purpose == PURPOSE and link.expires_at > now


@routes.get(PATH_PREFIX + "{token}", name="unsubscribe_page")
async def unsubscribe_page(request: web.Request) -> web.Response:
    async with request.app[SESSIONS]() as session:
        link = await store.find_chat_link(session, chat_links.hash_token(request.match_info["token"]))
        if link is None or not _usable(link, utcnow()):
            return _page("invalid.html", 410)
        language = await selfservice.link_language(session, link)
    return _page("unsubscribe.html", 200, language)


@routes.post(PATH_PREFIX + "{token}", name="unsubscribe")
async def unsubscribe(request: web.Request) -> web.Response:
    body = (await request.read()).decode("utf-8", errors="replace").strip()
    now = utcnow()
    async with write_session(request.app[SESSIONS]) as session:
        link = await store.find_chat_link(session, chat_links.hash_token(request.match_info["token"]))
        if link is None or not _usable(link, now):
            return _page("invalid.html", 410)
        await record_opt_out(
            session,
            debtor_id=link.debtor_id,
            reach=REACH,
            source=SOURCE,
            timeline_source=SOURCE,
            now=now,
            case_id=link.case_id,
            contact_id=link.contact_id,
            detail={"link_id": link.id, "one_click": body == ONE_CLICK},
        )
        language = await selfservice.link_language(session, link)
    return _page("unsubscribed.html", 200, language)
