"""SmtpEmailChannel against a real SMTP server (aiosmtpd) running in the test's event loop."""

from __future__ import annotations

import asyncio
import email
import email.policy
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP as SmtpServerProtocol
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session

from channels.base import (
    Channel,
    ChannelConfigurationError,
    Outgoing,
    PermanentChannelError,
    TransientChannelError,
    UncertainDeliveryError,
)
from channels.email import SmtpEmailChannel
from orchestrator.settings import Settings

NOW = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
TEXT = "Hei Kåre Ærø,\n\ndu skylder 1 234,50 kr. Blåbærsyltetøy: æøå ÆØÅ.\n"
HTML = "<html><body><p>Hei Kåre Ærø,</p><p>du skylder 1&nbsp;234,50 kr. æøå ÆØÅ.</p></body></html>\n"


class Recorder:
    """aiosmtpd handler: keeps every accepted envelope; can refuse the next messages or recipients."""

    def __init__(self) -> None:
        self.envelopes: list[Envelope] = []
        self.data_replies: list[str] = []  # answers to the next DATA commands, instead of "250 OK"
        self.rcpt_replies: list[str] = []  # answers to the next RCPT commands
        self.hang_up_in_data = False

    async def handle_RCPT(
        self,
        server: SmtpServerProtocol,
        session: Session,
        envelope: Envelope,
        address: str,
        options: list[str],
    ) -> str:
        if self.rcpt_replies:
            return self.rcpt_replies.pop(0)
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SmtpServerProtocol, session: Session, envelope: Envelope) -> str:
        if self.hang_up_in_data:
            # The relay has the whole message but the connection dies before it answers.
            self.hang_up_in_data = False
            self.envelopes.append(envelope)
            assert server.transport is not None
            server.transport.abort()
            return "250 2.0.0 Ok: never seen by the client"
        if self.data_replies:
            return self.data_replies.pop(0)
        self.envelopes.append(envelope)
        return "250 2.0.0 Ok: queued as 4711"

    def parsed(self, index: int = -1) -> EmailMessage:
        content = self.envelopes[index].content
        assert isinstance(content, bytes)
        msg = email.message_from_bytes(content, policy=email.policy.default)
        assert isinstance(msg, EmailMessage)
        return msg


@dataclass
class SmtpServer:
    handler: Recorder
    port: int
    sessions: list[SmtpServerProtocol] = field(default_factory=list)

    @property
    def connections(self) -> int:
        return len(self.sessions)

    def drop_connections(self) -> None:
        """Hang up on every client, as a relay does with idle connections."""
        for session in self.sessions:
            if session.transport is not None:
                session.transport.close()


async def start_server(**server_kwargs: Any) -> tuple[asyncio.Server, SmtpServer]:
    loop = asyncio.get_running_loop()
    state = SmtpServer(handler=Recorder(), port=0)

    def factory() -> SmtpServerProtocol:
        session = SmtpServerProtocol(state.handler, hostname="smtp.test", loop=loop, **server_kwargs)
        state.sessions.append(session)
        return session

    server = await loop.create_server(factory, "127.0.0.1", 0)
    state.port = server.sockets[0].getsockname()[1]
    return server, state


async def stop_server(server: asyncio.Server, state: SmtpServer) -> None:
    server.close()
    state.drop_connections()
    await server.wait_closed()
    await asyncio.sleep(0.01)  # let the closed transports finish


@pytest.fixture
async def smtp() -> AsyncIterator[SmtpServer]:
    server, state = await start_server()
    yield state
    await stop_server(server, state)


