"""Reconciliation: the sweeper asks the carriers' status APIs about attempts stuck in ``sending`` or ``sent``
without a report, before it flags them for an operator. Real Twilio, Link Mobility and Digipost sandboxes
(local HTTP servers), a real worker, and a pinned clock to pass the timeouts instead of sleeping."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import SecretStr
from sqlalchemy import func, select

from channels.base import SentAttempt, StatusQuery, TransientChannelError
from channels.digital_mailbox import message_uuid
from channels.sms.channel import SmsChannel
from channels.sms.gateway import SmsMessage
from channels.sms.linkmobility import LinkMobilityGateway
from channels.sms.twilio import TwilioGateway
from orchestrator.jobs import sweep
from orchestrator.models import CarrierEvent
from orchestrator.sandbox import digipost, linkmobility, twilio
from orchestrator.sandbox.demo import ALWAYS_OPEN_RULES
from orchestrator.settings import Settings
from orchestrator.worker import shutdown, startup
from tests.conftest import bearer, drain, wait_until
from tests.factories import contact_payload, national_id, with_

SMS_REPORT_S = 172800.0  # the default delivery_report_timeout_s["sms"]
DIGIPOST_SENDER_ID = "123456"


# ------------------------------------------------------------------------------------------------ fixtures


@pytest.fixture
async def twilio_sandbox() -> AsyncIterator[tuple[twilio.TwilioSandbox, str]]:
    # Twilio is told where to call back, and every callback is lost: only the status API knows.
    state = twilio.TwilioSandbox(drop_callbacks=True, callback_delay_s=0.0)
    async with twilio.serve(state) as url:
        yield state, url


@pytest.fixture
async def link() -> AsyncIterator[tuple[linkmobility.LinkMobilitySandbox, str]]:
    state = linkmobility.LinkMobilitySandbox()
    async with linkmobility.serve(state) as url:
        yield state, url


def _open(settings: Settings, **update: Any) -> Settings:
    # Contact windows always open: the worker sends on the real clock, the clock Twilio stamps messages with.
    return settings.model_copy(update={"rules_file": ALWAYS_OPEN_RULES, **update})


def _twilio(state: twilio.TwilioSandbox, url: str) -> dict[str, Any]:
    return {
        "twilio_url": url,
        "twilio_account_sid": state.account_sid,
        "twilio_auth_token": SecretStr(state.auth_token),
        "twilio_status_callback_url": "http://127.0.0.1:9/webhooks/twilio",
    }


def _link(state: linkmobility.LinkMobilitySandbox, url: str) -> dict[str, Any]:
    return {
        "linkmobility_url": url,
        "linkmobility_username": state.username,
        "linkmobility_password": SecretStr(state.password),
        "linkmobility_platform_id": state.platform_id,
        "linkmobility_platform_partner_id": state.platform_partner_id,
    }


def _sms_payload(n: int) -> dict[str, Any]:
    # Reachable by SMS only: no other channel can take over when the SMS stays silent (fallback chains).
    return contact_payload(
        n, channel="sms", debtor__emails=[], debtor__electronic_notice_evidence=[], debtor__addresses=[]
    )


def _pinned(after_s: float) -> Callable[[], datetime]:
    moment = datetime.now(UTC) + timedelta(seconds=after_s)
    return lambda: moment


async def _sweep(settings: Settings, redis: Any, clock: Callable[[], datetime]) -> dict[str, int]:
    """One sweep, as the worker's cron runs it."""
    ctx: dict[str, Any] = {"settings": settings, "redis": redis, "clock": clock}
    await startup(ctx)
    try:
        return await sweep(ctx)
    finally:
        await shutdown(ctx)


async def _apply(settings: Settings, clock: Callable[[], datetime]) -> None:
    """Let a worker process the carrier events a sweep enqueued (and nothing else: no sweep of its own)."""
    await drain(settings, clock=clock, cron_jobs=[])


async def _post(client: Any, api_key: str, payload: dict[str, Any]) -> str:
    r = await client.post("/v1/contacts", json=payload, headers=bearer(api_key))
    assert r.status == 202, await r.text()
    return str((await r.json())["id"])


async def _contact(client: Any, api_key: str, contact_id: str) -> dict[str, Any]:
    r = await client.get(f"/v1/contacts/{contact_id}", headers=bearer(api_key))
    body: dict[str, Any] = await r.json()
    return body


