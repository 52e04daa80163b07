"""webhooks.twilio against genuine status callbacks: the Twilio sandbox (a real HTTP server on port 0) posts
them to a real receiver here, which keeps the exact request (URL, headers, body) for the module to verify and
parse."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qsl, urlencode

import pytest
from aiohttp import web
from pydantic import SecretStr

from channels.sms.gateway import SmsMessage
from channels.sms.twilio import TwilioGateway, twilio_signature
from orchestrator.sandbox.twilio import (
    RunningTwilioSandbox,
    StatusCallbackRecord,
    TwilioSandbox,
    serve_sandbox,
)
from orchestrator.settings import Settings
from webhooks.events import (
    BadCredentials,
    CarrierEvent,
    CarrierWebhook,
    MalformedPayload,
    MissingCredentials,
)
from webhooks.twilio import TwilioWebhook, signed_url_candidates

MOBILE = "+4791234567"
ATTEMPT = "01JQ7ZK3W5N8T4HZ2V6XYPM0RB"
NOW = datetime(2025, 3, 14, 9, 26, 53, tzinfo=UTC)
TOKEN = "0123456789abcdef0123456789abcdef"
PUBLIC = "https://orchestrator.example.no/webhooks/twilio"


@dataclass(frozen=True)
class Captured:
    """One request exactly as it reached our receiver."""

    url: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    url: str = ""
    requests: list[Captured] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append(Captured(str(request.url), dict(request.headers), await request.read()))
        self.changed.set()
        return web.Response(status=204)

    async def wait(self, count: int, timeout_s: float = 5.0) -> list[Captured]:
        async with asyncio.timeout(timeout_s):
            while len(self.requests) < count:
                self.changed.clear()
                await self.changed.wait()
        return self.requests[:count]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    recv = Receiver()
    app = web.Application()
    app.router.add_post("/webhooks/twilio", recv.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    recv.url = f"http://{host}:{port}/webhooks/twilio"
    yield recv
    await runner.cleanup()


@pytest.fixture
async def sandbox() -> AsyncIterator[RunningTwilioSandbox]:
    async with serve_sandbox(TwilioSandbox(auth_token=TOKEN, callback_delay_s=0.0)) as running:
        yield running


def sms(attempt_id: str = ATTEMPT) -> SmsMessage:
    return SmsMessage(
        contact_id="01JQ7ZK3W5N8T4HZ2V6XYPM0RA",
        attempt_id=attempt_id,
        to=MOBILE,
        sender_id="Betaling",
        text="Hei, du har en faktura som forfaller snart.",
        encoding="GSM-7",
        segments=1,
    )


async def send(sandbox: RunningTwilioSandbox, callback_url: str, attempt_id: str = ATTEMPT) -> str:
    """Submit one message through the real gateway; the sandbox then posts its status callbacks."""
    gateway = TwilioGateway(
        base_url=sandbox.base_url,
        account_sid=sandbox.state.account_sid,
        auth_token=SecretStr(TOKEN),
        status_callback_url=callback_url,
        rate_per_s=0,
        timeout_s=5.0,
    )
    try:
        receipt = await gateway.submit(sms(attempt_id))
    finally:
        await gateway.close()
    return receipt.provider_message_id


def settings(token: str | None = TOKEN, callback_url: str | None = None) -> Settings:
    return Settings(
        twilio_auth_token=None if token is None else SecretStr(token),
        twilio_status_callback_url=callback_url,
    )


def webhook() -> TwilioWebhook:
    return TwilioWebhook(clock=lambda: NOW)


def signed(url: str, params: dict[str, str], token: str = TOKEN) -> Captured:
    """A request as Twilio would send it to ``url``: form body and its signature."""
    return Captured(
        url, {"X-Twilio-Signature": twilio_signature(token, url, params)}, urlencode(params).encode()
    )


def verify(request: Captured, config: Settings | None = None, *, url: str | None = None) -> None:
    webhook().verify(
        url=url or request.url, headers=request.headers, body=request.body, settings=config or settings()
    )


def parse(request: Captured, *, url: str | None = None) -> list[CarrierEvent]:
    return webhook().parse(url=url or request.url, headers=request.headers, body=request.body)


def as_request(record: StatusCallbackRecord) -> Captured:
    """A callback the sandbox could not deliver (no server there), rebuilt from what it signed and sent."""
    return Captured(record.url, {"X-Twilio-Signature": record.signature}, urlencode(record.params).encode())


# ------------------------------------------------------------------------------------------- the protocol


def test_implements_the_carrier_webhook_protocol() -> None:
    module = TwilioWebhook()
    assert isinstance(module, CarrierWebhook)
    assert module.name == "twilio"


@pytest.mark.parametrize(("token", "expected"), [(None, False), ("", False), (TOKEN, True)])
def test_configured_iff_the_auth_token_is_set(token: str | None, expected: bool) -> None:
    assert TwilioWebhook().configured(settings(token)) is expected


def test_verify_without_a_token_refuses() -> None:
    request = signed(PUBLIC, {"MessageSid": "SM1", "MessageStatus": "sent"})
    with pytest.raises(BadCredentials):
        verify(request, settings(None))


# -------------------------------------------------------------------------------------- genuine callbacks


async def test_genuine_delivered_callbacks_verify_and_parse(
    sandbox: RunningTwilioSandbox, receiver: Receiver
) -> None:
    sid = await send(sandbox, receiver.url)
    sent, delivered = await receiver.wait(2)

    assert sent.url == f"{receiver.url}?attempt={ATTEMPT}"
    for request in (sent, delivered):
        verify(request)
    assert parse(sent) + parse(delivered) == [
        CarrierEvent(
            carrier="twilio",
            event_id=f"{sid}:sent",
            status="sent",
            at=NOW,
            attempt_id=ATTEMPT,
            provider_message_id=sid,
            detail={"message_status": "sent"},
        ),
        CarrierEvent(
            carrier="twilio",
            event_id=f"{sid}:delivered",
            status="delivered",
            at=NOW,
            attempt_id=ATTEMPT,
            provider_message_id=sid,
            detail={"message_status": "delivered"},
        ),
    ]


@pytest.mark.parametrize(
    ("outcome", "message_status", "code", "reason"),
    [
        ("failed", "failed", "30008", "unknown_error"),
        ("unreachable", "undelivered", "30003", "unreachable"),
        ("unknown_handset", "undelivered", "30005", "unknown_handset"),
    ],
)
async def test_genuine_failure_callbacks(
    sandbox: RunningTwilioSandbox,
    receiver: Receiver,
    outcome: str,
    message_status: str,
    code: str,
    reason: str,
) -> None:
    sandbox.state.default_outcome = outcome  # type: ignore[assignment]
    sid = await send(sandbox, receiver.url)
    count = 1 if outcome == "failed" else 2
    last = (await receiver.wait(count))[-1]

    verify(last)
    [event] = parse(last)
    assert event == CarrierEvent(
        carrier="twilio",
        event_id=f"{sid}:{message_status}:{code}",
        status="failed",
        at=NOW,
        attempt_id=ATTEMPT,
        provider_message_id=sid,
        reason=reason,
        detail={"message_status": message_status, "error_code": code},
    )


async def test_no_phone_number_reaches_the_event(sandbox: RunningTwilioSandbox, receiver: Receiver) -> None:
    await send(sandbox, receiver.url)
    for request in await receiver.wait(2):
        assert MOBILE.encode("ascii").replace(b"+", b"%2B") in request.body  # it is in the callback...
        assert MOBILE not in repr(parse(request))  # ...and nowhere in what we keep of it


async def test_a_replay_is_the_same_event_and_each_status_its_own(
    sandbox: RunningTwilioSandbox, receiver: Receiver
) -> None:
    await send(sandbox, receiver.url)
    sent, delivered = await receiver.wait(2)
    ticks = iter([NOW, NOW + timedelta(minutes=5)])
    module = TwilioWebhook(clock=lambda: next(ticks))

    first = module.parse(url=delivered.url, headers=delivered.headers, body=delivered.body)
    verify(delivered)  # the very same request, again
    again = module.parse(url=delivered.url, headers=delivered.headers, body=delivered.body)
    assert [e.event_id for e in first] == [e.event_id for e in again]
    assert first[0].at != again[0].at  # received twice, recorded once by its event id
    assert parse(sent)[0].event_id != first[0].event_id


# ------------------------------------------------------------------------------------ refused signatures


async def test_forged_signature_is_bad_credentials(sandbox: RunningTwilioSandbox, receiver: Receiver) -> None:
    await send(sandbox, receiver.url)
    [genuine, _] = await receiver.wait(2)
    params = dict(parse_qsl(genuine.body.decode()))
    forged_signature = twilio_signature("not-the-token", genuine.url, params)
    for signature in (forged_signature, "bm90IGEgc2lnbmF0dXJl", "é"):
        forged = Captured(genuine.url, {**genuine.headers, "X-Twilio-Signature": signature}, genuine.body)
        with pytest.raises(BadCredentials) as caught:
            verify(forged)
        assert caught.value.status == 401
    with pytest.raises(BadCredentials):
        verify(genuine, settings("not-the-token"))


async def test_missing_signature_is_missing_credentials(
    sandbox: RunningTwilioSandbox, receiver: Receiver
) -> None:
    await send(sandbox, receiver.url)
    [genuine, _] = await receiver.wait(2)
    without = {k: v for k, v in genuine.headers.items() if k.lower() != "x-twilio-signature"}
    for headers in (without, {**without, "X-Twilio-Signature": "  "}):
        with pytest.raises(MissingCredentials) as caught:
            verify(Captured(genuine.url, headers, genuine.body))
        assert caught.value.status == 400


async def test_tampered_parameters_or_url_fail(sandbox: RunningTwilioSandbox, receiver: Receiver) -> None:
    await send(sandbox, receiver.url)
    [sent, _] = await receiver.wait(2)
    assert b"MessageStatus=sent" in sent.body
    tampered_bodies = [
        sent.body.replace(b"MessageStatus=sent", b"MessageStatus=delivered"),
        sent.body + b"&ErrorCode=30003",
        sent.body.replace(b"&MessageStatus=sent", b""),
    ]
    for body in tampered_bodies:
        with pytest.raises(BadCredentials):
            verify(Captured(sent.url, sent.headers, body))
    other_attempt = sent.url.replace(ATTEMPT, "01JQ7ZK3W5N8T4HZ2V6XYPM0ZZ")
    with pytest.raises(BadCredentials):
        verify(sent, url=other_attempt)
    with pytest.raises(BadCredentials):
        verify(sent, url=sent.url.replace("/webhooks/twilio", "/webhooks/twilio/"))


async def test_header_name_in_any_case(sandbox: RunningTwilioSandbox, receiver: Receiver) -> None:
    await send(sandbox, receiver.url)
    [sent, _] = await receiver.wait(2)
    lower = {k.lower(): v for k, v in sent.headers.items()}
    verify(Captured(sent.url, lower, sent.body))


# ------------------------------------------------------------------------------------------ URL variants


@pytest.mark.parametrize(
    ("callback_url", "as_we_see_it"),
    [
        ("https://127.0.0.1/webhooks/twilio", "https://127.0.0.1:443/webhooks/twilio"),
        ("http://127.0.0.1:80/webhooks/twilio", "http://127.0.0.1/webhooks/twilio"),
    ],
)
async def test_the_url_with_or_without_the_default_port_verifies(
    sandbox: RunningTwilioSandbox, callback_url: str, as_we_see_it: str
) -> None:
    # Nothing listens there: the sandbox still signs and records every callback it tries to post.
    await send(sandbox, callback_url)
    records = await sandbox.state.wait_for_callbacks(2)
    for record in records:
        request = as_request(record)
        assert request.url == f"{callback_url}?attempt={ATTEMPT}"
        verify(request)
        verify(request, url=f"{as_we_see_it}?attempt={ATTEMPT}")
        assert parse(request, url=f"{as_we_see_it}?attempt={ATTEMPT}")[0].attempt_id == ATTEMPT


def test_a_non_default_port_is_never_dropped() -> None:
    request = signed(f"https://orchestrator.example.no:8443/webhooks/twilio?attempt={ATTEMPT}", {"A": "1"})
    verify(request)
    for url in (
        f"https://orchestrator.example.no/webhooks/twilio?attempt={ATTEMPT}",
        f"https://orchestrator.example.no:443/webhooks/twilio?attempt={ATTEMPT}",
    ):
        with pytest.raises(BadCredentials):
            verify(request, url=url)


@pytest.mark.parametrize("own_query", ["", "?tenant=blabaer"])
async def test_behind_a_proxy_the_configured_callback_url_verifies(
    sandbox: RunningTwilioSandbox, receiver: Receiver, own_query: str
) -> None:
    callback_url = receiver.url + own_query  # what Twilio was told, and signed
    await send(sandbox, callback_url)
    [sent, _] = await receiver.wait(2)
    assert sent.url == f"{callback_url}{'&' if own_query else '?'}attempt={ATTEMPT}"
    # What the ingress hands us: ORCH_PUBLIC_BASE_URL + path and query, not the URL Twilio called.
    public = PUBLIC + "?" + sent.url.partition("?")[2]

    verify(sent, settings(callback_url=callback_url), url=public)
    with pytest.raises(BadCredentials):
        verify(sent, settings(callback_url=None), url=public)
    with pytest.raises(BadCredentials):  # the query is still signed
        verify(sent, settings(callback_url=callback_url), url=public.replace(ATTEMPT, "someone-else"))
    assert parse(sent, url=public)[0].attempt_id == ATTEMPT


def test_signed_url_candidates() -> None:
    assert signed_url_candidates("https://a.example/w?attempt=1", None) == [
        "https://a.example/w?attempt=1",
        "https://a.example:443/w?attempt=1",
    ]
    assert signed_url_candidates("http://[::1]:80/w", None) == ["http://[::1]:80/w", "http://[::1]/w"]
    assert signed_url_candidates("http://u:p@a.example/w", None) == [
        "http://u:p@a.example/w",
        "http://u:p@a.example:80/w",
    ]
    assert signed_url_candidates("https://a.example:8443/w", None) == ["https://a.example:8443/w"]
    assert signed_url_candidates("http://10.0.0.5:8080/webhooks/twilio?attempt=x", PUBLIC) == [
        "http://10.0.0.5:8080/webhooks/twilio?attempt=x",
        f"{PUBLIC}?attempt=x",
        "https://orchestrator.example.no:443/webhooks/twilio?attempt=x",
    ]


# ------------------------------------------------------------------------------------------- parsing


@pytest.mark.parametrize(
    ("message_status", "code", "status", "reason"),
    [
        ("queued", None, "accepted", None),
        ("accepted", None, "accepted", None),
        ("sending", None, "accepted", None),
        ("scheduled", None, "accepted", None),
        ("sent", None, "sent", None),
        ("delivered", None, "delivered", None),
        ("read", None, "read", None),
        ("undelivered", "30003", "failed", "unreachable"),
        ("undelivered", "30005", "failed", "unknown_handset"),
        ("undelivered", "30006", "failed", "not_a_mobile"),
        ("undelivered", "30007", "failed", "carrier_filtered"),
        ("failed", "30008", "failed", "unknown_error"),
        ("failed", "21610", "failed", "recipient_opted_out"),
        ("failed", "30034", "failed", "twilio_30034"),
        ("failed", None, "failed", "unknown_error"),
        ("undelivered", "", "failed", "unknown_error"),
        ("canceled", None, "failed", "canceled"),
    ],
)
def test_status_mapping(message_status: str, code: str | None, status: str, reason: str | None) -> None:
    params = {"MessageSid": "SM0f", "MessageStatus": message_status, "SmsStatus": message_status}
    if code is not None:
        params["ErrorCode"] = code
    [event] = parse(signed(f"{PUBLIC}?attempt={ATTEMPT}", params))
    assert (event.status, event.reason) == (status, reason)
    assert event.event_id == f"SM0f:{message_status}" + (f":{code}" if code else "")
    assert event.segment is None


def test_without_an_attempt_in_the_url_the_message_sid_finds_it() -> None:
    [event] = parse(signed(PUBLIC, {"MessageSid": "SM0f", "MessageStatus": "delivered"}))
    assert (event.attempt_id, event.provider_message_id) == (None, "SM0f")


def test_raw_dlr_done_date_is_kept_in_detail() -> None:
    params = {"MessageSid": "SM0f", "MessageStatus": "delivered", "RawDlrDoneDate": "2503140926"}
    [event] = parse(signed(PUBLIC, params))
    assert event.detail == {"message_status": "delivered", "raw_dlr_done_date": "2503140926"}
    assert event.at == NOW


@pytest.mark.parametrize(
    "params",
    [
        {"MessageStatus": "delivered", "SmsStatus": "delivered"},
        {"MessageSid": "SM0f", "SmsSid": "SM0f"},
        {"MessageSid": "", "MessageStatus": "delivered"},
        {"MessageSid": "SM0f", "MessageStatus": "receiving"},
        {},
    ],
)
def test_authentic_but_unreadable_is_malformed_with_status_200(params: dict[str, str]) -> None:
    request = signed(f"{PUBLIC}?attempt={ATTEMPT}", params)
    verify(request)  # Twilio's own signature: authentic
    with pytest.raises(MalformedPayload) as caught:
        parse(request)
    assert caught.value.status == 200


def test_a_body_that_is_not_utf8_is_malformed_and_never_verifies() -> None:
    body = b"MessageSid=SM0f&MessageStatus=\xff\xfe"
    request = Captured(PUBLIC, {"X-Twilio-Signature": twilio_signature(TOKEN, PUBLIC, {})}, body)
    with pytest.raises(BadCredentials):
        verify(request)
    with pytest.raises(MalformedPayload) as caught:
        parse(request)
    assert caught.value.status == 200