def make_settings(tmp_path: Path, port: int, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "state_dir": tmp_path,
        "smtp_host": "127.0.0.1",
        "smtp_port": port,
        "smtp_security": "none",
        "smtp_pool_size": 3,
        "smtp_timeout_s": 5.0,
        "email_from": "Eksempel Inkasso <post@inkasso.test>",
        "email_domain": "mail.inkasso.test",
        "bounce_domain": "bounces.inkasso.test",
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
async def make_channel(tmp_path: Path) -> AsyncIterator[Callable[..., SmtpEmailChannel]]:
    channels: list[SmtpEmailChannel] = []

    def make(port: int, **overrides: Any) -> SmtpEmailChannel:
        channel = SmtpEmailChannel(make_settings(tmp_path, port, **overrides), clock=lambda: NOW)
        channels.append(channel)
        return channel

    yield make
    for channel in channels:
        await channel.close()


def outgoing(n: int = 1, *, to: str = "kare@example.no", html: str | None = HTML) -> Outgoing:
    return Outgoing(
        contact_id=f"ct{n:04d}",
        attempt_id=f"at{n:04d}",
        channel="email",
        to=to,
        recipient_name="Kåre Ærø",
        text=TEXT,
        subject="Påminnelse: faktura 1001 – æøå",
        html=html,
    )


def crlf_to_lf(text: str) -> str:
    """Mail travels with CRLF line ends; the parser hands them back as they came."""
    return text.replace("\r\n", "\n")


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# ---------------------------------------------------------------------------------------------------- sending


async def test_message_arrives_with_headers_parts_and_verp_sender(
    smtp: SmtpServer, make_channel: Callable[..., SmtpEmailChannel]
) -> None:
    channel = make_channel(smtp.port)
    assert isinstance(channel, Channel)
    assert (channel.name, channel.provider) == ("email", "smtp")

    receipt = await channel.send(outgoing())

    assert len(smtp.handler.envelopes) == 1
    envelope = smtp.handler.envelopes[0]
    assert envelope.mail_from == "bounce+at0001@bounces.inkasso.test"
    assert envelope.rcpt_tos == ["kare@example.no"]

    msg = smtp.handler.parsed()
    assert msg["From"] == "Eksempel Inkasso <post@inkasso.test>"
    assert msg["To"].addresses[0].display_name == "Kåre Ærø"
    assert msg["To"].addresses[0].addr_spec == "kare@example.no"
    assert msg["Subject"] == "Påminnelse: faktura 1001 – æøå"
    assert msg["Message-ID"] == "<ct0001.at0001@mail.inkasso.test>"
    assert msg["X-Orchestrator-Contact"] == "ct0001"
    assert msg["Date"].datetime == NOW

    assert msg.get_content_type() == "multipart/alternative"
    parts = list(msg.iter_parts())
    assert [part.get_content_type() for part in parts] == ["text/plain", "text/html"]
    assert [part.get_content_charset() for part in parts] == ["utf-8", "utf-8"]
    assert crlf_to_lf(parts[0].get_content()) == TEXT
    assert crlf_to_lf(parts[1].get_content()) == HTML

    assert receipt.provider == "smtp"
    assert receipt.provider_message_id == "<ct0001.at0001@mail.inkasso.test>"
    assert receipt.detail == {"smtp_response": "250 2.0.0 Ok: queued as 4711"}


async def test_text_only_message_is_not_multipart(
    smtp: SmtpServer, make_channel: Callable[..., SmtpEmailChannel]
) -> None:
    await make_channel(smtp.port).send(outgoing(html=None))

    msg = smtp.handler.parsed()
    assert msg.get_content_type() == "text/plain"
    assert crlf_to_lf(msg.get_content()) == TEXT


async def test_norwegian_idn_domain_is_sent_in_punycode(
    smtp: SmtpServer, make_channel: Callable[..., SmtpEmailChannel]
) -> None:
    await make_channel(smtp.port).send(outgoing(to="kare@blåbær.no"))

    assert smtp.handler.envelopes[0].rcpt_tos == ["kare@xn--blbr-roah.no"]
    assert smtp.handler.parsed()["To"].addresses[0].addr_spec == "kare@xn--blbr-roah.no"


# ----------------------------------------------------------------------------------------------------- errors


async def test_4xx_is_transient_and_the_connection_is_reused(
    smtp: SmtpServer, make_channel: Callable[..., SmtpEmailChannel]
) -> None:
    channel = make_channel(smtp.port)
    smtp.handler.data_replies.append("451 4.3.0 try later")

    with pytest.raises(TransientChannelError) as caught:
        await channel.send(outgoing(1))
    assert caught.value.reason == "smtp_4xx"
    assert "451" in str(caught.value)
    assert "try later" in str(caught.value)
    assert caught.value.__cause__ is not None

    await channel.send(outgoing(2))
    assert len(smtp.handler.envelopes) == 1
    assert smtp.connections == 1


async def test_5xx_is_permanent(smtp: SmtpServer, make_channel: Callable[..., SmtpEmailChannel]) -> None:
    smtp.handler.data_replies.append("550 5.1.1 no such user")

    with pytest.raises(PermanentChannelError) as caught:
        await make_channel(smtp.port).send(outgoing())
    assert caught.value.reason == "smtp_5xx"
    assert "550" in str(caught.value)
    assert "no such user" in str(caught.value)
    assert caught.value.__cause__ is not None


async def test_recipient_refused_is_permanent(
    smtp: SmtpServer, make_channel: Callable[..., SmtpEmailChannel]
) -> None:
    smtp.handler.rcpt_replies.append("550 5.1.1 no such user")

    with pytest.raises(PermanentChannelError) as caught:
        await make_channel(smtp.port).send(outgoing())
    assert caught.value.reason == "smtp_recipient_refused"
    assert "550" in str(caught.value)
    assert smtp.handler.envelopes == []


async def test_recipient_refused_with_4xx_is_transient(
    smtp: SmtpServer, make_channel: Callable[..., SmtpEmailChannel]
) -> None:
    smtp.handler.rcpt_replies.append("450 4.2.0 mailbox busy")

    with pytest.raises(TransientChannelError) as caught:
        await make_channel(smtp.port).send(outgoing())
    assert caught.value.reason == "smtp_4xx"
    assert "450" in str(caught.value)


async def test_connection_refused_is_transient(make_channel: Callable[..., SmtpEmailChannel]) -> None:
    with pytest.raises(TransientChannelError) as caught:
        await make_channel(closed_port()).send(outgoing())
    assert caught.value.reason == "smtp_unavailable"
    assert caught.value.__cause__ is not None


async def test_invalid_address_is_permanent_and_touches_no_server(
    make_channel: Callable[..., SmtpEmailChannel],
) -> None:
    channel = make_channel(closed_port())
    with pytest.raises(PermanentChannelError) as caught:
        await channel.send(outgoing(to="kare@example.no\r\nBcc: everyone@example.no"))
    assert caught.value.reason == "invalid_message"

    with pytest.raises(PermanentChannelError) as caught:
        await channel.send(outgoing(to="kåre@example.no"))  # non-ASCII local part needs SMTPUTF8 end to end
    assert caught.value.reason == "invalid_message"


def test_missing_smtp_host_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ChannelConfigurationError) as caught:
        SmtpEmailChannel(make_settings(tmp_path, 25, smtp_host=None))
    assert caught.value.reason == "smtp_host_missing"