async def _timeline(client: Any, api_key: str, debtor_id: str, type_: str) -> list[dict[str, Any]]:
    r = await client.get(f"/v1/debtors/{debtor_id}/timeline", headers=bearer(api_key))
    return [item for item in (await r.json())["items"] if item["type"] == type_]


async def _settled(state: twilio.TwilioSandbox, status: str = "delivered") -> None:
    """Twilio has moved every message to ``status`` (its callbacks, if any, are lost)."""

    async def moved() -> bool:
        return bool(state.messages) and all(m.status == status for m in state.messages)

    await wait_until(moved, 5, f"Twilio's messages {status}")


async def _carrier_events(sessions: Any) -> int:
    async with sessions() as session:
        return int((await session.execute(select(func.count()).select_from(CarrierEvent))).scalar_one())


# -------------------------------------------------------------------------------------------- SMS: Twilio


async def test_a_chat_link_whose_callback_never_arrives_is_settled_through_its_sms_carrier(
    client: Any,
    settings: Settings,
    api_key: str,
    redis: Any,
    twilio_sandbox: tuple[twilio.TwilioSandbox, str],
) -> None:
    state, url = twilio_sandbox
    configured = _open(settings, **_twilio(state, url))
    contact_id = await _post(client, api_key, with_(_sms_payload(9), "channel", "chat_link"))
    await drain(configured)
    [message] = state.messages
    await _settled(state)
    assert (await _contact(client, api_key, contact_id))["channel"] == "chat_link"

    clock = _pinned(SMS_REPORT_S + 60)
    first = await _sweep(configured, redis, clock)
    assert (first["status_queries"], first["reconciled"], first["needs_reconciliation"]) == (1, 1, 0)
    await _apply(configured, clock)

    contact = await _contact(client, api_key, contact_id)
    assert contact["status"] == "delivered"
    assert contact["attempts"][0]["provider_message_id"] == message.sid


async def test_an_sms_whose_callback_never_arrives_is_settled_by_twilios_status_api(
    client: Any,
    sessions: Any,
    settings: Settings,
    api_key: str,
    redis: Any,
    twilio_sandbox: tuple[twilio.TwilioSandbox, str],
) -> None:
    state, url = twilio_sandbox
    configured = _open(settings, **_twilio(state, url))
    contact_id = await _post(client, api_key, _sms_payload(1))
    await drain(configured)
    [message] = state.messages
    await _settled(state)
    assert message.status_callback is not None  # Twilio was told where to report ...
    assert state.callbacks == []  # ... and no report ever arrived
    assert (await _contact(client, api_key, contact_id))["status"] == "sent"

    within = await _sweep(configured, redis, _pinned(SMS_REPORT_S - 60))
    assert within["status_queries"] == 0  # not silent yet

    clock = _pinned(SMS_REPORT_S + 60)
    first = await _sweep(configured, redis, clock)
    assert (first["status_queries"], first["reconciled"], first["needs_reconciliation"]) == (1, 1, 0)
    await _apply(configured, clock)

    contact = await _contact(client, api_key, contact_id)
    assert (contact["status"], contact["status_reason"]) == ("delivered", None)
    [attempt] = contact["attempts"]
    assert (attempt["status"], attempt["provider_message_id"]) == ("delivered", message.sid)
    [reconciled] = await _timeline(client, api_key, "D-1", "reconciled")
    assert (reconciled["status"], reconciled["source"]) == ("delivered", "twilio")
    assert reconciled["detail"]["why"] == "no sms delivery report within 172800 s"
    assert reconciled["detail"]["event_id"] == f"status:{attempt['id']}:delivered"
    [event] = await _timeline(client, api_key, "D-1", "carrier_event")
    assert (event["status"], event["source"], event["detail"]["moved"]) == ("delivered", "twilio", True)

    # A second sweep, and one much later, record nothing new and flag nothing.
    for later in (clock, _pinned(30 * 86400)):
        again = await _sweep(configured, redis, later)
        assert (again["status_queries"], again["reconciled"], again["needs_reconciliation"]) == (0, 0, 0)
    assert await _carrier_events(sessions) == 1
    assert len(await _timeline(client, api_key, "D-1", "reconciled")) == 1
    assert await _timeline(client, api_key, "D-1", "needs_reconciliation") == []
    assert len(state.messages) == 1  # nothing was sent again


