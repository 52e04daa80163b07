"""SMS end to end against the sandbox gateways (real local HTTP servers speaking Link Mobility's and Twilio's
APIs): through the worker, failing over between gateways, and rate limited across worker processes."""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from channels.base import Outgoing
from channels.sms.channel import SmsChannel
from channels.sms.health import GatewayHealth
from channels.sms.linkmobility import LinkMobilityGateway
from channels.sms.twilio import TwilioGateway
from orchestrator import contact_log as store
from orchestrator import intake, queue
from orchestrator.sandbox import linkmobility, twilio
from orchestrator.sandbox.demo import ALWAYS_OPEN_RULES
from orchestrator.settings import Settings
from tests.conftest import bearer, drain, start_worker_process, stop_process, wait_until
from tests.factories import contact_payload, open_clock, with_


@pytest.fixture
async def link() -> AsyncIterator[tuple[linkmobility.LinkMobilitySandbox, str]]:
    state = linkmobility.LinkMobilitySandbox()
    async with linkmobility.serve(state) as url:
        yield state, url


@pytest.fixture
async def twilio_sandbox() -> AsyncIterator[tuple[twilio.TwilioSandbox, str]]:
    state = twilio.TwilioSandbox()
    async with twilio.serve(state) as url:
        yield state, url


def _with_link(
    settings: Settings, state: linkmobility.LinkMobilitySandbox, url: str, **extra: Any
) -> Settings:
    return settings.model_copy(
        update={
            "linkmobility_url": url,
            "linkmobility_username": state.username,
            "linkmobility_password": _secret(state.password),
            "linkmobility_platform_id": state.platform_id,
            "linkmobility_platform_partner_id": state.platform_partner_id,
            **extra,
        }
    )


def _sms_payload(n: int) -> dict[str, Any]:
    return contact_payload(n, channel="sms", debtor__emails=[], debtor__electronic_notice_evidence=[])


async def test_an_sms_contact_goes_through_the_gateway_with_our_reference_and_its_segments(
    client: Any, settings: Settings, api_key: str, link: tuple[linkmobility.LinkMobilitySandbox, str]
) -> None:
    state, url = link
    configured = _with_link(settings, state, url)
    r = await client.post("/v1/contacts", json=_sms_payload(1), headers=bearer(api_key))
    contact_id = (await r.json())["id"]

    await drain(configured, clock=open_clock())

    [message] = state.messages
    contact = await (await client.get(f"/v1/contacts/{contact_id}", headers=bearer(api_key))).json()
    [attempt] = contact["attempts"]
    assert contact["status"] == "sent"
    assert attempt["provider"] == "linkmobility"
    assert message.ref_id == attempt["id"]
    assert message.destination == "+4791000001"
    assert message.body["source"] == "Betaling"  # the default sender; never "inkasso" (R7)
    assert (attempt["encoding"], attempt["segments"]) == ("GSM-7", 1)
    assert "Kari" in message.text
    assert "inkasso" not in message.text.lower()


async def test_failover_moves_traffic_away_from_a_failing_gateway_and_back_without_loss_or_duplicates(
    redis: Any,
    link: tuple[linkmobility.LinkMobilitySandbox, str],
    twilio_sandbox: tuple[twilio.TwilioSandbox, str],
) -> None:
    link_state, link_url = link
    tw_state, tw_url = twilio_sandbox
    gateways = [
        LinkMobilityGateway(
            base_url=link_url,
            username=link_state.username,
            password=_secret(link_state.password),
            platform_id=link_state.platform_id,
            platform_partner_id=link_state.platform_partner_id,
            delivery_report_gate=None,
            rate_per_s=0,
        ),
        TwilioGateway(
            base_url=tw_url,
            account_sid=tw_state.account_sid,
            auth_token=_secret(tw_state.auth_token),
            status_callback_url=None,
            rate_per_s=0,
        ),
    ]
    key = f"test:health:{os.getpid()}:{time.monotonic_ns()}"
    # A short half-life so that "drifts back when it recovers" happens within the test.
    health = GatewayHealth(redis, key=key, half_life_s=0.5)
    channel = SmsChannel(
        gateways,
        redis=redis,
        sender_ids={},
        default_sender_id="Betaling",
        max_segments=2,
        health=health,
        rng=random.Random(7),
    )

    async def send(batch: range) -> list[str]:
        providers = []
        for n in batch:
            receipt = await channel.send(_outgoing(n))
            providers.append(receipt.detail["gateway"])
        return providers

    try:
        healthy = await send(range(0, 40))
        link_state.set_outcome("http_5xx")
        failing = await send(range(40, 100))
        tried_while_failing = len(link_state.rejected)
        link_state.set_outcome("delivered")
        await asyncio.sleep(2.5)  # five half-lives without errors
        recovered = await send(range(100, 160))
    finally:
        await channel.close()
        await redis.delete(key)

    assert 8 <= healthy.count("linkmobility") <= 32  # both gateways carry traffic while healthy
    assert failing.count("linkmobility") == 0  # nothing was lost to the failing gateway
    assert tried_while_failing <= 15  # it was asked a bounded number of times before traffic moved
    assert recovered.count("linkmobility") >= 12  # and traffic drifted back after recovery
    texts = [m.text for m in link_state.messages] + [m.form["Body"] for m in tw_state.messages]
    assert len(texts) == 160  # every message accepted exactly once, across both gateways
    assert len(set(texts)) == 160