# ------------------------------------------------------------------------------------------------------- auth


def _authenticator(
    server: SmtpServerProtocol, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
) -> AuthResult:
    ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (
        b"orch",
        b"hemmelig",
    )
    return AuthResult(success=ok, handled=False)


@pytest.fixture
async def smtp_auth() -> AsyncIterator[SmtpServer]:
    server, state = await start_server(authenticator=_authenticator, auth_require_tls=False)
    yield state
    await stop_server(server, state)


async def test_auth_with_the_right_password_sends(
    smtp_auth: SmtpServer, make_channel: Callable[..., SmtpEmailChannel]
) -> None:
    channel = make_channel(smtp_auth.port, smtp_username="orch", smtp_password="hemmelig")
    await channel.send(outgoing())
    assert len(smtp_auth.handler.envelopes) == 1


async def test_auth_failure_is_a_configuration_error(
    smtp_auth: SmtpServer, make_channel: Callable[..., SmtpEmailChannel]
) -> None:
    channel = make_channel(smtp_auth.port, smtp_username="orch", smtp_password="feil")
    with pytest.raises(ChannelConfigurationError) as caught:
        await channel.send(outgoing())
    assert caught.value.reason == "smtp_auth_failed"
    assert "feil" not in str(caught.value)
    assert smtp_auth.handler.envelopes == []


