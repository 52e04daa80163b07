"""A console client: the real app on a real port, a browser-like cookie jar (Secure cookies kept, as browsers
keep them for http://127.0.0.1), sign-in as one of three operators, and the CSRF token of the last page."""

from __future__ import annotations

import contextlib
import re
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp import ClientResponse, CookieJar
from aiohttp.test_utils import TestClient, TestServer

from orchestrator.console import accounts
from orchestrator.settings import Settings
from orchestrator.web import create_app

PASSWORDS = {
    "vera": "viewer-password-1",
    "otto": "operator-password-1",
    "ada": "admin-password-123",
}
ROLES = {"vera": "viewer", "otto": "operator", "ada": "admin"}
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_of(html: str) -> str:
    found = _CSRF.search(html)
    assert found is not None, "the page has no form with a CSRF token"
    return found.group(1)


@dataclass
class Console:
    """One browser's worth of console: its own cookies and the token of the page it last saw."""

    client: TestClient[Any, Any]
    csrf: str = ""

    async def get(self, path: str, **kwargs: Any) -> ClientResponse:
        response = await self.client.get(path, **kwargs)
        if response.content_type == "text/html":
            found = _CSRF.search(await response.text())
            if found:
                self.csrf = found.group(1)
        return response

    async def page(self, path: str, status: int = 200) -> str:
        response = await self.get(path)
        text = await response.text()
        assert response.status == status, text
        return text

    async def post(
        self, path: str, data: dict[str, Any] | None = None, *, csrf: bool = True, **kwargs: Any
    ) -> ClientResponse:
        form = dict(data or {})
        if csrf:
            form.setdefault("csrf_token", self.csrf)
        response = await self.client.post(path, data=form, **kwargs)
        if response.content_type == "text/html":
            found = _CSRF.search(await response.text())
            if found:
                self.csrf = found.group(1)
        return response

    async def sign_in(self, username: str, password: str | None = None) -> ClientResponse:
        await self.get("/console/login")
        return await self.post(
            "/console/login", {"username": username, "password": password or PASSWORDS[username]}
        )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
async def operators(sessions: Any) -> dict[str, str]:
    """Three accounts, one per role: username -> operator id."""
    return {
        name: await accounts.create_operator(
            sessions, username=name, role=ROLES[name], password=PASSWORDS[name]
        )
        for name in PASSWORDS
    }


@contextlib.asynccontextmanager
async def console_on(settings: Settings) -> AsyncIterator[Any]:
    """A server of the real app on ``settings``; yields ``make()`` -> a new signed-out Console (each with its
    own cookies) on it."""
    assert settings.redis_url is not None
    port = _free_port()
    server = TestServer(create_app(settings, redis_url=settings.redis_url), host="127.0.0.1", port=port)
    await server.start_server()
    clients: list[TestClient[Any, Any]] = []

    async def make() -> Console:
        jar = CookieJar(unsafe=True, treat_as_secure_origin=[f"http://127.0.0.1:{port}"])
        client: TestClient[Any, Any] = TestClient(server, cookie_jar=jar)
        await client.start_server()
        clients.append(client)
        return Console(client)

    try:
        yield make
    finally:
        for client in clients:
            await client.close()
        await server.close()


@pytest.fixture
async def console_factory(settings: Settings, sessions: Any) -> AsyncIterator[Any]:
    """``await console_factory()`` -> a new signed-out Console (each with its own cookies) on one server."""
    async with console_on(settings) as make:
        yield make


async def signed_in(console_factory: Any, username: str) -> Console:
    console: Console = await console_factory()
    response = await console.sign_in(username)
    assert response.status == 200, await response.text()
    assert str(response.url).endswith("/console/search"), response.url
    return console
