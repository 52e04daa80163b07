"""Chat links: an opaque, expiring, revocable token that opens the debtor's case and reveals nothing else."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from aiohttp.test_utils import TestClient
from sqlalchemy import select

from orchestrator.models import ChatLink
from orchestrator.sandbox.demo import ALWAYS_OPEN_RULES
from orchestrator.settings import Settings
from tests.conftest import bearer, drain
from tests.factories import contact_payload, open_clock

URL = re.compile(r"https?://\S+/s/[A-Za-z0-9_-]+")


def _sms_texts(settings: Settings) -> list[dict[str, Any]]:
    lines: list[dict[str, Any]] = []
    for path in sorted(Path(settings.resolved_outbox_dir, "sms").glob("*.jsonl")):
        lines.extend(json.loads(line) for line in path.read_text(encoding="utf-8").splitlines())
    return lines


async def _send_by_sms(
    client: TestClient[Any, Any], settings: Settings, api_key: str, n: int, channel: str = "sms", **kw: Any
) -> str:
    payload = contact_payload(n, channel=channel, debtor__emails=[], debtor__electronic_notice_evidence=[])
    r = await client.post("/v1/contacts", json=payload, headers=bearer(api_key))
    assert r.status == 202, await r.text()
    await drain(settings, **kw)
    [sms] = [s for s in _sms_texts(settings) if s["contact_id"] == (await r.json())["id"]]
    match = URL.search(sms["text"])
    assert match, sms["text"]
    return match.group(0)


async def test_link_in_an_sms_opens_the_right_case_and_is_logged(
    client: TestClient[Any, Any], settings: Settings, api_key: str, sessions: Any
) -> None:
    url = await _send_by_sms(client, settings, api_key, 1, clock=open_clock())
    path = urlsplit(url).path
    payload = contact_payload(1)
    # The URL carries no personal data: just an opaque token.
    for personal in (
        "D-1",
        "Kari",
        payload["debtor"]["phones"][0].lstrip("+"),
        payload["case"]["kid"],
        "C-1",
    ):
        assert personal not in url

    page = await client.get(path)
    body = await page.text()
    assert page.status == 200
    assert page.headers["Cache-Control"] == "no-store"
    assert page.headers["Referrer-Policy"] == "no-referrer"
    for needle in ("Faktura 1001", "Eksempel AS", "1 285,00 kr", payload["case"]["kid"], "8601 11 17947"):
        assert needle in body
    await client.get(path)

    timeline = await (await client.get("/v1/debtors/D-1/timeline", headers=bearer(api_key))).json()
    opened = [item for item in timeline["items"] if item["type"] == "self_service_opened"]
    assert [item["detail"]["opened"] for item in opened] == [1, 2]
    async with sessions() as session:
        [link] = (await session.execute(select(ChatLink))).scalars().all()
    token = path.rsplit("/", 1)[1]
    assert link.opened_count == 2
    assert token not in link.token_hash  # only the hash is stored
    assert link.case_id == "C-1"


async def test_chat_link_channel_sends_the_link_text_by_sms(
    client: TestClient[Any, Any], settings: Settings, api_key: str, sessions: Any
) -> None:
    url = await _send_by_sms(client, settings, api_key, 2, channel="chat_link", clock=open_clock())
    [sms] = _sms_texts(settings)
    assert sms["text"].endswith(url)
    assert "Se kravet og betal her" in sms["text"]
    r = await client.get("/v1/contacts", headers=bearer(api_key))
    [contact] = (await r.json())["items"]
    assert contact["channel"] == "chat_link"


async def test_expired_revoked_and_unknown_links_show_the_same_page_and_reveal_nothing(
    client: TestClient[Any, Any], settings: Settings, api_key: str, sessions: Any
) -> None:
    # Sent 40 days ago (windows open around the clock, so the old date is sendable): its link has expired.
    old = settings.model_copy(update={"rules_file": ALWAYS_OPEN_RULES})
    expired = await _send_by_sms(
        client, old, api_key, 3, clock=lambda: datetime.now(UTC) - timedelta(days=40)
    )
    revoked = await _send_by_sms(client, settings, api_key, 4, clock=open_clock())
    r = await client.post(
        "/v1/cases/C-4/events",
        json={"type": "paid_in_full", "at": datetime.now(UTC).isoformat()},
        headers=bearer(api_key),
    )
    assert r.status == 201

    bodies = []
    for path in (urlsplit(expired).path, urlsplit(revoked).path, "/s/" + "A" * 32):
        page = await client.get(path)
        assert page.status == 410
        bodies.append(await page.text())
    assert bodies[0] == bodies[1] == bodies[2]
    assert "Lenken virker ikke lenger" in bodies[0]
    for secret in ("Faktura", "Eksempel AS", "kr", "KID", "Kari"):
        assert secret not in bodies[0]


async def test_an_address_request_carries_no_link_because_a_stranger_may_read_it(
    client: TestClient[Any, Any], settings: Settings, api_key: str, sessions: Any
) -> None:
    payload = contact_payload(
        5, kind="address_request", channel="sms", debtor__emails=[], debtor__electronic_notice_evidence=[]
    )
    r = await client.post("/v1/contacts", json=payload, headers=bearer(api_key))
    assert r.status == 202
    await drain(settings, clock=open_clock())

    [sms] = _sms_texts(settings)
    assert "kom i retur" in sms["text"]
    assert not URL.search(sms["text"])
    assert "kr" not in sms["text"]  # no amounts either
    async with sessions() as session:
        assert (await session.execute(select(ChatLink))).scalars().all() == []