def _secret(value: str) -> Any:
    from pydantic import SecretStr

    return SecretStr(value)


def _outgoing(n: int) -> Outgoing:
    return Outgoing(
        contact_id=f"C{n:05d}",
        attempt_id=f"A{n:05d}",
        channel="sms",
        to="+4791234567",
        recipient_name="Kari Nordmann",
        text=f"Hei Kari, husk betalingen for faktura {n}.",
    )


async def test_a_gateway_rate_limit_holds_across_two_worker_processes(
    settings: Settings, sessions: Any, tmp_path: Path, link: tuple[linkmobility.LinkMobilitySandbox, str]
) -> None:
    state, url = link
    rate = 5
    redis = await queue.connect(str(settings.redis_url))
    try:
        items = [intake.parse_item(i, _sms_payload(100 + i)) for i in range(25)]
        results = await intake.accept(sessions, redis, settings.queue_name, items)
        assert all(r.ok for r in results)
    finally:
        await redis.aclose()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCH_")}
    env.update(
        {
            "ORCH_REDIS_URL": str(settings.redis_url),
            "ORCH_DATABASE_URL": str(settings.database_url),
            "ORCH_QUEUE_NAME": settings.queue_name,
            "ORCH_STATE_DIR": str(tmp_path / "state"),
            "ORCH_RULES_FILE": str(ALWAYS_OPEN_RULES),
            "ORCH_LINKMOBILITY_URL": url,
            "ORCH_LINKMOBILITY_USERNAME": state.username,
            "ORCH_LINKMOBILITY_PASSWORD": state.password,
            "ORCH_LINKMOBILITY_PLATFORM_ID": state.platform_id,
            "ORCH_LINKMOBILITY_PLATFORM_PARTNER_ID": state.platform_partner_id,
            "ORCH_LINKMOBILITY_RATE_PER_S": str(rate),
            "ORCH_LOG_LEVEL": "WARNING",
        }
    )
    workers = [start_worker_process(env) for _ in range(2)]
    try:

        async def all_at_the_gateway_and_logged() -> bool:
            # Stop the workers only once each has also recorded what the gateway took.
            async with sessions() as session:
                sent = (await store.count_by_status(session)).get("sent", 0)
            return len(state.messages) >= 25 and sent >= 25

        await wait_until(all_at_the_gateway_and_logged, 60, "25 messages at the gateway, logged as sent")
    finally:
        for proc in workers:
            stop_process(proc)
    assert len(state.messages) == 25
    stamps = sorted(m.received_at for m in state.messages)
    busiest = max(sum(1 for t in stamps if start <= t < start + 1.0) for start in stamps)
    # GCRA with a burst of 1: at most rate + 2 in any one-second window (a slot booked just before a window
    # plus wake-up jitter), and the whole run takes as long as the rate says.
    assert busiest <= rate + 2, busiest
    assert stamps[-1] - stamps[0] >= (25 - 2) / rate - 0.5
    async with sessions() as session:
        counts = await store.count_by_status(session)
    assert counts.get("sent") == 25


async def test_an_sms_with_no_delivery_report_is_flagged_for_reconciliation_once(
    client: Any,
    settings: Settings,
    api_key: str,
    redis: Any,
    link: tuple[linkmobility.LinkMobilitySandbox, str],
) -> None:
    from orchestrator.jobs import sweep
    from orchestrator.worker import shutdown, startup

    state, url = link  # no delivery-report gate: the gateway will never tell us what happened
    configured = _with_link(settings, state, url)
    # Reachable by SMS only, so that no other channel takes over (fallback chains, tested elsewhere).
    sms_only = with_(_sms_payload(7), "debtor.addresses", [])
    r = await client.post("/v1/contacts", json=sms_only, headers=bearer(api_key))
    contact_id = (await r.json())["id"]
    clock = open_clock()
    await drain(configured, clock=clock)
    assert (await (await client.get(f"/v1/contacts/{contact_id}", headers=bearer(api_key))).json())[
        "status_reason"
    ] is None  # within the (default) two days nothing is flagged

    impatient = configured.model_copy(update={"delivery_report_timeout_s": {"sms": 0.0}})
    ctx: dict[str, Any] = {"settings": impatient, "redis": redis, "clock": clock}
    await startup(ctx)
    try:
        first = await sweep(ctx)
        again = await sweep(ctx)
    finally:
        await shutdown(ctx)

    contact = await (await client.get(f"/v1/contacts/{contact_id}", headers=bearer(api_key))).json()
    assert (contact["status"], contact["status_reason"]) == ("sent", "no_delivery_report")
    assert first["needs_reconciliation"] == 1
    assert again["needs_reconciliation"] == 0
    timeline = await (await client.get("/v1/debtors/D-7/timeline", headers=bearer(api_key))).json()
    flagged = [i for i in timeline["items"] if i["type"] == "needs_reconciliation"]
    assert [i["detail"]["why"] for i in flagged] == ["no sms delivery report within 0 s"]
