"""What a carrier callback becomes once verified and parsed: carrier-neutral events, and the errors a carrier
module raises at its boundary.

A carrier module (``webhooks/twilio.py``, ``webhooks/mailgun.py``, ...) implements ``CarrierWebhook``: it
verifies the carrier's own authentication and turns one raw callback into zero or more ``CarrierEvent``s.
Recording the raw event once, answering 2xx and moving contacts forward happen elsewhere
(``webhooks/ingress.py``), the same for every carrier.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, Protocol, runtime_checkable

from orchestrator.settings import Settings

# Forward-only order of what a carrier can tell us (API.md status model); terminal failures rank above "sent".
EventStatus = Literal["accepted", "sent", "delivered", "read", "failed", "bounced", "returned", "expired"]
# Not about a message we sent: a debtor's reply (an SMS to our number), with the sender's number and the text
# in ``detail`` (``orchestrator.opt_outs`` applies it).
InboundStatus = Literal["inbound"]
INBOUND: InboundStatus = "inbound"


@dataclass(frozen=True)
class CarrierEvent:
    carrier: str
    event_id: str  # unique per carrier: the key that makes a replay a no-op
    status: EventStatus | InboundStatus
    at: datetime  # when the carrier says it happened (aware)
    attempt_id: str | None = None  # our id, when the carrier echoes it (refId, VERP, callback URL, ...)
    provider_message_id: str | None = None  # the carrier's id, to find the attempt otherwise
    reason: str | None = (
        None  # machine-readable: "unknown_handset", "hard_bounce", "returned_unknown_addressee"
    )
    segment: tuple[int, int] | None = (
        None  # (part, parts) of a multi-part SMS, when the carrier reports parts
    )
    detail: dict[str, Any] = field(
        default_factory=dict
    )  # the carrier's own codes and texts, no message bodies (an inbound reply: its sender and text)


TEXT_LIMIT = 1000  # carrier texts kept in an event's detail are cut to this many characters


def clip(value: Any) -> Any:
    """A carrier's value as it may go into a detail: JSON scalars as they are, text cut to ``TEXT_LIMIT``."""
    if isinstance(value, str):
        return value[:TEXT_LIMIT]
    if value is None or isinstance(value, bool | int | float):
        return value
    return str(value)[:TEXT_LIMIT]


def from_epoch(value: Any) -> datetime | None:
    """A UNIX timestamp (seconds, number or text) as an aware UTC datetime; None when it is not one."""
    if isinstance(value, bool):
        return None
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        return None
    if not math.isfinite(seconds) or seconds <= 0:
        return None
    try:
        return datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, OSError, ValueError):
        return None


class WebhookError(Exception):
    """Base of what a carrier module raises; ``status`` is the HTTP answer the carrier expects."""

    status = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)


class MissingCredentials(WebhookError):
    """No signature / authentication at all: 400."""

    status = 400


class BadCredentials(WebhookError):
    """A signature or credential that does not verify: 401."""

    status = 401


class MalformedPayload(WebhookError):
    """Authentic but unreadable. The raw body is kept for inspection and the carrier gets the answer it
    expects for "received" (never a 5xx, never lost); ``status`` is that answer."""

    status = 200


@runtime_checkable
class CarrierWebhook(Protocol):
    name: str  # the path segment: POST /webhooks/{name}

    def configured(self, settings: Settings) -> bool:
        """False: the route answers 404 (carrier not configured)."""
        ...

    def verify(self, *, url: str, headers: Mapping[str, str], body: bytes, settings: Settings) -> None:
        """Raise ``MissingCredentials`` or ``BadCredentials``; compare secrets in constant time."""
        ...

    def parse(self, *, url: str, headers: Mapping[str, str], body: bytes) -> list[CarrierEvent]:
        """The events in one verified callback; ``MalformedPayload`` if it cannot be read."""
        ...
