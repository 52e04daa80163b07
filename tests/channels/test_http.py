"""The shared HTTP boundary helpers: whether a request left, and Retry-After."""

from __future__ import annotations

import socket
from datetime import UTC, datetime

import aiohttp
import pytest
from aiohttp import web

from channels.http import RequestProgress, retry_after_s, tracking_session

NOW = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("", None),
        ("  ", None),
        ("3", 3.0),
        (" 120 ", 120.0),
        ("1.5", 1.5),
        ("-4", 0.0),
        ("Mon, 23 Nov 2026 08:00:30 GMT", 30.0),
        ("Mon, 23 Nov 2026 07:59:00 GMT", 0.0),
        ("soon", None),
        ("nan", None),
    ],
)
def test_retry_after(header: str | None, expected: float | None) -> None:
    assert retry_after_s(header, now=NOW) == expected


async def test_progress_is_not_sent_when_nothing_could_connect() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: nothing listens there
    progress = RequestProgress()
    async with tracking_session() as session:
        with pytest.raises(aiohttp.ClientConnectorError):
            await session.post(f"http://127.0.0.1:{port}/x", data=b"{}", trace_request_ctx=progress)
    assert progress.sent is False


async def test_progress_is_sent_once_the_request_reached_the_server() -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/x", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    progress = RequestProgress()
    try:
        async with (
            tracking_session() as session,
            session.post(f"http://127.0.0.1:{port}/x", data=b"{}", trace_request_ctx=progress) as r,
        ):
            assert await r.text() == "ok"
    finally:
        await runner.cleanup()
    assert progress.sent is True
