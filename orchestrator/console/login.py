"""Signing in and out of the console, its front page and its stylesheet."""

from __future__ import annotations

from datetime import timedelta
from typing import Final

from aiohttp import web

from orchestrator.appkeys import SESSIONS, SETTINGS
from orchestrator.console import accounts, pages, security, store
from orchestrator.db import write_session
from orchestrator.logs import get_logger
from orchestrator.models import utcnow
from orchestrator.rendering import templates_root

log = get_logger(__name__)
routes = web.RouteTableDef()
ROLES: Final = {"console_root": "viewer", "console_home": "viewer", "console_logout": "viewer"}
_STATIC: Final = templates_root() / "console" / "static"
_STATIC_TYPES: Final = {".css": "text/css", ".svg": "image/svg+xml"}


@routes.get("/console", name="console_root")
async def console_root(_request: web.Request) -> web.Response:
    raise web.HTTPSeeOther("/console/")


@routes.get("/console/", name="console_home")
async def console_home(_request: web.Request) -> web.Response:
    raise web.HTTPSeeOther("/console/search")


@routes.get("/console/static/{name}", name="console_static")
async def console_static(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    path = _STATIC / name
    content_type = _STATIC_TYPES.get(path.suffix)
    if "/" in name or name.startswith(".") or content_type is None or not path.is_file():
        raise web.HTTPNotFound(text="No such file.")
    return web.Response(
        body=path.read_bytes(), content_type=content_type, headers={"Cache-Control": "max-age=3600"}
    )


@routes.get("/console/login", name="console_login")
async def console_login(request: web.Request) -> web.Response:
    return _login_page(request, 200, None, "")


def _login_page(request: web.Request, status: int, error: str | None, username: str) -> web.Response:
    token = security.login_csrf(request) or security.new_token()
    response = pages.render(
        request, "login.html", status=status, error=error, username=username, csrf_token=token
    )
    security.set_login_cookie(request, response, token)
    return response


@routes.post("/console/login", name="console_login_submit")
async def console_login_submit(request: web.Request) -> web.Response:
    form = await request.post()
    username = str(form.get("username", ""))[:100].strip().lower()
    password = str(form.get("password", ""))[:1000]
    if not username or not password:
        return _login_page(request, 400, "Enter your username and password.", username)
    wait_s = await security.login_blocked_for_s(request, username)
    if wait_s:
        async with write_session(request.app[SESSIONS]) as db:
            await store.audit(
                db,
                operator_id=None,
                action="login_refused_limit",
                now=utcnow(),
                detail={"username": username, "client": security.client_address(request)},
            )
        minutes = max(1, (wait_s + 59) // 60)
        response = _login_page(
            request,
            429,
            f"Too many failed sign-ins for this account or from this address. Try again in {minutes} "
            f"minute{'s' if minutes != 1 else ''}, or ask an administrator to reset your password.",
            username,
        )
        response.headers["Retry-After"] = str(wait_s)
        return response
    settings = request.app[SETTINGS]
    now = utcnow()
    async with write_session(request.app[SESSIONS]) as db:
        operator = await accounts.authenticate(db, username, password)
        if operator is None:
            await store.audit(
                db,
                operator_id=None,
                action="login_failed",
                now=now,
                detail={"username": username, "client": security.client_address(request)},
            )
        else:
            token = security.new_token()
            await store.insert_session(
                db,
                {
                    "id": security.token_hash(token),
                    "operator_id": operator.id,
                    "csrf_token": security.new_token(),
                    "created_at": now,
                    "last_seen_at": now,
                    "expires_at": now + timedelta(seconds=settings.console_session_max_s),
                    "revoked_at": None,
                },
            )
            await store.audit(
                db,
                operator_id=operator.id,
                action="login",
                now=now,
                detail={"client": security.client_address(request)},
            )
    if operator is None:
        await security.record_login_failure(request, username)
        log.info("console sign-in failed", client=security.client_address(request))
        return _login_page(request, 401, "Wrong username or password.", username)
    await security.clear_login_failures(request, username)
    response = web.HTTPSeeOther("/console/search")
    security.set_session_cookie(request, response, token)
    response.del_cookie(security.LOGIN_COOKIE, path="/console")
    raise response


@routes.post("/console/logout", name="console_logout")
async def console_logout(request: web.Request) -> web.Response:
    async with write_session(request.app[SESSIONS]) as db:
        await store.revoke_session(db, request[pages.SESSION_ID], utcnow())
        await pages.audit_in(db, request, "logout")
    response = web.HTTPSeeOther("/console/login")
    security.clear_session_cookie(response)
    raise response
