"""A bounce travels the whole way: a real DSN to our VERP return path over SMTP → the bounce receiver → the
contact log → the next decision for that debtor no longer uses the address."""

from __future__ import annotations

import re
import socket
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiosmtplib
import pytest
from aiohttp.test_utils import TestClient, TestServer

from orchestrator.settings import Settings
from orchestrator.web import create_app
from tests.conftest import SmtpRecorder, bearer, drain
from tests.factories import contact_payload, open_clock

SAMPLES = Path(__file__).with_name("bounces")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
async def app_with_bounces(
    smtp_settings: Settings, sessions: Any
) -> AsyncIterator[tuple[Settings, TestClient[Any, Any]]]:
    settings = smtp_settings.model_copy(update={"bounce_smtp_port": _free_port()})
    assert settings.redis_url is not None
    client: TestClient[Any, Any] = TestClient(TestServer(create_app(settings, redis_url=settings.redis_url)))
    await client.start_server()  # also starts the bounce receiver (cleanup_ctx)
    yield settings, client
    await client.close()


async def test_a_hard_bounce_marks_the_address_bad_and_the_next_decision_avoids_it(
    app_with_bounces: tuple[Settings, TestClient[Any, Any]], smtp_server: SmtpRecorder, api_key: str
) -> None:
    settings, client = app_with_bounces
    first = contact_payload(1)
    r = await client.post("/v1/contacts", json=first, headers=bearer(api_key))
    contact_id = (await r.json())["id"]
    await drain(settings, clock=open_clock())
    contact = await (await client.get(f"/v1/contacts/{contact_id}", headers=bearer(api_key))).json()
    [attempt] = contact["attempts"]
    assert attempt["channel"] == "email"

    # The recipient's server refuses it; its DSN comes back to the VERP address of this very attempt.
    sample = (SAMPLES / "postfix_hard_5.1.1.eml").read_text(encoding="utf-8")
    their_attempt = re.search(r"bounce\+([0-9A-Z]{26})@", sample)
    assert their_attempt is not None
    dsn = sample.replace(their_attempt.group(1), attempt["id"])
    verp = f"bounce+{attempt['id']}@{settings.bounce_domain}"
    await aiosmtplib.send(
        dsn.encode(),
        sender="MAILER-DAEMON@smtp.relay.example",
        recipients=[verp],
        hostname="127.0.0.1",
        port=settings.bounce_smtp_port,
    )
    await drain(settings, clock=open_clock())

    contact = await (await client.get(f"/v1/contacts/{contact_id}", headers=bearer(api_key))).json()
    assert [(a["channel"], a["status"]) for a in contact["attempts"]] == [
        ("email", "bounced"),
        ("sms", "sent"),
    ]
    assert contact["attempts"][0]["status_reason"] == "hard_bounce"
    # The fallback chain: the same reminder went on by SMS, the next channel the debtor can be reached on.
    assert contact["status"] == "sent"
    timeline = await (await client.get("/v1/debtors/D-1/timeline", headers=bearer(api_key))).json()
    [fallback] = [e for e in timeline["items"] if e["type"] == "fallback"]
    assert fallback["detail"]["from_channel"] == "email" and fallback["detail"]["to_channel"] == "sms"

    second = contact_payload(1, idempotency_key="eksempel-as/inv-1/reminder-2")
    r = await client.post("/v1/contacts", json=second, headers=bearer(api_key))
    next_id = (await r.json())["id"]
    await drain(settings, clock=open_clock())
    nxt = await (await client.get(f"/v1/contacts/{next_id}", headers=bearer(api_key))).json()
    assert nxt["decision"]["channel"] != "email"
    assert {"channel": "email", "reason": "no_usable_email"} in nxt["decision"]["rejected"]
    assert len(smtp_server.messages) == 1  # the bounced address got nothing more