async def test_a_stuck_sending_attempt_is_found_and_ends_delivered_when_twilio_says_so(
    client: Any,
    settings: Settings,
    api_key: str,
    redis: Any,
    twilio_sandbox: tuple[twilio.TwilioSandbox, str],
    link: tuple[linkmobility.LinkMobilitySandbox, str],
) -> None:
    state, url = twilio_sandbox
    link_state, link_url = link
    # Twilio takes the message and the connection drops before its answer; Link Mobility refuses anything
    # (whichever gateway is tried first, the message ends at Twilio, unconfirmed).
    state.default_outcome = "drop"
    link_state.set_outcome("http_5xx")
    configured = _open(settings, **_twilio(state, url), **_link(link_state, link_url))
    contact_id = await _post(client, api_key, _sms_payload(2))
    await drain(configured)
    [message] = state.messages
    await _settled(state)
    contact = await _contact(client, api_key, contact_id)
    [attempt] = contact["attempts"]
    assert (contact["status"], contact["status_reason"]) == ("sending", "needs_reconciliation")
    assert (attempt["status"], attempt["provider_message_id"]) == ("sending", None)
    assert attempt["provider"] == "linkmobility+twilio"  # no gateway ever confirmed it

    clock = _pinned(configured.sending_timeout_s + 60)
    swept = await _sweep(configured, redis, clock)
    assert (swept["status_queries"], swept["reconciled"], swept["needs_reconciliation"]) == (1, 1, 0)
    await _apply(configured, clock)

    contact = await _contact(client, api_key, contact_id)
    [attempt] = contact["attempts"]
    assert (contact["status"], contact["status_reason"]) == ("delivered", None)
    assert attempt["status"] == "delivered"
    # Twilio's message found by number, text and time; its id and gateway now on the attempt.
    assert (attempt["provider"], attempt["provider_message_id"]) == ("twilio", message.sid)
    [reconciled] = await _timeline(client, api_key, "D-2", "reconciled")
    assert (reconciled["status"], reconciled["source"], reconciled["detail"]["was"]) == (
        "delivered",
        "twilio",
        "sending",
    )
    assert len(state.messages) == 1 and link_state.messages == []  # never re-sent


async def test_a_stuck_sending_attempt_twilio_does_not_know_stays_flagged_once(
    client: Any,
    settings: Settings,
    api_key: str,
    redis: Any,
    twilio_sandbox: tuple[twilio.TwilioSandbox, str],
) -> None:
    state, url = twilio_sandbox
    state.default_outcome = "drop"
    configured = _open(settings, **_twilio(state, url))
    contact_id = await _post(client, api_key, _sms_payload(3))
    await drain(configured)
    state.messages.clear()  # Twilio never got it after all

    for after_s in (configured.sending_timeout_s + 60, 3 * configured.sending_timeout_s):
        swept = await _sweep(configured, redis, _pinned(after_s))
        assert (swept["status_queries"], swept["reconciled"]) == (1, 0)

    contact = await _contact(client, api_key, contact_id)
    assert (contact["status"], contact["status_reason"]) == ("sending", "needs_reconciliation")
    assert len(await _timeline(client, api_key, "D-3", "needs_reconciliation")) == 1
    assert await _timeline(client, api_key, "D-3", "reconciled") == []


async def test_twilio_answering_5xx_leaves_the_contact_flagged_and_the_sweep_running(
    client: Any,
    sessions: Any,
    settings: Settings,
    api_key: str,
    redis: Any,
    twilio_sandbox: tuple[twilio.TwilioSandbox, str],
) -> None:
    state, url = twilio_sandbox
    configured = _open(settings, **_twilio(state, url))
    ids = [await _post(client, api_key, _sms_payload(n)) for n in (4, 5)]
    await drain(configured)
    await _settled(state)
    state.status_api_status = 503

    clock = _pinned(SMS_REPORT_S + 60)
    first = await _sweep(configured, redis, clock)
    # A failing carrier is asked once per sweep; both contacts go to an operator.
    assert (first["status_queries"], first["reconciled"], first["needs_reconciliation"]) == (1, 0, 2)
    again = await _sweep(configured, redis, clock)
    assert (again["reconciled"], again["needs_reconciliation"]) == (0, 0)
    for contact_id in ids:
        contact = await _contact(client, api_key, contact_id)
        assert (contact["status"], contact["status_reason"]) == ("sent", "no_delivery_report")
    flags = [
        *await _timeline(client, api_key, "D-4", "needs_reconciliation"),
        *await _timeline(client, api_key, "D-5", "needs_reconciliation"),
    ]
    assert len(flags) == 2
    assert sorted(flag["detail"].get("carrier_error", "not asked") for flag in flags) == [
        "gateway_5xx",
        "not asked",
    ]
    assert await _carrier_events(sessions) == 0

    # Twilio recovers: the next round of asking settles both, although an operator was told.
    state.status_api_status = None
    later = _pinned(2 * SMS_REPORT_S + 120)
    recovered = await _sweep(configured, redis, later)
    assert (recovered["status_queries"], recovered["reconciled"]) == (2, 2)
    await _apply(configured, later)
    for contact_id in ids:
        assert (await _contact(client, api_key, contact_id))["status"] == "delivered"


