"""The console's guard: sessions from a cookie, roles per route, CSRF on every form, sign-in limits, and
the security headers of every console response.

- The session cookie holds 32 random bytes; the database keeps only their SHA-256. It is HttpOnly,
  SameSite=Strict, Secure (``ORCH_CONSOLE_SECURE_COOKIES``), scoped to ``/console``; a session ends after
  ``console_session_idle_s`` without a request or ``console_session_max_s`` after sign-in, at sign-out, and
  when the operator is disabled or given a new password.
- CSRF: every POST carries ``csrf_token`` (a form field, or the ``X-CSRF-Token`` header), compared in constant
  time with the session's token; the sign-in form, before any session, with a token in its own cookie (double
  submit). A POST whose ``Origin`` is another site is refused as well.
- Sign-in limit: failures are counted in Redis per username and per client address in a fixed window; past
  the limit sign-in is refused (429, even with the right password) until the window ends.
- A route's role is declared beside it (``ROLES`` in each console module); a route not declared needs admin.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Awaitable, Callable, Mapping
from datetime import timedelta
from typing import Final

from aiohttp import web

from orchestrator.appkeys import REDIS, SESSIONS, SETTINGS
from orchestrator.console import pages, store
from orchestrator.console.accounts import SignedIn, signed_in
from orchestrator.db import write_session
from orchestrator.logs import get_logger
from orchestrator.models import utcnow

log = get_logger(__name__)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

SESSION_COOKIE: Final = "orch_console"
LOGIN_COOKIE: Final = "orch_console_login"
CONSOLE_ROLES: Final = web.AppKey("console_roles", dict)
# routes anyone may reach: the sign-in page and its form, and the stylesheet
PUBLIC: Final = frozenset({"console_login", "console_login_submit", "console_static"})
_TOUCH_EVERY: Final = timedelta(seconds=60)
HEADERS: Final[Mapping[str, str]] = {
    "Cache-Control": "no-store",
    # same-origin, not no-referrer: with no-referrer browsers send "Origin: null" on form posts, and the
    # origin check below needs the real one (console URLs carry no personal data, so the referrer is harmless)
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "SAMEORIGIN",
    "X-Robots-Tag": "noindex, nofollow",
    # no inline script or style anywhere in the console; e-mail previews set their own, stricter policy
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; object-src 'self'; "
    "frame-ancestors 'self'; form-action 'self'; base-uri 'none'",
}


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return secrets.token_urlsafe(32)


def set_session_cookie(request: web.Request, response: web.StreamResponse, token: str) -> None:
    settings = request.app[SETTINGS]
    response.set_cookie(
        SESSION_COOKIE,
        token,
        path="/console",
        httponly=True,
        secure=settings.console_secure_cookies,
        samesite="Strict",
        max_age=settings.console_session_max_s,
    )


def clear_session_cookie(response: web.StreamResponse) -> None:
    response.del_cookie(SESSION_COOKIE, path="/console")


def login_csrf(request: web.Request) -> str:
    """The sign-in form's token, from its cookie ("" when there is none yet)."""
    token = request.cookies.get(LOGIN_COOKIE, "")
    return token if len(token) >= 32 else ""


def set_login_cookie(request: web.Request, response: web.StreamResponse, token: str) -> None:
    response.set_cookie(
        LOGIN_COOKIE,
        token,
        path="/console",
        httponly=True,
        secure=request.app[SETTINGS].console_secure_cookies,
        samesite="Strict",
        max_age=3600,
    )


# ---- sign-in limit ----


def client_address(request: web.Request) -> str:
    """Who is asking: the peer, or, when the peer is a trusted reverse proxy, the nearest address in
    ``X-Forwarded-For`` that is not itself a trusted proxy (a client cannot spoof it: only the proxies'
    own additions are believed, read from the right)."""
    remote = request.remote or "unknown"
    trusted = request.app[SETTINGS].console_trusted_proxies
    if remote not in trusted:
        return remote
    hops = [hop.strip() for hop in request.headers.get("X-Forwarded-For", "").split(",") if hop.strip()]
    for hop in reversed(hops):
        if hop not in trusted:
            return hop
    return remote


def _limit_keys(request: web.Request, username: str) -> list[tuple[str, int]]:
    settings = request.app[SETTINGS]
    user = hashlib.sha256(username.strip().lower().encode()).hexdigest()[:32]
    prefix = f"{settings.queue_name}:console:login-failures"
    return [
        (f"{prefix}:user:{user}", settings.console_login_max_failures),
        (f"{prefix}:addr:{client_address(request)}", 4 * settings.console_login_max_failures),
    ]


