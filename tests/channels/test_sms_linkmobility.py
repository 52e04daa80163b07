"""LinkMobilityGateway against the Link Mobility sandbox: a real HTTP server on 127.0.0.1, port 0, that calls
back delivery reports to a real receiver in the test."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from pydantic import SecretStr

from channels.base import (
    ChannelConfigurationError,
    ChannelError,
    PermanentChannelError,
    TransientChannelError,
    UncertainDeliveryError,
)
from channels.sms.encoding import analyse
from channels.sms.gateway import SmsGateway, SmsMessage
from channels.sms.linkmobility import LinkMobilityGateway, translate_result_code
from orchestrator.sandbox.linkmobility import LinkMobilitySandbox, parse_basic_auth, serve
from orchestrator.settings import Settings

USER, PASSWORD = "orchestrator", "hemmelig-passord"
PLATFORM_ID, PARTNER_ID = "COMMON_API", "30978"
GATE = "BVldZyQt"
GATE_USER, GATE_PASSWORD = "dlr", "gate-secret"
MOBILE = "+4791234567"
TEXT = "Hei Kåre! Du har en ubetalt regning på 1 234,50 kr fra Blåbær AS. Betal innen 15.03: æøå ÆØÅ."
REPORT_FIELDS = {
    "refId",
    "id",
    "operator",
    "sentTimestamp",
    "timestamp",
    "resultCode",
    "operatorResultCode",
    "segments",
    "gateCustomParameters",
    "customParameters",
}


def sms(
    text: str = TEXT, *, to: str = MOBILE, attempt: str = "att-0001", sender: str = "Betaling"
) -> SmsMessage:
    analysis = analyse(text)
    return SmsMessage(
        contact_id="con-0001",
        attempt_id=attempt,
        to=to,
        sender_id=sender,
        text=text,
        encoding=analysis.encoding,
        segments=analysis.segments,
    )


@dataclass
class Receiver:
    """Our side of a delivery-report gate: keeps every POST; answers with ``statuses`` first, then 200."""

    url: str = ""
    requests: list[tuple[str | None, dict[str, Any]]] = field(default_factory=list)  # (Authorization, JSON)
    statuses: list[int] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append((request.headers.get("Authorization"), await request.json()))
        status = self.statuses.pop(0) if self.statuses else 200
        if status == 200:
            self.arrived.set()
        return web.Response(status=status, text="OK")

    async def wait(self, timeout_s: float = 5.0) -> dict[str, Any]:
        await asyncio.wait_for(self.arrived.wait(), timeout_s)
        return self.requests[-1][1]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    recv = Receiver()
    app = web.Application()
    app.router.add_post("/webhooks/linkmobility", recv.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    recv.url = f"http://{host}:{port}/webhooks/linkmobility"
    yield recv
    await runner.cleanup()


@pytest.fixture
def sandbox(receiver: Receiver) -> LinkMobilitySandbox:
    state = LinkMobilitySandbox(
        username=USER,
        password=PASSWORD,
        platform_id=PLATFORM_ID,
        platform_partner_id=PARTNER_ID,
        report_delay_s=0.01,
        report_retry_delay_s=0.05,
    )
    state.add_gate(GATE, receiver.url, username=GATE_USER, password=GATE_PASSWORD)
    return state


@pytest.fixture
async def sandbox_url(sandbox: LinkMobilitySandbox) -> AsyncIterator[str]:
    async with serve(sandbox) as url:
        yield url


def make_gateway(url: str, **overrides: Any) -> LinkMobilityGateway:
    options: dict[str, Any] = {
        "base_url": url,
        "username": USER,
        "password": SecretStr(PASSWORD),
        "platform_id": PLATFORM_ID,
        "platform_partner_id": PARTNER_ID,
        "delivery_report_gate": GATE,
        "rate_per_s": 10.0,
        "timeout_s": 5.0,
    }
    options.update(overrides)
    return LinkMobilityGateway(**options)


@pytest.fixture
async def gateway(sandbox_url: str) -> AsyncIterator[LinkMobilityGateway]:
    gw = make_gateway(sandbox_url)
    yield gw
    await gw.close()


# ------------------------------------------------------------------------------------------------ accepted


async def test_accepted_with_the_documented_payload(
    gateway: LinkMobilityGateway, sandbox: LinkMobilitySandbox
) -> None:
    assert isinstance(gateway, SmsGateway)
    assert gateway.name == "linkmobility"
    assert gateway.rate_per_s == 10.0

    receipt = await gateway.submit(sms(attempt="att-0001"))

    [message] = sandbox.messages
    assert message.body == {
        "source": "Betaling",
        "sourceTON": "ALPHANUMERIC",
        "destination": MOBILE,
        "destinationTON": "MSISDN",
        "userData": TEXT,
        "dcs": "TEXT",
        "platformId": PLATFORM_ID,
        "platformPartnerId": PARTNER_ID,
        "refId": "att-0001",
        "useDeliveryReport": True,
        "deliveryReportGates": [GATE],
        "ignoreResponse": False,
    }
    assert message.encoding == "GSM-7"
    assert receipt.provider == "linkmobility"
    assert receipt.provider_message_id == message.message_id
    assert len(receipt.provider_message_id) == 24
    assert receipt.detail == {"result_code": 1005, "ref_id": "att-0001"}


async def test_every_accepted_message_is_timestamped(
    gateway: LinkMobilityGateway, sandbox: LinkMobilitySandbox
) -> None:
    receipts = [await gateway.submit(sms(attempt=f"att-{n}")) for n in range(3)]
    assert [m.ref_id for m in sandbox.messages] == ["att-0", "att-1", "att-2"]
    assert len({r.provider_message_id for r in receipts}) == 3
    stamps = [m.received_at for m in sandbox.messages]
    assert stamps == sorted(stamps)


async def test_ucs2_text_goes_as_text_and_common_encodes_it(
    gateway: LinkMobilityGateway, sandbox: LinkMobilitySandbox
) -> None:
    text = "Здравствуйте! Őszintén: " + "ж" * 60  # Cyrillic and ő: UCS-2, 84 units, two segments
    await gateway.submit(sms(text))
    [message] = sandbox.messages
    # dcs TEXT: Common picks UCS-2 and concatenates; GSM/UCS2 would leave the splitting to us.
    assert message.body["dcs"] == "TEXT"
    assert message.body["userData"] == text
    assert (message.encoding, message.segments) == ("UCS-2", 2)


async def test_emoji_is_refused_before_the_request(
    gateway: LinkMobilityGateway, sandbox: LinkMobilitySandbox
) -> None:
    with pytest.raises(PermanentChannelError) as caught:
        await gateway.submit(sms("Takk for betalingen \U0001f600"))
    assert caught.value.reason == "unsupported_characters"
    assert sandbox.messages == [] and sandbox.rejected == []


@pytest.mark.parametrize(
    ("sender", "ton"), [("Betaling", "ALPHANUMERIC"), ("2333", "SHORTNUMBER"), ("+4790000000", "MSISDN")]
)
async def test_source_type_of_number(
    gateway: LinkMobilityGateway, sandbox: LinkMobilitySandbox, sender: str, ton: str
) -> None:
    await gateway.submit(sms(sender=sender))
    assert (sandbox.messages[0].body["source"], sandbox.messages[0].body["sourceTON"]) == (sender, ton)


async def test_without_a_gate_no_delivery_report_is_asked_for(
    sandbox_url: str, sandbox: LinkMobilitySandbox
) -> None:
    sandbox.gates.clear()
    gw = make_gateway(sandbox_url, delivery_report_gate=None, validity_s=3600)
    try:
        await gw.submit(sms())
    finally:
        await gw.close()
    body = sandbox.messages[0].body
    assert body["useDeliveryReport"] is False
    assert "deliveryReportGates" not in body
    assert body["relativeValidityTime"] == 3_600_000


@pytest.mark.parametrize("suffix", ["/", "/sms", "/sms/"])
async def test_base_url_with_or_without_sms(
    sandbox_url: str, sandbox: LinkMobilitySandbox, suffix: str
) -> None:
    gw = make_gateway(sandbox_url + suffix)
    try:
        await gw.submit(sms())
    finally:
        await gw.close()
    assert len(sandbox.messages) == 1


async def test_close_then_submit_again(gateway: LinkMobilityGateway, sandbox: LinkMobilitySandbox) -> None:
    await gateway.submit(sms(attempt="a1"))
    await gateway.close()
    await gateway.close()
    await gateway.submit(sms(attempt="a2"))
    assert [m.ref_id for m in sandbox.messages] == ["a1", "a2"]


# ---------------------------------------------------------------------------------------------- refused


async def test_wrong_password_is_a_configuration_error(
    sandbox_url: str, sandbox: LinkMobilitySandbox
) -> None:
    gw = make_gateway(sandbox_url, password=SecretStr("wrong"))
    try:
        with pytest.raises(ChannelConfigurationError) as caught:
            await gw.submit(sms())
    finally:
        await gw.close()
    assert caught.value.reason == "gateway_auth_failed"
    assert sandbox.messages == []
    assert sandbox.rejected[0][0] == 401


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"platform_id": "WRONG"}, "gateway_config_invalid:106200"),
        ({"platform_partner_id": "0"}, "gateway_config_invalid:106201"),
        ({"delivery_report_gate": "NoSuchGate"}, "gateway_config_invalid:106301"),
    ],
)
async def test_wrong_platform_ids_are_configuration_errors(
    sandbox_url: str, sandbox: LinkMobilitySandbox, overrides: dict[str, Any], reason: str
) -> None:
    gw = make_gateway(sandbox_url, **overrides)
    try:
        with pytest.raises(ChannelConfigurationError) as caught:
            await gw.submit(sms())
    finally:
        await gw.close()
    assert caught.value.reason == reason
    assert sandbox.messages == []


async def test_wrong_base_url_is_a_configuration_error(sandbox_url: str) -> None:
    gw = make_gateway(sandbox_url + "/v2")
    try:
        with pytest.raises(ChannelConfigurationError) as caught:
            await gw.submit(sms())
    finally:
        await gw.close()
    assert caught.value.reason == "gateway_url_invalid"


async def test_503_is_transient(gateway: LinkMobilityGateway, sandbox: LinkMobilitySandbox) -> None:
    sandbox.set_outcome("http_5xx")
    with pytest.raises(TransientChannelError) as caught:
        await gateway.submit(sms())
    assert caught.value.reason == "gateway_5xx"
    assert sandbox.messages == []


async def test_429_carries_retry_after(gateway: LinkMobilityGateway, sandbox: LinkMobilitySandbox) -> None:
    sandbox.set_outcome("throttled", destination=MOBILE, seconds=3)
    with pytest.raises(TransientChannelError) as caught:
        await gateway.submit(sms())
    assert caught.value.reason == "gateway_throttled"
    assert caught.value.retry_after_s == 3
    assert sandbox.messages == []


async def test_invalid_number_is_permanent(
    gateway: LinkMobilityGateway, sandbox: LinkMobilitySandbox
) -> None:
    sandbox.set_outcome("invalid_number", destination="+4740000000")
    with pytest.raises(PermanentChannelError) as caught:
        await gateway.submit(sms(to="+4740000000"))
    assert caught.value.reason == "invalid_destination"
    assert sandbox.messages == []
    await gateway.submit(sms())  # other numbers still go through
    assert len(sandbox.messages) == 1


async def test_a_non_e164_destination_is_refused_before_the_request(
    gateway: LinkMobilityGateway, sandbox: LinkMobilitySandbox
) -> None:
    with pytest.raises(PermanentChannelError) as caught:
        await gateway.submit(sms(to="91234567"))
    assert caught.value.reason == "invalid_destination"
    assert sandbox.rejected == []


@pytest.mark.parametrize(
    ("code", "kind", "reason"),
    [
        (2104, PermanentChannelError, "unknown_subscriber"),
        (2106, PermanentChannelError, "invalid_destination"),
        (2102, PermanentChannelError, "invalid_destination"),
        (2105, PermanentChannelError, "destination_blocked"),
        (4001, PermanentChannelError, "gateway_rejected:4001"),
        (None, PermanentChannelError, "gateway_rejected:unknown"),
        (3, TransientChannelError, "gateway_throttled"),
        (105, TransientChannelError, "gateway_temporary_error:105"),
        (106100, ChannelConfigurationError, "gateway_auth_failed"),
        (106301, ChannelConfigurationError, "gateway_config_invalid:106301"),
        (2002, ChannelConfigurationError, "gateway_sender_rejected:2002"),
    ],
)
def test_result_codes(code: int | None, kind: type[ChannelError], reason: str) -> None:
    error = translate_result_code(code, "Number error for +4791234567")
    assert type(error) is kind
    assert error.reason == reason
    assert "91234567" not in str(error)


# ------------------------------------------------------------------------------------ outcome unknown


async def test_slow_answer_beyond_the_timeout_is_uncertain(
    sandbox_url: str, sandbox: LinkMobilitySandbox
) -> None:
    sandbox.set_outcome("slow", seconds=30)
    gw = make_gateway(sandbox_url, timeout_s=0.3)
    try:
        with pytest.raises(UncertainDeliveryError) as caught:
            await gw.submit(sms(attempt="att-slow"))
    finally:
        await gw.close()
    assert caught.value.reason == "gateway_outcome_unknown"
    assert [m.ref_id for m in sandbox.messages] == ["att-slow"]  # the carrier has it


async def test_dropped_connection_is_uncertain(
    gateway: LinkMobilityGateway, sandbox: LinkMobilitySandbox
) -> None:
    sandbox.set_outcome("drop")
    with pytest.raises(UncertainDeliveryError) as caught:
        await gateway.submit(sms(attempt="att-drop"))
    assert caught.value.reason == "gateway_outcome_unknown"
    assert [m.ref_id for m in sandbox.messages] == ["att-drop"]


async def test_closed_port_is_unavailable() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    gw = make_gateway(f"http://127.0.0.1:{port}")
    try:
        with pytest.raises(TransientChannelError) as caught:
            await gw.submit(sms())
    finally:
        await gw.close()
    assert caught.value.reason == "gateway_unavailable"
    assert caught.value.retry_after_s is None


async def test_unresolvable_host_is_unavailable() -> None:
    gw = make_gateway("http://linkmobility.invalid", timeout_s=5.0)
    try:
        with pytest.raises(TransientChannelError) as caught:
            await gw.submit(sms())
    finally:
        await gw.close()
    assert caught.value.reason == "gateway_unavailable"


# ---------------------------------------------------------------------------------------- delivery reports


@pytest.mark.parametrize(
    ("outcome", "result_code"), [("delivered", 1001), ("failed", 1006), ("unknown_handset", 2104)]
)
async def test_delivery_report_reaches_our_gate(
    gateway: LinkMobilityGateway,
    sandbox: LinkMobilitySandbox,
    receiver: Receiver,
    outcome: Any,
    result_code: int,
) -> None:
    sandbox.set_outcome(outcome, destination=MOBILE)
    receipt = await gateway.submit(sms(attempt="att-dlr"))

    report = await receiver.wait()
    authorization, _ = receiver.requests[-1]
    assert authorization is not None
    assert parse_basic_auth(authorization) == (GATE_USER, GATE_PASSWORD)
    assert set(report) == REPORT_FIELDS
    assert report["refId"] == "att-dlr"
    assert report["id"] == receipt.provider_message_id
    assert report["resultCode"] == result_code
    assert report["segments"] == 1
    assert report["sentTimestamp"].endswith("Z") and report["timestamp"].endswith("Z")
    assert report["operator"] == (None if outcome == "unknown_handset" else "no.telenor")


async def test_delivery_report_is_retried_until_acknowledged(
    gateway: LinkMobilityGateway, sandbox: LinkMobilitySandbox, receiver: Receiver
) -> None:
    receiver.statuses = [500]
    await gateway.submit(sms(attempt="att-retry"))
    report = await receiver.wait()
    assert [r[1] for r in receiver.requests] == [report, report]
    assert [attempt.status for attempt in sandbox.reports] == [500, 200]
    assert await sandbox.wait_for_reports(1) == [report]


async def test_a_dropped_message_is_still_reported(
    gateway: LinkMobilityGateway, sandbox: LinkMobilitySandbox, receiver: Receiver
) -> None:
    sandbox.set_outcome("drop")
    with pytest.raises(UncertainDeliveryError):
        await gateway.submit(sms(attempt="att-drop"))
    report = await receiver.wait()
    assert (report["refId"], report["id"], report["resultCode"]) == (
        "att-drop",
        sandbox.messages[0].message_id,
        1001,
    )


# ------------------------------------------------------------------------------------------ discretion


async def test_nothing_personal_in_logs_or_errors(
    gateway: LinkMobilityGateway, sandbox: LinkMobilitySandbox, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    errors: list[ChannelError] = []
    await gateway.submit(sms())
    for outcome in ("invalid_number", "http_5xx", "throttled", "drop"):
        sandbox.set_outcome(outcome)  # type: ignore[arg-type]
        with pytest.raises(ChannelError) as caught:
            await gateway.submit(sms())
        errors.append(caught.value)
    text = caplog.text + " ".join(f"{e.reason} {e}" for e in errors)
    assert "91234567" not in text
    assert "Kåre" not in text and "ubetalt" not in text
    assert PASSWORD not in text and PASSWORD not in repr(gateway)


# ---------------------------------------------------------------------------------------------- settings


def linkmobility_settings(**values: Any) -> Settings:
    fields: dict[str, Any] = {
        "linkmobility_url": None,
        "linkmobility_username": None,
        "linkmobility_password": None,
        "linkmobility_platform_id": None,
        "linkmobility_platform_partner_id": None,
        "linkmobility_delivery_report_gate": None,
    }
    fields.update(values)
    return Settings(**fields)


def test_from_settings_without_url_is_none() -> None:
    assert LinkMobilityGateway.from_settings(linkmobility_settings()) is None


def test_from_settings_names_what_is_missing() -> None:
    partial = linkmobility_settings(
        linkmobility_url="https://wsx.sp247.net",
        linkmobility_username=USER,
        linkmobility_platform_id=PLATFORM_ID,
    )
    with pytest.raises(ChannelConfigurationError) as caught:
        LinkMobilityGateway.from_settings(partial)
    assert caught.value.reason == "linkmobility_settings_missing"
    assert "ORCH_LINKMOBILITY_PASSWORD" in str(caught.value)
    assert "ORCH_LINKMOBILITY_PLATFORM_PARTNER_ID" in str(caught.value)
    assert "ORCH_LINKMOBILITY_USERNAME" not in str(caught.value)


async def test_from_settings_sends_through_the_sandbox(
    sandbox_url: str, sandbox: LinkMobilitySandbox
) -> None:
    settings = linkmobility_settings(
        linkmobility_url=sandbox_url,
        linkmobility_username=USER,
        linkmobility_password=SecretStr(PASSWORD),
        linkmobility_platform_id=PLATFORM_ID,
        linkmobility_platform_partner_id=PARTNER_ID,
        linkmobility_delivery_report_gate=GATE,
        linkmobility_rate_per_s=25.0,
    )
    gw = LinkMobilityGateway.from_settings(settings)
    assert gw is not None
    try:
        assert gw.rate_per_s == 25.0
        await gw.submit(sms(attempt="att-settings"))
    finally:
        await gw.close()
    assert sandbox.messages[0].body["deliveryReportGates"] == [GATE]


@pytest.mark.parametrize("url", ["ftp://wsx.sp247.net", "wsx.sp247.net", "http://[::1", ""])
def test_a_bad_url_is_a_configuration_error(url: str) -> None:
    with pytest.raises(ChannelConfigurationError) as caught:
        make_gateway(url)
    assert caught.value.reason == "linkmobility_url_invalid"
