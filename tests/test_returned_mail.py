"""The returned-mail loop end to end: a letter comes back → the registries sandbox (Brreg, Maskinporten,
Folkeregisteret) → the same letter again to a new address, a held case, an address request or an operator
task. Real worker, real registry server, letters and SMS to the outbox."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from orchestrator import contact_log as store
from orchestrator.models import Debtor
from orchestrator.returned_mail import enqueue_returned_letter
from orchestrator.sandbox.registries import (
    RegistriesSandbox,
    address_entry,
    brreg_address,
    enhet,
    generate_client_key,
    person_document,
    serve,
    ukjent_bosted,
    vegadresse,
)
from orchestrator.settings import Settings
from tests.conftest import bearer, drain
from tests.factories import contact_payload, national_id, open_clock
from webhooks.ingress import event_rows, record_events
from webhooks.returns import CARRIER, ReturnRow, return_event

ORGNR = "923609016"
CLIENT_ID = "orchestrator-test-client"
KID = "orchestrator-test-key"
SCOPE = "skatteetaten:folkeregisteret/finans"
SECRET_STREET = "Hemmeligveien"


@pytest.fixture
async def registry(settings: Settings) -> AsyncIterator[tuple[RegistriesSandbox, Settings]]:
    private, public = generate_client_key()
    state = RegistriesSandbox(folkeregisteret_scope=SCOPE)
    state.add_client(CLIENT_ID, public, [SCOPE], key_id=KID)
    async with serve(state) as url:
        configured = settings.model_copy(
            update={
                "brreg_url": f"{url}/enhetsregisteret/api",
                "folkeregisteret_url": url,
                "folkeregisteret_package": "finans",
                "maskinporten_token_url": f"{url}/token",
                "maskinporten_audience": f"{url}/",
                "maskinporten_client_id": CLIENT_ID,
                "maskinporten_scope": SCOPE,
                "maskinporten_private_key": SecretStr(private.decode("ascii")),
                "maskinporten_key_id": KID,
            }
        )
        yield state, configured


def _company(n: int) -> dict[str, Any]:
    return contact_payload(
        n,
        debtor__type="organisation",
        debtor__name=f"Kunde {n} AS",
        debtor__organisation_number=ORGNR,
        debtor__phones=[],
        debtor__emails=[],
        debtor__electronic_notice_evidence=[],
    )


def _person(n: int, fnr: str, *, phones: list[str] | None = None) -> dict[str, Any]:
    return contact_payload(
        n,
        channel="letter",
        debtor__national_id=fnr,
        debtor__phones=phones or [],
        debtor__emails=[],
        debtor__electronic_notice_evidence=[],
    )


async def _contact(client: Any, api_key: str, contact_id: str) -> dict[str, Any]:
    response = await client.get(f"/v1/contacts/{contact_id}", headers=bearer(api_key))
    assert response.status == 200
    body: dict[str, Any] = await response.json()
    return body


async def _send(
    client: Any, api_key: str, settings: Settings, payload: dict[str, Any], clock: Any = None
) -> tuple[str, str]:
    r = await client.post("/v1/contacts", json=payload, headers=bearer(api_key))
    assert r.status == 202, await r.text()
    contact_id = (await r.json())["id"]
    await drain(settings, clock=clock or open_clock())
    contact = await _contact(client, api_key, contact_id)
    attempt = contact["attempts"][-1]
    assert (contact["status"], attempt["channel"]) == ("sent", "letter"), contact
    return contact_id, attempt["id"]


async def _return(
    sessions: Any,
    redis: Any,
    settings: Settings,
    contact_id: str,
    attempt_id: str,
    new_address: dict[str, Any] | None = None,
    clock: Any = None,
) -> None:
    row = ReturnRow(
        line=1,
        reference=f"{contact_id}.{attempt_id}",
        reason="returned_moved",
        returned_at=datetime.now(UTC),
        new_address=new_address,
    )
    await record_events(sessions, redis, settings.queue_name, event_rows(CARRIER, [return_event(row)], {}))
    await drain(settings, clock=clock or open_clock())


def _of_unknown_residence(state: RegistriesSandbox) -> str:
    """A person Folkeregisteret knows with ``ukjentBosted``: no address to be found."""
    fnr = national_id("010190", "120")
    state.add_person(
        fnr, person_document(fnr, bostedsadresse=[address_entry("ukjentBosted", ukjent_bosted())])
    )
    return fnr


def _pdfs(settings: Settings) -> list[Path]:
    return sorted((settings.resolved_outbox_dir / "letter").glob("*.pdf"))


async def _timeline(client: Any, api_key: str, debtor_id: str) -> list[dict[str, Any]]:
    response = await client.get(f"/v1/debtors/{debtor_id}/timeline", headers=bearer(api_key))
    assert response.status == 200
    body = await response.json()
    items: list[dict[str, Any]] = body["items"] if isinstance(body, dict) else body
    return items


async def _tasks(sessions: Any, debtor_id: str) -> list[tuple[str, str]]:
    async with sessions() as session:
        return [(t.kind, t.reason) for t in await store.operator_tasks(session, debtor_id=debtor_id)]


async def test_a_returned_company_letter_goes_again_to_the_brreg_address_and_never_a_third_time(
    client: Any,
    api_key: str,
    sessions: Any,
    redis: Any,
    registry: tuple[RegistriesSandbox, Settings],
) -> None:
    state, settings = registry
    state.add_organisation(
        enhet(ORGNR, "KUNDE 1 AS", postadresse=brreg_address(["Postboks 55"], "0101", "OSLO"))
    )
    contact_id, first = await _send(client, api_key, settings, _company(1))
    assert len(_pdfs(settings)) == 1

    await _return(sessions, redis, settings, contact_id, first)

    contact = await _contact(client, api_key, contact_id)
    assert [a["status"] for a in contact["attempts"]] == ["returned", "sent"]
    assert contact["attempts"][1]["address"] == "Postboks 55\n0101 OSLO"
    assert contact["status"] == "sent"
    assert len(_pdfs(settings)) == 2  # a new PDF to the new address
    timeline = await _timeline(client, api_key, "D-1")
    resent = [e for e in timeline if e["type"] == "address_updated_resent"]
    assert len(resent) == 1 and resent[0]["detail"]["source"] == "brreg"
    async with sessions() as session:
        debtor = await session.get(Debtor, "D-1")
        [found] = debtor.registry_addresses
    assert (found["lines"], found["postal_code"], found["source"]) == (["Postboks 55"], "0101", "brreg")
    assert found["found_at"]

    # The new address returns the letter too: Brreg still says Postboks 55, which is not new any more.
    second = contact["attempts"][1]["id"]
    await _return(sessions, redis, settings, contact_id, second)

    contact = await _contact(client, api_key, contact_id)
    assert [a["status"] for a in contact["attempts"]] == ["returned", "returned"]
    assert contact["status"] == "returned"
    assert len(_pdfs(settings)) == 2  # no third letter
    assert await _tasks(sessions, "D-1") == [("no_address_found", "no_new_address_no_electronic_channel")]


async def test_a_bankrupt_company_has_its_case_held_with_an_operator_task_and_nothing_resent(
    client: Any,
    api_key: str,
    sessions: Any,
    redis: Any,
    registry: tuple[RegistriesSandbox, Settings],
) -> None:
    state, settings = registry
    state.add_organisation(
        enhet(ORGNR, "KUNDE 2 AS", postadresse=brreg_address(["Postboks 9"], "0102", "OSLO"), konkurs=True)
    )
    contact_id, first = await _send(client, api_key, settings, _company(2))

    await _return(sessions, redis, settings, contact_id, first)

    contact = await _contact(client, api_key, contact_id)
    assert [a["status"] for a in contact["attempts"]] == ["returned"]
    assert len(_pdfs(settings)) == 1
    async with sessions() as session:
        case = await store.get_case(session, "C-2")
        debtor = await session.get(Debtor, "D-2")
    assert case is not None and (case.status, case.status_reason) == ("held", "bankruptcy")
    assert debtor is not None and not debtor.registry_addresses
    assert await _tasks(sessions, "D-2") == [("stop_collection", "bankruptcy")]
    timeline = await _timeline(client, api_key, "D-2")
    assert any(e["type"] == "case_held" for e in timeline)


async def test_a_person_with_a_graded_address_gets_an_operator_task_and_nothing_stored_or_shown(
    client: Any,
    api_key: str,
    sessions: Any,
    redis: Any,
    registry: tuple[RegistriesSandbox, Settings],
) -> None:
    state, settings = registry
    fnr = national_id("060763", "120")
    graded = vegadresse(SECRET_STREET, "7", "0170", "OSLO")
    state.add_person(
        fnr,
        person_document(
            fnr, bostedsadresse=[address_entry("vegadresse", graded, grading="strengtFortrolig")]
        ),
    )
    contact_id, first = await _send(client, api_key, settings, _person(3, fnr))

    await _return(sessions, redis, settings, contact_id, first)

    contact = await _contact(client, api_key, contact_id)
    assert [a["status"] for a in contact["attempts"]] == ["returned"]
    assert len(_pdfs(settings)) == 1
    assert await _tasks(sessions, "D-3") == [("graded_address", "graded_address")]
    async with sessions() as session:
        debtor = await session.get(Debtor, "D-3")
    assert debtor is not None and not debtor.registry_addresses
    shown = json.dumps(contact) + json.dumps(await _timeline(client, api_key, "D-3"))
    listed = await (await client.get("/v1/contacts?debtor_id=D-3", headers=bearer(api_key))).text()
    for text in (shown, listed, json.dumps(debtor.contact_points)):
        assert SECRET_STREET not in text
        assert fnr not in text
    assert "graded_address" in shown
    assert any(r.route == "folkeregisteret" and r.status == 200 for r in state.requests)


async def test_unknown_residence_sends_an_address_request_by_sms(
    client: Any,
    api_key: str,
    sessions: Any,
    redis: Any,
    registry: tuple[RegistriesSandbox, Settings],
) -> None:
    state, settings = registry
    fnr = _of_unknown_residence(state)
    # An inkassovarsel: no SMS may carry it (R3), so it waits for a postal address.
    varsel = {**_person(4, fnr, phones=["+4791000004"]), "kind": "inkassovarsel"}
    contact_id, first = await _send(client, api_key, settings, varsel)

    await _return(sessions, redis, settings, contact_id, first)

    async with sessions() as session:
        requests = await store.list_contacts(session, debtor_id="D-4", kind="address_request")
    [request] = requests
    assert request.idempotency_key == f"address-request:{contact_id}"
    assert (request.status, request.channel) == ("sent", "sms")
    lines = [
        json.loads(line)
        for path in (settings.resolved_outbox_dir / "sms").glob("*.jsonl")
        for line in path.read_text(encoding="utf-8").splitlines()
    ]
    [sms] = [line for line in lines if line["contact_id"] == request.id]
    assert sms["to"] == "+4791000004"
    assert fnr not in sms["text"]
    assert len(_pdfs(settings)) == 1
    timeline = await _timeline(client, api_key, "D-4")
    assert any(
        e["type"] == "returned_mail" and e["detail"].get("reason") == "unknown_residence" for e in timeline
    )
    assert any(e["type"] == "address_request" for e in timeline)
    assert await _tasks(sessions, "D-4") == []

    # The SMS links to an address form; the debtor's answer sends the returned letter again, there.
    link = re.search(r"https?://\S+(/s/[A-Za-z0-9_-]+)", sms["text"])
    assert link, sms["text"]
    answer = await client.post(
        link.group(1), data={"line1": "Nygata 4", "postal_code": "0159", "city": "Oslo"}
    )
    assert answer.status == 200
    await drain(settings, clock=open_clock())
    contact = await _contact(client, api_key, contact_id)
    assert [a["address"] for a in contact["attempts"]] == ["Storgata 4\n0155 OSLO", "Nygata 4\n0159 OSLO"]
    assert len(_pdfs(settings)) == 2
    resent = [e for e in await _timeline(client, api_key, "D-4") if e["type"] == "address_updated_resent"]
    assert [(e["source"], e["detail"]["source"]) for e in resent] == [("self_service", "debtor")]


async def test_a_posten_new_address_is_used_and_a_second_run_of_the_job_does_nothing(
    client: Any,
    api_key: str,
    sessions: Any,
    redis: Any,
    registry: tuple[RegistriesSandbox, Settings],
) -> None:
    _, settings = registry
    unconfigured = settings.model_copy(update={"folkeregisteret_package": None})
    contact_id, first = await _send(client, api_key, unconfigured, _person(5, national_id("010190", "120")))
    new_address = {"lines": ["Nygata 5"], "postal_code": "0159", "city": "OSLO", "country": "NO"}

    await _return(sessions, redis, unconfigured, contact_id, first, new_address=new_address)

    contact = await _contact(client, api_key, contact_id)
    assert [a["address"] for a in contact["attempts"]] == ["Storgata 5\n0155 OSLO", "Nygata 5\n0159 OSLO"]
    timeline = await _timeline(client, api_key, "D-5")
    skipped = [e for e in timeline if e["type"] == "returned_mail" and e["detail"]["step"] == "skipped"]
    assert [e["detail"]["reason"] for e in skipped] == ["not_configured"]
    async with sessions() as session:
        debtor = await session.get(Debtor, "D-5")
    assert debtor is not None and [a["source"] for a in debtor.registry_addresses] == ["posten"]

    # arq delivers at least once: the same job again finds the letter claimed and does nothing.
    await enqueue_returned_letter(redis, unconfigured.queue_name, first)
    await drain(unconfigured, clock=open_clock())

    assert await _timeline(client, api_key, "D-5") == timeline
    assert len((await _contact(client, api_key, contact_id))["attempts"]) == 2
    assert len(_pdfs(unconfigured)) == 2


async def test_an_address_from_posten_s_update_file_is_stored_and_used_when_another_letter_returns(
    client: Any,
    api_key: str,
    sessions: Any,
    redis: Any,
    registry: tuple[RegistriesSandbox, Settings],
) -> None:
    _, settings = registry
    unconfigured = settings.model_copy(update={"folkeregisteret_package": None})
    fnr = national_id("010190", "120")
    clock = open_clock()  # one clock for the whole story: the Posten address must be newer than the letter
    forwarded_id, forwarded = await _send(client, api_key, unconfigured, _person(6, fnr), clock)
    second = _person(6, fnr)
    second["idempotency_key"] = "eksempel-as/inv-6/second-letter"
    returned_id, returned = await _send(client, api_key, unconfigured, second, clock)
    new_address = {"lines": ["Nygata 6"], "postal_code": "0159", "city": "OSLO", "country": "NO"}

    # Posten's EA file: the first letter was forwarded to a new address (it did not come back).
    row = ReturnRow(
        line=1,
        reference=f"{forwarded_id}.{forwarded}",
        reason="forwarded_new_address",
        returned_at=datetime.now(UTC),
        new_address=new_address,
    )
    await record_events(sessions, redis, settings.queue_name, event_rows(CARRIER, [return_event(row)], {}))
    await drain(unconfigured, clock=clock)

    assert (await _contact(client, api_key, forwarded_id))["status"] == "sent"
    async with sessions() as session:
        debtor = await session.get(Debtor, "D-6")
    assert debtor is not None
    [stored] = debtor.registry_addresses
    assert (stored["lines"], stored["source"]) == (["Nygata 6"], "posten")
    timeline = await _timeline(client, api_key, "D-6")
    assert [e["detail"]["source"] for e in timeline if e["type"] == "address_stored"] == ["posten"]

    # The second letter comes back without an address of its own: the Posten file's address is used.
    await _return(sessions, redis, unconfigured, returned_id, returned, clock=clock)

    contact = await _contact(client, api_key, returned_id)
    assert [a["address"] for a in contact["attempts"]] == ["Storgata 6\n0155 OSLO", "Nygata 6\n0159 OSLO"]
    timeline = await _timeline(client, api_key, "D-6")
    steps = [(e["detail"]["step"], e["detail"]["reason"]) for e in timeline if e["type"] == "returned_mail"]
    assert ("address_file", "address_found") in steps
    assert len(_pdfs(unconfigured)) == 3


async def test_a_returned_reminder_goes_on_by_sms_and_asks_for_the_address(
    client: Any,
    api_key: str,
    sessions: Any,
    redis: Any,
    registry: tuple[RegistriesSandbox, Settings],
) -> None:
    state, settings = registry
    fnr = _of_unknown_residence(state)
    contact_id, first = await _send(client, api_key, settings, _person(7, fnr, phones=["+4791000007"]))

    await _return(sessions, redis, settings, contact_id, first)

    # Fallback chains: the reminder itself reaches the debtor by SMS ...
    contact = await _contact(client, api_key, contact_id)
    assert [(a["channel"], a["status"]) for a in contact["attempts"]] == [
        ("letter", "returned"),
        ("sms", "sent"),
    ]
    assert "fallback:letter" in contact["decision"]["reasons"]
    timeline = await _timeline(client, api_key, "D-7")
    [fallback] = [e for e in timeline if e["type"] == "fallback"]
    assert fallback["detail"]["reason"] == "returned_no_new_address"
    # ... and the address request asks for the postal address for next time.
    async with sessions() as session:
        [request] = await store.list_contacts(session, debtor_id="D-7", kind="address_request")
    assert (request.status, request.channel) == ("sent", "sms")
    assert len(_pdfs(settings)) == 1
