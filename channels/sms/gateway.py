"""What every SMS gateway module implements, and the message it is handed.

A gateway module (``linkmobility.py``, ``twilio.py``, ...) only speaks its carrier's API: it submits one
already-validated message and translates the carrier's answer into a ``Receipt`` or an error from
``channels.base`` (transient, permanent, configuration, uncertain). Choosing a gateway, failing over, rate
limiting, number and length checks live once for all gateways in ``SmsChannel`` (``channels/sms/channel.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from channels.base import Receipt


@dataclass(frozen=True)
class SmsMessage:
    contact_id: str
    attempt_id: str  # our id: it travels to the carrier (refId, callback URL) so that reports find us
    to: str  # E.164, already known to be a mobile number
    sender_id: str  # alphanumeric sender, at most 11 characters
    text: str
    encoding: str  # "GSM-7" or "UCS-2"
    segments: int


@runtime_checkable
class SmsGateway(Protocol):
    name: str  # the provider name recorded on the attempt, e.g. "linkmobility"
    # Messages per second this gateway accepts from us, shared by every worker (0: no limit).
    rate_per_s: float

    async def submit(self, message: SmsMessage) -> Receipt: ...

    async def close(self) -> None: ...
