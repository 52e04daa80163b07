"""The Twilio gateway against the Twilio sandbox (a real HTTP server on port 0) and a real receiver."""

from __future__ import annotations

import asyncio
import base64
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from multidict import MultiDict
from pydantic import SecretStr

from channels.base import (
    ChannelConfigurationError,
    PermanentChannelError,
    TransientChannelError,
    UncertainDeliveryError,
)
from channels.sms.gateway import SmsGateway, SmsMessage
from channels.sms.twilio import (
    TwilioGateway,
    status_callback_for,
    twilio_signature,
    verify_twilio_signature,
)
from orchestrator.sandbox.twilio import (
    RunningTwilioSandbox,
    TwilioSandbox,
    num_segments,
    serve,
    serve_sandbox,
)
from orchestrator.settings import Settings

MOBILE = "+4791234567"
OTHER_MOBILE = "+4741234567"
LANDLINE = "+4722123456"  # Oslo: valid, but no SMS
ATTEMPT = "01JQ7ZK3W5N8T4HZ2V6XYPM0RB"  # a ULID, like orchestrator.models.new_id()
TEXT = "Hei Kåre Ærø, fakturaen på 1 234,50 kr forfaller snart. Svar her: https://eksempel.no/b/x"


def sms(to: str = MOBILE, *, attempt_id: str = ATTEMPT, text: str = TEXT) -> SmsMessage:
    return SmsMessage(
        contact_id="01JQ7ZK3W5N8T4HZ2V6XYPM0RA",
        attempt_id=attempt_id,
        to=to,
        sender_id="Betaling",
        text=text,
        encoding="GSM-7",
        segments=1,
    )


