"""The digital mailbox: letters to Digipost by national id, on paper when the debtor has no Digipost account.

R3 (statutory notices electronically only "på betryggende måte") makes a digital mailbox the debtor opened
the natural electronic route, so this channel is ``statutory="always"`` and reaches debtors by national id.
It sends the LETTER template, rendered to PDF by :mod:`channels.letter`.

Sources: Posten/Digipost's REST API as its reference clients speak it (``digipost/digipost-api-client-java``:
``RequestMessageSignatureUtil``, ``ApiServiceImpl``, ``MessageDeliverer``, ``errorhandling.ErrorCode``;
``digipost/digipost-api-client-dotnet``: ``AuthenticationHandler``) and the v8 schema
(``src/main/resources/xsd/api_v8.xsd``, namespace ``http://api.digipost.no/schema/v8``).

Requests
    Every request carries ``X-Digipost-UserId`` (our broker id, the account the business certificate belongs
    to), ``Date`` (RFC 1123, GMT), ``X-Content-SHA256`` (base64 SHA-256 of the body, when there is one) and
    ``X-Digipost-Signature``: base64 RSA PKCS#1 v1.5 SHA-256 signature, with the certificate's private key,
    of the canonical request (:func:`canonical_request`)::

        <METHOD>\\n<path, lower-cased>\\n
        date: <Date>\\nx-content-sha256: <hash>\\nx-digipost-userid: <id>\\n
        <query, lower-cased>\\n

    (the ``x-content-sha256`` line only with a body; headers lower-cased and sorted by name). Bodies are
    ``application/vnd.digipost-v8+xml``; a message with its document is one ``multipart/vnd.digipost-v8+xml``
    request whose first part (``filename="message"``) is the message XML and whose next part
    (``filename="<document uuid>"``, ``application/pdf``) is the PDF.

Operations
    - ``GET /`` (the entry point, cached): the ``identify_recipient`` and ``create_message`` links.
    - ``POST <identify_recipient>`` with ``<identification><personal-identification-number>`` →
      ``<identification-result><result>`` ``DIGIPOST`` (a Digipost user), ``IDENTIFIED`` / ``UNIDENTIFIED``
      (not a user), ``INVALID``. :meth:`DigipostChannel.identify` exposes it.
    - ``POST <create_message>``: a user gets the message by national id (``authentication-level`` PASSWORD,
      ``sensitivity-level`` NORMAL); with a ``print_if_unread_after`` deadline it also carries
      ``<print-if-unread>`` with the print details, and Digipost prints it if it is still unread then.
      A non-user gets the same letter on paper: the recipient is only ``<print-details>`` (name and address
      from ``Outgoing.postal_address``, the configured return address, MONOCHROME, RETURN_TO_SENDER), as the
      Java client's print fallback sends it; the national id is not sent for print. The v8 schema has no
      ``post-type`` any more (removed 2022-03-09): Digipost chooses the postage.
    - ``GET /documents/<sender id>/<document uuid>/status``: after a duplicate, how the first send went; and
      for reconciliation (:meth:`DigipostChannel.query_status`), what became of an attempt: ``<document-status
      status="DELIVERED|NOT_DELIVERED" read="Y|N" channel="DIGIPOST|PRINT" delivered=...>`` is read as the
      document event it amounts to (``READ``, ``PRINTED``, ``DELIVERED``; ``webhooks.digipost.EVENT_MAP``), a
      document Digipost holds undelivered as ``accepted``, and an unknown document (404
      ``DOCUMENT_NOT_FOUND``) as "Digipost cannot say".

Identity and idempotency
    The message id and the document uuid are UUIDs derived from our attempt id (:func:`message_uuid`,
    :func:`document_uuid`), so the same attempt sent twice is the same message at Digipost, which refuses the
    second one (``409 DUPLICATE_MESSAGE``). That answer is reported as success with ``already_sent`` (and the
    delivery read back from the document status), never as a new send.

National ids (R9)
    ``Outgoing`` has no national id field: the worker passes it as ``metadata["national_id"]`` (a ``str`` or,
    better, a ``pydantic.SecretStr`` so that the ``Outgoing``'s repr never shows it). It travels only inside
    Digipost's request bodies: never in a URL, a log line, an error message or a receipt. Digipost's own
    error texts are scrubbed of 11-digit runs before they reach an exception.

Errors (``channels.base``)
    Refused connection, DNS, timeouts before a message was on the wire, 429 and 5xx →
    ``TransientChannelError``; 401/403, signature, certificate, broker and account error codes, a bad key →
    ``ChannelConfigurationError``; an invalid national id, a non-user without a postal address
    (``not_digipost_user``), a bad address or document → ``PermanentChannelError``; a timeout or dropped
    connection after the message request went out, or a 504 to it → ``UncertainDeliveryError`` (a later
    resend of the same attempt is safe: Digipost answers ``DUPLICATE_MESSAGE`` and this channel reports
    ``already_sent``).

Receipt
    ``Receipt(provider="digipost", provider_message_id=<message uuid>, detail={"delivery": "digital" |
    "print", "print_if_unread_after": <ISO datetime or None>, "already_sent": bool, "document_uuid",
    "status", "delivery_time", "identification"})``.

Responses from Digipost are signed too; this channel does not verify their signature (TLS authenticates the
server).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import re
import secrets
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from email.utils import format_datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal, cast
from xml.etree import ElementTree as ET
from zoneinfo import ZoneInfo

import aiohttp
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from pydantic import SecretStr
from yarl import URL

from channels.base import (
    CarrierStatus,
    ChannelConfigurationError,
    ChannelError,
    ChannelLimits,
    Outgoing,
    PermanentChannelError,
    PostalAddress,
    Receipt,
    SentAttempt,
    TransientChannelError,
    UncertainDeliveryError,
)
from channels.http import RequestProgress, retry_after_s, tracking_session
from channels.letter import PdfRenderer, letter_reference
from orchestrator.identifiers import validate_national_id

if TYPE_CHECKING:
    from orchestrator.settings import Settings

__all__ = [
    "DEFAULT_COST_NOK",
    "DIGIPOST_MEDIA_TYPE",
    "DIGIPOST_MULTIPART_TYPE",
    "DIGIPOST_NS",
    "PROVIDER",
    "DigipostChannel",
    "Identification",
    "ReturnAddress",
    "canonical_request",
    "content_sha256",
    "document_uuid",
    "load_private_key",
    "message_uuid",
    "print_if_unread_after",
]

log = logging.getLogger(__name__)

PROVIDER: Final = "digipost"
DIGIPOST_NS: Final = "http://api.digipost.no/schema/v8"
DIGIPOST_MEDIA_TYPE: Final = "application/vnd.digipost-v8+xml"
DIGIPOST_MULTIPART_TYPE: Final = "multipart/vnd.digipost-v8+xml"
DEFAULT_COST_NOK: Final = 1.2
DEFAULT_TIMEOUT_S: Final = 30.0
DEFAULT_SUBJECT: Final = "Brev"
OSLO: Final = ZoneInfo("Europe/Oslo")

# Our ids become Digipost ids through UUIDv5 in this namespace (a fixed, project-specific UUID).
_ID_NAMESPACE: Final = uuid.uuid5(uuid.NAMESPACE_URL, "urn:debt-contact-orchestrator:digipost")

# Error codes of Digipost's ErrorCode table, by what they mean for us.
_AUTH_CODES: Final = frozenset(
    {
        "INVALID_SIGNATURE",
        "MISSING_SIGNATURE",
        "INVALID_USER_ID_HEADER",
        "UNKNOWN_USER_ID",
        "MISSING_CERTIFICATE",
        "REVOKED_CERTIFICATE",
        "BROKER_NOT_AUTHORIZED",
        "ACCOUNT_DEACTIVATED",
        "ILLEGAL_ACCESS",
    }
)
_CONFIG_DATA_CODES: Final = frozenset({"UNKNOWN_SENDER", "INVALID_RETURN_ADDRESS"})
_DUPLICATE_CODES: Final = frozenset(
    {
        "DUPLICATE_MESSAGE",
        "DUPLICATE_DOCUMENT_ID",
        "MESSAGE_ALREADY_SENT",
        "DIGIPOST_MESSAGE_ALREADY_DELIVERED",
        "PRINT_MESSAGE_ALREADY_DELIVERED",
    }
)
_NOT_A_USER_CODES: Final = frozenset({"UNKNOWN_RECIPIENT", "MISSING_RECIPIENT"})
_SERVER_CODES: Final = frozenset({"API_UNAVAILABLE", "SERVER_ERROR"})

# Anything shaped like a national id (11 digits, or "DDMMYY NNNNN"), valid or not.
_NATIONAL_ID_SHAPE = re.compile(r"(?<![0-9])[0-9]{6} ?[0-9]{5}(?![0-9])")
_POSTAL_CODE_NO = re.compile(r"[0-9]{4}")
_MAX_NAME = 130
_MAX_ADDRESS_LINE = 100
_MAX_CITY = 80
_MAX_SUBJECT = 255

Delivery = Literal["digital", "print"]
IdentificationResult = Literal["DIGIPOST", "IDENTIFIED", "UNIDENTIFIED", "INVALID"]


# ------------------------------------------------------------------------------------------------ ids, time


def message_uuid(attempt_id: str) -> str:
    """The Digipost ``message-id`` of an attempt: the same attempt always gets the same id."""
    return str(uuid.uuid5(_ID_NAMESPACE, f"message:{attempt_id}"))


def document_uuid(attempt_id: str) -> str:
    """The ``uuid`` of an attempt's primary document (Digipost also refuses a document uuid twice)."""
    return str(uuid.uuid5(_ID_NAMESPACE, f"primary-document:{attempt_id}"))


