"""A local Digipost: a real HTTP server speaking the subset of Digipost's REST API (v8) our channel speaks.

It follows the reference clients (``digipost/digipost-api-client-java``, ``digipost-api-client-dotnet``)
and the v8 schema (``api_v8.xsd``, namespace ``http://api.digipost.no/schema/v8``):

``GET /``
    The entry point: ``<entrypoint>`` with ``<link rel="https://api.digipost.no/relations/create_message">``
    and ``identify_recipient`` links.
``POST /identification``
    ``<identification><personal-identification-number>`` → ``<identification-result>``: ``DIGIPOST`` (with a
    ``digipost-address``) for the national ids in ``state.users``, ``UNIDENTIFIED``/``NOT_FOUND`` for those
    in ``state.unknown``, ``INVALID``/``INVALID_PERSONAL_IDENTIFICATION_NUMBER`` for a malformed id, and
    ``IDENTIFIED`` (a person, no Digipost account; a ``person-alias``) for any other valid id.
``POST /messages``
    ``multipart/vnd.digipost-v8+xml``: the ``<message>`` part (``filename="message"``), then each document as
    a part named by its uuid. A recipient that is a user gets it in Digipost (``DELIVERED``); otherwise, with
    ``<print-details>``, it goes to print (``DELIVERED_TO_PRINT``); without them: ``UNKNOWN_RECIPIENT``.
    ``<print-if-unread>`` is kept with its deadline. A message id the sender used before is refused with
    ``409 DUPLICATE_MESSAGE`` (a reused document uuid with ``409 DUPLICATE_DOCUMENT_ID``), as Digipost does.
``GET /documents/{sender id}/{document uuid}/status``
    ``<document-status uuid sender-id status created delivered read channel is-primary-document .../>``;
    ``read`` is ``Y`` once :meth:`DigipostSandbox.mark_read` was called for the message, else ``N``. The
    sandbox never pushes document events: this route is the only way to learn what became of a letter.

Every request must be signed as Digipost requires: ``X-Digipost-UserId`` (a broker registered with
:meth:`DigipostSandbox.add_sender` and its public key), ``Date`` within ``max_clock_skew_s``,
``X-Content-SHA256`` of the body (when there is one) and ``X-Digipost-Signature``, RSA PKCS#1 v1.5 SHA-256
over the canonical request. The sandbox builds the canonical string itself from the request as it arrived
(it does not borrow the channel's code). Failures answer Digipost's ``<error>`` body: ``401`` with
``MISSING_SIGNATURE``, ``INVALID_SIGNATURE`` or ``UNKNOWN_USER_ID``; ``400`` with ``INVALID_SHA256``,
``MISSING_DATE_HEADER`` or ``DATE_HEADER_OUTSIDE_ACCEPTED_INTERVAL``. Answers are not signed.

Faults: ``state.fail_status`` (e.g. 503; set with :meth:`DigipostSandbox.fail`) answers every request (or
only the routes in ``state.fail_routes``: ``entrypoint``, ``identification``, ``messages``, ``status``) with
that status and a ``SERVER`` error before anything else, as a load balancer would; ``state.slow_s`` stores a
message and only then waits that long before answering (the client's timeout fires; Digipost has it).

Everything the sandbox saw is kept: ``state.requests`` (method, path with query, broker, whether the
signature verified, status), ``state.messages`` (the message XML, the PDF bytes, how it was delivered) and
``state.rejected``. ``orchestrator demo`` and the tests drive it through :func:`serve` on 127.0.0.1, port 0.
Nothing here logs a national id.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Final, Literal
from xml.etree import ElementTree as ET
from zoneinfo import ZoneInfo

from aiohttp import web
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from orchestrator.identifiers import validate_national_id
from orchestrator.sandbox.server import serve_app

__all__ = [
    "DigipostSandbox",
    "RecordedRequest",
    "SandboxMessage",
    "create_app",
    "generate_key_pair",
    "serve",
]

NS: Final = "http://api.digipost.no/schema/v8"
MEDIA_TYPE: Final = "application/vnd.digipost-v8+xml"
MULTIPART_TYPE: Final = "multipart/vnd.digipost-v8+xml"
RELATIONS: Final = "https://api.digipost.no/relations/"
OSLO: Final = ZoneInfo("Europe/Oslo")

Route = Literal["entrypoint", "identification", "messages", "status"]
Delivery = Literal["digital", "print"]

_SIGNED_HEADERS: Final = ("content-md5", "date", "x-content-sha256", "x-digipost-userid")
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_ZIP_NO = re.compile(r"[0-9]{4}")


def generate_key_pair(bits: int = 2048) -> tuple[bytes, bytes]:
    """A fresh RSA key pair for a sandbox sender: (private key PEM, PKCS#8; public key PEM)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, public


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str  # path and query, exactly as requested
    user_id: str | None
    verified: bool  # the signature (and content hash) checked out
    status: int


@dataclass
class SandboxMessage:
    sender_id: str
    message_id: str
    document_uuid: str
    subject: str | None
    file_type: str
    authentication_level: str | None
    sensitivity_level: str | None
    delivery: Delivery
    national_id: str | None = field(repr=False)  # the recipient's, as Digipost holds it (never logged)
    print_details: dict[str, Any] | None  # for print: who and where (see _print_details)
    print_if_unread_after: datetime | None
    print_if_unread_details: dict[str, Any] | None
    xml: bytes = field(repr=False)
    document: bytes = field(repr=False)
    delivered_at: datetime
    read_at: datetime | None = None  # when the recipient opened it (mark_read)

    @property
    def pdf(self) -> bytes:
        return self.document


@dataclass
class DigipostSandbox:
    """The sandbox's configuration and everything it saw. Change it at any time, even while serving."""

    senders: dict[str, rsa.RSAPublicKey] = field(default_factory=dict)  # broker id → public key
    users: dict[str, str] = field(default_factory=dict)  # national id → digipost address
    unknown: set[str] = field(default_factory=set)  # national ids Digipost cannot find
    max_clock_skew_s: float = 600.0
    fail_status: int | None = None
    fail_routes: frozenset[str] | None = None  # None: every route
    slow_s: float = 0.0

    messages: list[SandboxMessage] = field(default_factory=list)
    requests: list[RecordedRequest] = field(default_factory=list)
    rejected: list[tuple[int, str]] = field(default_factory=list)  # (HTTP status, error code)

    _closing: asyncio.Event | None = field(default=None, repr=False)

    def add_sender(self, broker_id: int | str, public_key_pem: bytes | str) -> None:
        """Let ``broker_id`` sign with the private key belonging to ``public_key_pem``."""
        pem = public_key_pem.encode("ascii") if isinstance(public_key_pem, str) else public_key_pem
        key = serialization.load_pem_public_key(pem)
        if not isinstance(key, rsa.RSAPublicKey):
            raise ValueError("a Digipost sender key is an RSA key")
        self.senders[str(broker_id)] = key

    def add_user(self, national_id: str, digipost_address: str | None = None) -> None:
        """Make ``national_id`` a Digipost user (a valid id; the address defaults to a made-up one)."""
        digits = validate_national_id(national_id)
        self.users[digits] = (
            digipost_address or f"sandbox.user#{hashlib.sha256(digits.encode()).hexdigest()[:4]}"
        )

    def fail(self, status: int | None, *routes: Route) -> None:
        """Answer ``status`` (None: stop failing) to every request, or to the given routes only."""
        self.fail_status = status
        self.fail_routes = frozenset(routes) if routes else None

    def message(self, message_id: str) -> SandboxMessage | None:
        return next((m for m in self.messages if m.message_id == message_id), None)

    def mark_read(self, message_id: str) -> None:
        """The recipient opened the letter in Digipost (the document status says ``read="Y"``)."""
        found = self.message(message_id)
        if found is None:
            raise KeyError(message_id)
        found.read_at = datetime.now(UTC)

    async def _pause(self, seconds: float) -> bool:
        """Sleep ``seconds`` unless the sandbox shuts down first (then False)."""
        closing = self._closing
        if closing is None:
            await asyncio.sleep(seconds)
            return True
        try:
            await asyncio.wait_for(closing.wait(), seconds)
        except TimeoutError:
            return True
        return False


STATE = web.AppKey("digipost_sandbox", DigipostSandbox)
_BODY = web.RequestKey("digipost_body", bytes)
_USER = web.RequestKey("digipost_user", str)


# ------------------------------------------------------------------------------------------------------ XML


def _root(tag: str) -> ET.Element:
    """A document element in the v8 namespace (children built with :func:`_sub` inherit it)."""
    return ET.Element(tag, {"xmlns": NS})


def _q(tag: str) -> str:
    return f"{{{NS}}}{tag}"


def _sub(parent: ET.Element, tag: str, text: str | None = None) -> ET.Element:
    element = ET.SubElement(parent, tag)  # unqualified: the root declares the default namespace
    if text is not None:
        element.text = text
    return element


def _xml(root: ET.Element, status: int = 200) -> web.Response:
    body = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return web.Response(body=body, status=status, content_type=MEDIA_TYPE)


def _parse(raw: bytes) -> ET.Element | None:
    if not raw.strip() or b"<!DOCTYPE" in raw or b"<!ENTITY" in raw:
        return None
    try:
        return ET.fromstring(raw)  # noqa: S314 - DTDs refused above
    except ET.ParseError:
        return None


def _text(element: ET.Element | None, *path: str) -> str | None:
    for tag in path:
        if element is None:
            return None
        element = element.find(_q(tag))
    if element is None or element.text is None:
        return None
    return element.text.strip()


_ERROR_TYPES: Final = {
    "API_UNAVAILABLE": "SERVER",
    "SERVER_ERROR": "SERVER",
    "MISSING_SIGNATURE": "CLIENT_TECHNICAL",
    "INVALID_SIGNATURE": "CLIENT_TECHNICAL",
    "UNKNOWN_USER_ID": "CLIENT_TECHNICAL",
    "INVALID_SHA256": "CLIENT_TECHNICAL",
    "MISSING_DATE_HEADER": "CLIENT_TECHNICAL",
    "INVALID_DATE_HEADER": "CLIENT_TECHNICAL",
    "DATE_HEADER_OUTSIDE_ACCEPTED_INTERVAL": "CLIENT_TECHNICAL",
    "PROBLEM_WITH_REQUEST": "CLIENT_TECHNICAL",
    "MISSING_BODYPART_FILENAME": "CLIENT_TECHNICAL",
    "DOCUMENTS_AND_FILES_MISMATCH": "CLIENT_TECHNICAL",
    "SCHEMA_VALIDATION_ERROR": "CLIENT_TECHNICAL",
    "DOCUMENT_NOT_FOUND": "CLIENT_TECHNICAL",
}


def _error(request: web.Request, status: int, code: str, message: str) -> web.Response:
    """Digipost's ``<error>`` body; recorded in ``state.rejected``."""
    request.app[STATE].rejected.append((status, code))
    root = _root("error")
    _sub(root, "error-code", code)
    _sub(root, "error-message", message)
    _sub(root, "error-type", _ERROR_TYPES.get(code, "CLIENT_DATA"))
    response = _xml(root, status)
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Digipost realm="api"'
    return response


# ------------------------------------------------------------------------------------------------ signature


def _canonical(request: web.Request) -> str:
    path, _, query = request.raw_path.partition("?")
    signed = {
        name.lower(): value for name, value in request.headers.items() if name.lower() in _SIGNED_HEADERS
    }
    lines = [request.method.upper(), path.lower(), *(f"{name}: {signed[name]}" for name in sorted(signed))]
    return "\n".join([*lines, query.lower()]) + "\n"


def _check_signature(request: web.Request, body: bytes) -> web.Response | None:
    """None if the request is signed by a known broker, else the error Digipost would answer."""
    state = request.app[STATE]
    user_id = request.headers.get("X-Digipost-UserId", "").strip()
    key = state.senders.get(user_id)
    if key is None:
        return _error(request, 401, "UNKNOWN_USER_ID", "Unknown or missing X-Digipost-UserId")
    signature = request.headers.get("X-Digipost-Signature")
    if not signature:
        return _error(request, 401, "MISSING_SIGNATURE", "Missing X-Digipost-Signature")
    date_header = request.headers.get("Date")
    if not date_header:
        return _error(request, 400, "MISSING_DATE_HEADER", "Missing Date header")
    try:
        sent = parsedate_to_datetime(date_header)
    except (TypeError, ValueError, IndexError):
        return _error(request, 400, "INVALID_DATE_HEADER", "Date header is not an RFC 1123 date")
    if sent.tzinfo is None:
        sent = sent.replace(tzinfo=UTC)
    if abs((datetime.now(UTC) - sent).total_seconds()) > state.max_clock_skew_s:
        return _error(request, 400, "DATE_HEADER_OUTSIDE_ACCEPTED_INTERVAL", "Date header too far from now")
    if body:
        expected = base64.b64encode(hashlib.sha256(body).digest()).decode("ascii")
        if request.headers.get("X-Content-SHA256") != expected:
            return _error(request, 400, "INVALID_SHA256", "X-Content-SHA256 does not match the body")
    try:
        raw_signature = base64.b64decode(signature, validate=True)
        key.verify(raw_signature, _canonical(request).encode("utf-8"), padding.PKCS1v15(), hashes.SHA256())
    except (binascii.Error, ValueError, InvalidSignature):
        return _error(request, 401, "INVALID_SIGNATURE", "The request signature does not verify")
    request[_USER] = user_id
    return None


@web.middleware
async def _gate(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Record, inject faults, verify: every request passes here first."""
    state = request.app[STATE]
    body = await request.read()
    route = request.match_info.route.name or ""
    verified = False
    status = 500  # unless an answer is made: the handler failed or the client went away
    try:
        response: web.StreamResponse
        if state.fail_status is not None and (state.fail_routes is None or route in state.fail_routes):
            response = _error(
                request, state.fail_status, "API_UNAVAILABLE", "Service temporarily unavailable"
            )
        elif (refusal := _check_signature(request, body)) is not None:
            response = refusal
        else:
            verified = True
            request[_BODY] = body
            response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        user_id = request.headers.get("X-Digipost-UserId")
        state.requests.append(RecordedRequest(request.method, request.raw_path, user_id, verified, status))


# ------------------------------------------------------------------------------------------------- handlers


def _base(request: web.Request) -> str:
    return f"{request.scheme}://{request.host}"


async def _entrypoint(request: web.Request) -> web.StreamResponse:
    root = _root("entrypoint")
    base = _base(request)
    for relation, path in (
        ("create_message", "/messages"),
        ("identify_recipient", "/identification"),
        ("document_status", "/documents/"),
    ):
        link = _sub(root, "link")
        link.set("rel", RELATIONS + relation)
        link.set("uri", base + path)
        link.set("media-type", MEDIA_TYPE)
    return _xml(root)


def _identify(state: DigipostSandbox, national_id: str | None) -> tuple[str, str | None, str | None]:
    """(result, digipost address or alias, reason) for a national id."""
    try:
        digits = validate_national_id(national_id or "")
    except ValueError:
        return "INVALID", None, "INVALID_PERSONAL_IDENTIFICATION_NUMBER"
    if digits in state.users:
        return "DIGIPOST", state.users[digits], None
    if digits in state.unknown:
        return "UNIDENTIFIED", None, "NOT_FOUND"
    alias = hashlib.sha256(b"alias:" + digits.encode()).hexdigest()[:24]
    return "IDENTIFIED", alias, None


def _media_type(request: web.Request) -> str:
    return request.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()


async def _identification(request: web.Request) -> web.StreamResponse:
    if _media_type(request) != MEDIA_TYPE:
        return _error(request, 415, "PROBLEM_WITH_REQUEST", f"Content-Type must be {MEDIA_TYPE}")
    root = _parse(request[_BODY])
    if root is None or root.tag != _q("identification"):
        return _error(request, 400, "SCHEMA_VALIDATION_ERROR", "Expected an identification element")
    pin = _text(root, "personal-identification-number")
    if pin is None:
        return _error(
            request, 400, "SCHEMA_VALIDATION_ERROR", "Only personal-identification-number is supported"
        )
    result, address, reason = _identify(request.app[STATE], pin)
    answer = _root("identification-result")
    _sub(answer, "result", result)
    if result == "DIGIPOST":
        _sub(answer, "digipost-address", address)
    elif result == "IDENTIFIED":
        _sub(answer, "person-alias", address)
    elif result == "UNIDENTIFIED":
        _sub(answer, "unidentified-reason", reason)
    else:
        _sub(answer, "invalid-reason", reason)
    return _xml(answer)


@dataclass(frozen=True)
class _Part:
    headers: dict[str, str]
    body: bytes

    @property
    def filename(self) -> str | None:
        disposition = self.headers.get("content-disposition", "")
        match = re.search(r'filename="([^"]*)"', disposition) or re.search(r"filename=([^;\s]+)", disposition)
        return match.group(1) if match else None


def _multipart(content_type: str, body: bytes) -> list[_Part] | None:
    """The parts of a multipart body (RFC 2046), or None if it is not one."""
    match = re.search(r'boundary="?([^";]+)"?', content_type)
    if match is None:
        return None
    delimiter = b"--" + match.group(1).encode("ascii", "replace")
    chunks = body.split(b"\r\n" + delimiter)
    first = chunks[0]
    if not first.startswith(delimiter):
        return None
    chunks[0] = first[len(delimiter) :]
    parts: list[_Part] = []
    for chunk in chunks:
        if chunk.startswith(b"--"):
            break  # the close delimiter
        head, sep, payload = chunk.partition(b"\r\n\r\n")
        if not sep:
            return None
        headers: dict[str, str] = {}
        for line in head.decode("utf-8", "replace").split("\r\n"):
            name, colon, value = line.partition(":")
            if colon:
                headers[name.strip().lower()] = value.strip()
        parts.append(_Part(headers, payload))
    return parts


def _address(element: ET.Element | None) -> dict[str, Any] | None:
    """A print-recipient (name + Norwegian or foreign address) as a dict, or None if it is not valid."""
    if element is None:
        return None
    name = _text(element, "name")
    norwegian = element.find(_q("norwegian-address"))
    foreign = element.find(_q("foreign-address"))
    if not name or len(name) > 130:
        return None
    if norwegian is not None:
        lines = [_text(norwegian, f"addressline{n}") for n in (1, 2, 3)]
        zip_code, city = _text(norwegian, "zip-code"), _text(norwegian, "city")
        if not zip_code or not _ZIP_NO.fullmatch(zip_code) or not city:
            return None
        return {
            "name": name,
            "lines": [line for line in lines if line],
            "zip_code": zip_code,
            "city": city,
            "country": "NO",
        }
    if foreign is not None:
        lines = [_text(foreign, f"addressline{n}") for n in (1, 2, 3, 4)]
        country = _text(foreign, "country-code") or _text(foreign, "country")
        if not lines[0] or not country:
            return None
        return {"name": name, "lines": [line for line in lines if line], "country": country}
    return None


def _print_details(request: web.Request, element: ET.Element | None) -> dict[str, Any] | web.Response:
    recipient = _address(element.find(_q("recipient")) if element is not None else None)
    if recipient is None:
        return _error(request, 400, "INVALID_RECIPIENT_PRINT_ADDRESS", "Invalid print recipient")
    assert element is not None
    return_address = _address(element.find(_q("return-address")))
    if return_address is None:
        return _error(request, 400, "INVALID_RETURN_ADDRESS", "Invalid return address")
    color = _text(element, "color") or "MONOCHROME"
    handling = _text(element, "nondeliverable-handling") or "RETURN_TO_SENDER"
    if color not in ("MONOCHROME", "COLORS") or handling not in ("SHRED", "RETURN_TO_SENDER"):
        return _error(request, 400, "SCHEMA_VALIDATION_ERROR", "Invalid color or nondeliverable-handling")
    return {
        "recipient": recipient,
        "return_address": return_address,
        "color": color,
        "nondeliverable_handling": handling,
    }


def _parse_datetime(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None


async def _messages(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    content_type = request.headers.get("Content-Type", "")
    if _media_type(request) != MULTIPART_TYPE:
        return _error(request, 415, "PROBLEM_WITH_REQUEST", f"Content-Type must be {MULTIPART_TYPE}")
    parts = _multipart(content_type, request[_BODY])
    if not parts:
        return _error(request, 400, "PROBLEM_WITH_REQUEST", "Not a multipart body")
    if any(part.filename is None for part in parts):
        return _error(request, 400, "MISSING_BODYPART_FILENAME", "Every body part needs a filename")
    head, files = parts[0], {part.filename: part for part in parts[1:]}
    root = _parse(head.body) if head.filename == "message" else None
    if root is None or root.tag != _q("message"):
        return _error(request, 400, "SCHEMA_VALIDATION_ERROR", "The first part must be the message")

    sender_id = _text(root, "sender-id") or request[_USER]
    message_id = _text(root, "message-id") or str(uuid.uuid4())
    document = root.find(_q("primary-document"))
    document_id = _text(document, "uuid")
    if document is None or document_id is None or not _UUID.fullmatch(document_id):
        return _error(request, 400, "SCHEMA_VALIDATION_ERROR", "primary-document needs a uuid")
    if any(m.sender_id == sender_id and m.message_id == message_id for m in state.messages):
        return _error(request, 409, "DUPLICATE_MESSAGE", "A message with this message-id was already sent")
    if any(m.sender_id == sender_id and m.document_uuid == document_id for m in state.messages):
        return _error(request, 409, "DUPLICATE_DOCUMENT_ID", "A document with this uuid was already sent")
    content = files.get(document_id)
    if content is None or len(files) != 1:
        return _error(request, 400, "DOCUMENTS_AND_FILES_MISMATCH", "Documents and files do not match")
    file_type = (_text(document, "file-type") or "").lower()
    authentication = _text(document, "authentication-level")
    sensitivity = _text(document, "sensitivity-level")
    if authentication not in (None, "PASSWORD", "TWO_FACTOR") or sensitivity not in (
        None,
        "NORMAL",
        "SENSITIVE",
    ):
        return _error(request, 400, "SCHEMA_VALIDATION_ERROR", "Invalid authentication or sensitivity level")
    subject = _text(document, "subject")
    if not subject:
        return _error(request, 400, "MISSING_SUBJECT", "The document needs a subject")

    recipient = root.find(_q("recipient"))
    pin = _text(recipient, "personal-identification-number")
    print_element = recipient.find(_q("print-details")) if recipient is not None else None
    is_user = pin is not None and _identify(state, pin)[0] == "DIGIPOST"
    delivery: Delivery
    print_details: dict[str, Any] | None = None
    if is_user:
        delivery = "digital"
    elif print_element is not None:
        delivery = "print"
        checked = _print_details(request, print_element)
        if isinstance(checked, web.Response):
            return checked
        print_details = checked
        if file_type != "pdf" or not content.body.startswith(b"%PDF"):
            return _error(request, 400, "CONTENT_OF_PRINT_MESSAGE_MUST_BE_PDF", "Print needs a PDF document")
    else:
        return _error(
            request, 400, "UNKNOWN_RECIPIENT", "The recipient is not a Digipost user (no print-details)"
        )

    deadline: datetime | None = None
    unread_details: dict[str, Any] | None = None
    print_if_unread = root.find(_q("print-if-unread"))
    if print_if_unread is not None:
        deadline = _parse_datetime(_text(print_if_unread, "print-if-unread-after"))
        if deadline is None or deadline <= datetime.now(UTC):
            return _error(
                request, 400, "VALIDATION_FAILED", "print-if-unread-after must be a future dateTime"
            )
        checked = _print_details(request, print_if_unread.find(_q("print-details")))
        if isinstance(checked, web.Response):
            return checked
        unread_details = checked

    now = datetime.now(UTC)
    stored = SandboxMessage(
        sender_id=sender_id,
        message_id=message_id,
        document_uuid=document_id,
        subject=subject,
        file_type=file_type,
        authentication_level=authentication,
        sensitivity_level=sensitivity,
        delivery=delivery,
        national_id=pin,
        print_details=print_details,
        print_if_unread_after=deadline if delivery == "digital" else None,
        print_if_unread_details=unread_details if delivery == "digital" else None,
        xml=head.body,
        document=content.body,
        delivered_at=now,
    )
    state.messages.append(stored)
    if state.slow_s > 0 and not await state._pause(state.slow_s):
        raise web.HTTPServiceUnavailable()  # shutting down

    answer = _root("message-delivery")
    _sub(answer, "message-id", message_id)
    _sub(answer, "delivery-method", "DIGIPOST" if delivery == "digital" else "PRINT")
    _sub(answer, "sender-id", sender_id)
    _sub(answer, "status", "DELIVERED" if delivery == "digital" else "DELIVERED_TO_PRINT")
    _sub(answer, "delivery-time", now.astimezone(OSLO).isoformat(timespec="seconds"))
    echoed = _sub(answer, "primary-document")
    _sub(echoed, "uuid", document_id)
    _sub(echoed, "subject", subject)
    _sub(echoed, "file-type", file_type)
    if authentication:
        _sub(echoed, "authentication-level", authentication)
    if sensitivity:
        _sub(echoed, "sensitivity-level", sensitivity)
    digest = _sub(
        echoed, "content-hash", base64.b64encode(hashlib.sha256(content.body).digest()).decode("ascii")
    )
    digest.set("hash-algorithm", "SHA256")
    return _xml(answer)


async def _status(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    sender_id, document_id = request.match_info["sender"], request.match_info["uuid"]
    found = next(
        (m for m in state.messages if m.sender_id == sender_id and m.document_uuid == document_id), None
    )
    if found is None:
        return _error(request, 404, "DOCUMENT_NOT_FOUND", "No such document")
    root = _root("document-status")
    delivered = found.delivered_at.astimezone(OSLO).isoformat(timespec="seconds")
    for name, value in (
        ("uuid", found.document_uuid),
        ("sender-id", found.sender_id),
        ("status", "DELIVERED"),
        ("created", delivered),
        ("delivered", delivered),
        ("read", "Y" if found.read_at is not None else "N"),
        ("channel", "DIGIPOST" if found.delivery == "digital" else "PRINT"),
        ("is-primary-document", "true"),
        ("content-hash", base64.b64encode(hashlib.sha256(found.document).digest()).decode("ascii")),
        ("content-hash-algorithm", "SHA256"),
    ):
        root.set(name, value)
    return _xml(root)


# ---------------------------------------------------------------------------------------------- app, run


async def _lifecycle(app: web.Application) -> AsyncIterator[None]:
    state = app[STATE]
    state._closing = asyncio.Event()
    try:
        yield
    finally:
        state._closing.set()


async def _on_shutdown(app: web.Application) -> None:
    """Wake slow answers at once (shutdown comes before the server waits for running handlers)."""
    closing = app[STATE]._closing
    if closing is not None:
        closing.set()


def create_app(state: DigipostSandbox) -> web.Application:
    """The sandbox as an aiohttp application (routes in the module docstring)."""
    app = web.Application(middlewares=[_gate], client_max_size=64 * 1024 * 1024)
    app[STATE] = state
    app.router.add_get("/", _entrypoint, name="entrypoint")
    app.router.add_post("/identification", _identification, name="identification")
    app.router.add_post("/messages", _messages, name="messages")
    app.router.add_get("/documents/{sender}/{uuid}/status", _status, name="status")
    app.cleanup_ctx.append(_lifecycle)
    app.on_shutdown.append(_on_shutdown)
    return app


@contextlib.asynccontextmanager
async def serve(state: DigipostSandbox, *, host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[str]:
    """Run the sandbox on ``host:port`` (0: a free port) and yield its base URL, e.g. ``http://127.0.0.1:4711``
    (the value for ``ORCH_DIGIPOST_URL``)."""
    async with serve_app(create_app(state), host=host, port=port) as url:
        yield url
