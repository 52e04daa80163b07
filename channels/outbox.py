"""File-writing channels: the default for every channel without a carrier.

A fresh install works end to end with nothing configured and an operator can open what would have been sent:

- ``<outbox>/email/<contact_id>.<attempt_id>.eml``: the exact MIME message the SMTP channel would send, with
  an ``X-Envelope-From`` header (the VERP return path) in front;
- ``<outbox>/sms/<YYYY-MM-DD>.jsonl``: one JSON object per SMS (UTC date), appended with ``O_APPEND`` and a
  single ``write`` so that several worker processes can share the file;
- ``<outbox>/letter/<contact_id>.<attempt_id>.pdf``: the letter's HTML rendered by ``channels.letter``'s
  ``PdfRenderer`` (WeasyPrint in a small process pool, never on the event loop; shipped fonts only).

Whole files are written atomically (a temporary file in the same folder, then ``os.replace``); a retried
attempt overwrites its own file. Files are created readable by the owner only: they hold personal data. All
file I/O runs in a thread (``asyncio.to_thread``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from channels.base import (
    Channel,
    ChannelLimits,
    Outgoing,
    PermanentChannelError,
    Receipt,
    TransientChannelError,
)
from channels.email import EMAIL_LIMITS
from channels.mime import build_email

if TYPE_CHECKING:
    from orchestrator.settings import Settings

__all__ = [
    "LETTER_LIMITS",
    "SMS_LIMITS",
    "OutboxEmailChannel",
    "OutboxLetterChannel",
    "OutboxSmsChannel",
    "outbox_channels",
]

SMS_LIMITS = ChannelLimits(
    max_body_chars=306,
    supports_subject=False,
    supports_html=False,
    cost_nok=0.45,
    statutory="never",
    reaches="mobile",
    supports_links=True,
)
LETTER_LIMITS = ChannelLimits(
    max_body_chars=None,
    supports_subject=False,
    supports_html=True,
    cost_nok=14.5,
    statutory="always",
    reaches="postal",
)

_LETTER_RENDER_WORKERS = 2
_FILE_MODE = 0o600
# Ids become file names: no path separators, no leading dot, nothing a shell or Windows would trip over.
_SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _file_stem(message: Outgoing) -> str:
    for label, value in (("contact_id", message.contact_id), ("attempt_id", message.attempt_id)):
        if not _SAFE_ID.fullmatch(value):
            raise PermanentChannelError("invalid_id", f"{label} {value[:64]!r} cannot be used in a file name")
    return f"{message.contact_id}.{message.attempt_id}"


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _append_line(path: Path, line: bytes) -> None:
    """Append one line with one ``write`` on an ``O_APPEND`` descriptor: safe across processes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, _FILE_MODE)
    try:
        written = os.write(fd, line)
        if written != len(line):  # disk full; never expected for a line this small otherwise
            raise OSError(f"short write to {path}: {written} of {len(line)} bytes")
    finally:
        os.close(fd)


def _write_failed(path: str, exc: OSError) -> TransientChannelError:
    return TransientChannelError("outbox_write_failed", f"cannot write {path} in the outbox: {exc}")


class _OutboxChannel:
    provider: str = "outbox"

    def __init__(self, settings: Settings, *, clock: Callable[[], datetime] | None = None) -> None:
        self._root = Path(settings.resolved_outbox_dir)
        self._clock = clock or _utcnow

    def __repr__(self) -> str:
        return f"{type(self).__name__}(root={str(self._root)!r})"

    @property
    def root(self) -> Path:
        return self._root

    async def close(self) -> None:
        return None


