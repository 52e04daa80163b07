"""A local SMTP relay for the e-mail channel: keeps every message as a ``.eml`` file and bounces some, as a
real relay does, with an RFC 3464 delivery status notification to the message's envelope sender.

``SmtpSandbox(folder)`` listens on ``127.0.0.1`` (port 0: a free one; read ``.port`` after ``start()``), takes
mail for any recipient (it is a relay, not a mailbox), and writes each message to
``folder/<n>-<message id>.eml`` with ``Return-Path`` and ``Delivered-To`` trace headers in front. A recipient
"does not exist" when its address is in ``unknown_users`` or falls in the deterministic share
``bounce_share`` (a hash of the address with ``seed``, so the same address always bounces or never does).

For each message with such recipients, ``bounce_delay_s`` after the message was accepted (a relay says 250
first and bounces later, once the remote MX refused), it builds a DSN (:func:`build_dsn`:
``multipart/report``, a ``message/delivery-status`` with ``Status: 5.1.1`` per recipient, the original
headers) and hands it with a null sender (``MAIL FROM:<>``, so a bounce never bounces) to
``bounce_host:bounce_port`` — the orchestrator's VERP receiver (``webhooks.bounces``) — addressed to the
envelope sender, our ``bounce+<attempt>@<domain>``.
A refused or unreachable receiver is retried a few times, as an MTA keeps its queue. A copy of every DSN is in
``folder/dsn/``; ``.bounces`` lists them with the receiver's answer.

The server is aiosmtpd's threaded ``Controller``: its own thread and event loop, so the relay behaves like a
separate machine and a slow bounce receiver never blocks the caller.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import logging
import re
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import Message
from email.mime.base import MIMEBase
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.parser import BytesHeaderParser
from email.utils import format_datetime, make_msgid
from pathlib import Path

import aiosmtplib
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

__all__ = ["KeptMessage", "SentBounce", "SmtpSandbox", "build_dsn"]

log = logging.getLogger(__name__)

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_BOUNCE_RETRY_S = (0.5, 1.0, 2.0, 4.0)  # then give up: the demo's and tests' deadlines are short


@dataclass(frozen=True)
class KeptMessage:
    path: Path
    mail_from: str
    rcpt_tos: tuple[str, ...]
    message_id: str | None
    bounced: tuple[str, ...]  # the recipients that "do not exist"


@dataclass(frozen=True)
class SentBounce:
    path: Path  # the DSN as sent
    to: str  # the original's envelope sender (our VERP return path)
    recipients: tuple[str, ...]
    original_message_id: str | None
    reply: str  # the bounce receiver's answer, e.g. "250 2.0.0 OK", or why it never took it


def _header_block(raw: bytes) -> bytes:
    """The original's header section, byte for byte (a DSN returns the headers, not the body)."""
    for separator in (b"\r\n\r\n", b"\n\n"):
        head, found, _ = raw.partition(separator)
        if found:
            return head + separator[: len(separator) // 2]
    return raw


def _charset(text: str) -> str:
    return "us-ascii" if text.isascii() else "utf-8"  # 7bit and readable when it can be


def build_dsn(
    original: bytes,
    *,
    envelope_sender: str,
    recipients: Sequence[str],
    reporting_mta: str,
    arrival: datetime,
    now: datetime,
) -> Message:
    """An RFC 3464 delivery status notification: ``recipients`` of ``original`` do not exist (5.1.1)."""
    headers = BytesHeaderParser().parsebytes(original)
    message_id = headers.get("Message-ID")
    report = MIMEMultipart("report", report_type="delivery-status")
    report["From"] = f"Mail Delivery System <MAILER-DAEMON@{reporting_mta}>"
    report["To"] = envelope_sender
    report["Subject"] = "Undelivered Mail Returned to Sender"
    report["Date"] = format_datetime(now)
    report["Message-ID"] = make_msgid("dsn", domain=reporting_mta)
    report["Auto-Submitted"] = "auto-replied"  # RFC 3834: no machine answers this
    listed = "\n".join(f"<{rcpt}>: 550 5.1.1 user unknown" for rcpt in recipients)
    text = (
        f"This is the mail system at host {reporting_mta}.\n\n"
        f"Your message could not be delivered to one or more recipients.\n\n{listed}\n"
    )
    report.attach(MIMEText(text, "plain", _charset(text)))
    per_message = Message()
    per_message["Reporting-MTA"] = f"dns; {reporting_mta}"
    per_message["Arrival-Date"] = format_datetime(arrival)
    if message_id:
        per_message["X-Original-Message-ID"] = str(message_id)
    blocks: list[Message | str] = [per_message]
    for rcpt in recipients:
        block = Message()
        block["Final-Recipient"] = f"rfc822; {rcpt}"
        block["Original-Recipient"] = f"rfc822; {rcpt}"
        block["Action"] = "failed"
        block["Status"] = "5.1.1"
        block["Remote-MTA"] = f"dns; mx.{rcpt.rpartition('@')[2]}"
        block["Diagnostic-Code"] = f"smtp; 550 5.1.1 <{rcpt}>: Recipient address rejected: User unknown"
        block["Last-Attempt-Date"] = format_datetime(now)
        blocks.append(block)
    status = MIMEBase("message", "delivery-status")
    del status["MIME-Version"]
    status.set_payload(blocks)
    report.attach(status)
    head = _header_block(original).decode("utf-8", errors="replace")
    returned = MIMEText(head, "rfc822-headers", _charset(head))
    del returned["MIME-Version"]
    report.attach(returned)
    for part in report.get_payload():
        assert isinstance(part, Message)
        del part["MIME-Version"]  # belongs on the report only
    return report


class _Controller(Controller):
    """aiosmtpd's Controller checks it is up by connecting to its port: with port 0, first learn the port."""

    def _trigger_server(self) -> None:
        if self.port == 0 and isinstance(self.server, asyncio.Server):
            self.port = int(self.server.sockets[0].getsockname()[1])
        super()._trigger_server()  # type: ignore[no-untyped-call]


class _Handler:
    """aiosmtpd's handler. aiosmtpd looks at every attribute of its handler (for AUTH hooks), so it gets this
    small object rather than the sandbox with its properties."""

    def __init__(self, sandbox: SmtpSandbox) -> None:
        self._sandbox = sandbox

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        return await self._sandbox._take(envelope)


class SmtpSandbox:
    """The sandbox relay (see the module docstring). ``with``/``async with``, or ``start()``/``stop()``."""

    def __init__(
        self,
        folder: Path,
        *,
        bounce_host: str = "127.0.0.1",
        bounce_port: int | None = None,
        unknown_users: Iterable[str] = (),
        bounce_share: float = 0.0,
        seed: int = 0,
        host: str = "127.0.0.1",
        port: int = 0,
        hostname: str = "smtp.sandbox.invalid",
        bounce_delay_s: float = 0.5,
    ) -> None:
        if not 0.0 <= bounce_share <= 1.0:
            raise ValueError("bounce_share is a share: 0.0 to 1.0")
        self.folder = Path(folder)
        self.dsn_folder = self.folder / "dsn"
        self.bounce_host = bounce_host
        self.bounce_port = bounce_port
        self.unknown_users = frozenset(address.lower() for address in unknown_users)
        self.bounce_share = bounce_share
        self.seed = seed
        self.host = host
        self.hostname = hostname
        self.bounce_delay_s = bounce_delay_s
        self.messages: list[KeptMessage] = []
        self.bounces: list[SentBounce] = []
        self._lock = threading.Lock()  # the handler runs in the controller's thread
        self._tasks: set[asyncio.Task[None]] = set()
        self._dsn_numbers = itertools.count(1)
        self._requested_port = port
        self._controller: _Controller | None = None  # made in start(): it owns an event loop until stopped

    @property
    def port(self) -> int:
        if self._controller is None:
            raise RuntimeError("the SMTP sandbox is not running")
        return int(self._controller.port)

    def bounces_for(self, address: str) -> bool:
        """Whether mail to ``address`` comes back: a listed unknown user, or in the hashed share."""
        address = address.strip().strip("<>").lower()
        if address in self.unknown_users:
            return True
        digest = hashlib.sha256(f"{self.seed}:{address}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64 < self.bounce_share

    def start(self) -> SmtpSandbox:
        self.dsn_folder.mkdir(parents=True, exist_ok=True)
        # aiosmtpd logs every address at INFO and every DATA line at DEBUG: keep them out of the demo's log.
        logging.getLogger("mail.log").setLevel(logging.WARNING)
        if self._controller is not None:
            return self
        controller = _Controller(
            _Handler(self),
            hostname=self.host,
            port=self._requested_port,
            server_hostname=self.hostname,
            ident="orchestrator sandbox relay",
        )
        controller.start()
        self._controller = controller
        log.info("SMTP sandbox on %s:%d, keeping messages in %s", self.host, self.port, self.folder)
        return self

    def stop(self) -> None:
        controller, self._controller = self._controller, None
        if controller is not None:
            controller.stop()  # cancels DSNs still waiting, ends the thread, closes its loop

    def __enter__(self) -> SmtpSandbox:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    async def __aenter__(self) -> SmtpSandbox:
        return await asyncio.to_thread(self.start)

    async def __aexit__(self, *exc_info: object) -> None:
        await asyncio.to_thread(self.stop)

    # in the controller's thread and loop ----------------------------------------------------------------

    async def _take(self, envelope: Envelope) -> str:
        arrival = datetime.now(UTC)
        content = envelope.original_content or envelope.content or b""
        raw = content if isinstance(content, bytes) else str(content).encode("utf-8", "surrogateescape")
        # aiosmtpd keeps the null reverse path as "<>": a bounce, to which nothing may be sent back.
        mail_from = "" if envelope.mail_from in (None, "", "<>") else str(envelope.mail_from)
        rcpt_tos = tuple(envelope.rcpt_tos)
        found = BytesHeaderParser().parsebytes(raw).get("Message-ID")
        message_id = " ".join(str(found).split()) if found else None  # unfolded
        bounced = tuple(rcpt for rcpt in rcpt_tos if self.bounces_for(rcpt))
        with self._lock:
            number = len(self.messages) + 1
            name = _UNSAFE.sub("_", str(message_id or "no-id").strip("<> "))[:120]
            path = self.folder / f"{number:05d}-{name}.eml"
            trace = f"Return-Path: <{mail_from}>\r\nDelivered-To: {', '.join(rcpt_tos)}\r\n".encode()
            path.write_bytes(trace + raw)
            self.messages.append(KeptMessage(path, mail_from, rcpt_tos, message_id, bounced))
        # Never bounce a bounce (null sender), and there is no one to tell without a return path.
        if bounced and mail_from:
            task = asyncio.get_running_loop().create_task(
                self._bounce(raw, mail_from, bounced, message_id, arrival)
            )
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return "250 2.0.0 OK: queued"

    async def _bounce(
        self,
        raw: bytes,
        mail_from: str,
        recipients: tuple[str, ...],
        message_id: str | None,
        arrival: datetime,
    ) -> None:
        path = self.dsn_folder / f"{next(self._dsn_numbers):05d}-{_UNSAFE.sub('_', mail_from)[:120]}.eml"
        reply = "not sent"
        try:
            await asyncio.sleep(self.bounce_delay_s)
            dsn = build_dsn(
                raw,
                envelope_sender=mail_from,
                recipients=recipients,
                reporting_mta=self.hostname,
                arrival=arrival,
                now=datetime.now(UTC),
            )
            data = dsn.as_bytes()
            path.write_bytes(data)
            reply = await self._deliver(data, mail_from)
        except Exception as exc:  # say so, rather than leave whoever waits for this bounce waiting
            reply = f"not sent: {exc!r}"
            log.exception("SMTP sandbox: could not bounce a message")
        finally:
            with self._lock:
                self.bounces.append(SentBounce(path, mail_from, recipients, message_id, reply))

    async def _deliver(self, data: bytes, to: str) -> str:
        if self.bounce_port is None:
            return "not sent: no bounce receiver configured"
        reply = ""
        for delay in (*_BOUNCE_RETRY_S, None):
            try:
                async with aiosmtplib.SMTP(
                    hostname=self.bounce_host,
                    port=self.bounce_port,
                    start_tls=False,
                    local_hostname=self.hostname,
                    timeout=10,
                ) as client:
                    errors, message = await client.sendmail("", [to], data)
                if not errors:
                    return f"250 {message}".strip()
                reply = str(errors)
            except (aiosmtplib.SMTPException, OSError, ValueError) as exc:
                reply = f"{type(exc).__name__}: {exc}"
            if delay is None:
                break
            await asyncio.sleep(delay)
        log.warning("SMTP sandbox: the bounce receiver did not take a DSN: %s", reply)
        return reply

    def pending_bounces(self) -> int:
        """DSNs decided on but not yet handed to the bounce receiver (or given up on)."""
        with self._lock:
            due = sum(1 for message in self.messages if message.bounced and message.mail_from)
            return due - len(self.bounces)