async def login_blocked_for_s(request: web.Request, username: str) -> int:
    """Seconds until sign-in is allowed again for this username and client (0: allowed now)."""
    redis = request.app[REDIS]
    wait = 0
    for key, limit in _limit_keys(request, username):
        count = int(await redis.get(key) or 0)
        if count >= limit:
            wait = max(wait, int(await redis.ttl(key)), 1)
    return wait


async def record_login_failure(request: web.Request, username: str) -> None:
    redis = request.app[REDIS]
    window = request.app[SETTINGS].console_login_window_s
    for key, _limit in _limit_keys(request, username):
        count = await redis.incr(key)
        if count == 1:
            await redis.expire(key, window)


async def clear_login_failures(request: web.Request, username: str) -> None:
    await request.app[REDIS].delete(_limit_keys(request, username)[0][0])


# ---- per request ----


async def _load_session(request: web.Request) -> bool:
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        return False
    settings = request.app[SETTINGS]
    now = utcnow()
    session_id = token_hash(token)
    # a plain read on every page; a write (which on SQLite takes the database's lock) only when the session
    # ends for idleness or its last-seen time is a minute old
    async with request.app[SESSIONS]() as db:
        found = await store.load_session(db, session_id, now)
    if found is None:
        return False
    console_session, operator = found
    idle = console_session.last_seen_at + timedelta(seconds=settings.console_session_idle_s) < now
    if idle or now - console_session.last_seen_at > _TOUCH_EVERY:
        async with write_session(request.app[SESSIONS]) as db:
            if idle:
                await store.revoke_session(db, session_id, now)
            else:
                await store.touch_session(db, session_id, now)
    if idle:
        return False
    request[pages.ME] = signed_in(operator)
    request[pages.CSRF] = console_session.csrf_token
    request[pages.SESSION_ID] = session_id
    return True


async def _form_token(request: web.Request) -> str:
    header = request.headers.get("X-CSRF-Token")
    if header:
        return header
    if request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
        value = (await request.post()).get("csrf_token")
        return value if isinstance(value, str) else ""
    return ""


def _same_origin(request: web.Request) -> bool:
    """False only for a post that names another site as its origin; a missing or opaque ("null") origin
    (older browsers, privacy settings) leaves the decision to the token."""
    origin = request.headers.get("Origin")
    if origin is None or origin == "null":
        return True
    return origin.split("://", 1)[-1] == request.host


async def _check_csrf(request: web.Request, expected: str) -> None:
    given = await _form_token(request)
    if (
        not _same_origin(request)
        or not expected
        or not hmac.compare_digest(given.encode(), expected.encode())
    ):
        log.warning("console form refused: CSRF token missing or wrong", route=request.match_info.route.name)
        await pages.audit(request, "csrf_refused", route=request.match_info.route.name or "")
        raise web.HTTPForbidden(
            text="This form was not sent from this console's own page, or the page is too old (the CSRF "
            "token is missing or wrong). Nothing was changed. Go back, reload the page and try again."
        )


def _role_needed(request: web.Request) -> str:
    roles: dict[str, str] = request.app[CONSOLE_ROLES]
    return roles.get(request.match_info.route.name or "", "admin")


def _error_page(request: web.Request, status: int, message: str) -> web.Response:
    titles = {
        400: "Bad request",
        403: "Not allowed",
        404: "Not found",
        405: "Not allowed",
        413: "Too large",
        429: "Too many attempts",
        500: "Something went wrong",
    }
    return pages.render(
        request, "error.html", status=status, title=titles.get(status, "Error"), message=message
    )


@web.middleware
async def console_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    name = request.match_info.route.name or ""
    if not name.startswith("console_"):
        return await handler(request)
    try:
        if name not in PUBLIC:
            if not await _load_session(request):
                if request.method == "GET":
                    raise web.HTTPSeeOther("/console/login")
                raise web.HTTPUnauthorized(text="Your session has ended. Sign in again; nothing was changed.")
            operator: SignedIn = request[pages.ME]
            needed = _role_needed(request)
            if not operator.may(needed):
                await pages.audit(request, "refused", route=name, needed=needed)
                raise web.HTTPForbidden(
                    text=f"This needs the role “{needed}”; you are signed in as “{operator.role}”. "
                    "Nothing was changed."
                )
            if request.method not in ("GET", "HEAD"):
                await _check_csrf(request, request[pages.CSRF])
        elif request.method == "POST":
            await _check_csrf(request, login_csrf(request))
        response = await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            for key, value in HEADERS.items():
                exc.headers.setdefault(key, value)
            raise
        response = _error_page(request, exc.status, exc.text or exc.reason)
    except Exception:
        log.exception("console page failed", route=name)
        response = _error_page(request, 500, "The console failed to show this page; the error is logged.")
    for key, value in HEADERS.items():
        response.headers.setdefault(key, value)
    return response