# ------------------------------------------------------------------------------------------------------- pool


async def test_twenty_concurrent_sends_share_at_most_three_connections(
    smtp: SmtpServer, make_channel: Callable[..., SmtpEmailChannel]
) -> None:
    channel = make_channel(smtp.port, smtp_pool_size=3)

    receipts = await asyncio.gather(*(channel.send(outgoing(n)) for n in range(20)))

    assert smtp.connections <= 3
    assert len(smtp.handler.envelopes) == 20
    arrived = sorted(str(smtp.handler.parsed(i)["Message-ID"]) for i in range(20))
    assert arrived == sorted(receipt.provider_message_id for receipt in receipts)
    assert len(set(arrived)) == 20


async def test_sequential_sends_reuse_one_connection(
    smtp: SmtpServer, make_channel: Callable[..., SmtpEmailChannel]
) -> None:
    channel = make_channel(smtp.port)
    for n in range(5):
        await channel.send(outgoing(n))
    assert smtp.connections == 1
    assert len(smtp.handler.envelopes) == 5


async def test_connection_the_server_closed_while_idle_is_replaced(
    smtp: SmtpServer, make_channel: Callable[..., SmtpEmailChannel]
) -> None:
    channel = make_channel(smtp.port)
    await channel.send(outgoing(1))

    smtp.drop_connections()
    await asyncio.sleep(0.05)  # the client notices the hang-up before the next send
    await channel.send(outgoing(2))

    assert smtp.connections == 2
    assert len(smtp.handler.envelopes) == 2


async def test_stale_connection_not_yet_noticed_is_retried_on_a_fresh_one(
    smtp: SmtpServer, make_channel: Callable[..., SmtpEmailChannel]
) -> None:
    channel = make_channel(smtp.port)
    await channel.send(outgoing(1))

    smtp.drop_connections()  # no await before the send: the pooled client still believes it is connected
    receipt = await channel.send(outgoing(2))

    assert receipt.provider_message_id == "<ct0002.at0002@mail.inkasso.test>"
    assert smtp.connections == 2
    assert [str(smtp.handler.parsed(i)["Message-ID"]) for i in range(2)] == [
        "<ct0001.at0001@mail.inkasso.test>",
        "<ct0002.at0002@mail.inkasso.test>",
    ]


async def test_relay_gone_after_pooling_is_transient(make_channel: Callable[..., SmtpEmailChannel]) -> None:
    server, state = await start_server()
    channel = make_channel(state.port)
    await channel.send(outgoing(1))

    await stop_server(server, state)
    with pytest.raises(TransientChannelError) as caught:
        await channel.send(outgoing(2))
    assert caught.value.reason == "smtp_unavailable"


async def test_close_quits_pooled_connections_and_the_channel_stays_usable(
    smtp: SmtpServer, make_channel: Callable[..., SmtpEmailChannel]
) -> None:
    channel = make_channel(smtp.port)
    await asyncio.gather(*(channel.send(outgoing(n)) for n in range(3)))
    opened = smtp.connections

    await channel.close()
    await asyncio.sleep(0.05)
    assert all(session.transport is None or session.transport.is_closing() for session in smtp.sessions)

    await channel.send(outgoing(9))
    assert smtp.connections == opened + 1
    assert len(smtp.handler.envelopes) == 4


async def test_connection_lost_during_data_is_uncertain_not_retried(
    smtp: SmtpServer, make_channel: Callable[..., SmtpEmailChannel]
) -> None:
    """The relay may have the message: the channel must not resend it on its own (that could send twice)."""
    channel = make_channel(smtp.port)
    smtp.handler.hang_up_in_data = True

    with pytest.raises(UncertainDeliveryError) as caught:
        await channel.send(outgoing(1))

    assert caught.value.reason == "smtp_outcome_unknown"
    assert len(smtp.handler.envelopes) == 1  # delivered once, and not a second time by a retry
    assert smtp.connections == 1
