"""A bounce travels the whole way: a real DSN to our VERP return path over SMTP → the bounce receiver → the
contact log → the next decision for that debtor no longer uses the address."""

from __future__ import annotations

import re
import socket
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
    assert (contact["status"], contact["status_reason"]) == ("bounced", "hard_bounce")
    assert contact["attempts"][0]["status"] == "bounced"

    second = contact_payload(1, idempotency_key="eksempel-as/inv-1/reminder-2")
    r = await client.post("/v1/contacts", json=second, headers=bearer(api_key))
    next_id = (await r.json())["id"]
    await drain(settings, clock=open_clock())
    nxt = await (await client.get(f"/v1/contacts/{next_id}", headers=bearer(api_key))).json()
    assert nxt["decision"]["channel"] != "email"
    assert {"channel": "email", "reason": "no_usable_email"} in nxt["decision"]["rejected"]
    assert len(smtp_server.messages) == 1  # the bounced address got nothing more
