"""SmsChannel against a real Redis and two carriers that are real local HTTP servers on port 0.

The gateways here are a minimal ``SmsGateway`` (``RecordingGateway``) that speaks plain JSON over HTTP and
translates what goes wrong the way every real gateway module must: connection refused is transient (nothing
was sent), a connection dropped after the request is uncertain (the carrier may have it), 429/5xx transient,
401/403 configuration, other 4xx permanent. The carriers record what they accepted, so "exactly once" is
counted at the receiving end.
"""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from channels.base import (
    Channel,
    ChannelConfigurationError,
    ChannelLimits,
    Outgoing,
    PermanentChannelError,
    Receipt,
    TransientChannelError,
    UncertainDeliveryError,
)
from channels.sms.channel import SmsChannel
from channels.sms.gateway import SmsGateway, SmsMessage
from channels.sms.health import GatewayHealth
from channels.sms.ratelimit import RedisRateLimiter

MOBILE = "+4791234567"
ORG = "974760673"


# ----------------------------------------------------------------------------------------- fake carriers


@dataclass
class FakeCarrier:
    """One carrier's HTTP API. ``script`` holds the answers to the next requests: a status, or "drop" (take
    the message, then cut the connection before answering)."""

    name: str
    script: list[int | str] = field(default_factory=list)
    accepted: list[dict[str, Any]] = field(default_factory=list)
    requests: int = 0
    url: str = ""
    retry_after: str | None = None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        body = await request.json()
        answer = self.script.pop(0) if self.script else 202
        if answer == "drop":
            self.accepted.append(body)  # the carrier has it; the client will never know
            assert request.transport is not None
            request.transport.abort()
            return web.Response(status=202)
        if answer in (200, 202):
            self.accepted.append(body)
            return web.json_response({"id": f"{self.name}-{uuid.uuid4().hex[:8]}"}, status=int(answer))
        headers = {"Retry-After": self.retry_after} if self.retry_after else None
        return web.json_response({"error": "scripted"}, status=int(answer), headers=headers)


@pytest.fixture
async def carriers() -> AsyncIterator[tuple[FakeCarrier, FakeCarrier]]:
    pair = (FakeCarrier("a"), FakeCarrier("b"))
    runners = []
    for carrier in pair:
        app = web.Application()
        app.router.add_post("/sms", carrier.handle)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        carrier.url = f"http://{host}:{port}"
        runners.append(runner)
    yield pair
    for runner in runners:
        await runner.cleanup()


class RecordingGateway:
    """A minimal SmsGateway over HTTP, translating failures at the boundary like the real modules."""

    def __init__(self, name: str, base_url: str, *, rate_per_s: float = 0.0) -> None:
        self.name = name
        self.rate_per_s = rate_per_s
        self._url = f"{base_url}/sms"
        self._session: aiohttp.ClientSession | None = None
        self.closed = False

    async def submit(self, message: SmsMessage) -> Receipt:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5))
        payload = {
            "to": message.to,
            "from": message.sender_id,
            "text": message.text,
            "ref": message.attempt_id,
            "encoding": message.encoding,
            "segments": message.segments,
        }
        try:
            async with self._session.post(self._url, json=payload) as response:
                status = response.status
                body = await response.json()
                retry_after = response.headers.get("Retry-After")
        except aiohttp.ClientConnectorError as exc:  # never connected: the carrier has nothing
            raise TransientChannelError("gateway_unreachable", str(exc)) from exc
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, TimeoutError) as exc:
            raise UncertainDeliveryError("connection_lost", f"{type(exc).__name__}: {exc}") from exc
        if status in (200, 202):
            return Receipt(provider=self.name, provider_message_id=body["id"], detail={"http_status": status})
        if status == 429 or status >= 500:
            raise TransientChannelError(
                f"http_{status}", retry_after_s=float(retry_after) if retry_after else None
            )
        if status in (401, 403):
            raise ChannelConfigurationError("gateway_auth_failed", f"HTTP {status}")
        raise PermanentChannelError("gateway_rejected", f"HTTP {status}")

    async def close(self) -> None:
        self.closed = True
        if self._session is not None:
            await self._session.close()


