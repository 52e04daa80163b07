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

from orchestrator.models import ChatLink, Debtor
from orchestrator.sandbox.demo import ALWAYS_OPEN_RULES
from orchestrator.settings import Settings
from tests.conftest import bearer, drain
from tests.factories import contact_payload, national_id, open_clock

URL = re.compile(r"https?://\S+/s/[A-Za-z0-9_-]+")


def _sms_texts(settings: Settings) -> list[dict[str, Any]]:
    lines: list[dict[str, Any]] = []
    for path in sorted(Path(settings.resolved_outbox_dir, "sms").glob("*.jsonl")):
        lines.extend(json.loads(line) for line in path.read_text(encoding="utf-8").splitlines())
    return lines


async def _send_by_sms(
    client: TestClient[Any, Any],
    settings: Settings,
    api_key: str,
    n: int,
    channel: str = "sms",
    overrides: dict[str, Any] | None = None,
    **kw: Any,
) -> str:
    payload = contact_payload(
        n, channel=channel, debtor__emails=[], debtor__electronic_notice_evidence=[], **(overrides or {})
    )
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
    # No reminder fee: 40 days ago the claim was not yet 14 days overdue (R10 would hold a fee back).
    expired = await _send_by_sms(
        client,
        old,
        api_key,
        3,
        overrides={"case__costs": []},
        clock=lambda: datetime.now(UTC) - timedelta(days=40),
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


async def test_an_address_request_links_only_to_an_address_form_that_reveals_nothing_of_the_claim(
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
    assert "kr" not in sms["text"]  # no amounts
    match = URL.search(sms["text"])
    assert match, sms["text"]
    path = urlsplit(match.group(0)).path
    async with sessions() as session:
        [link] = (await session.execute(select(ChatLink))).scalars().all()
    assert link.purpose == "address"

    page = await client.get(path)
    assert page.status == 200
    body = await page.text()
    assert "Oppgi postadressen din" in body
    for secret in ("Faktura", "Eksempel AS", "KID", "Kari", "Storgata", payload["case"]["kid"]):
        assert secret not in body  # whoever holds the link may not be the debtor
    assert not re.search(r"\d,\d\d|\bkr\b", body)  # no amounts

    # A bad postal code: the form again with what is wrong, nothing stored, the link still usable.
    bad = await client.post(path, data={"line1": "Nygata 5", "postal_code": "12a", "city": "Oslo"})
    assert bad.status == 422
    assert "Postnummer" in await bad.text()
    async with sessions() as session:
        debtor = await session.get(Debtor, "D-5")
    assert debtor is not None and not debtor.registry_addresses

    good = await client.post(path, data={"line1": "Nygata 5", "postal_code": "0159", "city": "Oslo"})
    assert good.status == 200
    assert "adressen er mottatt" in await good.text()
    async with sessions() as session:
        debtor = await session.get(Debtor, "D-5")
    assert debtor is not None
    [given] = debtor.registry_addresses
    assert (given["lines"], given["postal_code"], given["city"], given["source"]) == (
        ["Nygata 5"],
        "0159",
        "OSLO",
        "debtor",
    )
    timeline = await (await client.get("/v1/debtors/D-5/timeline", headers=bearer(api_key))).json()
    assert [e["source"] for e in timeline["items"] if e["type"] == "address_given"] == ["self_service"]

    # Spent: the same page as an unknown link, for reading and for writing.
    assert (await client.get(path)).status == 410
    again = await client.post(path, data={"line1": "Andre vei 1", "postal_code": "0159", "city": "Oslo"})
    assert again.status == 410
    async with sessions() as session:
        debtor = await session.get(Debtor, "D-5")
    assert debtor is not None and len(debtor.registry_addresses) == 1


async def test_a_claim_link_takes_no_address(
    client: TestClient[Any, Any], settings: Settings, api_key: str, sessions: Any
) -> None:
    url = await _send_by_sms(client, settings, api_key, 6, clock=open_clock())
    answer = await client.post(
        urlsplit(url).path, data={"line1": "Nygata 5", "postal_code": "0159", "city": "X"}
    )
    assert answer.status == 410
    async with sessions() as session:
        debtor = await session.get(Debtor, "D-6")
    assert debtor is not None and not debtor.registry_addresses


async def test_the_debtor_objects_on_the_self_service_page_and_the_case_is_held_at_once(
    client: TestClient[Any, Any], settings: Settings, api_key: str, sessions: Any
) -> None:
    url = await _send_by_sms(client, settings, api_key, 7, clock=open_clock())
    path = urlsplit(url).path
    # Another reminder for the same case waits in the queue.
    later = contact_payload(7, idempotency_key="eksempel-as/inv-7/reminder-2")
    waiting = (await (await client.post("/v1/contacts", json=later, headers=bearer(api_key))).json())["id"]

    page = await (await client.get(path)).text()
    assert "Jeg er uenig i kravet" in page
    fnr = national_id("060763", "120")
    answer = await client.post(f"{path}/dispute", data={"note": f"Betalt allerede, mitt fnr er {fnr}"})
    assert answer.status == 200
    assert "Innsigelsen er mottatt" in await answer.text()

    view = await (await client.get(f"/v1/contacts/{waiting}", headers=bearer(api_key))).json()
    assert (view["status"], view["status_reason"]) == ("held", "dispute")
    timeline = await (await client.get("/v1/debtors/D-7/timeline", headers=bearer(api_key))).json()
    [raised] = [e for e in timeline["items"] if e["type"] == "case_dispute_raised"]
    assert raised["source"] == "self_service"
    assert raised["detail"]["contacts_affected"] == [waiting]
    assert "Betalt allerede" in raised["detail"]["note"]
    assert fnr not in json.dumps(timeline)  # R9: redacted before it was stored
    # The page no longer offers the button: nothing more is sent until a person resolves it.
    assert "Jeg er uenig i kravet" not in await (await client.get(path)).text()


async def test_an_operator_flags_an_inbound_reply_as_a_dispute(
    client: TestClient[Any, Any], settings: Settings, api_key: str
) -> None:
    r = await client.post("/v1/contacts", json=contact_payload(8), headers=bearer(api_key))
    contact_id = (await r.json())["id"]
    event = {
        "type": "dispute_raised",
        "at": datetime.now(UTC).isoformat(),
        "source": "inbound_reply",
        "note": "SMS-svar: dette er ikke min regning",
    }
    r = await client.post("/v1/cases/C-8/events", json=event, headers=bearer(api_key))
    assert r.status == 201, await r.text()
    view = await (await client.get(f"/v1/contacts/{contact_id}", headers=bearer(api_key))).json()
    assert (view["status"], view["status_reason"]) == ("held", "dispute")
    timeline = await (await client.get("/v1/debtors/D-8/timeline", headers=bearer(api_key))).json()
    [raised] = [e for e in timeline["items"] if e["type"] == "case_dispute_raised"]
    assert raised["source"] == "inbound_reply"