@dataclass
class Receiver:
    """Our side of the status callbacks: keeps every request as (url, X-Twilio-Signature, form)."""

    url: str = ""
    received: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        form = await request.post()
        params = {name: str(value) for name, value in form.items()}
        self.received.append((str(request.url), request.headers.get("X-Twilio-Signature", ""), params))
        return web.Response(status=204)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    recv = Receiver()
    app = web.Application()
    app.router.add_post("/webhooks/twilio", recv.handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    recv.url = str(server.make_url("/webhooks/twilio"))
    yield recv
    await server.close()


@pytest.fixture
async def sandbox() -> AsyncIterator[RunningTwilioSandbox]:
    async with serve_sandbox(TwilioSandbox(callback_delay_s=0.0)) as running:
        yield running


def make_gateway(
    sandbox: RunningTwilioSandbox,
    *,
    callback_url: str | None = None,
    token: str | None = None,
    timeout_s: float = 5.0,
    base_url: str | None = None,
) -> TwilioGateway:
    return TwilioGateway(
        base_url=base_url or sandbox.base_url,
        account_sid=sandbox.state.account_sid,
        auth_token=SecretStr(token or sandbox.state.auth_token),
        status_callback_url=callback_url,
        rate_per_s=10.0,
        timeout_s=timeout_s,
    )


@pytest.fixture
async def gateway(sandbox: RunningTwilioSandbox, receiver: Receiver) -> AsyncIterator[TwilioGateway]:
    gw = make_gateway(sandbox, callback_url=receiver.url)
    yield gw
    await gw.close()


# ------------------------------------------------------------------------------------------- accepted


async def test_submit_posts_the_documented_form_with_basic_auth(
    gateway: TwilioGateway, sandbox: RunningTwilioSandbox, receiver: Receiver
) -> None:
    assert isinstance(gateway, SmsGateway)
    assert gateway.name == "twilio"
    assert gateway.rate_per_s == 10.0

    receipt = await gateway.submit(sms())

    [message] = sandbox.state.messages
    assert message.form == {
        "To": MOBILE,
        "From": "Betaling",
        "Body": TEXT,
        "StatusCallback": f"{receiver.url}?attempt={ATTEMPT}",
    }
    assert message.account_sid == sandbox.state.account_sid  # authenticated as AccountSid:AuthToken
    assert message.num_segments == 1  # æøå are GSM-7
    assert receipt.provider == "twilio"
    assert receipt.provider_message_id == message.sid
    assert message.sid.startswith("SM")
    assert len(message.sid) == 34
    int(message.sid[2:], 16)
    assert receipt.detail == {"status": "queued"}


async def test_attempt_id_is_url_encoded_and_an_existing_query_is_kept() -> None:
    assert status_callback_for("https://o.example/webhooks/twilio", "a b&c") == (
        "https://o.example/webhooks/twilio?attempt=a+b%26c"
    )
    assert status_callback_for("https://o.example/webhooks/twilio?tenant=x", ATTEMPT) == (
        f"https://o.example/webhooks/twilio?tenant=x&attempt={ATTEMPT}"
    )


async def test_without_a_callback_url_no_status_callback_is_requested(sandbox: RunningTwilioSandbox) -> None:
    gw = make_gateway(sandbox, callback_url=None)
    try:
        await gw.submit(sms())
    finally:
        await gw.close()
    assert "StatusCallback" not in sandbox.state.messages[0].form


async def test_gateway_is_usable_after_close(gateway: TwilioGateway, sandbox: RunningTwilioSandbox) -> None:
    await gateway.submit(sms())
    await gateway.close()
    await gateway.submit(sms(attempt_id="second"))
    assert len(sandbox.state.messages) == 2


# ---------------------------------------------------------------------------------------------- errors


async def test_wrong_token_is_a_configuration_error(sandbox: RunningTwilioSandbox) -> None:
    gw = make_gateway(sandbox, token="not-the-token")
    try:
        with pytest.raises(ChannelConfigurationError) as caught:
            await gw.submit(sms())
    finally:
        await gw.close()
    assert caught.value.reason == "gateway_auth_failed"
    assert "20003" in str(caught.value)
    assert "not-the-token" not in str(caught.value)
    assert sandbox.state.messages == []


async def test_unknown_account_is_a_configuration_error(sandbox: RunningTwilioSandbox) -> None:
    gw = TwilioGateway(
        base_url=sandbox.base_url,
        account_sid="AC" + "0" * 32,
        auth_token=SecretStr(sandbox.state.auth_token),
        status_callback_url=None,
        rate_per_s=0,
    )
    try:
        with pytest.raises(ChannelConfigurationError) as caught:
            await gw.submit(sms())
    finally:
        await gw.close()
    assert caught.value.reason == "gateway_auth_failed"


async def test_503_is_transient(gateway: TwilioGateway, sandbox: RunningTwilioSandbox) -> None:
    sandbox.state.default_outcome = "http_5xx"
    with pytest.raises(TransientChannelError) as caught:
        await gateway.submit(sms())
    assert caught.value.reason == "gateway_5xx"
    assert sandbox.state.messages == []


async def test_429_is_transient_with_retry_after(
    gateway: TwilioGateway, sandbox: RunningTwilioSandbox
) -> None:
    sandbox.state.default_outcome = "rate_limited"
    sandbox.state.retry_after_s = 7
    with pytest.raises(TransientChannelError) as caught:
        await gateway.submit(sms())
    assert caught.value.reason == "gateway_rate_limited"
    assert caught.value.retry_after_s == 7.0
    assert sandbox.state.messages == []


@pytest.mark.parametrize(
    ("to", "outcome", "reason"),
    [
        ("+47123", None, "invalid_destination"),  # 21211
        (LANDLINE, None, "not_a_mobile"),  # 21614
        (OTHER_MOBILE, "opted_out", "recipient_opted_out"),  # 21610
    ],
)
async def test_refused_destinations_are_permanent_with_a_precise_reason(
    gateway: TwilioGateway, sandbox: RunningTwilioSandbox, to: str, outcome: str | None, reason: str
) -> None:
    if outcome is not None:
        sandbox.state.outcomes[to] = outcome  # type: ignore[assignment]
    with pytest.raises(PermanentChannelError) as caught:
        await gateway.submit(sms(to))
    assert caught.value.reason == reason
    assert to not in str(caught.value)  # Twilio's message echoes the number; ours never does
    assert sandbox.state.messages == []


async def test_other_refusals_name_the_twilio_code(gateway: TwilioGateway) -> None:
    with pytest.raises(PermanentChannelError) as caught:
        await gateway.submit(sms(text="x" * 1601))
    assert caught.value.reason == "gateway_rejected:21617"


async def test_region_not_enabled_is_ours_to_fix(
    gateway: TwilioGateway, sandbox: RunningTwilioSandbox
) -> None:
    sandbox.state.default_outcome = "region_not_enabled"
    with pytest.raises(ChannelConfigurationError) as caught:
        await gateway.submit(sms())
    assert caught.value.reason == "gateway_region_not_enabled"


async def test_slow_answer_beyond_the_timeout_is_uncertain_and_the_message_was_taken(
    sandbox: RunningTwilioSandbox,
) -> None:
    sandbox.state.default_outcome = "slow"
    sandbox.state.slow_s = 1.0
    gw = make_gateway(sandbox, timeout_s=0.2)
    started = time.monotonic()
    try:
        with pytest.raises(UncertainDeliveryError) as caught:
            await gw.submit(sms())
    finally:
        await gw.close()
    assert caught.value.reason == "gateway_outcome_unknown"
    assert time.monotonic() - started < 0.9
    [message] = sandbox.state.messages
    assert started <= message.received_at <= time.monotonic()


async def test_dropped_connection_is_uncertain(gateway: TwilioGateway, sandbox: RunningTwilioSandbox) -> None:
    sandbox.state.default_outcome = "drop"
    with pytest.raises(UncertainDeliveryError) as caught:
        await gateway.submit(sms())
    assert caught.value.reason == "gateway_outcome_unknown"
    assert len(sandbox.state.messages) == 1


async def test_closed_port_is_transient_unavailable(sandbox: RunningTwilioSandbox) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    gw = make_gateway(sandbox, base_url=f"http://127.0.0.1:{port}")
    try:
        with pytest.raises(TransientChannelError) as caught:
            await gw.submit(sms())
    finally:
        await gw.close()
    assert caught.value.reason == "gateway_unavailable"


# ------------------------------------------------------------------------------------- status callbacks


@pytest.mark.parametrize(
    ("outcome", "statuses", "error_code"),
    [
        ("delivered", ["sent", "delivered"], None),
        ("unknown_handset", ["sent", "undelivered"], "30005"),
        ("unreachable", ["sent", "undelivered"], "30003"),
        ("failed", ["failed"], "30008"),
    ],
)
async def test_status_callbacks_are_signed_and_carry_our_attempt(
    gateway: TwilioGateway,
    sandbox: RunningTwilioSandbox,
    receiver: Receiver,
    outcome: str,
    statuses: list[str],
    error_code: str | None,
) -> None:
    sandbox.state.default_outcome = outcome  # type: ignore[assignment]
    receipt = await gateway.submit(sms())
    await sandbox.state.wait_for_callbacks(len(statuses))
    assert [record.status for record in sandbox.state.callbacks] == [204] * len(statuses)

    callback_url = f"{receiver.url}?attempt={ATTEMPT}"
    token = sandbox.state.auth_token
    seen = []
    for url, signature, params in receiver.received:
        assert url == callback_url
        assert parse_qs(urlsplit(url).query) == {"attempt": [ATTEMPT]}
        assert twilio_signature(token, callback_url, params) == signature
        assert verify_twilio_signature(token, url, params, signature)
        assert not verify_twilio_signature(token, url, {**params, "MessageStatus": "delivered?"}, signature)
        assert not verify_twilio_signature(token, callback_url.replace(ATTEMPT, "other"), params, signature)
        assert not verify_twilio_signature("another-token", url, params, signature)
        assert params["MessageSid"] == params["SmsSid"] == receipt.provider_message_id
        assert params["AccountSid"] == sandbox.state.account_sid
        assert params["ApiVersion"] == "2010-04-01"
        assert (params["To"], params["From"]) == (MOBILE, "Betaling")
        assert params["SmsStatus"] == params["MessageStatus"]
        seen.append((params["MessageStatus"], params.get("ErrorCode")))
    assert seen == [(status, None) for status in statuses[:-1]] + [(statuses[-1], error_code)]


async def test_callbacks_follow_a_dropped_answer(
    gateway: TwilioGateway, sandbox: RunningTwilioSandbox, receiver: Receiver
) -> None:
    """Twilio took the message although we never heard back: its callbacks still find our attempt."""
    sandbox.state.default_outcome = "drop"
    with pytest.raises(UncertainDeliveryError):
        await gateway.submit(sms())
    await sandbox.state.wait_for_callbacks(2)
    assert [p["MessageStatus"] for _, _, p in receiver.received] == ["sent", "delivered"]
    assert {parse_qs(urlsplit(url).query)["attempt"][0] for url, _, _ in receiver.received} == {ATTEMPT}


# --------------------------------------------------------------------------------------------- signature


def test_signature_matches_twilios_published_example() -> None:
    # Twilio's own test vector (twilio-python tests/unit/test_request_validator.py; the same inputs appear
    # in https://www.twilio.com/docs/usage/security "Validating signatures from Twilio").
    url = "https://mycompany.com/myapp.php?foo=1&bar=2"
    params = {
        "CallSid": "CA1234567890ABCDE",
        "Digits": "1234",
        "From": "+14158675309",
        "To": "+18005551212",
        "Caller": "+14158675309",
    }
    assert twilio_signature("12345", url, params) == "RSOYDt4T1cUTdK1PDd93/VVr8B8="
    assert verify_twilio_signature("12345", url, params, "RSOYDt4T1cUTdK1PDd93/VVr8B8=")
    assert not verify_twilio_signature(
        "12345", url, {**params, "Digits": "1235"}, "RSOYDt4T1cUTdK1PDd93/VVr8B8="
    )
    # Repeated parameters are signed in value order (same file, test_compute_signature_duplicate_multi_dict).
    repeated = MultiDict([("Sid", "CA123"), ("SidAccount", "AC123"), ("Digits", "5678"), ("Digits", "1234")])
    assert twilio_signature("12345", url, repeated) == "IK+Dwps556ElfBT0I3Rgjkr1wJU="


def test_signature_is_base64_of_hmac_sha1() -> None:
    assert len(base64.b64decode(twilio_signature("t", "https://x.example/", {}))) == 20


def test_segments_follow_gsm7_and_ucs2() -> None:
    assert num_segments("æøå ÆØÅ " * 20) == 1  # 160 GSM-7 characters
    assert num_segments("a" * 161) == 2
    assert num_segments("€" * 80) == 1  # extension characters take two septets
    assert num_segments("€" * 81) == 2
    assert num_segments("ł" * 70) == 1
    assert num_segments("ł" * 71) == 2


# ---------------------------------------------------------------------------------------------- settings


def test_from_settings_is_none_when_twilio_is_not_configured() -> None:
    assert TwilioGateway.from_settings(Settings(twilio_account_sid=None, twilio_auth_token=None)) is None


def test_from_settings_names_the_missing_setting() -> None:
    with pytest.raises(ChannelConfigurationError) as caught:
        TwilioGateway.from_settings(Settings(twilio_account_sid="AC" + "1" * 32, twilio_auth_token=None))
    assert caught.value.reason == "twilio_auth_token_missing"
    assert "ORCH_TWILIO_AUTH_TOKEN" in str(caught.value)


def test_from_settings_rejects_a_callback_url_that_is_not_absolute() -> None:
    settings = Settings(
        twilio_account_sid="AC" + "1" * 32,
        twilio_auth_token=SecretStr("secret-token"),
        twilio_status_callback_url="/webhooks/twilio",
    )
    with pytest.raises(ChannelConfigurationError) as caught:
        TwilioGateway.from_settings(settings)
    assert "ORCH_TWILIO_STATUS_CALLBACK_URL" in str(caught.value)


async def test_from_settings_builds_a_working_gateway(
    sandbox: RunningTwilioSandbox, receiver: Receiver
) -> None:
    settings = Settings(
        twilio_url=sandbox.base_url,
        twilio_account_sid=sandbox.state.account_sid,
        twilio_auth_token=SecretStr(sandbox.state.auth_token),
        twilio_status_callback_url=receiver.url,
        twilio_rate_per_s=3.0,
    )
    gw = TwilioGateway.from_settings(settings)
    assert gw is not None
    assert gw.rate_per_s == 3.0
    assert sandbox.state.auth_token not in repr(gw)
    try:
        receipt = await gw.submit(sms())
    finally:
        await gw.close()
    assert receipt.provider_message_id == sandbox.state.messages[0].sid
    await asyncio.wait_for(sandbox.state.wait_for_callbacks(2), 5)


async def test_serve_yields_a_base_url_like_the_other_sandboxes() -> None:
    state = TwilioSandbox()
    async with serve(state) as base_url:
        gw = TwilioGateway(
            base_url=base_url,
            account_sid=state.account_sid,
            auth_token=SecretStr(state.auth_token),
            status_callback_url=None,
            rate_per_s=0,
        )
        try:
            receipt = await gw.submit(sms())
        finally:
            await gw.close()
    assert receipt.provider_message_id == state.messages[0].sid