async def test_the_queries_per_sweep_are_bounded_and_the_rest_wait_their_turn(
    client: Any,
    settings: Settings,
    api_key: str,
    redis: Any,
    twilio_sandbox: tuple[twilio.TwilioSandbox, str],
) -> None:
    state, url = twilio_sandbox
    configured = _open(settings, reconcile_max_queries_per_sweep=1, **_twilio(state, url))
    ids = [await _post(client, api_key, _sms_payload(n)) for n in (6, 7)]
    await drain(configured)
    await _settled(state)

    clock = _pinned(SMS_REPORT_S + 60)
    first = await _sweep(configured, redis, clock)
    assert (first["status_queries"], first["reconciled"], first["needs_reconciliation"]) == (1, 1, 1)
    await _apply(configured, clock)
    statuses = sorted([(await _contact(client, api_key, cid))["status"] for cid in ids])
    assert statuses == ["delivered", "sent"]

    later = _pinned(2 * SMS_REPORT_S + 120)
    second = await _sweep(configured, redis, later)
    assert (second["status_queries"], second["reconciled"]) == (1, 1)
    await _apply(configured, later)
    assert [(await _contact(client, api_key, cid))["status"] for cid in ids] == ["delivered", "delivered"]


# ------------------------------------------------------------------------------------ no status API at all


@pytest.mark.parametrize("carrier", ["outbox", "linkmobility"])
async def test_without_a_status_api_the_contact_is_flagged_exactly_once(
    client: Any,
    settings: Settings,
    api_key: str,
    redis: Any,
    link: tuple[linkmobility.LinkMobilitySandbox, str],
    carrier: str,
) -> None:
    link_state, link_url = link
    configured = _open(settings, **(_link(link_state, link_url) if carrier == "linkmobility" else {}))
    contact_id = await _post(client, api_key, _sms_payload(8))
    await drain(configured)
    assert (await _contact(client, api_key, contact_id))["attempts"][0]["provider"] == carrier

    clock = _pinned(SMS_REPORT_S + 60)
    first = await _sweep(configured, redis, clock)
    again = await _sweep(configured, redis, _pinned(SMS_REPORT_S + 120))
    assert (first["reconciled"], first["needs_reconciliation"]) == (0, 1)
    assert (again["reconciled"], again["needs_reconciliation"]) == (0, 0)
    # Link Mobility's channel is asked and cannot say; the outbox cannot be asked at all.
    assert first["status_queries"] == (1 if carrier == "linkmobility" else 0)

    contact = await _contact(client, api_key, contact_id)
    assert (contact["status"], contact["status_reason"]) == ("sent", "no_delivery_report")
    [flag] = await _timeline(client, api_key, "D-8", "needs_reconciliation")
    expected = {"carrier_status": "unknown"} if carrier == "linkmobility" else {}
    assert flag["detail"] == {"why": "no sms delivery report within 172800 s", **expected}


# ----------------------------------------------------------------------------------- the status API itself


async def test_twilio_reads_back_a_failure_as_its_callback_would_say_it(
    twilio_sandbox: tuple[twilio.TwilioSandbox, str],
) -> None:
    state, url = twilio_sandbox
    state.default_outcome = "unknown_handset"
    gateway = TwilioGateway(
        base_url=url,
        account_sid=state.account_sid,
        auth_token=SecretStr(state.auth_token),
        status_callback_url=None,
        rate_per_s=0,
    )
    text = "Hei Kari, husk betalingen."
    sms = SmsMessage("C1", "A1", "+4791234567", "Betaling", text, "GSM-7", 1)
    asked = SentAttempt("A1", "twilio", None, "+4791234567", text, datetime.now(UTC))
    try:
        assert isinstance(gateway, StatusQuery)
        receipt = await gateway.submit(sms)
        await _settled(state, "undelivered")
        by_sid = await gateway.query_status(replace(asked, provider_message_id=receipt.provider_message_id))
        assert by_sid is not None
        assert (by_sid.provider, by_sid.status, by_sid.reason) == ("twilio", "failed", "unknown_handset")
        assert by_sid.detail == {"message_status": "undelivered", "error_code": "30005"}
        assert await gateway.query_status(asked) == by_sid  # no sid: found by number, text and time
        assert await gateway.query_status(replace(asked, provider_message_id="SM" + "0" * 32)) is None
        # Older than our attempt, another text, or two that match: Twilio cannot say which is ours.
        late = asked.created_at + timedelta(minutes=10)
        assert await gateway.query_status(replace(asked, created_at=late)) is None
        assert await gateway.query_status(replace(asked, text="Annen tekst")) is None
        await gateway.submit(sms)
        assert await gateway.query_status(asked) is None
    finally:
        await gateway.close()


