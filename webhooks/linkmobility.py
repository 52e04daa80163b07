"""Link Mobility ("Common") delivery reports: ``POST /webhooks/linkmobility/<secret>``.

Common POSTs one JSON delivery report per message (or per part, see below) to the URL behind the gate named
in ``deliveryReportGates``, with HTTP basic auth on that URL, and retries until it gets ``200``. Nothing is
signed, so two things authenticate a report, both compared in constant time: the basic-auth user and password
(``ORCH_LINKMOBILITY_WEBHOOK_USERNAME``/``_PASSWORD``) and the secret last path segment
(``ORCH_LINKMOBILITY_WEBHOOK_SECRET``; the gate's URL is ``<public base>/webhooks/linkmobility/<secret>``).
No ``Authorization`` header or no secret segment → ``MissingCredentials`` (400); anything that does not match
→ ``BadCredentials`` (401), without saying which part was wrong.

A report (LINK Mobility, *SMS REST API, MT and Delivery Reports*, "Delivery Reports")::

    {"refId": "<our attempt id>", "id": "<Common's message id>", "operator": "no.telenor",
     "sentTimestamp": "2015-11-19T09:37:35Z", "timestamp": "2015-11-19T09:37:00Z", "resultCode": 1001,
     "operatorResultCode": "2", "segments": 1, "gateCustomParameters": {}, "customParameters": {...}}

becomes one ``CarrierEvent``: ``event_id`` ``"<id>:<resultCode>"`` (a retried report is the same event),
``attempt_id`` the ``refId``, ``provider_message_id`` the ``id``, ``at`` the operator's ``timestamp`` (UTC,
RFC 3339; the time of receipt when it is missing or unreadable). ``sentTimestamp`` (older documents and some
gates spell it ``sendTimestamp``) goes into ``detail``; ``customParameters`` never does (Common adds the
destination number to it).

Multi-part messages: newer versions of the documentation report each part on its own, with ``id`` written
``<id>$<n>`` (``n`` counting parts from 0: ``abc123$0`` is the first part of ``abc123``). Such a report gets
``provider_message_id`` ``<id>``, ``segment`` ``(n + 1, segments)`` and ``event_id`` ``"<id>$<n>:<code>"``
(each part is an event of its own). The ingress merges parts of one attempt: the message is ``delivered`` once
every part of ``parts`` is delivered, ``failed``/``expired`` as soon as one part fails. A report without
``$<n>`` (what the sandbox and the v1.6 format send) covers the whole message: ``segment`` is ``None``.

Result codes (the documentation's table): 1001 and 1007 → ``delivered``; 1000 and 1011 → ``sent``; 1005, 1008
and 1012 → ``accepted``; 1002 → ``expired`` (``expired``); 1010 (expired, no operator report) → ``expired``
(``linkmobility_1010``); 1006 → ``failed`` (``failed``); 2104 → ``failed`` (``unknown_handset``); any other
code (0-105, 1004, 1009, 2xxx, 3xxx, 4xxx) → ``failed`` (``linkmobility_<code>``). An unknown 1xxx code,
unreadable JSON, no ``resultCode``, or neither ``refId`` nor ``id``: ``MalformedPayload`` (answered 200 so
that Common stops retrying; the body is kept).

MO messages (a debtor's reply to our number or short number) come to the same gate URL with the same
credentials, as JSON without a ``resultCode`` (LINK Mobility, *SMS REST API, MO*)::

    {"id": "<Common's id of the MO>", "source": "+4791234567", "sourceTON": "MSISDN",
     "destination": "2270", "destinationTON": "SHORTNUMBER", "userData": "STOPP", "dcs": "TEXT",
     "operator": "no.telenor", "timestamp": "2026-11-23T09:12:00Z", "refId": "...", "customParameters": {}}

and become one ``CarrierEvent`` with status ``inbound``, ``event_id`` ``"mo:<id>"`` (``"mo:ref:<refId>"``
without an ``id``), ``at`` the ``timestamp`` (else the time of receipt) and ``detail`` ``{"from", "to",
"text", "operator"}``: the sender's number and the text are what the event is about
(``orchestrator.opt_outs``). An MO without ``source``, or without both ``id`` and ``refId``:
``MalformedPayload``.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote, urlsplit

from orchestrator.settings import Settings
from webhooks.events import (
    INBOUND,
    BadCredentials,
    CarrierEvent,
    EventStatus,
    MalformedPayload,
    MissingCredentials,
    clip,
)

__all__ = ["RESULT_CODES", "LinkMobilityWebhook", "path_secret", "result_status"]

# resultCode -> (status, reason) for the codes that are not a plain failure.
RESULT_CODES: dict[int, tuple[EventStatus, str | None]] = {
    1000: ("sent", None),  # Sent (to operator)
    1001: ("delivered", None),  # Billed and delivered
    1002: ("expired", "expired"),  # Expired
    1004: ("failed", "linkmobility_1004"),  # Mobile full
    1005: ("accepted", None),  # Queued
    1006: ("failed", "failed"),  # Not delivered
    1007: ("delivered", None),  # Delivered, billed delayed
    1008: ("accepted", None),  # Billed OK (charged before sending)
    1009: ("failed", "linkmobility_1009"),  # Billed OK and NOT delivered
    1010: ("expired", "linkmobility_1010"),  # Expired, absence of operator delivery report
    1011: ("sent", None),  # Billed OK and sent (to operator)
    1012: ("accepted", None),  # Delayed (temporary billing error, Common resends)
    2104: ("failed", "unknown_handset"),  # Unknown subscriber
}
_ROUTE_TAIL = "/webhooks/linkmobility"


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _header(headers: Mapping[str, str], name: str) -> str | None:
    """``headers[name]`` whatever the case of the name."""
    value = headers.get(name)
    if value is not None:
        return value
    wanted = name.lower()
    return next((v for k, v in headers.items() if k.lower() == wanted), None)


def _basic_credentials(value: str) -> tuple[str, str] | None:
    """(user, password) of an ``Authorization: Basic`` value (RFC 7617, UTF-8), or None."""
    scheme, _, encoded = value.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return None
    user, sep, password = decoded.partition(":")
    return (user, password) if sep else None


def path_secret(url: str) -> str | None:
    """The secret last path segment of ``url`` (percent-decoded); None when the path ends at the route."""
    path = urlsplit(url).path
    if not path or path.rstrip("/").endswith(_ROUTE_TAIL):
        return None
    segment = unquote(path.rsplit("/", 1)[-1])
    return segment or None


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


def result_status(code: int) -> tuple[EventStatus, str | None] | None:
    """(status, reason) of a delivery-report ``resultCode``; None for a 1xxx code the documentation lacks."""
    known = RESULT_CODES.get(code)
    if known is not None:
        return known
    if 1000 <= code < 2000:
        return None
    return "failed", f"linkmobility_{code}"


def _text(data: Mapping[str, Any], name: str) -> str | None:
    value = data.get(name)
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None
    text = str(value).strip()
    return text or None


def _result_code(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        return int(value.strip())
    return None


def _timestamp(value: Any) -> datetime | None:
    """An RFC 3339 timestamp as an aware datetime (UTC when it carries no offset); None if unreadable."""
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip()
    if text[-1:] in ("z", "Z"):
        text = text[:-1] + "+00:00"
    try:
        moment = datetime.fromisoformat(text.replace("t", "T"))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


class LinkMobilityWebhook:
    """``CarrierWebhook`` for Link Mobility's delivery reports."""

    name: str = "linkmobility"

    def __init__(self, *, clock: Callable[[], datetime] = _utcnow) -> None:
        self._clock = clock

    @staticmethod
    def _credentials(settings: Settings) -> tuple[str, str, str] | None:
        user = settings.linkmobility_webhook_username
        password = settings.linkmobility_webhook_password
        secret = settings.linkmobility_webhook_secret
        if not user or password is None or secret is None:
            return None
        if not password.get_secret_value() or not secret.get_secret_value():
            return None
        return user, password.get_secret_value(), secret.get_secret_value()

    def configured(self, settings: Settings) -> bool:
        return self._credentials(settings) is not None

    def verify(self, *, url: str, headers: Mapping[str, str], body: bytes, settings: Settings) -> None:
        expected = self._credentials(settings)
        if expected is None:
            raise BadCredentials("Link Mobility delivery reports are not configured")
        authorization = _header(headers, "Authorization")
        if authorization is None or not authorization.strip():
            raise MissingCredentials("no Authorization header")
        secret = path_secret(url)
        if secret is None:
            raise MissingCredentials("no secret path segment")
        credentials = _basic_credentials(authorization)
        if credentials is None:
            raise BadCredentials("Authorization is not HTTP basic credentials")
        user, password = credentials
        expected_user, expected_password, expected_secret = expected
        # All three compared, always: the answer does not tell which one was wrong.
        valid = (
            _same(user, expected_user) & _same(password, expected_password) & _same(secret, expected_secret)
        )
        if not valid:
            raise BadCredentials("credentials or path secret do not match")

    def parse(self, *, url: str, headers: Mapping[str, str], body: bytes) -> list[CarrierEvent]:
        try:
            data = json.loads(body)
        except (ValueError, RecursionError) as exc:
            raise MalformedPayload("Link Mobility delivery report is not JSON") from exc
        if not isinstance(data, dict):
            raise MalformedPayload("Link Mobility delivery report is not a JSON object")
        if "resultCode" not in data and "userData" in data:
            return [self._mo(data)]
        message_id = _text(data, "id")
        ref_id = _text(data, "refId")
        if message_id is None and ref_id is None:
            raise MalformedPayload("Link Mobility delivery report without refId and id")
        code = _result_code(data.get("resultCode"))
        if code is None:
            raise MalformedPayload("Link Mobility delivery report without a numeric resultCode")
        mapped = result_status(code)
        if mapped is None:
            raise MalformedPayload(f"Link Mobility delivery report with an unknown resultCode {code}")
        status, reason = mapped

        segments = data.get("segments")
        parts = segments if isinstance(segments, int) and not isinstance(segments, bool) else None
        provider_message_id = message_id
        segment: tuple[int, int] | None = None
        part: int | None = None
        if message_id is not None and "$" in message_id:
            base, _, ordinal = message_id.rpartition("$")
            if base and ordinal.isascii() and ordinal.isdigit():
                provider_message_id = base
                part = int(ordinal) + 1
                if parts is not None and parts >= part:
                    segment = (part, parts)

        raw_timestamp = data.get("timestamp")
        at = _timestamp(raw_timestamp) or self._clock()
        sent = data.get("sentTimestamp", data.get("sendTimestamp"))
        detail: dict[str, Any] = {
            "result_code": code,
            "operator_result_code": _text(data, "operatorResultCode"),
            "operator": _text(data, "operator"),
            "segments": parts,
            "part": part,
            "sent_timestamp": sent if isinstance(sent, str) else None,
            "timestamp": raw_timestamp if isinstance(raw_timestamp, str) else None,
        }
        # Without Common's id (never seen, but refId alone finds the attempt) the key is our refId.
        event_key = message_id if message_id is not None else f"ref:{ref_id}"
        return [
            CarrierEvent(
                carrier=self.name,
                event_id=f"{event_key}:{code}",
                status=status,
                at=at,
                attempt_id=ref_id,
                provider_message_id=provider_message_id,
                reason=reason,
                segment=segment,
                detail={k: v for k, v in detail.items() if v is not None},
            )
        ]

    def _mo(self, data: Mapping[str, Any]) -> CarrierEvent:
        """A message a debtor sent to us (mobile originated)."""
        message_id = _text(data, "id")
        ref_id = _text(data, "refId")
        sender = _text(data, "source")
        if sender is None:
            raise MalformedPayload("Link Mobility MO message without source")
        if message_id is None and ref_id is None:
            raise MalformedPayload("Link Mobility MO message without id and refId")
        user_data = data.get("userData")
        detail: dict[str, Any] = {
            "from": clip(sender),
            "to": clip(_text(data, "destination")),
            "text": clip(user_data if isinstance(user_data, str) else ""),
            "operator": _text(data, "operator"),
        }
        raw_timestamp = data.get("timestamp")
        return CarrierEvent(
            carrier=self.name,
            event_id=f"mo:{message_id}" if message_id is not None else f"mo:ref:{ref_id}",
            status=INBOUND,
            at=_timestamp(raw_timestamp) or self._clock(),
            provider_message_id=message_id,
            detail={k: v for k, v in detail.items() if v is not None},
        )