class BrokenGateway:
    name = "broken"
    rate_per_s = 0.0

    async def submit(self, message: SmsMessage) -> Receipt:
        raise RuntimeError("a bug in the gateway module")

    async def close(self) -> None:
        return None


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# ----------------------------------------------------------------------------------------------- helpers

MakeChannel = Callable[..., Awaitable[SmsChannel]]


@pytest.fixture
async def make_channel(redis: Any, carriers: tuple[FakeCarrier, FakeCarrier]) -> AsyncIterator[MakeChannel]:
    """Channels over gateways "a" then "b": "b" is a standby (base weight 0), so "a" is always tried first."""
    made: list[SmsChannel] = []
    run = uuid.uuid4().hex

    async def make(
        *,
        gateways: list[SmsGateway] | None = None,
        rate_a: float = 0.0,
        max_segments: int = 2,
        max_wait_s: float = 5.0,
        base_weights: dict[str, float] | None = None,
    ) -> SmsChannel:
        a, b = carriers
        channel = SmsChannel(
            gateways
            if gateways is not None
            else [RecordingGateway("a", a.url, rate_per_s=rate_a), RecordingGateway("b", b.url)],
            redis=redis,
            sender_ids={ORG: "EKSEMPEL"},
            default_sender_id="Betaling",
            max_segments=max_segments,
            rate_limiter=RedisRateLimiter(
                redis, max_wait_s=max_wait_s, key_prefix=f"test:{run}:sms:ratelimit:"
            ),
            health=GatewayHealth(
                redis, key=f"test:{run}:sms:health", base_weights=base_weights or {"a": 1, "b": 0}
            ),
        )
        made.append(channel)
        return channel

    yield make
    for channel in made:
        await channel.close()


def outgoing(
    text: str = "Hei Åse! Husk fakturaen på 1 234 kr.", to: str = MOBILE, **metadata: Any
) -> Outgoing:
    return Outgoing(
        contact_id=f"c-{uuid.uuid4().hex[:8]}",
        attempt_id=f"at-{uuid.uuid4().hex[:8]}",
        channel="sms",
        to=to,
        recipient_name="Åse Ærø",
        text=text,
        metadata=metadata,
    )


async def health_counts(redis: Any, channel: SmsChannel) -> dict[str, int]:
    raw = await redis.hgetall(channel.health.key)
    return {k.decode(): int(v) for k, v in raw.items() if k.startswith((b"ok:", b"fail:"))}


# ------------------------------------------------------------------------------------------------- tests


async def test_is_a_channel_with_sms_limits(make_channel: MakeChannel) -> None:
    channel = await make_channel()
    assert isinstance(channel, Channel)
    assert channel.name == "sms"
    assert channel.provider == "a+b"
    assert channel.limits == ChannelLimits(
        max_body_chars=306,
        supports_subject=False,
        supports_html=False,
        cost_nok=0.45,
        statutory="never",
        reaches="mobile",
    )
    assert (await make_channel(max_segments=3)).limits.max_body_chars == 459


@pytest.mark.parametrize(
    "to",
    [
        pytest.param("+4722123456", id="oslo-landline"),
        pytest.param("22 12 34 56", id="national-landline"),
        pytest.param("+475900123456", id="59-machine-number"),
        pytest.param("+475800123456", id="58-machine-number"),
        pytest.param("+4780012345", id="toll-free"),
        pytest.param("+4930123456", id="berlin-landline"),
        pytest.param("+442071234567", id="london-landline"),
        pytest.param("not a number", id="garbage"),
        pytest.param("", id="empty"),
    ],
)
async def test_only_mobiles_are_sent_to(
    make_channel: MakeChannel, carriers: tuple[FakeCarrier, FakeCarrier], to: str
) -> None:
    channel = await make_channel()
    with pytest.raises(PermanentChannelError) as excinfo:
        await channel.send(outgoing(to=to))
    assert excinfo.value.reason == "no_valid_mobile"
    assert to.strip() == "" or to not in str(excinfo.value)  # the number is not echoed
    assert [c.requests for c in carriers] == [0, 0]


@pytest.mark.parametrize(
    ("to", "e164"),
    [("912 34 567", "+4791234567"), ("0047 41234567", "+4741234567"), ("+46 70 123 45 67", "+46701234567")],
)
async def test_mobiles_are_normalised_to_e164(
    make_channel: MakeChannel, carriers: tuple[FakeCarrier, FakeCarrier], to: str, e164: str
) -> None:
    channel = await make_channel()
    await channel.send(outgoing(to=to))
    assert carriers[0].accepted[0]["to"] == e164


