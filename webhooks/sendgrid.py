"""SendGrid (Twilio SendGrid) Event Webhook: ``POST /webhooks/sendgrid``.

SendGrid posts a JSON array of events, several messages' events in one batch.

**Authentication** (``verify``), the Signed Event Webhook: ``X-Twilio-Email-Event-Webhook-Signature`` is the
base64 of a DER-encoded ECDSA signature (P-256, SHA-256) over the bytes of
``X-Twilio-Email-Event-Webhook-Timestamp`` followed by the raw request body, exactly as received (SendGrid's
bodies end in ``\\r\\n``, which is signed too: the ingress must pass the body untouched). The verification
key (``ORCH_SENDGRID_WEBHOOK_PUBLIC_KEY``) is what SendGrid shows under Mail Settings: the base64 of the DER
SubjectPublicKeyInfo; a PEM block is taken as well. A header missing or empty → ``MissingCredentials``
(400); a signature that does not verify (or is not base64/DER) → ``BadCredentials`` (401); a verified
timestamp more than ``max_age_s`` (15 minutes) from our clock, either way → ``BadCredentials`` (401). The
signature covers the whole body, so a replay can only repeat a genuine batch within the window, and the
ingress's ``(carrier, event_id)`` key makes that a no-op: no token cache is needed. A key that cannot be
read is a configuration error: every callback then gets ``BadCredentials`` and an error is logged
(``load_public_key`` can check it at start-up).

**Events** (``parse``): one ``CarrierEvent`` per array element (see ``classify``), ``event_id`` =
``sg_event_id``, ``at`` = ``timestamp``. ``smtp-id`` is the Message-ID; it is ours
(``<contact.attempt@domain>``) when we set it and the From domain is authenticated with SendGrid (otherwise
SendGrid substitutes its own), and it comes only with delivery events (processed, deferred, delivered,
bounce, dropped), not with open, click, spamreport or unsubscribe. ``provider_message_id`` is the Message-ID
in brackets (the form the SMTP channel stores on the attempt); ``attempt_id`` is taken from a custom
argument ``attempt_id`` when present (set with an ``X-SMTPAPI: {"unique_args": {"attempt_id": "..."}}``
header; SendGrid merges custom arguments into every event, engagement events included), else from our
Message-ID. SendGrid does not echo other custom headers.

**A bad element among good ones**: the good ones are returned, and each of them carries
``detail["rejected_in_batch"]``, a list of ``{"index", "error", "sg_event_id"}`` for every element that
could not be read or has an event type we do not handle, so whichever of them gets recorded says what was
left out (the ingress keeps the raw batch with each event); a warning is logged. When no element is usable
(or the body is not a JSON array) the whole callback is ``MalformedPayload`` (200: the raw body is kept and
SendGrid does not retry).
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import logging
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_der_public_key, load_pem_public_key

from orchestrator.settings import Settings
from webhooks.events import (
    BadCredentials,
    CarrierEvent,
    EventStatus,
    MalformedPayload,
    MissingCredentials,
    clip,
    from_epoch,
)
from webhooks.mailgun import (
    DEFAULT_MAX_AGE_S,
    MAX_EVENT_ID_CHARS,
    attempt_id_from_message_id,
    bracketed_message_id,
    normalize_attempt_id,
)

__all__ = [
    "DROPPED_REASONS",
    "SIGNATURE_HEADER",
    "STATUS_MAP",
    "TIMESTAMP_HEADER",
    "SendGridWebhook",
    "classify",
    "load_public_key",
]

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"

# SendGrid event → (status, reason). ``bounce`` and ``dropped`` depend on type / reason: see ``classify``.
STATUS_MAP: dict[str, tuple[EventStatus, str | None]] = {
    "processed": ("accepted", None),
    "deferred": ("accepted", "soft_bounce"),  # SendGrid keeps trying; it may still be delivered
    "delivered": ("delivered", None),
    "open": ("read", None),
    "click": ("read", "clicked"),  # a click means it was opened
    "spamreport": ("delivered", "complained"),  # it was delivered; the complaint is the policy's to act on
    "unsubscribe": ("delivered", "unsubscribed"),  # likewise: the opt-out is handled by the policy
    "group_unsubscribe": ("delivered", "unsubscribed"),
}

# ``bounce`` by its ``type``: a real bounce says the address is bad; "blocked" is the receiving server
# refusing us (reputation, content, policy), which says nothing about the address; "expired" is retries
# exhausted.
_BOUNCE_TYPES: dict[str, tuple[EventStatus, str]] = {
    "bounce": ("bounced", "hard_bounce"),
    "blocked": ("failed", "blocked"),
    "expired": ("failed", "retries_exhausted"),
}

# ``dropped`` (never sent) by SendGrid's ``reason`` text, lower-cased; anything else is "dropped". The names
# match the Mailgun module's: an address that bounced before stays "hard_bounce" and an invalid one is
# "invalid_destination" (both make the worker mark the address unusable); an unsubscribe or a complaint
# says nothing about the address.
DROPPED_REASONS: dict[str, str] = {
    "bounced address": "hard_bounce",
    "invalid": "invalid_destination",
    "unsubscribed address": "suppressed_unsubscribe",
    "spam reporting address": "suppressed_complaint",
}


def classify(
    event: str, *, type_: str | None = None, reason: str | None = None
) -> tuple[EventStatus, str | None]:
    """(status, reason) of one SendGrid event; ``KeyError`` for an event type we do not handle."""
    if event == "bounce":
        return _BOUNCE_TYPES.get((type_ or "bounce").lower(), ("bounced", "hard_bounce"))
    if event == "dropped":
        return ("failed", DROPPED_REASONS.get((reason or "").strip().lower(), "dropped"))
    return STATUS_MAP[event]


# --------------------------------------------------------------------------------------------- the key


@functools.lru_cache(maxsize=8)
def load_public_key(value: str) -> ec.EllipticCurvePublicKey:
    """The P-256 public key from SendGrid's verification key: base64 DER (as SendGrid shows it) or PEM.

    ``ValueError`` for anything else (not base64, not a key, not an EC key on P-256).
    """
    text = value.strip()
    try:
        if "-----BEGIN" in text:
            key = load_pem_public_key(text.encode("ascii"))
        else:
            der = base64.b64decode("".join(text.split()), validate=True)
            key = load_der_public_key(der)
    except (ValueError, TypeError, UnicodeEncodeError, binascii.Error, UnsupportedAlgorithm) as exc:
        raise ValueError(f"not a base64 DER or PEM public key: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise ValueError("not an ECDSA P-256 public key")
    return key


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is None:
        lowered = name.lower()
        value = next((v for k, v in headers.items() if k.lower() == lowered), None)
    value = value.strip() if isinstance(value, str) else None
    return value or None


class _BadElement(Exception):
    pass


# --------------------------------------------------------------------------------------------- the webhook


class SendGridWebhook:
    """``CarrierWebhook`` for SendGrid (``name = "sendgrid"``).

    ``email_domain`` (``settings.email_domain``), when given, is the only domain whose Message-IDs yield an
    attempt id. ``clock`` is for tests.
    """

    name = "sendgrid"

    def __init__(
        self,
        *,
        email_domain: str | None = None,
        max_age_s: int = DEFAULT_MAX_AGE_S,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        if max_age_s < 1:
            raise ValueError("max_age_s must be at least one second")
        self._email_domain = email_domain
        self._max_age_s = max_age_s
        self._clock = clock or (lambda: datetime.now(UTC))

    def configured(self, settings: Settings) -> bool:
        key = settings.sendgrid_webhook_public_key
        return key is not None and bool(key.strip())

    def verify(self, *, url: str, headers: Mapping[str, str], body: bytes, settings: Settings) -> None:
        configured_key = settings.sendgrid_webhook_public_key
        if configured_key is None or not configured_key.strip():
            raise BadCredentials("sendgrid: no webhook verification key is configured")
        signature = _header(headers, SIGNATURE_HEADER)
        timestamp = _header(headers, TIMESTAMP_HEADER)
        if signature is None or timestamp is None:
            raise MissingCredentials(f"sendgrid: {SIGNATURE_HEADER} and {TIMESTAMP_HEADER} are both required")
        try:
            key = load_public_key(configured_key)
        except ValueError as exc:
            log.error("sendgrid: ORCH_SENDGRID_WEBHOOK_PUBLIC_KEY cannot be used: %s", exc)
            raise BadCredentials("sendgrid: the configured verification key cannot be read") from None
        try:
            der_signature = base64.b64decode(signature, validate=True)
            key.verify(der_signature, timestamp.encode("utf-8") + body, ec.ECDSA(hashes.SHA256()))
        except (InvalidSignature, ValueError, binascii.Error):
            raise BadCredentials("sendgrid: the signature does not verify") from None
        try:
            signed_at = int(timestamp)
        except ValueError:
            raise BadCredentials("sendgrid: the signed timestamp is not a number") from None
        age = self._clock().timestamp() - signed_at
        if abs(age) > self._max_age_s:
            raise BadCredentials(f"sendgrid: the signed timestamp is {int(age)} s from our clock")

    def parse(self, *, url: str, headers: Mapping[str, str], body: bytes) -> list[CarrierEvent]:
        try:
            payload = json.loads(body)
        except (UnicodeDecodeError, ValueError):
            raise MalformedPayload("sendgrid: the body is not JSON") from None
        if not isinstance(payload, list):
            raise MalformedPayload("sendgrid: the body is not a JSON array of events")
        if not payload:
            raise MalformedPayload("sendgrid: the body is an empty array")

        events: list[CarrierEvent] = []
        rejected: list[dict[str, Any]] = []
        for index, element in enumerate(payload):
            try:
                events.append(self._event(element))
            except _BadElement as exc:
                sg_event_id = element.get("sg_event_id") if isinstance(element, dict) else None
                rejected.append(
                    {
                        "index": index,
                        "error": str(exc),
                        "sg_event_id": sg_event_id if isinstance(sg_event_id, str) else None,
                    }
                )
        if not events:
            errors = "; ".join(f"[{r['index']}] {r['error']}" for r in rejected[:5])
            raise MalformedPayload(f"sendgrid: no usable event in the batch: {errors}")
        if rejected:
            log.warning(
                "sendgrid: %d of %d events in a batch could not be read: %s",
                len(rejected),
                len(payload),
                "; ".join(f"[{r['index']}] {r['error']}" for r in rejected[:5]),
            )
            for event in events:
                event.detail["rejected_in_batch"] = [dict(r) for r in rejected]
        return events

    def _event(self, element: Any) -> CarrierEvent:
        if not isinstance(element, dict):
            raise _BadElement("not a JSON object")
        event_id, event = element.get("sg_event_id"), element.get("event")
        if not isinstance(event_id, str) or not event_id:
            raise _BadElement("no sg_event_id")
        if len(event_id) > MAX_EVENT_ID_CHARS:
            raise _BadElement("sg_event_id is too long")
        if not isinstance(event, str) or not event:
            raise _BadElement("no event type")
        bounce_type, sg_reason = element.get("type"), element.get("reason")
        try:
            status, reason = classify(
                event,
                type_=bounce_type if isinstance(bounce_type, str) else None,
                reason=sg_reason if isinstance(sg_reason, str) else None,
            )
        except KeyError:
            raise _BadElement(f"an event type we do not handle: {event!r}") from None
        at = from_epoch(element.get("timestamp"))
        if at is None:
            raise _BadElement("no usable timestamp")

        smtp_id = element.get("smtp-id")
        message_id = bracketed_message_id(smtp_id if isinstance(smtp_id, str) else None)
        attempt_id = normalize_attempt_id(element.get("attempt_id")) or attempt_id_from_message_id(
            message_id, self._email_domain
        )

        detail: dict[str, Any] = {"event": event}
        for source, target in (
            ("type", "type"),
            ("reason", "sendgrid_reason"),
            ("status", "smtp_status"),
            ("response", "response"),
            ("attempt", "attempt_no"),
            ("bounce_classification", "bounce_classification"),
            ("sg_message_id", "sg_message_id"),
        ):
            value = element.get(source)
            if value not in (None, ""):
                detail[target] = clip(value)
        if event == "dropped":
            detail["never_sent"] = True  # dropped by SendGrid
        if event == "spamreport":
            detail["complained"] = True
        if event in ("unsubscribe", "group_unsubscribe"):
            detail["opt_out"] = True
        # "click" carries the link: never kept, a self-service link holds a secret token.

        return CarrierEvent(
            carrier=self.name,
            event_id=event_id,
            status=status,
            at=at,
            attempt_id=attempt_id,
            provider_message_id=message_id,
            reason=reason,
            detail=detail,
        )
