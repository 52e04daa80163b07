"""webhooks.linkmobility against genuine delivery reports: the Link Mobility sandbox (a real HTTP server on
port 0) posts them through its gate to a real receiver here, which keeps the exact request (URL, headers,
body)."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
from aiohttp import web
from pydantic import SecretStr

from channels.sms.encoding import analyse
from channels.sms.gateway import SmsMessage
from channels.sms.linkmobility import LinkMobilityGateway
from orchestrator.sandbox.linkmobility import LinkMobilitySandbox, basic_auth, serve
from orchestrator.settings import Settings
from webhooks.events import (
    BadCredentials,
    CarrierEvent,
    CarrierWebhook,
    MalformedPayload,
    MissingCredentials,
)
from webhooks.linkmobility import LinkMobilityWebhook, path_secret

USER, PASSWORD = "orchestrator", "hemmelig-passord"
PLATFORM_ID, PARTNER_ID = "COMMON_API", "30978"
GATE = "BVldZyQt"
HOOK_USER, HOOK_PASSWORD = "dlr", "gate-secret"
SECRET = "k3Yp0Qm9-Ud7_sVx2LwZ"
MOBILE = "+4791234567"
ATTEMPT = "01JQ7ZK3W5N8T4HZ2V6XYPM0RB"
NOW = datetime(2025, 3, 14, 9, 26, 53, tzinfo=UTC)
PUBLIC = f"https://orchestrator.example.no/webhooks/linkmobility/{SECRET}"


@dataclass(frozen=True)
class Captured:
    """One request exactly as it reached our receiver."""

    url: str
    headers: dict[str, str]
    body: bytes

    def report(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.body)
        return data


@dataclass
class Receiver:
    """Our side of the gate: keeps every POST; answers with ``statuses`` first, then 200."""

    base: str = ""
    requests: list[Captured] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def url(self) -> str:
        return f"{self.base}/webhooks/linkmobility/{SECRET}"

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append(Captured(str(request.url), dict(request.headers), await request.read()))
        self.changed.set()
        return web.Response(status=self.statuses.pop(0) if self.statuses else 200, text="OK")

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
    app.router.add_post("/webhooks/linkmobility/{secret}", recv.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    recv.base = f"http://{host}:{port}"
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
    state.add_gate(GATE, receiver.url, username=HOOK_USER, password=HOOK_PASSWORD)
    return state


@pytest.fixture
async def gateway(sandbox: LinkMobilitySandbox) -> AsyncIterator[LinkMobilityGateway]:
    async with serve(sandbox) as url:
        gw = LinkMobilityGateway(
            base_url=url,
            username=USER,
            password=SecretStr(PASSWORD),
            platform_id=PLATFORM_ID,
            platform_partner_id=PARTNER_ID,
            delivery_report_gate=GATE,
            rate_per_s=0,
            timeout_s=5.0,
        )
        try:
            yield gw
        finally:
            await gw.close()


def sms(attempt_id: str = ATTEMPT) -> SmsMessage:
    text = "Hei, du har en faktura som forfaller snart."
    analysis = analyse(text)
    return SmsMessage(
        contact_id="01JQ7ZK3W5N8T4HZ2V6XYPM0RA",
        attempt_id=attempt_id,
        to=MOBILE,
        sender_id="Betaling",
        text=text,
        encoding=analysis.encoding,
        segments=analysis.segments,
    )


def settings(
    user: str | None = HOOK_USER, password: str | None = HOOK_PASSWORD, secret: str | None = SECRET
) -> Settings:
    return Settings(
        linkmobility_webhook_username=user,
        linkmobility_webhook_password=None if password is None else SecretStr(password),
        linkmobility_webhook_secret=None if secret is None else SecretStr(secret),
    )


def webhook() -> LinkMobilityWebhook:
    return LinkMobilityWebhook(clock=lambda: NOW)


def verify(request: Captured, config: Settings | None = None, *, url: str | None = None) -> None:
    webhook().verify(
        url=url or request.url, headers=request.headers, body=request.body, settings=config or settings()
    )


def parse(request: Captured) -> list[CarrierEvent]:
    return webhook().parse(url=request.url, headers=request.headers, body=request.body)


def posted(report: dict[str, Any] | bytes, url: str = PUBLIC) -> Captured:
    """A report as the gate posts it, with the gate's credentials."""
    body = report if isinstance(report, bytes) else json.dumps(report).encode()
    return Captured(url, {"Authorization": basic_auth(HOOK_USER, HOOK_PASSWORD)}, body)


