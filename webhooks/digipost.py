"""Digipost document events, pushed to ``POST /webhooks/digipost``.

Digipost does not call anyone back: a sender polls its document events (``GET`` the sender's ``document
events`` link, ``<document-events><event uuid type created><metadata .../></event>...``; the Java reference
client's ``DocumentEventType``: ``OPENED``, ``POSTMARKED``, ``PRINT_FAILED``, ``SHREDDED``,
``EMAIL_NOTIFICATION_FAILED``, ``SMS_NOTIFICATION_FAILED``, ...). A relay, or our own poller, pushes what it
polled to us in this small JSON format (``Content-Type: application/json``)::

    {"events": [
        {"uuid": "<event uuid>",                 # required: the key that makes a replay a no-op
         "type": "OPENED",                       # required: Digipost's event type (case-insensitive)
         "created": "2026-03-02T10:15:00+01:00", # required: ISO 8601 with an offset
         "message_id": "<message uuid>",         # the Digipost message-id we sent (preferred), and/or
         "document_uuid": "<document uuid>",     # the document the event is about (what Digipost reports)
         "metadata": {"error-message": "..."}}   # optional: Digipost's event metadata, flat
    ]}

Authentication: ``X-Digipost-Webhook-Signature: sha256=<hex>``, HMAC-SHA256 of the raw body with
``ORCH_DIGIPOST_WEBHOOK_SECRET`` (:func:`sign`). No header → 400 (``MissingCredentials``); a signature that
does not verify → 401 (``BadCredentials``), compared in constant time.

Matching an event to our attempt: the attempt row stores the Digipost *message* id
(:func:`channels.digital_mailbox.message_uuid` of the attempt id, re-exported here), which becomes the
event's ``provider_message_id``. Digipost's own events name only the *document*
(:func:`channels.digital_mailbox.document_uuid` of the attempt id), a different UUIDv5 that cannot be turned
back into the message id: the relay must send ``message_id`` (our poller knows its attempts and can compute
both ids). An event with only ``document_uuid`` is still recorded (``provider_message_id`` is the document
uuid, also in ``detail["document_uuid"]``), but it matches an attempt only if the lookup also knows document
uuids.

What each type becomes (:data:`EVENT_MAP`; ``detail["digipost_event"]`` always keeps the type):

==========================================  ============  ==================  ==============================
Digipost type                               status        reason              detail
==========================================  ============  ==================  ==============================
``DELIVERED``                               ``delivered``                     ``delivery: "digital"``
``OPENED``, ``READ``                        ``read``                          ``delivery: "digital"``
``POSTMARKED``, ``PRINTED``                 ``sent``                          ``delivery: "print"``,
                                                                              ``printed: true`` (on its way)
``PRINT_FAILED``                            ``failed``    ``print_failed``    ``delivery: "print"``
``SHREDDED``, ``EXPIRED``, notification     ``accepted``                      (nothing to move)
and e-mail/Peppol/sharing events, unknown
types (``unknown_type: true``)
==========================================  ============  ==================  ==============================

Metadata is kept flat (scalar values only, texts cut to 500 characters, national ids masked). A body that is
not this format raises ``MalformedPayload`` (the raw body is kept and Digipost's relay gets 200).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final

from channels.digital_mailbox import document_uuid, message_uuid
from orchestrator.identifiers import redact_national_ids
from orchestrator.settings import Settings
from webhooks.events import (
    BadCredentials,
    CarrierEvent,
    EventStatus,
    MalformedPayload,
    MissingCredentials,
)

__all__ = [
    "CARRIER",
    "EVENT_MAP",
    "SIGNATURE_HEADER",
    "DigipostWebhook",
    "document_uuid",
    "message_uuid",
    "parse_events",
    "sign",
]

CARRIER: Final = "digipost"
SIGNATURE_HEADER: Final = "X-Digipost-Webhook-Signature"
_PREFIX: Final = "sha256="
_MAX_METADATA_TEXT: Final = 500

_DIGITAL: Final[dict[str, Any]] = {"delivery": "digital"}
_PRINT: Final[dict[str, Any]] = {"delivery": "print"}

# Digipost event type -> (our status, reason, detail). Types not listed are kept as "accepted" (detail only).
EVENT_MAP: Final[dict[str, tuple[EventStatus, str | None, dict[str, Any]]]] = {
    "DELIVERED": ("delivered", None, _DIGITAL),
    "OPENED": ("read", None, _DIGITAL),
    "READ": ("read", None, _DIGITAL),
    "POSTMARKED": ("sent", None, {**_PRINT, "printed": True}),
    "PRINTED": ("sent", None, {**_PRINT, "printed": True}),
    "PRINT_FAILED": ("failed", "print_failed", _PRINT),
    "SHREDDED": ("accepted", None, {}),
    "EXPIRED": ("accepted", None, {}),
    "REQUEST_FOR_REGISTRATION_EXPIRED": ("accepted", None, {}),
    "EMAIL_NOTIFICATION_FAILED": ("accepted", None, {}),
    "SMS_NOTIFICATION_FAILED": ("accepted", None, {}),
    "SMS_NOTIFICATION_DELIVERED": ("accepted", None, {}),
    "EMAIL_MESSAGE_SENT": ("accepted", None, {}),
    "EMAIL_MESSAGE_FAILED": ("accepted", None, {}),
    "PEPPOL_DELIVERED": ("accepted", None, {}),
    "PEPPOL_FAILED": ("accepted", None, {}),
    "MOVE_FILES_FROM_PUBLIC_SECTOR": ("accepted", None, {}),
    "SHARE_DOCUMENTS_REQUEST_DOCUMENTS_SHARED": ("accepted", None, {}),
    "SHARE_DOCUMENTS_REQUEST_SHARING_WITHDRAWN": ("accepted", None, {}),
}


def sign(body: bytes, secret: str) -> str:
    """The ``X-Digipost-Webhook-Signature`` value of ``body``: ``sha256=<hex HMAC-SHA256>``."""
    return _PREFIX + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def _header(headers: Mapping[str, str], name: str) -> str | None:
    """A header by name, whatever its case (the ingress hands over a plain dict)."""
    wanted = name.lower()
    for key, value in headers.items():
        if key.lower() == wanted:
            return value
    return None


def _verify_hmac(headers: Mapping[str, str], body: bytes, secret: str | None) -> None:
    given = (_header(headers, SIGNATURE_HEADER) or "").strip()
    if not given:
        raise MissingCredentials(f"no {SIGNATURE_HEADER} header")
    if not secret:
        raise BadCredentials("no Digipost webhook secret is configured")
    expected = sign(body, secret).encode("ascii")
    if not hmac.compare_digest(expected, given.lower().encode("utf-8", errors="replace")):
        raise BadCredentials(f"{SIGNATURE_HEADER} does not verify")


def _uuid(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise MalformedPayload(f"{what} must be a UUID string")
    try:
        return str(uuid.UUID(value.strip()))
    except ValueError:
        raise MalformedPayload(f"{what} {value[:60]!r} is not a UUID") from None


def _when(value: Any, what: str) -> datetime:
    if not isinstance(value, str):
        raise MalformedPayload(f"{what} must be an ISO 8601 string")
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        raise MalformedPayload(f"{what} {value[:40]!r} is not an ISO 8601 time") from None
    if parsed.tzinfo is None:
        raise MalformedPayload(f"{what} {value[:40]!r} has no UTC offset")
    return parsed.astimezone(UTC)


def _metadata(value: Any, what: str) -> dict[str, Any]:
    """Digipost's metadata, flat and safe to keep: scalars only, short texts, no national ids."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise MalformedPayload(f"{what} must be an object")
    kept: dict[str, Any] = {}
    for key, item in value.items():
        if isinstance(item, str):
            kept[str(key)] = redact_national_ids(item)[:_MAX_METADATA_TEXT]
        elif item is None or isinstance(item, bool | int | float):
            kept[str(key)] = item
    return kept