def _utcnow() -> datetime:
    return datetime.now(UTC)


def print_if_unread_after(value: object) -> datetime | None:
    """The print-if-unread deadline from ``metadata["print_if_unread_after"]``.

    A ``date`` (or ``"YYYY-MM-DD"``) means the start of that day in Europe/Oslo: the letter is printed if it
    is still unread when that day begins. A ``datetime`` (or an ISO string with a time) needs a time zone.
    ``None`` or ``""``: no deadline. Anything else raises ``PermanentChannelError``.
    """
    if value is None or value == "":
        return None
    parsed: date | datetime
    if isinstance(value, date):  # datetime is a date too
        parsed = value
    elif isinstance(value, str):
        text = value.strip()
        try:
            parsed = date.fromisoformat(text) if len(text) == 10 else datetime.fromisoformat(text)
        except ValueError as exc:
            raise PermanentChannelError(
                "invalid_print_if_unread_after", f"print_if_unread_after {text[:40]!r} is not an ISO date"
            ) from exc
    else:
        raise PermanentChannelError(
            "invalid_print_if_unread_after",
            f"print_if_unread_after must be a date, not {type(value).__name__}",
        )
    if isinstance(parsed, datetime):
        if parsed.tzinfo is None or parsed.utcoffset() is None:
            raise PermanentChannelError(
                "invalid_print_if_unread_after", "print_if_unread_after needs a time zone"
            )
        return parsed
    return datetime.combine(parsed, time(0, 0), tzinfo=OSLO)