async def test_the_sms_channel_asks_only_the_gateway_that_took_the_attempt(
    redis: Any,
    twilio_sandbox: tuple[twilio.TwilioSandbox, str],
    link: tuple[linkmobility.LinkMobilitySandbox, str],
) -> None:
    state, url = twilio_sandbox
    link_state, link_url = link
    channel = SmsChannel(
        [
            LinkMobilityGateway(
                base_url=link_url,
                username=link_state.username,
                password=SecretStr(link_state.password),
                platform_id=link_state.platform_id,
                platform_partner_id=link_state.platform_partner_id,
                delivery_report_gate=None,
                rate_per_s=0,
            ),
            TwilioGateway(
                base_url=url,
                account_sid=state.account_sid,
                auth_token=SecretStr(state.auth_token),
                status_callback_url=None,
                rate_per_s=0,
            ),
        ],
        redis=redis,
        sender_ids={},
        default_sender_id="Betaling",
        max_segments=2,
    )
    state.status_api_status = 500  # any question reaching Twilio would fail
    try:
        assert isinstance(channel, StatusQuery)
        asked = SentAttempt("A1", "linkmobility", "lm-1", "+4791234567", "Hei", datetime.now(UTC))
        assert await channel.query_status(asked) is None  # Link Mobility has no status API
        with pytest.raises(TransientChannelError) as raised:
            await channel.query_status(
                SentAttempt("A2", "twilio", "SM1", "+4791234567", "Hei", datetime.now(UTC))
            )
        assert raised.value.reason == "gateway_5xx"
    finally:
        await channel.close()


# ------------------------------------------------------------------------------------- digital mailbox


async def test_a_digipost_letter_without_receipts_is_settled_by_its_document_status(
    client: Any, settings: Settings, api_key: str, redis: Any
) -> None:
    private_pem, public_pem = digipost.generate_key_pair()
    state = digipost.DigipostSandbox()  # it never pushes document events
    state.add_sender(DIGIPOST_SENDER_ID, public_pem)
    fnr = national_id("060763", "120")
    state.add_user(fnr)
    async with digipost.serve(state) as url:
        configured = _open(
            settings,
            digipost_url=url,
            digipost_sender_id=DIGIPOST_SENDER_ID,
            digipost_private_key=SecretStr(private_pem.decode()),
            digipost_return_address="Eksempel Kreditt AS; Postboks 1; 0101 OSLO",
        )
        payload = contact_payload(
            9, debtor__phones=[], debtor__emails=[], debtor__electronic_notice_evidence=[]
        )
        payload["kind"] = "inkassovarsel"
        payload["debtor"]["national_id"] = fnr
        contact_id = await _post(client, api_key, payload)
        await drain(configured)
        contact = await _contact(client, api_key, contact_id)
        [attempt] = contact["attempts"]
        assert (contact["status"], attempt["channel"]) == ("sent", "digital_mailbox")
        state.mark_read(message_uuid(attempt["id"]))

        clock = _pinned(configured.delivery_report_timeout_s["digital_mailbox"] + 60)
        swept = await _sweep(configured, redis, clock)
        assert (swept["status_queries"], swept["reconciled"], swept["needs_reconciliation"]) == (1, 1, 0)
        await _apply(configured, clock)

    contact = await _contact(client, api_key, contact_id)
    assert (contact["status"], contact["attempts"][0]["status"]) == ("read", "read")
    [reconciled] = await _timeline(client, api_key, "D-9", "reconciled")
    assert (reconciled["status"], reconciled["source"]) == ("read", "digipost")
    [event] = await _timeline(client, api_key, "D-9", "carrier_event")
    assert (event["detail"]["digipost_event"], event["detail"]["delivery"]) == ("READ", "digital")
