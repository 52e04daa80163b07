"""The one place channels are registered: which implementation serves each channel, from the settings.

A channel with no carrier configured delivers to the outbox, so a fresh install works end to end. SMS gateways
are listed in ``SMS_GATEWAYS``: a new gateway is one module with a ``from_settings`` and one line here.
"""

from __future__ import annotations

from pydantic import SecretStr
from redis.asyncio import Redis

from channels.base import Channel, ChannelConfigurationError
from channels.chat_link import ChatLinkChannel
from channels.digital_mailbox import DigipostChannel
from channels.email import SmtpEmailChannel
from channels.letter import PrintLetterChannel
from channels.outbox import OutboxEmailChannel, OutboxLetterChannel, OutboxSmsChannel
from channels.print_provider import FolderDelivery, PrintBatcher, SftpDelivery
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
    channels: dict[str, Channel] = {
        "email": email,
        "sms": sms,
        "chat_link": ChatLinkChannel(sms),
        "letter": letter_channel(settings),
    }
    digital_mailbox = DigipostChannel.from_settings(settings)
    if digital_mailbox is not None:
        channels["digital_mailbox"] = digital_mailbox
    return channels


def letter_channel(settings: Settings) -> Channel:
    """Letters go to the outbox, or in batches to the print provider's drop folder or SFTP server."""
    if settings.print_delivery == "outbox":
        return OutboxLetterChannel(settings)
    delivery: FolderDelivery | SftpDelivery
    if settings.print_delivery == "folder":
        if settings.print_folder is None:
            raise ChannelConfigurationError(
                "print_folder_missing", "ORCH_PRINT_DELIVERY=folder needs ORCH_PRINT_FOLDER"
            )
        delivery = FolderDelivery(settings.print_folder)
    else:
        missing = [
            name
            for name, value in (
                ("ORCH_PRINT_SFTP_HOST", settings.print_sftp_host),
                ("ORCH_PRINT_SFTP_USERNAME", settings.print_sftp_username),
                ("ORCH_PRINT_SFTP_KNOWN_HOSTS", settings.print_sftp_known_hosts),
            )
            if not value
        ]
        if settings.print_sftp_password is None and settings.print_sftp_key_file is None:
            missing.append("ORCH_PRINT_SFTP_PASSWORD or ORCH_PRINT_SFTP_KEY_FILE")
        if missing:
            raise ChannelConfigurationError(
                "print_sftp_settings_missing", f"ORCH_PRINT_DELIVERY=sftp needs {', '.join(missing)}"
            )
        assert settings.print_sftp_host and settings.print_sftp_username and settings.print_sftp_known_hosts
        delivery = SftpDelivery(
            host=settings.print_sftp_host,
            port=settings.print_sftp_port,
            username=settings.print_sftp_username,
            known_hosts=settings.print_sftp_known_hosts,
            remote_dir=settings.print_sftp_remote_dir,
            password=_secret(settings.print_sftp_password),
            client_keys=[settings.print_sftp_key_file] if settings.print_sftp_key_file else (),
            passphrase=_secret(settings.print_sftp_key_passphrase),
        )
    batcher = PrintBatcher(
        delivery, max_letters=settings.print_batch_max_letters, max_wait_s=settings.print_batch_max_wait_s
    )
    return PrintLetterChannel(batcher, render_workers=settings.letter_render_workers)


def _secret(value: SecretStr | None) -> str | None:
    return value.get_secret_value() if value is not None else None


async def close_channels(channels: dict[str, Channel]) -> None:
    for channel in channels.values():
        await channel.close()
