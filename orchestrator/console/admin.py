"""For administrators: the console's accounts and its access log (who signed in, searched, looked at a
timeline, previewed a message, exported, acted — and who was refused). Accounts are created on the command
line (``orchestrator create-operator``); here an administrator can see them and disable one at once."""

from __future__ import annotations

import base64
import binascii
from typing import Final

from aiohttp import web

from orchestrator.appkeys import SESSIONS
from orchestrator.console import accounts, pages, store
from orchestrator.db import write_session

routes = web.RouteTableDef()
ROLES: Final = {"console_admin": "admin", "console_admin_disable": "admin"}
PAGE_SIZE: Final = 100


def _cursor(value: str | None) -> str | None:
    if not value:
        return None
    try:
        return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).decode("ascii")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise web.HTTPBadRequest(text="That page link is broken; start from the first page.") from None


@routes.get("/console/admin", name="console_admin")
async def console_admin(request: web.Request) -> web.Response:
    before = _cursor(request.query.get("page"))
    async with request.app[SESSIONS]() as session:
        operators = await store.list_operators(session)
        entries = await store.audit_page(session, before_id=before, limit=PAGE_SIZE + 1)
    more = len(entries) > PAGE_SIZE
    entries = entries[:PAGE_SIZE]
    next_page = (
        base64.urlsafe_b64encode(entries[-1][0].id.encode()).decode().rstrip("=")
        if more and entries
        else None
    )
    return pages.render(
        request, "admin.html", operators=operators, entries=entries, next_page=next_page, first=before is None
    )


@routes.post("/console/admin/disable", name="console_admin_disable")
async def console_admin_disable(request: web.Request) -> web.Response:
    form = await request.post()
    username = str(form.get("username", "")).strip()
    if username == pages.me(request).username:
        raise web.HTTPBadRequest(text="You cannot disable your own account. Nothing was changed.")
    try:
        await accounts.disable_operator(request.app[SESSIONS], username)
    except ValueError as exc:
        raise web.HTTPNotFound(text=f"{exc}. Nothing was changed.") from None
    async with write_session(request.app[SESSIONS]) as session:
        await pages.audit_in(session, request, "disable_operator", username=username)
    raise pages.redirect("/console/admin")
