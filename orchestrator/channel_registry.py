"""The one place channels are registered: which implementation serves each channel, from the settings.

A channel with no carrier configured delivers to the outbox, so a fresh install works end to end. SMS gateways
are listed in ``SMS_GATEWAYS``: a new gateway is one module with a ``from_settings`` and one line here.
"""

from __future__ import annotations

from redis.asyncio import Redis

from channels.base import Channel
from channels.chat_link import ChatLinkChannel
from channels.email import SmtpEmailChannel
from channels.outbox import OutboxEmailChannel, OutboxLetterChannel, OutboxSmsChannel
from channels.sms.channel import SmsChannel
from channels.sms.gateway import SmsGateway
from channels.sms.linkmobility import LinkMobilityGateway
from channels.sms.twilio import TwilioGateway
from orchestrator.settings import Settings

SMS_GATEWAYS = (LinkMobilityGateway, TwilioGateway)


def sms_gateways(settings: Settings) -> list[SmsGateway]:
    found = (factory.from_settings(settings) for factory in SMS_GATEWAYS)
    return [gateway for gateway in found if gateway is not None]


def build_channels(settings: Settings, redis: Redis) -> dict[str, Channel]:
    email: Channel = SmtpEmailChannel(settings) if settings.smtp_host else OutboxEmailChannel(settings)
    gateways = sms_gateways(settings)
    sms: Channel = (
        SmsChannel(
            gateways,
            redis=redis,
            sender_ids=settings.sms_sender_ids,
            default_sender_id=settings.sms_default_sender_id,
            max_segments=settings.sms_max_segments,
        )
        if gateways
        else OutboxSmsChannel(settings)
    )
    return {
        "email": email,
        "sms": sms,
        "chat_link": ChatLinkChannel(sms),
        "letter": OutboxLetterChannel(settings),
    }


async def close_channels(channels: dict[str, Channel]) -> None:
    for channel in channels.values():
        await channel.close()
