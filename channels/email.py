"""E-mail through an SMTP relay (aiosmtplib), over a small pool of reused connections.

Connections are opened lazily, at most ``smtp_pool_size`` at a time, and handed out most recently used
first. A connection that failed at the transport level (disconnect, timeout) is thrown away; one that merely
got a 4xx/5xx answer is reset (RSET) and goes back into the pool. A pooled connection is checked with NOOP
before use; one the relay closed while it sat idle is replaced by a fresh connection. A connection lost while
the body was being transferred is reported as ``UncertainDeliveryError``: never retried blindly.

Errors are translated at this boundary (see ``channels.base``). Nothing here logs addresses or message bodies.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import aiosmtplib
from aiosmtplib import (
    SMTPAuthenticationError,
    SMTPConnectError,
    SMTPException,
    SMTPNotSupported,
    SMTPRecipientRefused,
    SMTPRecipientsRefused,
    SMTPResponseException,
    SMTPServerDisconnected,
    SMTPTimeoutError,
)
from aiosmtplib.email import flatten_message

from channels.base import (
    ChannelConfigurationError,
    ChannelError,
    ChannelLimits,
    Outgoing,
    PermanentChannelError,
    Receipt,
    TransientChannelError,
    UncertainDeliveryError,
)
from channels.mime import ascii_address, build_email

if TYPE_CHECKING:
    from orchestrator.settings import Settings

__all__ = ["EMAIL_LIMITS", "SmtpEmailChannel"]

log = logging.getLogger(__name__)

EMAIL_LIMITS = ChannelLimits(
    max_body_chars=None,
    supports_subject=True,
    supports_html=True,
    cost_nok=0.05,
    statutory="with_evidence",
    reaches="email",
    supports_links=True,
)

# How long close() waits for one relay to answer QUIT before it drops the connection.
_QUIT_TIMEOUT_S = 5.0


def _utcnow() -> datetime:
    return datetime.now(UTC)


class SmtpEmailChannel:
    """The ``email`` channel through the SMTP relay configured in ``settings`` (``smtp_*``)."""

    name: str = "email"
    provider: str = "smtp"
    limits: ChannelLimits = EMAIL_LIMITS

    def __init__(self, settings: Settings, *, clock: Callable[[], datetime] | None = None) -> None:
        if not settings.smtp_host:
            raise ChannelConfigurationError("smtp_host_missing", "ORCH_SMTP_HOST is not set")
        self._host = settings.smtp_host
        self._port = settings.smtp_port
        self._security = settings.smtp_security
        self._username = settings.smtp_username
        self._password = settings.smtp_password
        self._timeout_s = settings.smtp_timeout_s
        # The system's trust store, or only the CA that signed an internal relay's certificate.
        self._tls_context = ssl.create_default_context(
            cafile=str(settings.smtp_ca_file) if settings.smtp_ca_file else None
        )
        self._pool_size = settings.smtp_pool_size
        self._from = settings.email_from
        self._domain = settings.email_domain
        self._bounce_domain = settings.bounce_domain
        self._clock = clock or _utcnow
        # One slot per allowed connection: a connected client, or None for "not opened yet / thrown away".
        # LIFO so that a burst reuses the warmest connections and the rest can idle out on the relay's side.
        self._slots: asyncio.LifoQueue[aiosmtplib.SMTP | None] = asyncio.LifoQueue()
        for _ in range(self._pool_size):
            self._slots.put_nowait(None)

    def __repr__(self) -> str:
        return f"SmtpEmailChannel(host={self._host!r}, port={self._port}, security={self._security!r})"

    # ------------------------------------------------------------------------------------------------ sending

    async def send(self, message: Outgoing) -> Receipt:
        try:
            recipient = ascii_address(message.to)
            msg, envelope_from = build_email(
                message,
                from_addr=self._from,
                domain=self._domain,
                bounce_domain=self._bounce_domain,
                now=self._clock(),
            )
        except ValueError as exc:  # includes email.errors.HeaderDefect
            raise PermanentChannelError("invalid_message", f"cannot build the e-mail: {exc}") from exc
        message_id = str(msg["Message-ID"])

        payload = flatten_message(msg)
        for attempt in (1, 2):
            slot = await self._slots.get()
            client: aiosmtplib.SMTP | None = None
            healthy = False
            try:
                client, reused = await self._ready_client(slot)
                # Envelope (MAIL, RCPT): nothing is delivered yet, so a lost connection is safe to retry.
                try:
                    await client.mail(envelope_from)
                    await client.rcpt(recipient)
                except SMTPServerDisconnected as exc:
                    if reused and attempt == 1:
                        log.info("smtp: pooled connection was stale, retrying on a fresh one")
                        continue
                    raise _unavailable(self._host, self._port, exc) from exc
                except SMTPResponseException as exc:
                    with contextlib.suppress(SMTPException, OSError):
                        await client.rset()
                        healthy = True
                    raise _translate_send_error(exc) from exc
                except (SMTPException, OSError, ValueError) as exc:
                    raise _translate_send_error(exc) from exc
                # DATA: once the body is on the wire, a lost connection or a timeout means the relay may
                # have taken the message. Retrying could send it twice, so the outcome is "unknown".
                try:
                    response = await client.data(payload)
                except SMTPResponseException as exc:
                    healthy = True
                    raise _translate_send_error(exc) from exc
                except (SMTPServerDisconnected, SMTPTimeoutError, OSError) as exc:
                    raise UncertainDeliveryError(
                        "smtp_outcome_unknown",
                        f"connection lost during DATA; the relay may have the message: {exc}",
                    ) from exc
                healthy = True
                return Receipt(
                    provider=self.provider,
                    provider_message_id=message_id,
                    detail={"smtp_response": f"{response.code} {response.message}"},
                )
            finally:
                self._release(client, healthy=healthy)
        raise AssertionError("unreachable")  # pragma: no cover

    # --------------------------------------------------------------------------------------------------- pool

    async def _ready_client(self, slot: aiosmtplib.SMTP | None) -> tuple[aiosmtplib.SMTP, bool]:
        """A connected client: the pooled one if it still answers NOOP, else a fresh connection."""
        if slot is not None and slot.is_connected:
            try:
                await slot.noop()
                return slot, True
            except (SMTPException, OSError):
                slot.close()  # the relay hung up while it sat in the pool
        elif slot is not None:
            slot.close()
        return await self._connect(), False

    def _release(self, client: aiosmtplib.SMTP | None, *, healthy: bool) -> None:
        if client is not None and not (healthy and client.is_connected):
            client.close()
            client = None
        self._slots.put_nowait(client)

    def _new_client(self) -> aiosmtplib.SMTP:
        return aiosmtplib.SMTP(
            hostname=self._host,
            port=self._port,
            timeout=self._timeout_s,
            use_tls=self._security == "tls",
            start_tls=self._security == "starttls",
            tls_context=self._tls_context if self._security != "none" else None,
            username=self._username,
            password=self._password.get_secret_value() if self._password is not None else None,
        )

    async def _connect(self) -> aiosmtplib.SMTP:
        client = self._new_client()
        try:
            await client.connect()
        except SMTPAuthenticationError as exc:
            raise ChannelConfigurationError(
                "smtp_auth_failed", f"SMTP AUTH as {self._username!r} refused: {exc.code} {exc.message}"
            ) from exc
        except (SMTPConnectError, SMTPTimeoutError, SMTPServerDisconnected, OSError) as exc:
            if _is_certificate_error(exc):
                raise ChannelConfigurationError(
                    "smtp_tls_failed", f"TLS with {self._host}:{self._port} failed: {exc}"
                ) from exc
            raise _unavailable(self._host, self._port, exc) from exc
        except SMTPResponseException as exc:
            # The greeting went fine but EHLO/STARTTLS/AUTH was refused.
            if 400 <= exc.code < 500:
                raise TransientChannelError("smtp_4xx", f"SMTP {exc.code} {exc.message}") from exc
            raise ChannelConfigurationError(
                "smtp_handshake_failed",
                f"SMTP relay {self._host}:{self._port} refused us: {exc.code} {exc.message}",
            ) from exc
        except SMTPException as exc:  # e.g. STARTTLS or AUTH required by us but not offered by the relay
            raise ChannelConfigurationError(
                "smtp_handshake_failed", f"SMTP relay {self._host}:{self._port}: {exc}"
            ) from exc
        return client

    async def close(self) -> None:
        """QUIT every idle pooled connection. The channel stays usable: later sends reconnect."""
        slots = [self._slots.get_nowait() for _ in range(self._slots.qsize())]
        for _ in slots:
            self._slots.put_nowait(None)
        await asyncio.gather(*(_quit(client) for client in slots if client is not None))


async def _quit(client: aiosmtplib.SMTP) -> None:
    try:
        if client.is_connected:
            with contextlib.suppress(SMTPException, OSError):
                await client.quit(timeout=_QUIT_TIMEOUT_S)
    finally:
        client.close()


def _is_certificate_error(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    for _ in range(5):
        if seen is None:
            return False
        if isinstance(seen, ssl.SSLCertVerificationError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _unavailable(host: str, port: int, exc: BaseException) -> TransientChannelError:
    return TransientChannelError("smtp_unavailable", f"SMTP relay {host}:{port} unavailable: {exc}")


def _translate_send_error(exc: Exception) -> ChannelError:
    """A failure during MAIL/RCPT/DATA as a channel error."""
    if isinstance(exc, SMTPRecipientsRefused):
        refused = exc.recipients[0] if exc.recipients else None
        if refused is not None:
            return _translate_send_error(refused)
        return PermanentChannelError("smtp_recipient_refused", f"recipient refused: {exc}")
    if isinstance(exc, SMTPAuthenticationError):
        return ChannelConfigurationError("smtp_auth_failed", f"SMTP {exc.code} {exc.message}")
    if isinstance(exc, SMTPResponseException):
        detail = f"SMTP {exc.code} {exc.message}"
        if 400 <= exc.code < 500:
            return TransientChannelError("smtp_4xx", detail)
        if 500 <= exc.code < 600:
            reason = "smtp_recipient_refused" if isinstance(exc, SMTPRecipientRefused) else "smtp_5xx"
            return PermanentChannelError(reason, detail)
        return TransientChannelError("smtp_protocol_error", detail)  # malformed or unexpected reply
    if isinstance(exc, SMTPNotSupported):  # the address needs SMTPUTF8 and the relay does not offer it
        return PermanentChannelError("smtp_utf8_unsupported", str(exc))
    if isinstance(exc, (SMTPTimeoutError, SMTPServerDisconnected, SMTPConnectError, OSError)):
        return TransientChannelError("smtp_unavailable", f"SMTP relay unavailable: {exc}")
    if isinstance(exc, SMTPException):
        return TransientChannelError("smtp_error", str(exc))
    # ValueError: aiosmtplib refused an address it cannot put on the wire safely.
    return PermanentChannelError("invalid_address", f"cannot send to this address: {exc}")