async def test_too_many_segments_is_refused(
    make_channel: MakeChannel, carriers: tuple[FakeCarrier, FakeCarrier]
) -> None:
    channel = await make_channel(max_segments=2)
    await channel.send(outgoing("x" * 306))  # exactly two GSM-7 segments
    with pytest.raises(PermanentChannelError) as excinfo:
        await channel.send(outgoing("x" * 307))
    assert excinfo.value.reason == "sms_too_long"
    with pytest.raises(PermanentChannelError) as excinfo:
        await channel.send(outgoing("Hei 🙂 " * 20))  # 160 UCS-2 units: three segments of 67
    assert excinfo.value.reason == "sms_too_long"
    assert "UCS-2" in str(excinfo.value)
    assert len(carriers[0].accepted) == 1


@pytest.mark.parametrize(
    "text",
    ["Din sak gjelder 13097248022.", "Fødselsnummer 130972 48022 er registrert", "02016126007"],
)
async def test_a_national_id_in_the_text_is_refused(
    make_channel: MakeChannel, carriers: tuple[FakeCarrier, FakeCarrier], text: str
) -> None:
    channel = await make_channel()
    with pytest.raises(PermanentChannelError) as excinfo:
        await channel.send(outgoing(text))
    assert excinfo.value.reason == "national_id_in_sms"
    assert "13097248022" not in str(excinfo.value)
    assert [c.requests for c in carriers] == [0, 0]


async def test_other_long_numbers_are_fine(
    make_channel: MakeChannel, carriers: tuple[FakeCarrier, FakeCarrier]
) -> None:
    channel = await make_channel()
    await channel.send(outgoing("Ordre 12345678901, konto 1234.56.78903, KID 1234567890123."))
    assert len(carriers[0].accepted) == 1


async def test_empty_text_is_refused(make_channel: MakeChannel) -> None:
    channel = await make_channel()
    with pytest.raises(PermanentChannelError) as excinfo:
        await channel.send(outgoing("  \n"))
    assert excinfo.value.reason == "sms_empty"


@pytest.mark.parametrize(
    ("text", "encoding", "segments"),
    [
        ("Hei Åse! Husk fakturaen på 1 234 kr. Ærlig talt: øl?", "GSM-7", 1),
        ("Æ" * 161, "GSM-7", 2),
        ("Hei Åse 🙂", "UCS-2", 1),
        ("Привет " * 12, "UCS-2", 2),
    ],
)
async def test_receipt_carries_encoding_segments_and_gateway(
    make_channel: MakeChannel,
    carriers: tuple[FakeCarrier, FakeCarrier],
    text: str,
    encoding: str,
    segments: int,
) -> None:
    channel = await make_channel()
    message = outgoing(text)
    receipt = await channel.send(message)
    assert receipt.provider == "a"
    assert receipt.provider_message_id.startswith("a-")
    assert receipt.detail["encoding"] == encoding
    assert receipt.detail["segments"] == segments
    assert receipt.detail["gateway"] == "a"
    assert receipt.detail["http_status"] == 202  # the gateway's own detail is kept
    assert "failed_over_from" not in receipt.detail
    sent = carriers[0].accepted[0]
    assert sent["text"] == text
    assert sent["ref"] == message.attempt_id
    assert (sent["encoding"], sent["segments"]) == (encoding, segments)


@pytest.mark.parametrize(
    ("metadata", "sender"),
    [
        ({"creditor_organisation_number": ORG}, "EKSEMPEL"),
        ({"creditor_organisation_number": "974 760 673"}, "EKSEMPEL"),
        ({"creditor_organisation_number": "923609016"}, "Betaling"),
        ({}, "Betaling"),
    ],
)
async def test_sender_id_per_creditor(
    make_channel: MakeChannel,
    carriers: tuple[FakeCarrier, FakeCarrier],
    metadata: dict[str, str],
    sender: str,
) -> None:
    channel = await make_channel()
    receipt = await channel.send(outgoing(**metadata))
    assert carriers[0].accepted[0]["from"] == sender
    assert receipt.detail["sender_id"] == sender