async def _bounce(settings: Settings, attempt_id: str, sample_name: str) -> None:
    sample = (SAMPLES / sample_name).read_text(encoding="utf-8")
    theirs = re.search(r"bounce\+([0-9A-Z]{26})@", sample)
    assert theirs is not None
    # Each bounce is its own message with its own Message-Id (the receiver records a message once).
    sample = re.sub(
        r"^Message-Id: <[^>]+>", f"Message-Id: <dsn-{uuid.uuid4().hex}@relay>", sample, count=1, flags=re.M
    )
    await aiosmtplib.send(
        sample.replace(theirs.group(1), attempt_id).encode(),
        sender="MAILER-DAEMON@smtp.relay.example",
        recipients=[f"bounce+{attempt_id}@{settings.bounce_domain}"],
        hostname="127.0.0.1",
        port=settings.bounce_smtp_port,
    )


async def test_a_soft_bounce_sends_the_same_contact_again_later_then_ends_bounced(
    app_with_bounces: tuple[Settings, TestClient[Any, Any]], smtp_server: SmtpRecorder, api_key: str
) -> None:
    settings, client = app_with_bounces
    settings = settings.model_copy(update={"soft_bounce_retry_after_s": 1.0, "soft_bounce_max_retries": 1})
    clock = open_clock()
    r = await client.post("/v1/contacts", json=contact_payload(2), headers=bearer(api_key))
    contact_id = (await r.json())["id"]
    await drain(settings, clock=clock)
    contact = await (await client.get(f"/v1/contacts/{contact_id}", headers=bearer(api_key))).json()
    first = contact["attempts"][0]["id"]

    # Mailbox full: the recipient's MTA gave up for now, the address is fine. Same contact, again, later.
    await _bounce(settings, first, "postfix_5.2.2_mailbox_full.eml")
    await drain(settings, clock=clock)

    contact = await (await client.get(f"/v1/contacts/{contact_id}", headers=bearer(api_key))).json()
    assert [(a["status"], a["status_reason"]) for a in contact["attempts"]] == [
        ("failed", "soft_bounce"),
        ("sent", None),
    ]
    assert contact["status"] == "sent"
    assert len(smtp_server.messages) == 2
    assert {a["address"] for a in contact["attempts"]} == {"debtor2@example.no"}
    timeline = await (await client.get("/v1/debtors/D-2/timeline", headers=bearer(api_key))).json()
    items = timeline["items"] if isinstance(timeline, dict) else timeline
    retries = [e for e in items if e["type"] == "scheduled" and e["detail"]["reason"] == "retry:soft_bounce"]
    assert len(retries) == 1

    # The retry soft-bounces too: retries are bounded, the contact ends bounced, nothing more is sent.
    await _bounce(settings, contact["attempts"][1]["id"], "postfix_5.2.2_mailbox_full.eml")
    await drain(settings, clock=clock)

    contact = await (await client.get(f"/v1/contacts/{contact_id}", headers=bearer(api_key))).json()
    assert (contact["status"], contact["status_reason"]) == ("bounced", "soft_bounce_retries_exhausted")
    assert len(smtp_server.messages) == 2
    # A soft bounce never condemns the address: a new contact may still use it.
    r = await client.post(
        "/v1/contacts",
        json=contact_payload(2, idempotency_key="eksempel-as/inv-2/reminder-2"),
        headers=bearer(api_key),
    )
    await drain(settings, clock=clock)
    nxt = await (await client.get(f"/v1/contacts/{(await r.json())['id']}", headers=bearer(api_key))).json()
    assert nxt["decision"]["channel"] == "email"


async def test_a_delay_notice_changes_nothing(
    app_with_bounces: tuple[Settings, TestClient[Any, Any]], smtp_server: SmtpRecorder, api_key: str
) -> None:
    settings, client = app_with_bounces
    r = await client.post("/v1/contacts", json=contact_payload(3), headers=bearer(api_key))
    contact_id = (await r.json())["id"]
    await drain(settings, clock=open_clock())
    before = await (await client.get(f"/v1/contacts/{contact_id}", headers=bearer(api_key))).json()

    # "Delayed, will retry": the relay still has it; no retry from us, no new attempt.
    await _bounce(settings, before["attempts"][0]["id"], "postfix_delayed_4.4.1.eml")
    await drain(settings, clock=open_clock())

    after = await (await client.get(f"/v1/contacts/{contact_id}", headers=bearer(api_key))).json()
    assert after["status"] == "sent" and len(after["attempts"]) == 1
    assert after["attempts"][0]["status"] == "sent"
    assert len(smtp_server.messages) == 1