def _xml_datetime(moment: datetime) -> str:
    """xsd:dateTime with the offset, in Oslo time (what a reader of the XML expects)."""
    return moment.astimezone(OSLO).isoformat(timespec="seconds")


# ------------------------------------------------------------------------------------------------- signing


def content_sha256(body: bytes) -> str:
    """The ``X-Content-SHA256`` value: base64 of the body's SHA-256."""
    return base64.b64encode(hashlib.sha256(body).digest()).decode("ascii")


_SIGNED_HEADERS: Final = ("content-md5", "date", "x-content-sha256", "x-digipost-userid")


def canonical_request(method: str, path: str, query: str, headers: Mapping[str, str]) -> str:
    """The string Digipost signs and verifies (``RequestMessageSignatureUtil``): method, lower-cased raw path,
    the signed headers present (lower-cased names, sorted, ``name: value``), lower-cased raw query; each
    followed by a newline."""
    present = {name.lower(): value for name, value in headers.items() if name.lower() in _SIGNED_HEADERS}
    lines = [method.upper(), path.lower()]
    lines += [f"{name}: {present[name]}" for name in sorted(present)]
    lines.append(query.lower())
    return "\n".join(lines) + "\n"


def load_private_key(data: bytes, password: bytes | None = None) -> rsa.RSAPrivateKey:
    """An RSA private key from PEM (PKCS#8 or PKCS#1, optionally encrypted) or PKCS#12 (the ``.p12`` business
    certificate Digipost issues); raises ``ChannelConfigurationError``."""
    key: Any
    try:
        if b"-----BEGIN" in data:
            key = serialization.load_pem_private_key(data, password=password)
        else:
            key, _certificate, _chain = pkcs12.load_key_and_certificates(data, password)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        # The message from cryptography names the problem (bad password, not a key); it never holds the key.
        raise ChannelConfigurationError(
            "digipost_key_invalid", f"cannot load the Digipost private key: {exc}"
        ) from exc
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ChannelConfigurationError(
            "digipost_key_invalid", "the Digipost business certificate key must be an RSA key"
        )
    return key


class _Signer:
    def __init__(self, user_id: str, key: rsa.RSAPrivateKey, clock: Callable[[], datetime]) -> None:
        self.user_id = user_id
        self._key = key
        self._clock = clock

    def headers(self, method: str, url: URL, body: bytes | None) -> dict[str, str]:
        headers = {
            "Date": format_datetime(self._clock().astimezone(UTC), usegmt=True),
            "X-Digipost-UserId": self.user_id,
        }
        if body is not None:
            headers["X-Content-SHA256"] = content_sha256(body)
        canonical = canonical_request(method, url.raw_path, url.raw_query_string, headers)
        signature = self._key.sign(canonical.encode("utf-8"), padding.PKCS1v15(), hashes.SHA256())
        headers["X-Digipost-Signature"] = base64.b64encode(signature).decode("ascii")
        return headers


# --------------------------------------------------------------------------------------------- data types


@dataclass(frozen=True)
class ReturnAddress:
    """Where Digipost's print service returns undeliverable letters: our name and postal address."""

    name: str
    address: PostalAddress

    @classmethod
    def parse(cls, text: str) -> ReturnAddress:
        """``"Inkasso AS; Postboks 123 Sentrum; 0102 Oslo"`` (``;`` or newlines): the name, address lines, and
        ``"<postal code> <city>"`` last."""
        parts = [part.strip() for part in re.split(r"[;\n]", text) if part.strip()]
        if len(parts) < 3:
            raise ValueError(
                "a return address needs a name, at least one address line and '<postal code> <city>'"
            )
        code, _, city = parts[-1].partition(" ")
        if not _POSTAL_CODE_NO.fullmatch(code) or not city.strip():
            raise ValueError(
                f"the last line of a return address must be '<4 digits> <city>', not {parts[-1]!r}"
            )
        return cls(name=parts[0], address=PostalAddress(tuple(parts[1:-1]), code, city.strip()))


@dataclass(frozen=True)
class Identification:
    """Digipost's answer to "who is this national id?" (never holds the id itself)."""

    result: IdentificationResult
    reason: str | None = None  # unidentified-reason or invalid-reason

    @property
    def is_digipost_user(self) -> bool:
        return self.result == "DIGIPOST"


@dataclass(frozen=True)
class _Answer:
    status: int
    body: bytes
    retry_after: str | None


# ---------------------------------------------------------------------------------------------------- XML


def _root(tag: str) -> ET.Element:
    """A document element in the v8 namespace (children built with :func:`_sub` inherit it)."""
    return ET.Element(tag, {"xmlns": DIGIPOST_NS})


def _q(tag: str) -> str:
    return f"{{{DIGIPOST_NS}}}{tag}"


def _sub(parent: ET.Element, tag: str, text: str | None = None) -> ET.Element:
    element = ET.SubElement(parent, tag)  # unqualified: the root declares the default namespace
    if text is not None:
        element.text = text
    return element


def _to_bytes(root: ET.Element) -> bytes:
    return bytes(ET.tostring(root, encoding="utf-8", xml_declaration=True))