async def test_503_fails_over_and_the_message_arrives_exactly_once(
    redis: Any, make_channel: MakeChannel, carriers: tuple[FakeCarrier, FakeCarrier]
) -> None:
    a, b = carriers
    a.script = [503]
    channel = await make_channel()
    message = outgoing()
    receipt = await channel.send(message)
    assert receipt.provider == "b"
    assert receipt.detail["gateway"] == "b"
    assert receipt.detail["failed_over_from"] == ["a"]
    assert a.requests == 1 and a.accepted == []
    assert [m["ref"] for m in b.accepted] == [message.attempt_id]
    assert await health_counts(redis, channel) == {"fail:a": 1, "ok:b": 1}


async def test_an_unreachable_gateway_fails_over(
    redis: Any, make_channel: MakeChannel, carriers: tuple[FakeCarrier, FakeCarrier]
) -> None:
    _, b = carriers
    channel = await make_channel(
        gateways=[RecordingGateway("a", f"http://127.0.0.1:{_closed_port()}"), RecordingGateway("b", b.url)]
    )
    receipt = await channel.send(outgoing())
    assert receipt.detail["gateway"] == "b"
    assert len(b.accepted) == 1
    assert await health_counts(redis, channel) == {"fail:a": 1, "ok:b": 1}


async def test_an_uncertain_outcome_is_never_failed_over(
    redis: Any, make_channel: MakeChannel, carriers: tuple[FakeCarrier, FakeCarrier]
) -> None:
    a, b = carriers
    a.script = ["drop"]
    channel = await make_channel()
    with pytest.raises(UncertainDeliveryError) as excinfo:
        await channel.send(outgoing())
    assert excinfo.value.reason == "connection_lost"
    assert str(excinfo.value).startswith("a: ")  # reconciliation knows where to look
    assert len(a.accepted) == 1  # A has it...
    assert b.requests == 0  # ...so B was never asked
    assert await health_counts(redis, channel) == {"fail:a": 1}


async def test_every_gateway_transient_raises_transient_with_the_earliest_retry(
    make_channel: MakeChannel, carriers: tuple[FakeCarrier, FakeCarrier]
) -> None:
    a, b = carriers
    a.script, a.retry_after = [503], "30"
    b.script, b.retry_after = [429], "7"
    channel = await make_channel()
    with pytest.raises(TransientChannelError) as excinfo:
        await channel.send(outgoing())
    assert excinfo.value.reason == "http_429"  # the last gateway's reason
    assert excinfo.value.retry_after_s == 7.0
    assert "a: " in str(excinfo.value) and "b: " in str(excinfo.value)
    assert (a.requests, b.requests) == (1, 1)
    assert a.accepted == b.accepted == []


async def test_configuration_error_fails_over(
    redis: Any, make_channel: MakeChannel, carriers: tuple[FakeCarrier, FakeCarrier]
) -> None:
    a, b = carriers
    a.script = [401]
    channel = await make_channel()
    receipt = await channel.send(outgoing())
    assert receipt.detail["gateway"] == "b"
    assert len(b.accepted) == 1
    assert await health_counts(redis, channel) == {"fail:a": 1, "ok:b": 1}


async def test_configuration_errors_everywhere_raise_the_last(
    make_channel: MakeChannel, carriers: tuple[FakeCarrier, FakeCarrier]
) -> None:
    a, b = carriers
    a.script, b.script = [401], [403]
    channel = await make_channel()
    with pytest.raises(ChannelConfigurationError) as excinfo:
        await channel.send(outgoing())
    assert excinfo.value.reason == "gateway_auth_failed"
    assert str(excinfo.value).startswith("b: ")


async def test_configuration_and_transient_errors_raise_transient(
    make_channel: MakeChannel, carriers: tuple[FakeCarrier, FakeCarrier]
) -> None:
    a, b = carriers
    a.script, b.script = [401], [503]
    channel = await make_channel()
    with pytest.raises(TransientChannelError) as excinfo:  # b may take it later: retry, do not give up
        await channel.send(outgoing())
    assert excinfo.value.reason == "http_503"


