"""Carrier callbacks end to end: the sandbox calls our real webhook route, the raw event is recorded once, the
worker moves the attempt forward only, and everything shows in the debtor's timeline."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlencode

import pytest
from aiohttp.test_utils import TestClient, TestServer
from pydantic import SecretStr
from sqlalchemy import select

from channels.sms.twilio import twilio_signature
from orchestrator.models import CarrierEvent
from orchestrator.sandbox import twilio
from orchestrator.settings import Settings
from orchestrator.web import create_app
from tests.conftest import bearer, drain
from tests.factories import contact_payload, open_clock


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
async def sandbox() -> AsyncIterator[tuple[twilio.TwilioSandbox, str]]:
    state = twilio.TwilioSandbox(callback_delay_s=0.01)
    async with twilio.serve(state) as url:
        yield state, url


@pytest.fixture
async def setup(
    settings: Settings, sessions: Any, sandbox: tuple[twilio.TwilioSandbox, str]
) -> AsyncIterator[tuple[Settings, TestClient[Any, Any]]]:
    """Our app on a known port, so that the URL Twilio signs is the URL we verify."""
    state, url = sandbox
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    configured = settings.model_copy(
        update={
            "public_base_url": base,
            "twilio_url": url,
            "twilio_account_sid": state.account_sid,
            "twilio_auth_token": SecretStr(state.auth_token),
            "twilio_status_callback_url": f"{base}/webhooks/twilio",
        }
    )
    assert configured.redis_url is not None
    client: TestClient[Any, Any] = TestClient(
        TestServer(create_app(configured, redis_url=configured.redis_url), port=port)
    )
    await client.start_server()
    yield configured, client
    await client.close()


async def _send_sms(client: TestClient[Any, Any], key: str, n: int) -> str:
    payload = contact_payload(n, channel="sms", debtor__emails=[], debtor__electronic_notice_evidence=[])
    r = await client.post("/v1/contacts", json=payload, headers=bearer(key))
    assert r.status == 202
    contact_id: str = (await r.json())["id"]
    return contact_id


async def test_delivery_reports_move_the_contact_forward_and_a_replay_is_recorded_once(
    setup: tuple[Settings, TestClient[Any, Any]], sandbox: tuple[twilio.TwilioSandbox, str], api_key: str
) -> None:
    settings, client = setup
    state, _ = sandbox
    contact_id = await _send_sms(client, api_key, 1)
    await drain(settings, clock=open_clock())  # sends; the sandbox calls back "sent" then "delivered"
    await state.wait_for_callbacks(2)
    await drain(settings, clock=open_clock())  # processes the recorded events

    contact = await (await client.get(f"/v1/contacts/{contact_id}", headers=bearer(api_key))).json()
    [attempt] = contact["attempts"]
    assert [cb.status for cb in state.callbacks] == [200, 200]
    assert contact["status"] == "delivered"
    assert attempt["status"] == "delivered"
    events = [e for e in attempt["events"] if e["type"] == "carrier_event"]
    assert sorted(e["status"] for e in events) == ["delivered", "sent"]  # applied in any order
    assert all(e["source"] == "twilio" for e in events)

    # The same callback again (Twilio retries): answered 2xx, recorded once, nothing changes.
    last = state.callbacks[-1]
    r = await client.post(
        last.url.replace(settings.resolved_public_base_url, ""),
        data=urlencode(last.params),
        headers={"X-Twilio-Signature": last.signature, "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert r.status == 200
    assert (await r.json())["new"] == 0


async def test_a_delivered_report_before_sent_leaves_the_contact_delivered(
    setup: tuple[Settings, TestClient[Any, Any]], sandbox: tuple[twilio.TwilioSandbox, str], api_key: str
) -> None:
    settings, client = setup
    state, _ = sandbox
    state.callback_delay_s = 60.0  # the sandbox's own callbacks come too late for this test
    contact_id = await _send_sms(client, api_key, 2)
    await drain(settings, clock=open_clock())
    contact = await (await client.get(f"/v1/contacts/{contact_id}", headers=bearer(api_key))).json()
    attempt = contact["attempts"][0]
    url = f"{settings.resolved_public_base_url}/webhooks/twilio?attempt={attempt['id']}"
    token = state.auth_token
    for status in ("delivered", "sent", "delivered"):  # out of order, and a duplicate
        params = {"MessageSid": attempt["provider_message_id"], "MessageStatus": status, "AccountSid": "AC1"}
        r = await client.post(
            url.replace(settings.resolved_public_base_url, ""),
            data=urlencode(params),
            headers={
                "X-Twilio-Signature": twilio_signature(token, url, params),
                "Content-Type": "application/x-www-form-urlencoded",
            },
        )
        assert r.status == 200
    await drain(settings, clock=open_clock())

    contact = await (await client.get(f"/v1/contacts/{contact_id}", headers=bearer(api_key))).json()
    assert contact["status"] == "delivered"
    assert contact["attempts"][0]["status"] == "delivered"
    carrier_events = [e for e in contact["attempts"][0]["events"] if e["type"] == "carrier_event"]
    # Workers apply events in any order; in every order "delivered" wins and the late "sent" moves nothing,
    # and the duplicate "delivered" was recorded once.
    moves = sorted((e["status"], e["detail"]["moved"]) for e in carrier_events)
    assert moves == [("delivered", True), ("sent", False)]


async def test_forged_missing_and_unconfigured_callbacks_are_refused(
    setup: tuple[Settings, TestClient[Any, Any]], sessions: Any
) -> None:
    _, client = setup
    form = {"MessageSid": "SM1", "MessageStatus": "delivered"}
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    forged = await client.post(
        "/webhooks/twilio", data=urlencode(form), headers={**headers, "X-Twilio-Signature": "AAAA"}
    )
    missing = await client.post("/webhooks/twilio", data=urlencode(form), headers=headers)
    unconfigured = await client.post("/webhooks/mailgun", json={})
    unknown = await client.post("/webhooks/pigeon", json={})
    assert (forged.status, missing.status, unconfigured.status, unknown.status) == (401, 400, 404, 404)
    async with sessions() as session:
        assert (await session.execute(select(CarrierEvent))).scalars().all() == []


async def test_an_authentic_but_unreadable_callback_is_kept_and_answered_2xx(
    setup: tuple[Settings, TestClient[Any, Any]], sandbox: tuple[twilio.TwilioSandbox, str], sessions: Any
) -> None:
    settings, client = setup
    state, _ = sandbox
    url = f"{settings.resolved_public_base_url}/webhooks/twilio"
    params = {"Unexpected": "shape"}
    r = await client.post(
        "/webhooks/twilio",
        data=urlencode(params),
        headers={
            "X-Twilio-Signature": twilio_signature(state.auth_token, url, params),
            "Content-Type": "application/x-www-form-urlencoded",
        },
    )
    assert r.status == 200
    await drain(settings, clock=open_clock())
    async with sessions() as session:
        [kept] = (await session.execute(select(CarrierEvent))).scalars().all()
    assert kept.payload["event"] is None
    assert "Unexpected=shape" in kept.payload["raw"]["body"]
    assert kept.processed_at is not None