async def genuine(gateway: LinkMobilityGateway, receiver: Receiver) -> tuple[Captured, str]:
    """The delivery report the sandbox posted for a message sent through the real gateway; the message id."""
    receipt = await gateway.submit(sms())
    [request] = await receiver.wait(1)
    return request, receipt.provider_message_id


# ------------------------------------------------------------------------------------------- the protocol


def test_implements_the_carrier_webhook_protocol() -> None:
    module = LinkMobilityWebhook()
    assert isinstance(module, CarrierWebhook)
    assert module.name == "linkmobility"


@pytest.mark.parametrize(
    ("user", "password", "secret", "expected"),
    [
        (HOOK_USER, HOOK_PASSWORD, SECRET, True),
        (None, HOOK_PASSWORD, SECRET, False),
        (HOOK_USER, None, SECRET, False),
        (HOOK_USER, HOOK_PASSWORD, None, False),
        ("", HOOK_PASSWORD, SECRET, False),
        (HOOK_USER, "", SECRET, False),
        (HOOK_USER, HOOK_PASSWORD, "", False),
        (None, None, None, False),
    ],
)
def test_configured_iff_user_password_and_secret_are_set(
    user: str | None, password: str | None, secret: str | None, expected: bool
) -> None:
    assert LinkMobilityWebhook().configured(settings(user, password, secret)) is expected


def test_verify_when_not_configured_refuses() -> None:
    with pytest.raises(BadCredentials):
        verify(posted({"id": "x", "resultCode": 1001}), settings(secret=None))


# ---------------------------------------------------------------------------------------- genuine reports


@pytest.mark.parametrize(
    ("outcome", "code", "status", "reason"),
    [
        ("delivered", 1001, "delivered", None),
        ("failed", 1006, "failed", "failed"),
        ("expired", 1002, "expired", "expired"),
        ("unknown_handset", 2104, "failed", "unknown_handset"),
    ],
)
async def test_genuine_report_verifies_and_parses(
    gateway: LinkMobilityGateway,
    sandbox: LinkMobilitySandbox,
    receiver: Receiver,
    outcome: Any,
    code: int,
    status: str,
    reason: str | None,
) -> None:
    sandbox.set_outcome(outcome)
    request, message_id = await genuine(gateway, receiver)
    report = request.report()
    assert request.url == receiver.url

    verify(request)
    assert parse(request) == [
        CarrierEvent(
            carrier="linkmobility",
            event_id=f"{message_id}:{code}",
            status=status,  # type: ignore[arg-type]
            at=datetime.fromisoformat(report["timestamp"]),
            attempt_id=ATTEMPT,
            provider_message_id=message_id,
            reason=reason,
            segment=None,  # one report for the whole message
            detail={
                "result_code": code,
                "segments": 1,
                "sent_timestamp": report["sentTimestamp"],
                "timestamp": report["timestamp"],
                **(
                    {"operator": "no.telenor", "operator_result_code": report["operatorResultCode"]}
                    if report["operator"] is not None
                    else {}
                ),
            },
        )
    ]


async def test_a_retried_report_is_the_same_event(
    gateway: LinkMobilityGateway, sandbox: LinkMobilitySandbox, receiver: Receiver
) -> None:
    receiver.statuses = [500]  # Common posts the report again until it gets 200
    await gateway.submit(sms())
    first, again = await receiver.wait(2)
    assert first.body == again.body
    for request in (first, again):
        verify(request)
    assert [e.event_id for e in parse(first)] == [e.event_id for e in parse(again)]
    assert parse(first) == parse(again)


async def test_no_phone_number_or_custom_parameters_reach_the_event(
    gateway: LinkMobilityGateway, receiver: Receiver
) -> None:
    request, _ = await genuine(gateway, receiver)
    report = request.report()
    report["customParameters"] = {**report["customParameters"], "destination": MOBILE, "source": "Betaling"}
    [event] = parse(posted(report))
    assert MOBILE not in repr(event)
    assert "Betaling" not in repr(event)