async def test_a_permanent_refusal_is_not_failed_over(
    redis: Any, make_channel: MakeChannel, carriers: tuple[FakeCarrier, FakeCarrier]
) -> None:
    a, b = carriers
    a.script = [400]
    channel = await make_channel()
    with pytest.raises(PermanentChannelError) as excinfo:
        await channel.send(outgoing())
    assert excinfo.value.reason == "gateway_rejected"
    assert b.requests == 0
    assert await health_counts(redis, channel) == {}  # the message was bad, not the gateway


async def test_an_untranslated_error_is_not_failed_over(
    redis: Any, make_channel: MakeChannel, carriers: tuple[FakeCarrier, FakeCarrier]
) -> None:
    _, b = carriers
    channel = await make_channel(
        gateways=[BrokenGateway(), RecordingGateway("b", b.url)], base_weights={"broken": 1, "b": 0}
    )
    with pytest.raises(RuntimeError):
        await channel.send(outgoing())
    assert b.requests == 0
    assert await health_counts(redis, channel) == {"fail:broken": 1}


async def test_the_gateway_rate_limit_is_applied(
    make_channel: MakeChannel, carriers: tuple[FakeCarrier, FakeCarrier]
) -> None:
    channel = await make_channel(rate_a=5.0)
    started = time.monotonic()
    for _ in range(6):
        await channel.send(outgoing())
    assert time.monotonic() - started >= 0.95  # slots at 0, 0.2, ..., 1.0 s
    assert len(carriers[0].accepted) == 6


async def test_a_full_rate_limit_fails_over_without_blaming_the_gateway(
    redis: Any, make_channel: MakeChannel, carriers: tuple[FakeCarrier, FakeCarrier]
) -> None:
    a, b = carriers
    channel = await make_channel(rate_a=1.0, max_wait_s=0.1)
    first = await channel.send(outgoing())
    second = await channel.send(outgoing())  # a's next slot is a second away: b takes it
    assert (first.detail["gateway"], second.detail["gateway"]) == ("a", "b")
    assert (len(a.accepted), len(b.accepted)) == (1, 1)
    assert await health_counts(redis, channel) == {"ok:a": 1, "ok:b": 1}


async def test_a_full_rate_limit_everywhere_is_rate_limited(
    make_channel: MakeChannel, carriers: tuple[FakeCarrier, FakeCarrier]
) -> None:
    a, _ = carriers
    channel = await make_channel(gateways=[RecordingGateway("a", a.url, rate_per_s=0.5)], max_wait_s=0.1)
    await channel.send(outgoing())
    with pytest.raises(TransientChannelError) as excinfo:
        await channel.send(outgoing())
    assert excinfo.value.reason == "rate_limited"
    assert excinfo.value.retry_after_s is not None and 1.5 < excinfo.value.retry_after_s <= 2.0


async def test_close_closes_the_gateways(carriers: tuple[FakeCarrier, FakeCarrier], redis: Any) -> None:
    a, b = carriers
    gateways = [RecordingGateway("a", a.url), RecordingGateway("b", b.url)]
    channel = SmsChannel(gateways, redis=redis, sender_ids={}, default_sender_id="Betaling", max_segments=1)
    await channel.close()
    assert all(g.closed for g in gateways)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"gateways": []}, "at least one gateway"),
        ({"default_sender_id": "Inkasso AS"}, "inkasso"),
        ({"sender_ids": {ORG: "far too long a name"}}, "1-11"),
        ({"max_segments": 0}, "max_segments"),
    ],
)
async def test_bad_configuration_is_refused(
    redis: Any, carriers: tuple[FakeCarrier, FakeCarrier], kwargs: dict[str, Any], match: str
) -> None:
    a, _ = carriers
    arguments: dict[str, Any] = {
        "gateways": [RecordingGateway("a", a.url)],
        "redis": redis,
        "sender_ids": {},
        "default_sender_id": "Betaling",
        "max_segments": 2,
        **kwargs,
    }
    with pytest.raises(ValueError, match=match):
        SmsChannel(**arguments)


async def test_two_gateways_with_one_name_are_refused(
    redis: Any, carriers: tuple[FakeCarrier, FakeCarrier]
) -> None:
    a, b = carriers
    with pytest.raises(ValueError, match="two SMS gateways"):
        SmsChannel(
            [RecordingGateway("a", a.url), RecordingGateway("a", b.url)],
            redis=redis,
            sender_ids={},
            default_sender_id="Betaling",
            max_segments=2,
        )
