"""The one place channels are registered: which implementation serves each channel, from the settings.

A channel with no carrier configured delivers to the outbox, so a fresh install works end to end.
"""

from __future__ import annotations

from channels.base import Channel
from channels.chat_link import ChatLinkChannel
from channels.email import SmtpEmailChannel
from channels.outbox import OutboxEmailChannel, OutboxLetterChannel, OutboxSmsChannel
from orchestrator.settings import Settings


def build_channels(settings: Settings) -> dict[str, Channel]:
    email: Channel = SmtpEmailChannel(settings) if settings.smtp_host else OutboxEmailChannel(settings)
    sms: Channel = OutboxSmsChannel(settings)
    return {
        "email": email,
        "sms": sms,
        "chat_link": ChatLinkChannel(sms),
        "letter": OutboxLetterChannel(settings),
    }


async def close_channels(channels: dict[str, Channel]) -> None:
    for channel in channels.values():
        await channel.close()
