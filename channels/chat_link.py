"""Chat link: a short message whose point is the self-service link, delivered through the SMS channel.

The link itself (an opaque, expiring, revocable token) is issued by the worker for every channel whose limits
say ``supports_links``; this channel exists so that upstream can ask for "the link, by SMS" explicitly.
"""

from __future__ import annotations

from dataclasses import replace

from channels.base import CarrierStatus, Channel, ChannelLimits, Outgoing, Receipt, SentAttempt, StatusQuery


class ChatLinkChannel:
    name = "chat_link"

    def __init__(self, carrier: Channel) -> None:
        self._carrier = carrier
        self.provider = carrier.provider
        self.limits = ChannelLimits(
            max_body_chars=carrier.limits.max_body_chars,
            supports_subject=False,
            supports_html=False,
            cost_nok=carrier.limits.cost_nok,
            statutory="never",
            reaches=carrier.limits.reaches,
            supports_links=True,
        )

    async def send(self, message: Outgoing) -> Receipt:
        return await self._carrier.send(replace(message, channel=self._carrier.name))

    async def query_status(self, attempt: SentAttempt) -> CarrierStatus | None:
        """Reconciliation asks the SMS carrier that took it; a carrier that cannot be asked knows nothing."""
        if isinstance(self._carrier, StatusQuery):
            return await self._carrier.query_status(attempt)
        return None

    async def close(self) -> None:
        """The carrier belongs to its own channel, which closes it."""