def _parse_xml(raw: bytes) -> ET.Element | None:
    """Digipost's XML answer, or None if it is not XML. DTDs are refused: no entity tricks reach expat."""
    if not raw.strip() or b"<!DOCTYPE" in raw or b"<!ENTITY" in raw:
        return None
    try:
        return ET.fromstring(raw)  # noqa: S314 - DTDs refused above; the answer comes from Digipost over TLS
    except ET.ParseError:
        return None


def _text(element: ET.Element | None, tag: str) -> str | None:
    if element is None:
        return None
    found = element.find(_q(tag))
    if found is None or found.text is None:
        return None
    return found.text.strip()


def _scrub(text: str | None, limit: int = 200) -> str:
    """A text from Digipost, short and without anything shaped like a national id."""
    return _NATIONAL_ID_SHAPE.sub("…", text or "")[:limit]


def _norwegian_or_foreign(parent: ET.Element, address: PostalAddress, *, field: str) -> None:
    lines = [line.strip() for line in address.lines if line.strip()]
    code = address.postal_code.strip()
    city = address.city.strip()
    country = (address.country or "NO").strip().upper()
    reason = "invalid_return_address" if field == "return-address" else "invalid_postal_address"
    error: type[ChannelError] = (
        ChannelConfigurationError if field == "return-address" else PermanentChannelError
    )
    if any(len(line) > _MAX_ADDRESS_LINE for line in lines) or len(city) > _MAX_CITY:
        raise error(
            reason, f"a {field} line is longer than Digipost accepts ({_MAX_ADDRESS_LINE} characters)"
        )
    if country == "NO":
        if len(lines) > 3:
            raise error(
                reason, f"a Norwegian {field} has at most 3 address lines for Digipost, not {len(lines)}"
            )
        if not _POSTAL_CODE_NO.fullmatch(code) or not city:
            raise error(reason, f"a Norwegian {field} needs a 4-digit postal code and a city")
        norwegian = _sub(parent, "norwegian-address")
        for number, line in enumerate(lines, start=1):
            _sub(norwegian, f"addressline{number}", line)
        _sub(norwegian, "zip-code", code)
        _sub(norwegian, "city", city)
        return
    foreign_lines = [*lines, f"{code} {city}".strip()]
    foreign_lines = [line for line in foreign_lines if line]
    if not foreign_lines or len(foreign_lines) > 4:
        raise error(reason, f"a foreign {field} has 1 to 4 address lines for Digipost")
    foreign = _sub(parent, "foreign-address")
    for number, line in enumerate(foreign_lines, start=1):
        _sub(foreign, f"addressline{number}", line)
    _sub(foreign, "country-code", country)


def _print_recipient(parent: ET.Element, tag: str, name: str, address: PostalAddress) -> None:
    element = _sub(parent, tag)
    _sub(element, "name", name)
    _norwegian_or_foreign(element, address, field=tag)


@dataclass(frozen=True)
class _PrintDetails:
    name: str
    address: PostalAddress
    return_address: ReturnAddress

    def append_to(self, parent: ET.Element) -> None:
        details = _sub(parent, "print-details")
        _print_recipient(details, "recipient", self.name, self.address)
        _print_recipient(details, "return-address", self.return_address.name, self.return_address.address)
        _sub(details, "color", "MONOCHROME")
        _sub(details, "nondeliverable-handling", "RETURN_TO_SENDER")


def _message_xml(
    *,
    message_id: str,
    sender_id: str | None,
    national_id: str | None,
    print_details: _PrintDetails | None,
    document_id: str,
    subject: str,
    print_if_unread: tuple[datetime, _PrintDetails] | None,
) -> bytes:
    """The ``<message>`` of the v8 schema, elements in the schema's order."""
    root = _root("message")
    _sub(root, "message-id", message_id)
    if sender_id is not None:
        _sub(root, "sender-id", sender_id)
    recipient = _sub(root, "recipient")
    if national_id is not None:
        _sub(recipient, "personal-identification-number", national_id)
    if print_details is not None:
        print_details.append_to(recipient)
    document = _sub(root, "primary-document")
    _sub(document, "uuid", document_id)
    _sub(document, "subject", subject)
    _sub(document, "file-type", "pdf")
    _sub(document, "authentication-level", "PASSWORD")
    _sub(document, "sensitivity-level", "NORMAL")
    if print_if_unread is not None:
        deadline, details = print_if_unread
        element = _sub(root, "print-if-unread")
        _sub(element, "print-if-unread-after", _xml_datetime(deadline))
        details.append_to(element)
    return _to_bytes(root)


def _identification_xml(national_id: str) -> bytes:
    root = _root("identification")
    _sub(root, "personal-identification-number", national_id)
    return _to_bytes(root)


def _multipart(boundary: str, message_xml: bytes, document_id: str, pdf: bytes) -> bytes:
    """The ``multipart/vnd.digipost-v8+xml`` body: the message, then the document named by its uuid."""
    parts = (
        (f"{DIGIPOST_MEDIA_TYPE}; charset=UTF-8", "message", message_xml),
        ("application/pdf", document_id, pdf),
    )
    delimiter = f"--{boundary}".encode("ascii")
    chunks: list[bytes] = []
    for content_type, filename, payload in parts:
        headers = f'Content-Type: {content_type}\r\nContent-Disposition: attachment; filename="{filename}"'
        chunks += [delimiter, b"\r\n", headers.encode("ascii"), b"\r\n\r\n", payload, b"\r\n"]
    chunks += [delimiter, b"--\r\n"]
    return b"".join(chunks)


# ------------------------------------------------------------------------------------------ the channel


