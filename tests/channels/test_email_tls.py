"""SMTP over STARTTLS and implicit TLS, with AUTH, against a real aiosmtpd server and a test CA."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trustme
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from channels.base import ChannelConfigurationError, Outgoing, TransientChannelError
from channels.email import SmtpEmailChannel
from orchestrator.settings import Settings


class Handler:
    def __init__(self) -> None:
        self.envelopes: list[Envelope] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.envelopes.append(envelope)
        return "250 OK"


def _auth(server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any) -> AuthResult:
    ok = isinstance(data, LoginPassword) and (data.login, data.password) == (b"orch", b"s3cret")
    return AuthResult(success=ok, handled=False)  # not handled: aiosmtpd answers 235 / 535 itself


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def ca_file(ca: trustme.CA, tmp_path: Path) -> Path:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return path


async def _server(ca: trustme.CA, *, implicit: bool) -> tuple[asyncio.Server, Handler, int]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    handler = Handler()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(
            handler,
            hostname="relay.test",
            tls_context=None if implicit else context,
            require_starttls=not implicit,
            authenticator=_auth,
            # With implicit TLS aiosmtpd does not see the TLS layer under it; the socket is TLS all the same.
            auth_require_tls=not implicit,
            loop=loop,
        ),
        "127.0.0.1",
        0,
        ssl=context if implicit else None,
    )
    return server, handler, server.sockets[0].getsockname()[1]


def _message() -> Outgoing:
    return Outgoing(
        contact_id="C1",
        attempt_id="A1",
        channel="email",
        to="kari@example.no",
        recipient_name="Kari Nordmann",
        subject="Påminnelse",
        text="Hei Kari\n",
        html="<p>Hei Kari</p>",
    )


@pytest.fixture
async def channel_for(tmp_path: Path, ca_file: Path) -> AsyncIterator[Any]:
    channels: list[SmtpEmailChannel] = []

    def make(port: int, security: str, password: str = "s3cret", trust: bool = True) -> SmtpEmailChannel:
        settings = Settings(
            state_dir=tmp_path,
            smtp_host="127.0.0.1",
            smtp_port=port,
            smtp_security=security,
            smtp_username="orch",
            smtp_password=password,
            smtp_ca_file=ca_file if trust else None,
            smtp_timeout_s=5,
        )
        channel = SmtpEmailChannel(settings)
        channels.append(channel)
        return channel

    yield make
    for channel in channels:
        await channel.close()


@pytest.mark.parametrize("implicit", [False, True], ids=["starttls", "implicit-tls"])
async def test_sends_over_tls_with_auth(ca: trustme.CA, channel_for: Any, implicit: bool) -> None:
    server, handler, port = await _server(ca, implicit=implicit)
    try:
        channel = channel_for(port, "tls" if implicit else "starttls")
        receipt = await channel.send(_message())
    finally:
        server.close()
    assert receipt.provider_message_id == "<C1.A1@orchestrator.invalid>"
    assert [e.rcpt_tos for e in handler.envelopes] == [["kari@example.no"]]


async def test_wrong_password_is_a_configuration_error(ca: trustme.CA, channel_for: Any) -> None:
    server, handler, port = await _server(ca, implicit=False)
    try:
        with pytest.raises(ChannelConfigurationError):
            await channel_for(port, "starttls", password="wrong").send(_message())
    finally:
        server.close()
    assert handler.envelopes == []


async def test_an_untrusted_certificate_is_refused(ca: trustme.CA, channel_for: Any) -> None:
    server, handler, port = await _server(ca, implicit=False)
    try:
        with pytest.raises((ChannelConfigurationError, TransientChannelError)) as caught:
            await channel_for(port, "starttls", trust=False).send(_message())
    finally:
        server.close()
    assert caught.value.reason in ("smtp_tls_failed", "smtp_unavailable")
    assert handler.envelopes == []