def _event(item: Any, index: int) -> CarrierEvent:
    where = f"events[{index}]"
    if not isinstance(item, dict):
        raise MalformedPayload(f"{where} must be an object")
    event_id = _uuid(item.get("uuid"), f"{where}.uuid")
    kind = item.get("type")
    if not isinstance(kind, str) or not kind.strip():
        raise MalformedPayload(f"{where}.type must be a non-empty string")
    kind = kind.strip().upper().replace("-", "_").replace(" ", "_")
    at = _when(item.get("created"), f"{where}.created")
    message_id = item.get("message_id")
    document = item.get("document_uuid")
    if message_id is None and document is None:
        raise MalformedPayload(f"{where} names neither message_id nor document_uuid")
    message = _uuid(message_id, f"{where}.message_id") if message_id is not None else None
    document_id = _uuid(document, f"{where}.document_uuid") if document is not None else None
    metadata = _metadata(item.get("metadata"), f"{where}.metadata")

    status, reason, extra = EVENT_MAP.get(kind, ("accepted", None, {"unknown_type": True}))
    detail: dict[str, Any] = {"digipost_event": kind, **extra}
    if document_id is not None:
        detail["document_uuid"] = document_id
    if metadata:
        detail["metadata"] = metadata
    return CarrierEvent(
        carrier=CARRIER,
        event_id=event_id,
        status=status,
        at=at,
        provider_message_id=message if message is not None else document_id,
        reason=reason,
        detail=detail,
    )


def parse_events(body: bytes) -> list[CarrierEvent]:
    """The events of one pushed body (see the module docstring); ``MalformedPayload`` if unreadable."""
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise MalformedPayload(f"body is not JSON: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("events"), list):
        raise MalformedPayload('body must be {"events": [...]}')
    events: list[CarrierEvent] = []
    seen: set[str] = set()
    for index, item in enumerate(data["events"]):
        event = _event(item, index)
        if event.event_id not in seen:  # the same event twice in one push is one event
            seen.add(event.event_id)
            events.append(event)
    return events


class DigipostWebhook:
    """``POST /webhooks/digipost``: Digipost document events pushed by a relay or our poller."""

    name = CARRIER

    def configured(self, settings: Settings) -> bool:
        secret = settings.digipost_webhook_secret
        return secret is not None and bool(secret.get_secret_value())

    def verify(self, *, url: str, headers: Mapping[str, str], body: bytes, settings: Settings) -> None:
        secret = settings.digipost_webhook_secret
        _verify_hmac(headers, body, secret.get_secret_value() if secret is not None else None)

    def parse(self, *, url: str, headers: Mapping[str, str], body: bytes) -> list[CarrierEvent]:
        return parse_events(body)
