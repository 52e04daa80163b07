"""Signing in: accounts, sessions, cookies, the sign-in limit, CSRF on the sign-in form, sign-out."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select, update

from orchestrator.models import ConsoleAudit, ConsoleSession
from orchestrator.settings import Settings
from tests.console.conftest import PASSWORDS, console_on, signed_in


async def test_a_page_of_the_console_sends_a_signed_out_browser_to_sign_in(console_factory: Any) -> None:
    console = await console_factory()
    response = await console.get("/console/search", allow_redirects=False)
    assert response.status == 303
    assert response.headers["Location"] == "/console/login"


async def test_sign_in_sets_a_secure_session_cookie_and_shows_who_is_signed_in(
    console_factory: Any, operators: dict[str, str]
) -> None:
    console = await console_factory()
    await console.get("/console/login")
    response = await console.post(
        "/console/login", {"username": "otto", "password": PASSWORDS["otto"]}, allow_redirects=False
    )
    assert response.status == 303
    cookie = next(v for k, v in response.headers.items() if k == "Set-Cookie" and "orch_console=" in v)
    for attribute in ("HttpOnly", "Secure", "SameSite=Strict", "Path=/console"):
        assert attribute in cookie
    page = await console.page("/console/search")
    assert "otto (operator)" in page
    for header, value in {
        "X-Frame-Options": "SAMEORIGIN",
        "Cache-Control": "no-store",
        "Referrer-Policy": "same-origin",
    }.items():
        assert (await console.get("/console/search")).headers[header] == value
    assert "script-src" not in (await console.get("/console/search")).headers["Content-Security-Policy"]


async def test_a_wrong_password_is_refused_and_logged_without_the_password(
    console_factory: Any, operators: dict[str, str], sessions: Any
) -> None:
    console = await console_factory()
    response = await console.sign_in("otto", "not-the-password-at-all")
    assert response.status == 401
    assert "Wrong username or password" in await response.text()
    response = await console.sign_in("nobody", "not-the-password-at-all")
    assert response.status == 401
    async with sessions() as session:
        rows = list((await session.execute(select(ConsoleAudit))).scalars())
    assert [r.action for r in rows] == ["login_failed", "login_failed"]
    assert all("not-the-password" not in str(r.detail) for r in rows)


async def test_after_five_failures_even_the_right_password_waits(
    console_factory: Any, operators: dict[str, str]
) -> None:
    console = await console_factory()
    for _ in range(5):
        assert (await console.sign_in("otto", "wrong-password-here")).status == 401
    response = await console.sign_in("otto")
    assert response.status == 429
    assert int(response.headers["Retry-After"]) > 0
    assert "Too many failed sign-ins" in await response.text()
    # another account from another browser is not locked by otto's failures
    other = await signed_in(console_factory, "vera")
    assert "vera (viewer)" in await other.page("/console/search")


async def test_the_sign_in_form_without_its_csrf_token_is_refused(
    console_factory: Any, operators: dict[str, str]
) -> None:
    console = await console_factory()
    await console.get("/console/login")
    response = await console.post(
        "/console/login", {"username": "otto", "password": PASSWORDS["otto"]}, csrf=False
    )
    assert response.status == 403
    assert "CSRF" in await response.text()
    assert (await console.get("/console/search", allow_redirects=False)).status == 303


async def test_sign_out_ends_the_session_on_the_server(
    console_factory: Any, operators: dict[str, str]
) -> None:
    console = await signed_in(console_factory, "otto")
    cookies = {c.key: c.value for c in console.client.session.cookie_jar}
    response = await console.post("/console/logout", allow_redirects=False)
    assert response.status == 303
    # the old cookie, replayed, no longer opens anything
    replay = await console_factory()
    replay.client.session.cookie_jar.update_cookies(cookies)
    assert (await replay.get("/console/search", allow_redirects=False)).status == 303


async def test_a_post_from_another_site_is_refused_even_with_the_token(
    console_factory: Any, operators: dict[str, str]
) -> None:
    console = await signed_in(console_factory, "otto")
    await console.page("/console/search")
    response = await console.post("/console/logout", headers={"Origin": "https://evil.example"})
    assert response.status == 403
    assert "otto (operator)" in await console.page("/console/search")


async def test_behind_a_trusted_proxy_the_limit_counts_each_client_and_ignores_forged_headers(
    settings: Settings, sessions: Any, operators: dict[str, str]
) -> None:
    async def fail_from(console: Any, forwarded: str, times: int) -> list[int]:
        statuses = []
        for n in range(times):
            await console.get("/console/login")
            response = await console.post(
                "/console/login",
                {"username": f"nobody{n}", "password": "wrong-password-here"},
                headers={"X-Forwarded-For": forwarded},
            )
            statuses.append(response.status)
        return statuses

    # the test client is the "proxy": 127.0.0.1; with 5 failures allowed an account, 20 are allowed an address
    proxied = settings.model_copy(update={"console_trusted_proxies": ["127.0.0.1"]})
    async with console_on(proxied) as factory:
        mallory = await factory()
        assert (await fail_from(mallory, "203.0.113.7", 20))[-1] == 401
        assert (await fail_from(mallory, "203.0.113.7", 1)) == [429]
        # another client behind the same proxy signs in: the proxy's address is not what was counted
        otto = await factory()
        await otto.get("/console/login")
        ok = await otto.post(
            "/console/login",
            {"username": "otto", "password": PASSWORDS["otto"]},
            headers={"X-Forwarded-For": "198.51.100.20"},
        )
        assert ok.status == 200 and "otto (operator)" in await ok.text()

    # without the setting the header is a client's word and is ignored: the peer's address is counted
    async with console_on(settings) as factory:
        forger = await factory()
        statuses = []
        for n in range(21):
            statuses += await fail_from(forger, f"198.51.100.{n}", 1)
        assert statuses[-1] == 429


async def test_a_session_idle_longer_than_allowed_ends_and_stays_ended(
    console_factory: Any, operators: dict[str, str], sessions: Any
) -> None:
    console = await signed_in(console_factory, "otto")
    async with sessions() as session, session.begin():
        # as if the operator had left the page open for 31 minutes (the default allows 30)
        await session.execute(
            update(ConsoleSession).values(last_seen_at=datetime.now(UTC) - timedelta(minutes=31))
        )
    assert (await console.get("/console/search", allow_redirects=False)).status == 303
    async with sessions() as session:
        [row] = (await session.execute(select(ConsoleSession))).scalars()
    assert row.revoked_at is not None
