"""Each message exactly as it was handed to the carrier, from ``attempt.content`` (what a complaints board
must be shown).

- E-mail: the subject, the text part, and the HTML part in a sandboxed frame whose own response forbids
  scripts and every network request (``EMAIL_CSP``), so a message can neither run code in the console nor
  tell anyone that it was looked at. The preview page lets its frame show only that HTML (``frame-src`` with
  the path): a click on the message's self-service link inside the frame is blocked, so looking at a debtor's
  e-mail never opens their page in their name (which would be recorded as the debtor's own visit).
- SMS and chat links: the text, its encoding, and each segment as the carrier bills it.
- Letters and digital-mailbox letters: the PDF. The very file that went out when it is still where this
  process can read it (the outbox, or the print provider's drop folder); otherwise the stored HTML rendered
  again by the same renderer, fonts and reference, with the content's SHA-256 compared with the one recorded
  when it was sent. The page says which it is.

Every preview is written to the console's access log.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any, Final

from aiohttp import web

from channels.base import ChannelError
from channels.letter import letter_reference, render_pdf
from channels.sms import encoding as sms_encoding
from orchestrator.appkeys import SESSIONS, SETTINGS
from orchestrator.console import debtor_store, pages, security
from orchestrator.console.timeline_words import cap, channel_words, status_class, words
from orchestrator.logs import get_logger
from orchestrator.models import Attempt, Contact
from orchestrator.rendering import content_sha256
from orchestrator.settings import Settings

log = get_logger(__name__)
routes = web.RouteTableDef()
ROLES: Final[dict[str, str]] = {
    "console_preview": "viewer",
    "console_preview_email_html": "viewer",
    "console_preview_letter_pdf": "viewer",
}

# The e-mail's HTML runs nothing and loads nothing: no scripts (sandbox), no network (default-src 'none'),
# only inline images and styles as the message carries them; and only the console may frame it.
EMAIL_CSP: Final = (
    "sandbox; default-src 'none'; img-src data:; style-src 'unsafe-inline'; frame-ancestors 'self'"
)
LETTER_CHANNELS: Final = ("letter", "digital_mailbox")
TEXT_CHANNELS: Final = ("sms", "chat_link")
# batch ids and our ids, as they may appear in a file name (never a path of the request's making)
_SAFE_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")

FROM_FILE: Final = "file"
RENDERED: Final = "rendered"


# ------------------------------------------------------------------------------------------- letter PDFs


def sent_pdf(settings: Settings, attempt: Attempt, contact: Contact) -> Path | None:
    """Where this process wrote the letter's PDF, if it is still there: the outbox
    (``letter/<contact id>.<attempt id>.pdf``) or the print provider's drop folder
    (``<batch id>/<contact id>.<attempt id>.pdf``). Paths are built from our own ids only."""
    if not (_SAFE_NAME.fullmatch(contact.id) and _SAFE_NAME.fullmatch(attempt.id)):
        return None
    name = f"{contact.id}.{attempt.id}.pdf"
    candidates: list[Path] = []
    if attempt.provider == "outbox":
        candidates.append(settings.resolved_outbox_dir / "letter" / name)
    batch = (attempt.detail or {}).get("batch")
    if (
        attempt.provider == "print"
        and settings.print_folder is not None
        and isinstance(batch, str)
        and _SAFE_NAME.fullmatch(batch)
    ):
        candidates.append(settings.print_folder / batch / name)
    return next((path for path in candidates if path.is_file()), None)


def content_matches(attempt: Attempt) -> bool:
    """Whether the stored content still hashes to the SHA-256 recorded when it was sent."""
    content = attempt.content or {}
    found = content_sha256(content.get("subject"), content.get("text") or "", content.get("html"))
    return found == attempt.content_sha256


async def _load(request: web.Request) -> tuple[Attempt, Contact]:
    attempt_id = request.match_info["attempt_id"]
    async with request.app[SESSIONS]() as session:
        found = await debtor_store.attempt_with_contact(session, attempt_id)
    if found is None:
        raise web.HTTPNotFound(text="There is no attempt with this id in the contact log.")
    return found


@routes.get("/console/attempts/{attempt_id}/preview", name="console_preview")
async def console_preview(request: web.Request) -> web.Response:
    attempt, contact = await _load(request)
    async with request.app[SESSIONS]() as session:
        debtor = await debtor_store.debtor_by_id(session, contact.debtor_id)
    assert debtor is not None  # a contact's debtor is a foreign key
    content: dict[str, Any] = attempt.content or {}
    context: dict[str, Any] = {}
    if attempt.channel in TEXT_CHANNELS:
        encoding, segments = sms_encoding.split(str(content.get("text") or ""))
        context.update(encoding=encoding, segments=segments)
    if attempt.channel in LETTER_CHANNELS:
        path = await asyncio.to_thread(sent_pdf, request.app[SETTINGS], attempt, contact)
        context["letter_source"] = FROM_FILE if path is not None else RENDERED
    await pages.audit(request, "preview", debtor_id=debtor.id, attempt_id=attempt.id, contact_id=contact.id)
    response = pages.render(
        request,
        "preview.html",
        attempt=attempt,
        contact=contact,
        debtor=debtor,
        subject=content.get("subject"),
        text=content.get("text"),
        html=content.get("html"),
        matches=content_matches(attempt),
        letter_channels=LETTER_CHANNELS,
        text_channels=TEXT_CHANNELS,
        words=words,
        channel_words=channel_words,
        status_class=status_class,
        cap=cap,
        **context,
    )
    frame = f"{request.scheme}://{request.host}/console/attempts/{attempt.id}/email.html"
    response.headers["Content-Security-Policy"] = security.HEADERS["Content-Security-Policy"].replace(
        "default-src 'self';", f"default-src 'self'; frame-src {frame};"
    )
    return response


@routes.get("/console/attempts/{attempt_id}/email.html", name="console_preview_email_html")
async def console_preview_email_html(request: web.Request) -> web.Response:
    attempt, contact = await _load(request)
    html = (attempt.content or {}).get("html")
    if attempt.channel != "email" or not html:
        raise web.HTTPNotFound(text="This attempt has no e-mail HTML part.")
    await pages.audit(
        request, "preview", debtor_id=contact.debtor_id, attempt_id=attempt.id, part="email.html"
    )
    # Exactly as sent: no redaction, no rewriting; the policy below keeps it inert.
    return web.Response(
        text=str(html),
        content_type="text/html",
        charset="utf-8",
        headers={"Content-Security-Policy": EMAIL_CSP},
    )


@routes.get("/console/attempts/{attempt_id}/letter.pdf", name="console_preview_letter_pdf")
async def console_preview_letter_pdf(request: web.Request) -> web.Response:
    attempt, contact = await _load(request)
    html = (attempt.content or {}).get("html")
    if attempt.channel not in LETTER_CHANNELS or not html:
        raise web.HTTPNotFound(text="This attempt is not a letter.")
    path = await asyncio.to_thread(sent_pdf, request.app[SETTINGS], attempt, contact)
    pdf: bytes | None = None
    if path is not None:
        try:
            pdf = await asyncio.to_thread(path.read_bytes)
        except OSError:  # taken away since we looked (the provider picked the batch up): render instead
            pdf = None
    source = FROM_FILE if pdf is not None else RENDERED
    await pages.audit(
        request,
        "preview",
        debtor_id=contact.debtor_id,
        attempt_id=attempt.id,
        part="letter.pdf",
        source=source,
    )
    if pdf is None:
        try:
            pdf = await render_pdf(str(html), reference=letter_reference(contact.id, attempt.id))
        except ChannelError as exc:
            log.error("letter preview could not be rendered", attempt_id=attempt.id, reason=exc.reason)
            raise web.HTTPServiceUnavailable(
                text="The letter could not be rendered again just now; try again in a moment."
            ) from exc
    return web.Response(
        body=pdf,
        headers={
            "Content-Type": "application/pdf",
            "Content-Disposition": f'inline; filename="{attempt.id}.pdf"',
            "X-Preview-Source": source,
        },
    )