# -------------------------------------------------------------------------------------- refused requests


async def test_wrong_password_or_user_is_bad_credentials(
    gateway: LinkMobilityGateway, receiver: Receiver
) -> None:
    request, _ = await genuine(gateway, receiver)
    for config in (settings(password="another-password"), settings(user="someone")):
        with pytest.raises(BadCredentials) as caught:
            verify(request, config)
        assert caught.value.status == 401
    for authorization in (
        basic_auth(HOOK_USER, "wrong"),
        basic_auth("wrong", HOOK_PASSWORD),
        basic_auth(HOOK_USER, HOOK_PASSWORD + "x"),
        "Basic " + base64.b64encode(HOOK_USER.encode()).decode(),  # no colon
        "Basic not base64!",
        "Bearer " + HOOK_PASSWORD,
    ):
        forged = Captured(request.url, {**request.headers, "Authorization": authorization}, request.body)
        with pytest.raises(BadCredentials) as caught:
            verify(forged)
        assert caught.value.status == 401


async def test_wrong_secret_is_bad_credentials(gateway: LinkMobilityGateway, receiver: Receiver) -> None:
    request, _ = await genuine(gateway, receiver)
    for url in (
        request.url.replace(SECRET, SECRET[:-1]),
        request.url.replace(SECRET, SECRET + "x"),
        request.url.replace(SECRET, SECRET.upper()),
        request.url + "/more",
    ):
        with pytest.raises(BadCredentials) as caught:
            verify(request, url=url)
        assert caught.value.status == 401
    with pytest.raises(BadCredentials):
        verify(request, settings(secret="another-secret"))


async def test_no_authorization_is_missing_credentials(
    gateway: LinkMobilityGateway, receiver: Receiver
) -> None:
    request, _ = await genuine(gateway, receiver)
    without = {k: v for k, v in request.headers.items() if k.lower() != "authorization"}
    for headers in (without, {**without, "Authorization": " "}):
        with pytest.raises(MissingCredentials) as caught:
            verify(Captured(request.url, headers, request.body))
        assert caught.value.status == 400


def test_no_secret_segment_is_missing_credentials() -> None:
    for url in (
        "https://orchestrator.example.no/webhooks/linkmobility",
        "https://orchestrator.example.no/webhooks/linkmobility/",
    ):
        with pytest.raises(MissingCredentials) as caught:
            verify(posted({"id": "x", "resultCode": 1001}, url))
        assert caught.value.status == 400


def test_header_name_in_any_case_and_the_public_url() -> None:
    request = posted({"id": "x", "resultCode": 1001})
    verify(Captured(request.url, {"authorization": request.headers["Authorization"]}, request.body))
    verify(request, url=f"http://10.0.0.5:8080/webhooks/linkmobility/{SECRET}?gate={GATE}")


def test_path_secret() -> None:
    assert path_secret(PUBLIC) == SECRET
    assert path_secret("https://o.example/prefix/webhooks/linkmobility/a%2Fb%20c") == "a/b c"
    assert path_secret("https://o.example/webhooks/linkmobility") is None
    assert path_secret("https://o.example/webhooks/linkmobility/") is None
    assert path_secret("") is None


# ------------------------------------------------------------------------------------------- parsing


def report(**fields: Any) -> dict[str, Any]:
    """A report shaped like the sandbox's ``build_report`` (and the documentation's example)."""
    base: dict[str, Any] = {
        "refId": ATTEMPT,
        "id": "Dcshuhod0PMAAAFQ+/PbnR3x",
        "operator": "no.telenor",
        "sentTimestamp": "2025-03-14T09:20:00Z",
        "timestamp": "2025-03-14T09:21:30Z",
        "resultCode": 1001,
        "operatorResultCode": "2",
        "segments": 1,
        "gateCustomParameters": {},
        "customParameters": {"received": "2025-03-14 10:21:31"},
    }
    base.update(fields)
    return base


