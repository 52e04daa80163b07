"""The ``sms`` channel: checks each message once, then hands it to one of several gateways.

``SmsChannel.send`` does, in this order:

1. the address: ``message.to`` parsed with phonenumbers (region NO) to E.164 and required to be a MOBILE
   number (``orchestrator.identifiers.is_mobile``); landlines, 58/59 machine numbers, foreign landlines and
   garbage raise ``PermanentChannelError("no_valid_mobile")``;
2. the sender: ``sender_ids[metadata["creditor_organisation_number"]]``, else the default sender id;
3. the text: an 11-digit national id (R9) raises ``PermanentChannelError("national_id_in_sms")`` (the policy
   checks too; this is the last line), more segments than ``max_segments`` raise ``sms_too_long``;
4. the gateways, in the order ``GatewayHealth.choose`` gives: for each, wait for a slot of its shared rate
   limit (``RedisRateLimiter``), then ``submit``:

   - accepted: record a success and return the gateway's receipt, with ``encoding``, ``segments`` and
     ``gateway`` added to its ``detail`` (and ``failed_over_from`` when earlier gateways failed);
   - ``TransientChannelError``: the carrier did not take it; record a failure and fail over to the next;
   - ``ChannelConfigurationError``: our side is wrong for that gateway; record a failure and fail over;
   - ``UncertainDeliveryError``: the gateway may have it; record a failure and raise at once. Never fail
     over: sending through another gateway could deliver it twice. The contact waits for reconciliation;
   - ``PermanentChannelError``: the message itself is refused; raise (the gateway's health is not at fault);
   - our own rate limit saying "no slot within ``max_wait_s``": fail over, without blaming the gateway.

   When every gateway failed: a ``TransientChannelError`` if any failure was transient (the job retries
   with backoff, or after the earliest ``retry_after_s`` a gateway gave), else the last
   ``ChannelConfigurationError``. Errors keep their reason; their message names the gateway.

``SmsChannel.query_status`` (reconciliation) asks the gateway that took the attempt (the attempt's
``provider``); when no gateway answered the send (``provider`` is the channel's ``"a+b"``), every gateway that
has a status API, and only a single answer counts. A gateway without one (Link Mobility) cannot say: None.

Nothing here logs phone numbers or message text.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from channels.base import (
    CarrierStatus,
    ChannelConfigurationError,
    ChannelError,
    ChannelLimits,
    Outgoing,
    PermanentChannelError,
    Receipt,
    SentAttempt,
    StatusQuery,
    TransientChannelError,
    UncertainDeliveryError,
)
from channels.sms.encoding import analyse
from channels.sms.gateway import SmsGateway, SmsMessage
from channels.sms.health import GatewayHealth
from channels.sms.ratelimit import RedisRateLimiter
from orchestrator.identifiers import is_mobile, normalize_phone, redact_national_ids
from orchestrator.settings import check_sender_id

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = ["CONCATENATED_SEGMENT_CHARS", "SMS_COST_NOK", "SmsChannel", "sms_limits"]

log = logging.getLogger(__name__)

# GSM-7 characters per segment of a concatenated message (160 for a single one); UCS-2 fits 67 (70).
CONCATENATED_SEGMENT_CHARS = 153
SMS_COST_NOK = 0.45
CREDITOR_METADATA_KEY = "creditor_organisation_number"


def sms_limits(max_segments: int) -> ChannelLimits:
    """What an SMS of at most ``max_segments`` segments carries, as data for the policy."""
    return ChannelLimits(
        max_body_chars=max_segments * CONCATENATED_SEGMENT_CHARS,
        supports_subject=False,
        supports_html=False,
        cost_nok=SMS_COST_NOK,
        statutory="never",
        reaches="mobile",
    )


class SmsChannel:
    """One ``sms`` channel over one or more ``SmsGateway``s, with failover, health and shared rate limits."""

    name: str = "sms"

    def __init__(
        self,
        gateways: Sequence[SmsGateway],
        *,
        redis: Redis,
        sender_ids: Mapping[str, str],
        default_sender_id: str,
        max_segments: int,
        rate_limiter: RedisRateLimiter | None = None,
        health: GatewayHealth | None = None,
        region: str = "NO",
        rng: random.Random | None = None,
    ) -> None:
        if not gateways:
            raise ValueError("SmsChannel needs at least one gateway")
        by_name: dict[str, SmsGateway] = {}
        for gateway in gateways:
            if gateway.name in by_name:
                raise ValueError(f"two SMS gateways are called {gateway.name!r}")
            by_name[gateway.name] = gateway
        if max_segments < 1:
            raise ValueError("max_segments must be >= 1")
        self._gateways = by_name
        self._sender_ids = {_org_key(org): check_sender_id(sender) for org, sender in sender_ids.items()}
        self._default_sender_id = check_sender_id(default_sender_id)
        self._max_segments = max_segments
        self._limiter = rate_limiter if rate_limiter is not None else RedisRateLimiter(redis)
        self._health = health if health is not None else GatewayHealth(redis)
        self._region = region
        self._rng = rng
        self.provider: str = "+".join(by_name)
        self.limits: ChannelLimits = sms_limits(max_segments)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(gateways={list(self._gateways)!r}, max_segments={self._max_segments})"

    @property
    def gateway_names(self) -> list[str]:
        return list(self._gateways)

    @property
    def health(self) -> GatewayHealth:
        return self._health

    @property
    def rate_limiter(self) -> RedisRateLimiter:
        return self._limiter

    def sender_id_for(self, message: Outgoing) -> str:
        """The creditor's sender id when one is configured for it, else the default."""
        org = message.metadata.get(CREDITOR_METADATA_KEY)
        if org is not None:
            sender = self._sender_ids.get(_org_key(str(org)))
            if sender is not None:
                return sender
        return self._default_sender_id

    def _mobile(self, raw: str) -> str:
        try:
            e164 = normalize_phone(raw, self._region)
        except ValueError as exc:
            raise PermanentChannelError("no_valid_mobile", "the address is not a valid phone number") from exc
        if not is_mobile(e164):
            raise PermanentChannelError(
                "no_valid_mobile", "the address is not a mobile number (landline, machine number or service)"
            )
        return e164

    def prepare(self, message: Outgoing) -> SmsMessage:
        """Every check that needs no gateway; raises ``PermanentChannelError`` for a message never to send."""
        to = self._mobile(message.to)
        sender_id = self.sender_id_for(message)
        text = message.text
        if not text.strip():
            raise PermanentChannelError("sms_empty", "the SMS text is empty")
        if redact_national_ids(text) != text:
            raise PermanentChannelError(
                "national_id_in_sms", "the SMS text contains a national identity number (R9)"
            )
        encoding = analyse(text)
        if encoding.segments > self._max_segments:
            raise PermanentChannelError(
                "sms_too_long",
                f"the SMS needs {encoding.segments} {encoding.encoding} segments ({encoding.units} units), "
                f"at most {self._max_segments} are allowed",
            )
        return SmsMessage(
            contact_id=message.contact_id,
            attempt_id=message.attempt_id,
            to=to,
            sender_id=sender_id,
            text=text,
            encoding=encoding.encoding,
            segments=encoding.segments,
        )

    async def send(self, message: Outgoing) -> Receipt:
        sms = self.prepare(message)
        order = await self._health.choose(list(self._gateways), self._rng)
        failed: list[str] = []
        transient: list[TransientChannelError] = []
        configuration: list[ChannelConfigurationError] = []
        for name in order:
            gateway = self._gateways[name]
            try:
                await self._limiter.acquire(name, gateway.rate_per_s)
            except TransientChannelError as exc:  # our own limit: try another gateway, blame nobody
                log.info(
                    "sms: no %s slot within the wait limit (%s); trying the next gateway", name, exc.reason
                )
                transient.append(_transient(name, exc))
                continue
            try:
                receipt = await gateway.submit(sms)
            except UncertainDeliveryError as exc:
                await self._health.record_failure(name)
                log.warning("sms: %s may have taken attempt %s (%s)", name, sms.attempt_id, exc.reason)
                raise UncertainDeliveryError(exc.reason, f"{name}: {exc}") from exc
            except PermanentChannelError:
                raise
            except TransientChannelError as exc:
                await self._health.record_failure(name)
                log.warning(
                    "sms: %s did not take attempt %s (%s); failing over", name, sms.attempt_id, exc.reason
                )
                failed.append(name)
                transient.append(_transient(name, exc))
                continue
            except ChannelConfigurationError as exc:
                await self._health.record_failure(name)
                log.error("sms: %s is misconfigured (%s); failing over", name, exc.reason)
                failed.append(name)
                configuration.append(ChannelConfigurationError(exc.reason, f"{name}: {exc}"))
                configuration[-1].__cause__ = exc
                continue
            except Exception:  # untranslated: the outcome is unknown, so never fail over
                await self._health.record_failure(name)
                raise
            await self._health.record_success(name)
            detail = {
                **receipt.detail,
                "gateway": name,
                "encoding": sms.encoding,
                "segments": sms.segments,
                "sender_id": sms.sender_id,
            }
            if failed:
                detail["failed_over_from"] = failed
            return Receipt(
                provider=receipt.provider, provider_message_id=receipt.provider_message_id, detail=detail
            )
        raise _all_failed(transient, configuration)

    async def query_status(self, attempt: SentAttempt) -> CarrierStatus | None:
        named = [name for name in (attempt.provider or "").split("+") if name in self._gateways]
        askable = [
            gateway
            for name in named or self._gateways
            if isinstance(gateway := self._gateways[name], StatusQuery)
        ]
        if not askable:
            return None
        with contextlib.suppress(ValueError):
            # The number as the gateway was given it, so that a lookup by number finds the message.
            attempt = replace(attempt, address=normalize_phone(attempt.address, self._region))
        answers = [await gateway.query_status(attempt) for gateway in askable]
        known = [answer for answer in answers if answer is not None]
        # Two gateways claiming one attempt cannot both be right: an operator decides.
        return known[0] if len(known) == 1 else None

    async def close(self) -> None:
        results = await asyncio.gather(
            *(gateway.close() for gateway in self._gateways.values()), return_exceptions=True
        )
        for name, result in zip(self._gateways, results, strict=True):
            if isinstance(result, BaseException):
                log.warning("sms: closing gateway %s failed: %r", name, result)


def _org_key(org: str) -> str:
    return "".join(org.split())


def _transient(gateway: str, exc: TransientChannelError) -> TransientChannelError:
    wrapped = TransientChannelError(exc.reason, f"{gateway}: {exc}", retry_after_s=exc.retry_after_s)
    wrapped.__cause__ = exc
    return wrapped


def _all_failed(
    transient: list[TransientChannelError], configuration: list[ChannelConfigurationError]
) -> ChannelError:
    """The error for a message no gateway took: transient if any gateway may take it later."""
    if transient:
        last = transient[-1]
        hints = [exc.retry_after_s for exc in transient if exc.retry_after_s is not None]
        message = "; ".join(str(exc) for exc in (*transient, *configuration))
        error = TransientChannelError(
            last.reason, f"no gateway took the SMS: {message}", retry_after_s=min(hints) if hints else None
        )
        error.__cause__ = last
        return error
    return configuration[-1]
