"""Letters and the digital mailbox end to end: worker → policy → rendering → the print provider's SFTP sandbox
or the Digipost sandbox, both real local servers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from orchestrator.identifiers import mask_national_id
from orchestrator.sandbox import digipost
from orchestrator.sandbox.print_provider import PrintProviderSandbox, serve_print_sandbox
from orchestrator.settings import Settings
from tests.conftest import bearer, drain
from tests.factories import contact_payload, national_id, open_clock, with_

RETURN_ADDRESS = "Eksempel Kreditt AS; Postboks 1; 0101 OSLO"
SENDER_ID = "123456"


@pytest.fixture
async def printer(tmp_path: Path) -> AsyncIterator[PrintProviderSandbox]:
    async with serve_print_sandbox(tmp_path / "print-provider") as sandbox:
        yield sandbox


@pytest.fixture
async def digipost_sandbox() -> AsyncIterator[tuple[digipost.DigipostSandbox, str, bytes]]:
    private_pem, public_pem = digipost.generate_key_pair()
    state = digipost.DigipostSandbox()
    state.add_sender(SENDER_ID, public_pem)
    async with digipost.serve(state) as url:
        yield state, url, private_pem


def _print_settings(settings: Settings, printer: PrintProviderSandbox) -> Settings:
    return settings.model_copy(
        update={
            "print_delivery": "sftp",
            "print_sftp_host": printer.host,
            "print_sftp_port": printer.port,
            "print_sftp_username": printer.username,
            "print_sftp_password": SecretStr(str(printer.password)),
            "print_sftp_known_hosts": printer.known_hosts_path,
            "print_batch_max_wait_s": 0.2,
            "letter_render_workers": 1,
        }
    )


def _paper_only(n: int, **changes: Any) -> dict[str, Any]:
    payload = contact_payload(n, debtor__phones=[], debtor__emails=[], debtor__electronic_notice_evidence=[])
    for path, value in changes.items():
        payload = with_(payload, path, value)
    return payload


async def test_a_letter_goes_to_the_print_provider_in_a_batch_with_its_reference(
    client: Any, settings: Settings, api_key: str, printer: PrintProviderSandbox
) -> None:
    configured = _print_settings(settings, printer)
    r = await client.post("/v1/contacts", json=_paper_only(1, kind="inkassovarsel"), headers=bearer(api_key))
    contact_id = (await r.json())["id"]

    await drain(configured, clock=open_clock())

    [batch] = printer.batches()
    [letter] = batch.letters
    contact = await (await client.get(f"/v1/contacts/{contact_id}", headers=bearer(api_key))).json()
    [attempt] = contact["attempts"]
    assert contact["status"] == "sent"
    assert (attempt["channel"], attempt["provider"]) == ("letter", "print")
    assert attempt["provider_message_id"] == f"{contact_id}.{attempt['id']}" == letter.reference
    assert letter.recipient_name == "Kari Nordmann 1"
    assert letter.path.read_bytes().startswith(b"%PDF")
    assert (letter.address_lines, letter.postal_code, letter.city) == (("Storgata 1",), "0155", "OSLO")
    assert attempt["address"] == "Storgata 1\n0155 OSLO"


async def test_a_statutory_notice_goes_to_the_digital_mailbox_with_print_if_unread(
    client: Any,
    settings: Settings,
    api_key: str,
    digipost_sandbox: tuple[digipost.DigipostSandbox, str, bytes],
) -> None:
    state, url, private_pem = digipost_sandbox
    fnr = national_id("060763", "120")
    state.add_user(fnr)
    configured = settings.model_copy(
        update={
            "digipost_url": url,
            "digipost_sender_id": SENDER_ID,
            "digipost_private_key": SecretStr(private_pem.decode()),
            "digipost_return_address": RETURN_ADDRESS,
        }
    )
    payload = _paper_only(2, kind="inkassovarsel", **{"debtor.national_id": fnr})
    r = await client.post("/v1/contacts", json=payload, headers=bearer(api_key))
    contact_id = (await r.json())["id"]

    clock = open_clock()
    await drain(configured, clock=clock)

    [message] = state.messages
    body = await (await client.get(f"/v1/contacts/{contact_id}", headers=bearer(api_key))).text()
    contact = await (await client.get(f"/v1/contacts/{contact_id}", headers=bearer(api_key))).json()
    [attempt] = contact["attempts"]
    assert contact["status"] == "sent"
    assert (attempt["channel"], attempt["provider"]) == ("digital_mailbox", "digipost")
    assert message.delivery == "digital"
    assert message.document.startswith(b"%PDF")
    assert message.print_if_unread_after is not None  # R3: digital first, paper if unread
    assert "inkasso" not in (message.subject or "").lower()  # the subject shows in alerts (R7)
    # R9: the national id identifies the recipient at Digipost and appears nowhere in our API or log.
    assert fnr not in body
    assert mask_national_id(fnr) in attempt["address"]
    timeline = await (await client.get("/v1/debtors/D-2/timeline", headers=bearer(api_key))).text()
    assert fnr not in timeline
    assert all(fnr not in request.path for request in state.requests)


async def test_a_non_user_of_the_digital_mailbox_gets_the_letter_printed_by_digipost(
    client: Any,
    settings: Settings,
    api_key: str,
    digipost_sandbox: tuple[digipost.DigipostSandbox, str, bytes],
) -> None:
    state, url, private_pem = digipost_sandbox
    configured = settings.model_copy(
        update={
            "digipost_url": url,
            "digipost_sender_id": SENDER_ID,
            "digipost_private_key": SecretStr(private_pem.decode()),
            "digipost_return_address": RETURN_ADDRESS,
        }
    )
    payload = _paper_only(3, **{"debtor.national_id": national_id("010190", "120")})
    r = await client.post("/v1/contacts", json=payload, headers=bearer(api_key))
    assert r.status == 202

    await drain(configured, clock=open_clock())

    [message] = state.messages
    assert message.delivery == "print"
    assert message.print_details is not None
    assert message.print_details["recipient"]["name"] == "Kari Nordmann 3"
    assert message.national_id is None  # a non-user's id is not sent with the letter at all