@pytest.mark.parametrize(
    ("code", "status", "reason"),
    [
        (1000, "sent", None),
        (1001, "delivered", None),
        (1002, "expired", "expired"),
        (1004, "failed", "linkmobility_1004"),
        (1005, "accepted", None),
        (1006, "failed", "failed"),
        (1007, "delivered", None),
        (1008, "accepted", None),
        (1009, "failed", "linkmobility_1009"),
        (1010, "expired", "linkmobility_1010"),
        (1011, "sent", None),
        (1012, "accepted", None),
        (2104, "failed", "unknown_handset"),
        (2105, "failed", "linkmobility_2105"),
        (2106, "failed", "linkmobility_2106"),
        (2201, "failed", "linkmobility_2201"),
        (4001, "failed", "linkmobility_4001"),
        (0, "failed", "linkmobility_0"),
        ("1001", "delivered", None),
    ],
)
def test_result_codes(code: Any, status: str, reason: str | None) -> None:
    [event] = parse(posted(report(resultCode=code)))
    assert (event.status, event.reason) == (status, reason)
    assert event.event_id == f"Dcshuhod0PMAAAFQ+/PbnR3x:{int(code)}"


def test_timestamps() -> None:
    [event] = parse(posted(report()))
    assert event.at == datetime(2025, 3, 14, 9, 21, 30, tzinfo=UTC)
    assert event.detail["sent_timestamp"] == "2025-03-14T09:20:00Z"

    older = report(sendTimestamp="2025-03-14T09:19:00Z", timestamp="2025-03-14T09:21:30.250")
    del older["sentTimestamp"]
    [event] = parse(posted(older))
    assert event.detail["sent_timestamp"] == "2025-03-14T09:19:00Z"
    assert event.at == datetime(2025, 3, 14, 9, 21, 30, 250000, tzinfo=UTC)  # no offset: UTC

    for missing in (None, "", "yesterday"):
        [event] = parse(posted(report(timestamp=missing)))
        assert event.at == NOW  # when we received it


async def test_per_part_reports_carry_their_segment(gateway: LinkMobilityGateway, receiver: Receiver) -> None:
    request, message_id = await genuine(gateway, receiver)
    parts = []
    for n in (0, 1):
        part = request.report()
        part.update(id=f"{message_id}${n}", segments=2)
        parts.extend(parse(posted(part)))
    assert [(e.segment, e.provider_message_id, e.attempt_id) for e in parts] == [
        ((1, 2), message_id, ATTEMPT),
        ((2, 2), message_id, ATTEMPT),
    ]
    assert [e.event_id for e in parts] == [f"{message_id}$0:1001", f"{message_id}$1:1001"]
    [whole] = parse(request)
    assert whole.segment is None and whole.event_id == f"{message_id}:1001"


def test_a_part_without_a_usable_count_has_no_segment() -> None:
    [event] = parse(posted(report(id="abc123$3", segments=2)))
    assert (event.segment, event.provider_message_id, event.detail["part"]) == (None, "abc123", 4)


def test_ref_id_or_id_alone_is_enough() -> None:
    [event] = parse(posted(report(refId=None)))
    assert (event.attempt_id, event.provider_message_id) == (None, "Dcshuhod0PMAAAFQ+/PbnR3x")
    without_id = report()
    del without_id["id"]
    [event] = parse(posted(without_id))
    assert (event.attempt_id, event.provider_message_id) == (ATTEMPT, None)
    assert event.event_id == f"ref:{ATTEMPT}:1001"


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b"\xff\xfe{",
        b"[" * 100_000,
        json.dumps([report()]).encode(),
        json.dumps("1001").encode(),
        json.dumps(report(refId=None, id=None)).encode(),
        json.dumps({k: v for k, v in report().items() if k not in ("refId", "id")}).encode(),
        json.dumps(report(refId="", id=" ")).encode(),
        json.dumps(report(resultCode=None)).encode(),
        json.dumps(report(resultCode="delivered")).encode(),
        json.dumps(report(resultCode=True)).encode(),
        json.dumps(report(resultCode=1003)).encode(),  # a 1xxx code the documentation does not list
    ],
)
def test_authentic_but_unreadable_is_malformed_with_status_200(body: bytes) -> None:
    request = posted(body)
    verify(request)  # the gate's own credentials: authentic
    with pytest.raises(MalformedPayload) as caught:
        parse(request)
    assert caught.value.status == 200