class DigipostChannel:
    """The ``digital_mailbox`` channel through Digipost's REST API (see the module docstring).

    ``sender_id`` is the Digipost account the letters come from; ``broker_id`` the account that owns the
    business certificate and signs (``X-Digipost-UserId``), the sender itself unless a broker sends on its
    behalf. The key is the certificate's private key: PEM text in ``private_key`` or a PEM / PKCS#12 file at
    ``private_key_path`` (``private_key_password`` if it is encrypted). One ``aiohttp`` session per channel,
    opened on first use; ``close`` closes it and, if the channel made its own PDF renderer, that too.
    """

    name: str = "digital_mailbox"
    provider: str = PROVIDER

    def __init__(
        self,
        *,
        base_url: str,
        sender_id: int | str,
        return_address: ReturnAddress | str,
        private_key: SecretStr | None = None,
        private_key_path: str | Path | None = None,
        private_key_password: SecretStr | None = None,
        broker_id: int | str | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        cost_nok: float = DEFAULT_COST_NOK,
        default_subject: str = DEFAULT_SUBJECT,
        renderer: PdfRenderer | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        url = URL(base_url.strip())
        if url.scheme not in ("http", "https") or not url.host:
            raise ChannelConfigurationError(
                "digipost_url_invalid", "ORCH_DIGIPOST_URL must be an http(s) URL"
            )
        self._base = url.with_path(url.path.rstrip("/") or "/").with_query(None).with_fragment(None)
        self._sender_id = _account_id(sender_id, "sender_id")
        self._broker_id = _account_id(broker_id, "broker_id") if broker_id is not None else self._sender_id
        if isinstance(return_address, str):
            try:
                return_address = ReturnAddress.parse(return_address)
            except ValueError as exc:
                raise ChannelConfigurationError("digipost_return_address_invalid", str(exc)) from exc
        if not 1 <= len(return_address.name.strip()) <= _MAX_NAME:
            raise ChannelConfigurationError("invalid_return_address", "the return address needs a name")
        _print_recipient(ET.Element("check"), "return-address", return_address.name, return_address.address)
        self._return_address = return_address
        if timeout_s <= 0:
            raise ValueError("timeout_s must be positive")
        self._timeout_s = timeout_s
        subject = " ".join(default_subject.split())
        if not subject or len(subject) > _MAX_SUBJECT:
            raise ValueError(f"default_subject must be 1 to {_MAX_SUBJECT} characters")
        self._default_subject = subject
        self._clock = clock or _utcnow
        self._signer = _Signer(
            self._broker_id, _read_key(private_key, private_key_path, private_key_password), self._clock
        )
        self.limits = ChannelLimits(
            max_body_chars=None,
            supports_subject=True,
            supports_html=True,
            cost_nok=cost_nok,
            statutory="always",
            reaches="national_id",
        )
        self._owns_renderer = renderer is None
        self._renderer = renderer if renderer is not None else PdfRenderer()
        self._session: aiohttp.ClientSession | None = None
        self._links: dict[str, URL] | None = None
        self._links_lock = asyncio.Lock()

    @classmethod
    def from_settings(
        cls, settings: Settings, *, renderer: PdfRenderer | None = None
    ) -> DigipostChannel | None:
        """The channel configured by ``ORCH_DIGIPOST_*``; None when ``ORCH_DIGIPOST_URL`` is unset.

        Settings read: ``digipost_url``, ``digipost_sender_id``, ``digipost_broker_id`` (optional: the
        sender), ``digipost_private_key_path`` or ``digipost_private_key`` (SecretStr, PEM),
        ``digipost_private_key_password`` (SecretStr, optional), ``digipost_return_address``
        (``"Name; line; 0150 Oslo"``), ``digipost_timeout_s`` (30), ``digipost_cost_nok`` (1.2),
        ``digipost_subject`` ("Brev").
        """
        url = settings.digipost_url
        if not url:
            return None
        sender_id = settings.digipost_sender_id
        key_path = settings.digipost_private_key_path
        key = settings.digipost_private_key
        return_address = settings.digipost_return_address
        missing = [
            name
            for name, ok in (
                ("ORCH_DIGIPOST_SENDER_ID", bool(sender_id)),
                (
                    "ORCH_DIGIPOST_PRIVATE_KEY_PATH or ORCH_DIGIPOST_PRIVATE_KEY",
                    bool(key_path) or key is not None,
                ),
                ("ORCH_DIGIPOST_RETURN_ADDRESS", bool(return_address)),
            )
            if not ok
        ]
        if missing:
            raise ChannelConfigurationError(
                "digipost_settings_missing", f"ORCH_DIGIPOST_URL is set but {', '.join(missing)} not"
            )
        return cls(
            base_url=url,
            sender_id=str(sender_id),
            broker_id=settings.digipost_broker_id or None,
            private_key=key,
            private_key_path=key_path or None,
            private_key_password=settings.digipost_private_key_password,
            return_address=str(return_address),
            timeout_s=settings.digipost_timeout_s,
            cost_nok=settings.digipost_cost_nok,
            default_subject=settings.digipost_subject or DEFAULT_SUBJECT,
            renderer=renderer,
        )

    def __repr__(self) -> str:
        return (
            f"DigipostChannel(url={str(self._base)!r}, sender_id={self._sender_id!r}, "
            f"broker_id={self._broker_id!r})"
        )

    # ------------------------------------------------------------------------------------------ identify

    async def identify(self, national_id: str | SecretStr) -> Identification:
        """Is this person a Digipost user? ``DIGIPOST``: yes; ``IDENTIFIED`` / ``UNIDENTIFIED``: no;
        ``INVALID``: not a national id."""
        digits = _digits(national_id)
        url = await self._link("identify_recipient")
        answer = await self._request(
            "POST", url, _identification_xml(digits), DIGIPOST_MEDIA_TYPE, sending=False
        )
        if answer.status != 200:
            raise _translate(answer, sending=False, what="identification")
        root = _parse_xml(answer.body)
        if root is not None and root.tag == _q("identification-result-with-encryption-key"):
            root = root.find(_q("identification-result"))
        result = _text(root, "result")
        if result not in ("DIGIPOST", "IDENTIFIED", "UNIDENTIFIED", "INVALID"):
            raise TransientChannelError(
                "digipost_bad_answer", "Digipost answered the identification with something unreadable"
            )
        reason = _text(root, "invalid-reason") or _text(root, "unidentified-reason")
        return Identification(cast(IdentificationResult, result), reason)

    # ---------------------------------------------------------------------------------------------- send

    async def send(self, message: Outgoing) -> Receipt:
        national_id = _national_id(message)
        deadline = print_if_unread_after(message.metadata.get("print_if_unread_after"))
        if deadline is not None and deadline <= self._clock():
            raise PermanentChannelError(
                "print_if_unread_after_passed", "the print-if-unread deadline has already passed"
            )
        if message.html is None:
            raise PermanentChannelError(
                "digital_mailbox_requires_html", "the letter is rendered to PDF from HTML; none was given"
            )
        subject = " ".join((message.subject or self._default_subject).split())[:_MAX_SUBJECT]
        reference = letter_reference(message.contact_id, message.attempt_id)
        message_id = message_uuid(message.attempt_id)
        document_id = document_uuid(message.attempt_id)
        details = self._print_details(message) if deadline is not None else None

        identification = await self.identify(national_id)
        if identification.result == "INVALID":
            raise PermanentChannelError(
                "invalid_national_id", f"Digipost says the national id is invalid ({identification.reason})"
            )
        delivery: Delivery = "digital" if identification.is_digipost_user else "print"
        if delivery == "print":
            if message.postal_address is None:
                raise PermanentChannelError(
                    "not_digipost_user",
                    "the recipient has no Digipost account and the message has no postal address for print",
                )
            details = details or self._print_details(message)

        rendered = await self._renderer.render(message.html, reference=reference)
        xml = _message_xml(
            message_id=message_id,
            sender_id=self._sender_id if self._sender_id != self._broker_id else None,
            national_id=national_id if delivery == "digital" else None,
            print_details=details if delivery == "print" else None,
            document_id=document_id,
            subject=subject,
            print_if_unread=(deadline, details) if delivery == "digital" and deadline and details else None,
        )
        boundary = secrets.token_hex(16)
        while boundary.encode("ascii") in rendered.pdf:  # pragma: no cover - 2**-128
            boundary = secrets.token_hex(16)
        body = _multipart(boundary, xml, document_id, rendered.pdf)
        url = await self._link("create_message")
        answer = await self._request(
            "POST",
            url,
            body,
            f"{DIGIPOST_MULTIPART_TYPE}; boundary={boundary}",
            sending=True,
            attempt_id=message.attempt_id,
        )
        printed_deadline = _xml_datetime(deadline) if deadline is not None and delivery == "digital" else None
        if answer.status in (200, 201):
            root = _parse_xml(answer.body)
            if root is None or root.tag != _q("message-delivery"):
                raise UncertainDeliveryError(
                    "digipost_outcome_unknown", f"Digipost answered {answer.status} with an unreadable body"
                )
            method = _text(root, "delivery-method")
            detail: dict[str, Any] = {
                "delivery": "print" if method == "PRINT" else "digital",
                "print_if_unread_after": printed_deadline,
                "already_sent": False,
                "document_uuid": document_id,
                "status": _text(root, "status"),
                "delivery_time": _text(root, "delivery-time"),
                "identification": identification.result,
                "pages": rendered.pages,
            }
            log.info(
                "digipost: attempt %s delivered (%s) as message %s",
                message.attempt_id,
                detail["delivery"],
                message_id,
            )
            return Receipt(provider=PROVIDER, provider_message_id=message_id, detail=detail)

        error = _error_code(answer.body)
        if answer.status == 409 or error in _DUPLICATE_CODES:
            log.info(
                "digipost: attempt %s was already sent as message %s (%s)",
                message.attempt_id,
                message_id,
                error,
            )
            status = await self._document_status(document_id)
            # How the first send went (the debtor may have opened or closed an account since).
            sent_as = {"PRINT": "print", "DIGIPOST": "digital"}.get(status.get("channel", ""), delivery)
            return Receipt(
                provider=PROVIDER,
                provider_message_id=message_id,
                detail={
                    "delivery": sent_as,
                    "print_if_unread_after": printed_deadline if sent_as == "digital" else None,
                    "already_sent": True,
                    "document_uuid": document_id,
                    "status": status.get("status"),
                    "delivery_time": status.get("delivered"),
                    "identification": identification.result,
                    "duplicate": error,
                },
            )
        log.info("digipost: attempt %s answered HTTP %s (%s)", message.attempt_id, answer.status, error)
        if error in _NOT_A_USER_CODES and delivery == "digital" and message.postal_address is not None:
            # The account was closed between identification and sending: the next try identifies afresh and
            # prints the letter.
            raise TransientChannelError(
                "digipost_recipient_changed", "the recipient left Digipost between identification and sending"
            )
        raise _translate(answer, sending=True, what="message")

    def _print_details(self, message: Outgoing) -> _PrintDetails:
        address = message.postal_address
        if address is None:
            raise PermanentChannelError(
                "postal_address_required", "print (fallback or print-if-unread) needs message.postal_address"
            )
        name = " ".join(message.recipient_name.split())
        if not name or len(name) > _MAX_NAME:
            raise PermanentChannelError(
                "invalid_postal_address", f"print needs a recipient name of 1 to {_MAX_NAME} characters"
            )
        # Build once now so that a bad address fails before anything is sent.
        details = _PrintDetails(name, address, self._return_address)
        details.append_to(ET.Element("check"))
        return details

    async def _document_status(self, document_id: str) -> dict[str, str]:
        """The attributes of ``<document-status>`` for our document, or {} if Digipost cannot tell now."""
        try:
            found = await self._fetch_document_status(document_id)
        except ChannelError as exc:
            log.warning("digipost: status of document %s unavailable (%s)", document_id, exc.reason)
            return {}
        return found or {}

    async def _fetch_document_status(self, document_id: str) -> dict[str, str] | None:
        """The attributes of ``<document-status>``; None if Digipost has no such document. Raises the channel
        error of a failed request."""
        # Like the Java client (getDocumentStatus): this path, resolved against the base URL.
        url = self._base.with_path(f"/documents/{self._sender_id}/{document_id}/status")
        answer = await self._request("GET", url, None, None, sending=False)
        if answer.status == 404 and _error_code(answer.body) == "DOCUMENT_NOT_FOUND":
            return None
        if answer.status != 200:
            raise _translate(answer, sending=False, what="document status")
        root = _parse_xml(answer.body)
        if root is None or root.tag != _q("document-status"):
            raise TransientChannelError("digipost_bad_answer", "Digipost's document status is unreadable")
        return {key: value for key, value in root.attrib.items() if isinstance(value, str)}

    # ---------------------------------------------------------------------------------------- status API

    async def query_status(self, attempt: SentAttempt) -> CarrierStatus | None:
        """What Digipost says became of ``attempt`` (see the module docstring); None if it never got it."""
        # Imported here: the webhook module builds on this one (the message and document ids).
        from webhooks.digipost import EVENT_MAP

        document_id = document_uuid(attempt.attempt_id)
        found = await self._fetch_document_status(document_id)
        if found is None:
            return None
        delivered = found.get("status") == "DELIVERED"
        if found.get("read") == "Y":
            kind = "READ"
        elif delivered:
            kind = "PRINTED" if found.get("channel") == "PRINT" else "DELIVERED"
        else:
            kind = None  # Digipost has it and has not delivered it yet
        status, reason, extra = EVENT_MAP[kind] if kind else ("accepted", None, {})
        at = _status_time(found.get("delivered")) if delivered else None
        return CarrierStatus(
            provider=PROVIDER,
            status=status,
            at=at or self._clock(),
            reason=reason,
            provider_message_id=message_uuid(attempt.attempt_id),
            detail={
                **({"digipost_event": kind} if kind else {}),
                **extra,
                "document_uuid": document_id,
                "document_status": found.get("status"),
                "delivery_channel": found.get("channel"),
            },
        )

    # ---------------------------------------------------------------------------------------------- HTTP

    async def _link(self, relation: str) -> URL:
        """A link of the entry point (``GET /``, fetched once): its path, on our base URL."""
        if self._links is None:
            async with self._links_lock:
                if self._links is None:
                    self._links = await self._fetch_entry_point()
        link = self._links.get(relation)
        if link is None:
            raise ChannelConfigurationError(
                "digipost_entry_point_incomplete", f"Digipost's entry point has no {relation} link"
            )
        return link

    async def _fetch_entry_point(self) -> dict[str, URL]:
        answer = await self._request("GET", self._base, None, None, sending=False)
        if answer.status != 200:
            raise _translate(answer, sending=False, what="entry point")
        root = _parse_xml(answer.body)
        if root is None or root.tag != _q("entrypoint"):
            raise TransientChannelError("digipost_bad_answer", "Digipost's entry point is unreadable")
        links: dict[str, URL] = {}
        for link in root.findall(_q("link")):
            rel, uri = link.get("rel", ""), link.get("uri", "")
            if "/relations/" in rel and uri:
                # Like the Java client: the link's path, resolved against the configured base URL.
                links[rel.rsplit("/relations/", 1)[1]] = self._base.with_path(URL(uri).raw_path, encoded=True)
        return links

    async def _request(
        self,
        method: str,
        url: URL,
        body: bytes | None,
        content_type: str | None,
        *,
        sending: bool,
        attempt_id: str | None = None,
    ) -> _Answer:
        headers = {"Accept": DIGIPOST_MEDIA_TYPE, **self._signer.headers(method, url, body)}
        if content_type is not None:
            headers["Content-Type"] = content_type
            headers["MIME-Version"] = "1.0"
        progress = RequestProgress()
        try:
            async with self._session_or_new().request(
                method, url, data=body, headers=headers, trace_request_ctx=progress
            ) as response:
                status = response.status
                retry_after = response.headers.get("Retry-After")
                raw = await response.read()
        except aiohttp.ClientConnectorCertificateError as exc:
            raise ChannelConfigurationError(
                "digipost_tls_failed", f"TLS with {url.host} failed: {exc.certificate_error}"
            ) from exc
        except aiohttp.ClientConnectorError as exc:  # refused, DNS, unreachable, TLS handshake
            raise TransientChannelError(
                "digipost_unavailable", f"Digipost unreachable: {type(exc).__name__}: {exc.os_error}"
            ) from exc
        except (TimeoutError, aiohttp.ClientError) as exc:
            if sending and progress.sent:
                log.warning("digipost: outcome unknown for attempt %s (%s)", attempt_id, type(exc).__name__)
                raise UncertainDeliveryError(
                    "digipost_outcome_unknown",
                    f"no answer from Digipost after the message was sent ({type(exc).__name__}); it may have "
                    "it: resending this attempt is safe (same message id)",
                ) from exc
            raise TransientChannelError(
                "digipost_unavailable", f"Digipost did not answer: {type(exc).__name__}"
            ) from exc
        return _Answer(status, raw, retry_after)

    def _session_or_new(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = tracking_session(
                timeout=aiohttp.ClientTimeout(total=self._timeout_s),
                # As the Java client: no Accept-Encoding, Digipost's answers are small.
                skip_auto_headers=("Accept-Encoding",),
            )
        return self._session

    async def close(self) -> None:
        """Close the HTTP session (a later send opens a new one) and a renderer this channel made."""
        session, self._session = self._session, None
        try:
            if session is not None and not session.closed:
                await session.close()
        finally:
            if self._owns_renderer:
                await self._renderer.close()


# ---------------------------------------------------------------------------------------------- helpers


def _account_id(value: int | str | None, label: str) -> str:
    text = str(value).strip() if value is not None else ""
    if not text.isdigit():
        raise ChannelConfigurationError(f"digipost_{label}_invalid", f"the Digipost {label} must be a number")
    return text


def _read_key(
    pem: SecretStr | None, path: str | Path | None, password: SecretStr | None
) -> rsa.RSAPrivateKey:
    secret = password.get_secret_value().encode("utf-8") if password is not None else None
    if pem is not None and pem.get_secret_value().strip():
        return load_private_key(pem.get_secret_value().encode("utf-8"), secret)
    if path is None or not str(path).strip():
        raise ChannelConfigurationError("digipost_key_missing", "no Digipost private key (PEM or path) given")
    try:
        data = Path(path).expanduser().read_bytes()
    except OSError as exc:
        raise ChannelConfigurationError(
            "digipost_key_unreadable", f"cannot read the Digipost key file {str(path)!r}: {exc.strerror}"
        ) from exc
    return load_private_key(data, secret)


def _digits(national_id: str | SecretStr) -> str:
    raw = national_id.get_secret_value() if isinstance(national_id, SecretStr) else national_id
    try:
        return validate_national_id(raw)
    except ValueError as exc:  # its messages never contain the id
        raise PermanentChannelError("invalid_national_id", f"not a valid national id: {exc}") from None


def _national_id(message: Outgoing) -> str:
    raw = message.metadata.get("national_id")
    if isinstance(raw, SecretStr):
        raw = raw.get_secret_value()
    if not isinstance(raw, str) or not raw.strip():
        raise PermanentChannelError(
            "national_id_missing",
            "the digital mailbox needs the debtor's national id in metadata['national_id']",
        )
    return _digits(raw)


def _status_time(value: str | None) -> datetime | None:
    """A ``document-status`` time (xsd:dateTime with an offset), aware; None if absent or unreadable."""
    try:
        moment = datetime.fromisoformat(value.strip()) if value else None
    except ValueError:
        return None
    return moment if moment is not None and moment.tzinfo is not None else None


def _error_code(raw: bytes) -> str | None:
    root = _parse_xml(raw)
    return _text(root, "error-code") if root is not None and root.tag == _q("error") else None


def _translate(answer: _Answer, *, sending: bool, what: str) -> ChannelError:
    """The channel error for a Digipost answer that did not take (or identify) anything."""
    root = _parse_xml(answer.body)
    error = root if root is not None and root.tag == _q("error") else None
    code = _text(error, "error-code")
    kind = _text(error, "error-type")
    text = _scrub(_text(error, "error-message"))
    detail = f"Digipost answered {answer.status} to the {what}" + (
        f": {code} {text}".rstrip() if code else ""
    )
    status = answer.status
    if status in (401, 403) or code in _AUTH_CODES:
        return ChannelConfigurationError(f"digipost_auth_failed:{code or status}", detail)
    if status == 429:
        return TransientChannelError(
            "digipost_throttled", detail, retry_after_s=retry_after_s(answer.retry_after)
        )
    if status == 504 and sending:  # a proxy gave up waiting for Digipost, which may have taken the message
        return UncertainDeliveryError("digipost_outcome_unknown", detail)
    if status >= 500 or kind == "SERVER" or code in _SERVER_CODES:
        return TransientChannelError(
            "digipost_unavailable" if status == 503 else "digipost_5xx",
            detail,
            retry_after_s=retry_after_s(answer.retry_after),
        )
    if code in _NOT_A_USER_CODES:
        return PermanentChannelError("not_digipost_user", detail)
    if code == "INVALID_RECIPIENT_PRINT_ADDRESS":
        return PermanentChannelError("invalid_postal_address", detail)
    if code in _CONFIG_DATA_CODES or kind in ("CONFIGURATION", "CLIENT_TECHNICAL"):
        return ChannelConfigurationError(f"digipost_rejected:{code}", detail)
    if code is None and status in (404, 405, 406, 415):
        return ChannelConfigurationError("digipost_url_invalid", f"{detail}: check ORCH_DIGIPOST_URL")
    if status == 408:
        return TransientChannelError("digipost_request_timeout", detail)
    return PermanentChannelError(f"digipost_rejected:{code or status}", detail)