class OutboxEmailChannel(_OutboxChannel):
    """The ``email`` channel as ``.eml`` files: exactly what ``SmtpEmailChannel`` would have sent."""

    name: str = "email"
    limits: ChannelLimits = EMAIL_LIMITS

    def __init__(self, settings: Settings, *, clock: Callable[[], datetime] | None = None) -> None:
        super().__init__(settings, clock=clock)
        self._from = settings.email_from
        self._domain = settings.email_domain
        self._bounce_domain = settings.bounce_domain

    async def send(self, message: Outgoing) -> Receipt:
        relative = f"email/{_file_stem(message)}.eml"
        try:
            msg, envelope_from = build_email(
                message,
                from_addr=self._from,
                domain=self._domain,
                bounce_domain=self._bounce_domain,
                now=self._clock(),
            )
            data = f"X-Envelope-From: {envelope_from}\r\n".encode() + msg.as_bytes()
        except ValueError as exc:  # includes email.errors.HeaderDefect
            raise PermanentChannelError("invalid_message", f"cannot build the e-mail: {exc}") from exc
        try:
            await asyncio.to_thread(_write_atomic, self._root / relative, data)
        except OSError as exc:
            raise _write_failed(relative, exc) from exc
        return Receipt(
            provider=self.provider, provider_message_id=str(msg["Message-ID"]), detail={"path": relative}
        )


class OutboxSmsChannel(_OutboxChannel):
    """The ``sms`` channel as JSON lines, one file per UTC day."""

    name: str = "sms"
    limits: ChannelLimits = SMS_LIMITS

    async def send(self, message: Outgoing) -> Receipt:
        max_chars = self.limits.max_body_chars
        if max_chars is not None and len(message.text) > max_chars:
            raise PermanentChannelError(
                "sms_too_long", f"SMS text is {len(message.text)} characters, at most {max_chars} fit"
            )
        now = self._clock().astimezone(UTC)
        relative = f"sms/{now:%Y-%m-%d}.jsonl"
        record = {
            "contact_id": message.contact_id,
            "attempt_id": message.attempt_id,
            "to": message.to,
            "text": message.text,
            "at": now.isoformat(),
        }
        line = (json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n").encode()
        try:
            await asyncio.to_thread(_append_line, self._root / relative, line)
        except OSError as exc:
            raise _write_failed(relative, exc) from exc
        return Receipt(
            provider=self.provider,
            provider_message_id=f"outbox-sms-{message.attempt_id}",
            detail={"path": relative},
        )


class OutboxLetterChannel(_OutboxChannel):
    """The ``letter`` channel as PDF files, rendered from ``message.html`` with WeasyPrint."""

    name: str = "letter"
    limits: ChannelLimits = LETTER_LIMITS

    def __init__(self, settings: Settings, *, clock: Callable[[], datetime] | None = None) -> None:
        super().__init__(settings, clock=clock)
        # Imported here: channels.letter takes LETTER_LIMITS from this module.
        from channels.letter import PdfRenderer

        self._renderer: PdfRenderer = PdfRenderer(workers=_LETTER_RENDER_WORKERS)

    async def send(self, message: Outgoing) -> Receipt:
        if message.html is None:
            raise PermanentChannelError(
                "letter_requires_html", "a letter is rendered from HTML; none was given"
            )
        stem = _file_stem(message)
        relative = f"letter/{stem}.pdf"
        # The same PDF the print provider would get: shipped fonts, page numbers, "Ref: <contact>.<attempt>".
        pdf = (await self._renderer.render(message.html, reference=stem)).pdf
        try:
            await asyncio.to_thread(_write_atomic, self._root / relative, pdf)
        except OSError as exc:
            raise _write_failed(relative, exc) from exc
        return Receipt(
            provider=self.provider,
            provider_message_id=f"outbox-letter-{message.attempt_id}",
            detail={"path": relative, "bytes": len(pdf)},
        )

    async def close(self) -> None:
        await self._renderer.close()


def outbox_channels(settings: Settings, *, clock: Callable[[], datetime] | None = None) -> dict[str, Channel]:
    """The three outbox channels by channel name (``email``, ``sms``, ``letter``)."""
    return {
        "email": OutboxEmailChannel(settings, clock=clock),
        "sms": OutboxSmsChannel(settings, clock=clock),
        "letter": OutboxLetterChannel(settings, clock=clock),
    }
