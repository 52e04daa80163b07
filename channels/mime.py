"""Builds the MIME message and the VERP envelope sender for one ``Outgoing`` e-mail.

Shared by the SMTP channel and the e-mail outbox, so that what an operator opens in the outbox is byte for
byte what would have gone to the relay. Our ids travel in the message (``Message-ID:
<contact.attempt@domain>``, ``X-Orchestrator-Contact``) and in the VERP return path
``bounce+<attempt>@<bounce domain>``, so that replies, bounces and carrier events find their contact. A
message with an ``unsubscribe_url`` (every e-mail but a statutory notice) carries ``List-Unsubscribe`` and
``List-Unsubscribe-Post: List-Unsubscribe=One-Click`` (RFC 8058).
"""

from __future__ import annotations

import email.policy
from datetime import datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import Policy
from email.utils import format_datetime

from channels.base import Outgoing

__all__ = ["ascii_address", "build_email", "message_id_for", "verp_sender"]


class _Verbatim(str):
    """A header value written as it is, on one line: the email package would fold a URL longer than a line
    into RFC 2047 encoded words, which no mail client reads back as a URL."""

    name: str

    def __new__(cls, name: str, value: str) -> _Verbatim:
        if not value.isascii() or any(ch in value for ch in "\r\n") or len(name) + len(value) > 990:
            raise ValueError(f"{name} must be one line of ASCII, at most 990 characters")
        header = super().__new__(cls, value)
        header.name = name
        return header

    def fold(self, *, policy: Policy) -> str:
        return f"{self.name}: {self}{policy.linesep}"


def message_id_for(contact_id: str, attempt_id: str, domain: str) -> str:
    """The Message-ID header value (angle brackets included) of one attempt."""
    return f"<{contact_id}.{attempt_id}@{domain}>"


def verp_sender(attempt_id: str, bounce_domain: str) -> str:
    """The envelope sender (return path) of one attempt: bounces come back addressed to it."""
    return f"bounce+{attempt_id}@{bounce_domain}"


def ascii_address(address: str) -> str:
    """The address with an internationalised domain in its ASCII (punycode) form: ``kari@xn--blbr-roah.no``.

    Norwegian domains may contain æ, ø and å; a relay without SMTPUTF8 only takes the punycode form. The local
    part is left as it is (a non-ASCII local part is refused by ``build_email``). Raises ``UnicodeError`` (a
    ``ValueError``) for a domain that is not a valid IDN.
    """
    local, at, domain = address.rpartition("@")
    if not at or domain.isascii():
        return address
    return f"{local}@{domain.encode('idna').decode('ascii')}"


def build_email(
    message: Outgoing, *, from_addr: str, domain: str, bounce_domain: str, now: datetime
) -> tuple[EmailMessage, str]:
    """Return the MIME message and the VERP envelope sender.

    The text part comes first; with ``message.html`` the message is ``multipart/alternative`` (text, then
    HTML). An internationalised recipient domain is written in punycode (``ascii_address``). Bodies are UTF-8
    in quoted-printable, so the message is 7-bit clean and identical whether or not the relay speaks
    8BITMIME. Raises ``ValueError`` (or a subclass) for an address or header value that cannot be encoded,
    e.g. one containing a line break; callers translate it into a channel error.
    """
    msg = EmailMessage(policy=email.policy.SMTP)
    msg["From"] = from_addr
    msg["To"] = Address(display_name=message.recipient_name, addr_spec=ascii_address(message.to))
    if message.subject is not None:
        msg["Subject"] = message.subject
    msg["Date"] = format_datetime(now)
    msg["Message-ID"] = message_id_for(message.contact_id, message.attempt_id, domain)
    msg["X-Orchestrator-Contact"] = message.contact_id
    if message.unsubscribe_url is not None:
        # RFC 2369 and RFC 8058: mail clients offer "unsubscribe", and POST "List-Unsubscribe=One-Click" to
        # the URL (the relay's DKIM signature should cover both headers).
        msg.set_raw("List-Unsubscribe", _Verbatim("List-Unsubscribe", f"<{message.unsubscribe_url}>"))
        msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    msg.set_content(message.text, charset="utf-8", cte="quoted-printable")
    if message.html is not None:
        msg.add_alternative(message.html, subtype="html", charset="utf-8", cte="quoted-printable")
        for part in msg.iter_parts():
            del part["MIME-Version"]  # add_alternative() copies it into the sub-parts; it belongs on top only
    return msg, verp_sender(message.attempt_id, bounce_domain)
