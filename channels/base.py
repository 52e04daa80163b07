"""The channel Protocol every adapter implements, the message it is handed, and the error tree.

Carrier errors are translated at the boundary into three kinds, always ``raise ... from exc``:
``TransientChannelError`` (try again later), ``PermanentChannelError`` (this message will never go out this
way), ``ChannelConfigurationError`` (our side is wrong: credentials, host; an operator must act) and
``UncertainDeliveryError`` (the carrier may have it: reconcile, never resend blindly).

A channel whose carrier has a status API also implements ``StatusQuery``: asked about one attempt, it answers
with a ``CarrierStatus`` in our tracking vocabulary, or None when the carrier cannot say. Reconciliation
(``orchestrator.reconciliation``) asks it before it hands a silent attempt to an operator.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol, runtime_checkable

# "always": paper and digital mailboxes; "with_evidence": an e-mail address with stored evidence (R3);
# "never": SMS and chat links, which may carry reminders and nudges but never the statutory notice itself.
StatutoryUse = Literal["always", "with_evidence", "never"]
# Which of a debtor's contact points a channel delivers to.
Reach = Literal["email", "mobile", "postal", "national_id"]


@dataclass(frozen=True)
class ChannelLimits:
    """What a channel can carry, as data the policy reads (never ``if channel == "sms"``)."""

    max_body_chars: int | None
    supports_subject: bool
    supports_html: bool
    cost_nok: float
    statutory: StatutoryUse = "never"
    reaches: Reach | None = None  # None: the channel reaches nobody on its own (the policy never picks it)
    supports_links: bool = False  # the message can carry a self-service link the debtor can open


@dataclass(frozen=True)
class PostalAddress:
    lines: tuple[str, ...]
    postal_code: str
    city: str
    country: str = "NO"

    def as_lines(self) -> list[str]:
        tail = f"{self.postal_code} {self.city}".strip()
        out = [*self.lines, tail]
        if self.country and self.country != "NO":
            out.append(self.country)
        return out


@dataclass(frozen=True)
class Outgoing:
    """One rendered message bound for one address. Carries our ids so callbacks find their contact."""

    contact_id: str
    attempt_id: str
    channel: str
    to: str  # e-mail address, E.164 number, or the letter's address lines joined by "\n"
    recipient_name: str
    text: str
    subject: str | None = None
    html: str | None = None
    postal_address: PostalAddress | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    # One-click opt-out (RFC 8058) for messages the debtor may refuse; e-mail carries it as List-Unsubscribe.
    unsubscribe_url: str | None = None


@dataclass(frozen=True)
class Receipt:
    """What the carrier (or the outbox) said when it took the message."""

    provider: str
    provider_message_id: str
    detail: dict[str, Any] = field(default_factory=dict)


# What a carrier can say about a message, in the vocabulary of ``orchestrator.tracking`` (the same values as
# ``webhooks.events.EventStatus``): "accepted" means the carrier has it and has not yet passed it on.
CarrierStatusValue = Literal[
    "accepted", "sent", "delivered", "read", "failed", "bounced", "returned", "expired"
]


@dataclass(frozen=True)
class SentAttempt:
    """What a status query is told about one attempt.

    ``provider_message_id`` is None when the carrier's answer to the send never reached us (a contact stuck
    in ``sending``); ``address``, ``text`` and ``created_at`` then let a carrier that cannot be asked by our
    id find the message it took. ``provider`` is the carrier recorded on the attempt: one gateway once the
    carrier answered, else the channel's provider (``"linkmobility+twilio"``)."""

    attempt_id: str
    provider: str | None
    provider_message_id: str | None
    address: str
    text: str | None
    created_at: datetime


@dataclass(frozen=True)
class CarrierStatus:
    """A carrier's answer to "what became of this message?"."""

    provider: str  # the carrier that answered, as its events are recorded (``twilio``, ``digipost``)
    status: CarrierStatusValue
    at: datetime  # when the carrier says the message reached that status (aware), else when it told us
    reason: str | None = None  # machine-readable, as a callback would give it (``unknown_handset``)
    provider_message_id: str | None = None  # the carrier's id for the message
    detail: dict[str, Any] = field(default_factory=dict)  # the carrier's own codes, never message bodies


class ChannelError(Exception):
    """Base of every error a channel raises; ``reason`` is machine-readable and becomes ``status_reason``."""

    def __init__(self, reason: str, message: str | None = None) -> None:
        super().__init__(message or reason)
        self.reason = reason


class TransientChannelError(ChannelError):
    """Try again later: the carrier is busy, down, or said 4xx."""

    def __init__(self, reason: str, message: str | None = None, retry_after_s: float | None = None) -> None:
        super().__init__(reason, message)
        self.retry_after_s = retry_after_s


class PermanentChannelError(ChannelError):
    """This message will never be accepted as it is: the carrier said 5xx, or the address is invalid."""


class UncertainDeliveryError(ChannelError):
    """The carrier may or may not have taken the message (the connection died mid-transfer). Retrying could
    send it twice, so the contact waits for reconciliation instead."""


class ChannelConfigurationError(ChannelError):
    """Our side is misconfigured (credentials, host). Sending again will not help until an operator acts."""


@runtime_checkable
class Channel(Protocol):
    """One way of reaching a debtor: ``name`` is the channel (``email``), ``provider`` the carrier."""

    name: str
    provider: str
    limits: ChannelLimits

    async def send(self, message: Outgoing) -> Receipt: ...

    async def close(self) -> None: ...


@runtime_checkable
class StatusQuery(Protocol):
    """Optional: a channel (or SMS gateway) whose carrier can be asked what became of a message.

    None: the carrier does not know the message or cannot say. Carrier failures raise the error tree above
    (``TransientChannelError`` for an outage); asking never sends anything."""

    async def query_status(self, attempt: SentAttempt) -> CarrierStatus | None: ...
