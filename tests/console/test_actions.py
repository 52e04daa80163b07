"""Operators' actions end to end: the real app (API and console), a real arq worker, a real SMTP server, the
real database. Each action is posted as the debtor page's form posts it; what the worker then sends (or does
not send) is counted where it arrives."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from orchestrator import contact_log as store
from orchestrator.console.actions import case_actions, may_retry, needs_settlement
from orchestrator.models import Case, ConsoleAudit, Contact, Debtor, OperatorTask
from orchestrator.settings import Settings
from tests.conftest import SmtpRecorder, bearer, drain
from tests.console.conftest import Console, signed_in
from tests.factories import contact_payload, open_clock
from webhooks.ingress import event_rows, record_events
from webhooks.returns import CARRIER, ReturnRow, return_event

# ------------------------------------------------------------------------------------------------ helpers


async def enqueue(console: Console, api_key: str, payload: dict[str, Any]) -> str:
    r = await console.client.post("/v1/contacts", json=payload, headers=bearer(api_key))
    assert r.status == 202, await r.text()
    return str((await r.json())["id"])


async def contact_of(console: Console, api_key: str, contact_id: str) -> dict[str, Any]:
    r = await console.client.get(f"/v1/contacts/{contact_id}", headers=bearer(api_key))
    assert r.status == 200, await r.text()
    body: dict[str, Any] = await r.json()
    return body


async def case_event(console: Console, api_key: str, case_id: str, type_: str) -> None:
    event = {"type": type_, "at": datetime.now(UTC).isoformat()}
    r = await console.client.post(f"/v1/cases/{case_id}/events", json=event, headers=bearer(api_key))
    assert r.status == 201, await r.text()


async def timeline(console: Console, api_key: str, debtor_id: str, type_: str) -> list[dict[str, Any]]:
    r = await console.client.get(f"/v1/debtors/{debtor_id}/timeline", headers=bearer(api_key))
    assert r.status == 200, await r.text()
    return [item for item in (await r.json())["items"] if item["type"] == type_]


async def operator_entries(console: Console, api_key: str, debtor_id: str) -> list[dict[str, Any]]:
    r = await console.client.get(f"/v1/debtors/{debtor_id}/timeline", headers=bearer(api_key))
    return [item for item in (await r.json())["items"] if item["type"].startswith("operator_")]


async def ref_of(sessions: Any, debtor_id: str) -> str:
    async with sessions() as session:
        debtor = await session.get(Debtor, debtor_id)
    assert isinstance(debtor, Debtor)
    return debtor.ref


async def case_status(sessions: Any, case_id: str) -> tuple[str, str | None]:
    async with sessions() as session:
        case = await store.get_case(session, case_id)
        assert case is not None
        return case.status, case.status_reason


async def acting(console_factory: Any, username: str) -> Console:
    """Signed in, with a console page loaded (its form token is what the debtor page's forms carry)."""
    console = await signed_in(console_factory, username)
    await console.page("/console/tasks")
    return console


async def refused(response: Any, status: int, *words: str) -> None:
    text = await response.text()
    assert response.status == status, text
    assert "Nothing was changed" in text or status == 403, text
    for word in words:
        assert word in text, text


def outbox_letters(settings: Settings) -> list[Path]:
    return sorted((settings.resolved_outbox_dir / "letter").glob("*.pdf"))


def letter_debtor(n: int) -> dict[str, Any]:
    """A person reachable only by letter (no national id: no registry to ask after a return)."""
    return contact_payload(
        n, channel="letter", debtor__phones=[], debtor__emails=[], debtor__electronic_notice_evidence=[]
    )


async def return_letter(
    sessions: Any, redis: Any, settings: Settings, contact_id: str, attempt_id: str
) -> None:
    """The print provider reports the letter back (no new address), and the worker handles it."""
    row = ReturnRow(
        line=1, reference=f"{contact_id}.{attempt_id}", reason="returned_moved", returned_at=datetime.now(UTC)
    )
    await record_events(sessions, redis, settings.queue_name, event_rows(CARRIER, [return_event(row)], {}))
    await drain(settings, clock=open_clock())


async def returned_letter_task(
    console: Console, api_key: str, sessions: Any, redis: Any, settings: Settings, n: int
) -> tuple[str, str]:
    """A letter sent, returned, and no address found: (contact id, the operator task's id)."""
    contact_id = await enqueue(console, api_key, letter_debtor(n))
    await drain(settings, clock=open_clock())
    contact = await contact_of(console, api_key, contact_id)
    assert (contact["status"], contact["attempts"][-1]["channel"]) == ("sent", "letter"), contact
    await return_letter(sessions, redis, settings, contact_id, contact["attempts"][-1]["id"])
    async with sessions() as session:
        [task] = await store.operator_tasks(session, debtor_id=f"D-{n}")
    assert (task.kind, task.reason, task.resolved_at) == (
        "no_address_found",
        "no_new_address_no_electronic_channel",
        None,
    )
    assert (await contact_of(console, api_key, contact_id))["status"] == "returned"
    return contact_id, task.id


# ---------------------------------------------------------------------------- which forms a page offers


@pytest.mark.parametrize(
    ("status", "reason", "settle", "retry"),
    [
        ("sending", "needs_reconciliation", True, False),
        ("sent", "no_delivery_report", True, False),
        ("sent", None, False, False),
        ("delivered", None, False, False),  # a report settled it
        ("sent", "operator_confirmed_sent", False, False),  # settled already
        ("sending", None, False, False),  # a worker has it in hand right now
        ("sending", "no_delivery_report", False, False),
        ("failed", "smtp_5xx", False, True),
        ("bounced", "hard_bounce", False, True),
        ("expired", None, False, True),
        ("returned", "returned_moved", False, True),
        ("queued", "operator_retry", False, False),
        ("held", "dispute", False, False),
        ("suppressed", "no_reachable_channel", False, False),
        ("cancelled", "paid_in_full", False, False),
    ],
)
def test_which_contacts_may_be_settled_or_retried(
    status: str, reason: str | None, settle: bool, retry: bool
) -> None:
    contact = Contact(status=status, status_reason=reason)
    assert (needs_settlement(contact), may_retry(contact)) == (settle, retry)


@pytest.mark.parametrize(
    ("status", "reason", "actions"),
    [
        ("open", None, ["hold_case"]),
        ("held", "dispute", ["resolve_dispute"]),
        ("held", "operator", ["release_hold"]),
        ("held", "bankruptcy", []),  # R8: upstream's to lift, not an operator's
        ("closed", "paid_in_full", []),
    ],
)
def test_which_case_actions_apply(status: str, reason: str | None, actions: list[str]) -> None:
    assert case_actions(Case(status=status, status_reason=reason)) == actions


# ----------------------------------------------------------------------------------------------- disputes


async def test_an_operator_resolves_a_dispute_and_the_held_contact_is_sent_once(
    console_factory: Any,
    operators: dict[str, str],
    api_key: str,
    sessions: Any,
    smtp_settings: Settings,
    smtp_server: SmtpRecorder,
) -> None:
    otto = await acting(console_factory, "otto")
    contact_id = await enqueue(otto, api_key, contact_payload(1))
    await case_event(otto, api_key, "C-1", "dispute_raised")
    held = await contact_of(otto, api_key, contact_id)
    assert (held["status"], held["status_reason"]) == ("held", "dispute")
    await drain(smtp_settings, clock=open_clock())
    assert smtp_server.messages == []  # R4: nothing while the dispute stands

    response = await otto.post(
        "/console/actions/resolve-dispute",
        {"case_id": "C-1", "note": "Checked the invoice with the creditor: the claim is right."},
        allow_redirects=False,
    )
    assert response.status == 303, await response.text()
    assert (
        response.headers["Location"]
        == f"/console/debtors/{await ref_of(sessions, 'D-1')}?done=dispute_resolved"
    )
    assert await case_status(sessions, "C-1") == ("open", None)

    await drain(smtp_settings, clock=open_clock())
    assert smtp_server.per_contact() == {contact_id: 1}
    assert (await contact_of(otto, api_key, contact_id))["status"] == "sent"

    [entry] = await timeline(otto, api_key, "D-1", "operator_dispute_resolved")
    assert (entry["source"], entry["status"]) == ("operator", "open")
    assert entry["detail"]["operator"] == "otto"
    assert entry["detail"]["role"] == "operator"
    assert entry["detail"]["note"] == "Checked the invoice with the creditor: the claim is right."
    assert entry["detail"]["contacts"] == [contact_id]
    [case_entry] = await timeline(otto, api_key, "D-1", "case_dispute_resolved")
    assert (case_entry["source"], case_entry["detail"]["operator"]) == ("operator", "otto")
    async with sessions() as session:
        audit = list(
            (await session.execute(select(ConsoleAudit).where(ConsoleAudit.debtor_id == "D-1"))).scalars()
        )
    assert [(a.operator_id, a.action) for a in audit] == [(operators["otto"], "dispute_resolved")]

    # The page was stale: the dispute is resolved already.
    again = await otto.post("/console/actions/resolve-dispute", {"case_id": "C-1"})
    await refused(again, 409, "not held for a dispute")
    assert len(await operator_entries(otto, api_key, "D-1")) == 1


async def test_a_viewer_cannot_resolve_a_dispute_nor_can_a_form_without_its_csrf_token(
    console_factory: Any, operators: dict[str, str], api_key: str, sessions: Any
) -> None:
    vera = await acting(console_factory, "vera")
    contact_id = await enqueue(vera, api_key, contact_payload(2))
    await case_event(vera, api_key, "C-2", "dispute_raised")

    response = await vera.post("/console/actions/resolve-dispute", {"case_id": "C-2", "note": "ok"})
    await refused(response, 403, "operator", "Nothing was changed")

    otto = await acting(console_factory, "otto")
    response = await otto.post("/console/actions/resolve-dispute", {"case_id": "C-2"}, csrf=False)
    await refused(response, 403, "CSRF", "Nothing was changed")

    assert await case_status(sessions, "C-2") == ("held", "dispute")
    held = await contact_of(otto, api_key, contact_id)
    assert (held["status"], held["status_reason"]) == ("held", "dispute")
    assert await operator_entries(otto, api_key, "D-2") == []
    async with sessions() as session:
        actions = [a.action for a in (await session.execute(select(ConsoleAudit))).scalars()]
    assert "refused" in actions and "csrf_refused" in actions
    assert "dispute_resolved" not in actions


# ------------------------------------------------------------------------------------------------- holds


async def test_an_operators_hold_stops_sending_until_it_is_released(
    console_factory: Any,
    operators: dict[str, str],
    api_key: str,
    sessions: Any,
    smtp_settings: Settings,
    smtp_server: SmtpRecorder,
) -> None:
    otto = await acting(console_factory, "otto")
    contact_id = await enqueue(otto, api_key, contact_payload(3))

    response = await otto.post("/console/actions/hold-case", {"case_id": "C-3", "note": "  "})
    await refused(response, 400, "note is required")
    assert await case_status(sessions, "C-3") == ("open", None)

    response = await otto.post(
        "/console/actions/hold-case",
        {"case_id": "C-3", "note": "The debtor is in hospital; wait for the family's call."},
        allow_redirects=False,
    )
    assert response.status == 303, await response.text()
    assert response.headers["Location"].endswith("?done=case_held")
    assert await case_status(sessions, "C-3") == ("held", "operator")
    held = await contact_of(otto, api_key, contact_id)
    assert (held["status"], held["status_reason"]) == ("held", "operator")

    await drain(smtp_settings, clock=open_clock())
    assert smtp_server.messages == []
    await refused(
        await otto.post("/console/actions/hold-case", {"case_id": "C-3", "note": "again"}),
        409,
        "held by an operator",
    )

    response = await otto.post(
        "/console/actions/release-hold", {"case_id": "C-3", "note": "Family called."}, allow_redirects=False
    )
    assert response.status == 303, await response.text()
    assert response.headers["Location"].endswith("?done=hold_released")
    await drain(smtp_settings, clock=open_clock())
    assert smtp_server.per_contact() == {contact_id: 1}

    entries = await operator_entries(otto, api_key, "D-3")
    assert [(e["type"], e["detail"]["operator"], e["detail"]["note"]) for e in entries] == [
        ("operator_case_held", "otto", "The debtor is in hospital; wait for the family's call."),
        ("operator_hold_released", "otto", "Family called."),
    ]


async def test_an_operators_release_never_lifts_a_dispute(
    console_factory: Any,
    operators: dict[str, str],
    api_key: str,
    sessions: Any,
    smtp_settings: Settings,
    smtp_server: SmtpRecorder,
) -> None:
    otto = await acting(console_factory, "otto")
    contact_id = await enqueue(otto, api_key, contact_payload(4))
    await case_event(otto, api_key, "C-4", "dispute_raised")

    await refused(
        await otto.post("/console/actions/release-hold", {"case_id": "C-4"}), 409, "never lifts a dispute"
    )
    await refused(
        await otto.post("/console/actions/hold-case", {"case_id": "C-4", "note": "x"}), 409, "dispute"
    )
    missing = await otto.post("/console/actions/release-hold", {"case_id": "C-NOPE"})
    await refused(missing, 404, "no case")

    assert await case_status(sessions, "C-4") == ("held", "dispute")
    await drain(smtp_settings, clock=open_clock())
    assert smtp_server.messages == []
    assert (await contact_of(otto, api_key, contact_id))["status"] == "held"
    assert await operator_entries(otto, api_key, "D-4") == []


# ----------------------------------------------------------------------------------------------- retries


async def test_a_failed_contact_retried_by_two_operators_at_once_is_sent_once(
    console_factory: Any,
    operators: dict[str, str],
    api_key: str,
    sessions: Any,
    smtp_settings: Settings,
    smtp_server: SmtpRecorder,
) -> None:
    otto = await acting(console_factory, "otto")
    ada = await acting(console_factory, "ada")
    # Reachable by e-mail only, so that no other channel takes over when the relay refuses it.
    smtp_server.scripted = ["550 5.7.1 Relay refused for now"]
    contact_id = await enqueue(otto, api_key, contact_payload(5, debtor__addresses=[], debtor__phones=[]))
    await drain(smtp_settings, clock=open_clock())
    failed = await contact_of(otto, api_key, contact_id)
    assert (failed["status"], failed["status_reason"]) == ("failed", "smtp_5xx")
    assert smtp_server.messages == []

    form = {"contact_id": contact_id, "note": "The relay's block is lifted."}
    first, second = await asyncio.gather(
        otto.post("/console/actions/retry-contact", form, allow_redirects=False),
        ada.post("/console/actions/retry-contact", form, allow_redirects=False),
    )
    assert sorted([first.status, second.status]) == [303, 409]
    loser = second if first.status == 303 else first
    await refused(loser, 409)
    winner = first if first.status == 303 else second
    assert winner.headers["Location"].endswith("?done=contact_retried")
    queued = await contact_of(otto, api_key, contact_id)
    assert (queued["status"], queued["status_reason"]) == ("queued", "operator_retry")

    await drain(smtp_settings, clock=open_clock())
    await drain(smtp_settings, clock=open_clock())
    assert smtp_server.per_contact() == {contact_id: 1}
    sent = await contact_of(otto, api_key, contact_id)
    assert sent["status"] == "sent"
    assert [(a["status"], a["status_reason"]) for a in sent["attempts"]] == [
        ("failed", "smtp_5xx"),
        ("sent", None),
    ]
    [entry] = await timeline(otto, api_key, "D-5", "operator_contact_retried")
    assert entry["detail"]["operator"] in ("otto", "ada")
    assert (entry["detail"]["previous_status"], entry["detail"]["note"]) == (
        "failed",
        "The relay's block is lifted.",
    )

    # Sent now: nothing to retry.
    await refused(await otto.post("/console/actions/retry-contact", {"contact_id": contact_id}), 409, "sent")


async def test_a_contact_of_a_held_case_is_not_retried(
    console_factory: Any,
    operators: dict[str, str],
    api_key: str,
    smtp_settings: Settings,
    smtp_server: SmtpRecorder,
) -> None:
    otto = await acting(console_factory, "otto")
    smtp_server.scripted = ["550 5.1.1 No such user"]
    contact_id = await enqueue(otto, api_key, contact_payload(6, debtor__addresses=[], debtor__phones=[]))
    await drain(smtp_settings, clock=open_clock())
    assert (await contact_of(otto, api_key, contact_id))["status"] == "failed"
    await case_event(otto, api_key, "C-6", "dispute_raised")

    response = await otto.post("/console/actions/retry-contact", {"contact_id": contact_id})
    await refused(response, 409, "held for a dispute")
    await drain(smtp_settings, clock=open_clock())
    assert smtp_server.messages == []
    assert (await contact_of(otto, api_key, contact_id))["status"] == "failed"
    unknown = await otto.post("/console/actions/retry-contact", {"contact_id": "0" * 26})
    await refused(unknown, 404, "no contact")


# ------------------------------------------------------------------------------------------- settlement


async def _awaiting_reconciliation(
    console: Console, api_key: str, smtp_settings: Settings, smtp_server: SmtpRecorder, n: int
) -> str:
    """The relay takes the message and the connection drops before its answer: nobody knows if it left."""
    smtp_server.hang_up_in_data = True
    contact_id = await enqueue(console, api_key, contact_payload(n))
    await drain(smtp_settings, clock=open_clock())
    await drain(smtp_settings, clock=open_clock())
    contact = await contact_of(console, api_key, contact_id)
    assert (contact["status"], contact["status_reason"]) == ("sending", "needs_reconciliation")
    assert smtp_server.per_contact() == {contact_id: 1}
    return contact_id


async def test_settled_as_sent_a_contact_is_never_sent_again(
    console_factory: Any,
    operators: dict[str, str],
    api_key: str,
    smtp_settings: Settings,
    smtp_server: SmtpRecorder,
) -> None:
    otto = await acting(console_factory, "otto")
    contact_id = await _awaiting_reconciliation(otto, api_key, smtp_settings, smtp_server, 7)

    await refused(
        await otto.post("/console/actions/settle", {"contact_id": contact_id, "outcome": "maybe"}),
        400,
        "outcome",
    )
    response = await otto.post(
        "/console/actions/settle",
        {"contact_id": contact_id, "outcome": "sent", "note": "The relay's log shows it accepted."},
        allow_redirects=False,
    )
    assert response.status == 303, await response.text()
    assert response.headers["Location"].endswith("?done=settled")
    contact = await contact_of(otto, api_key, contact_id)
    assert (contact["status"], contact["status_reason"]) == ("sent", "operator_confirmed_sent")
    assert [(a["status"], a["status_reason"]) for a in contact["attempts"]] == [
        ("sent", "operator_confirmed_sent")
    ]

    await drain(smtp_settings, clock=open_clock())
    assert smtp_server.per_contact() == {contact_id: 1}
    await refused(
        await otto.post("/console/actions/settle", {"contact_id": contact_id, "outcome": "not_sent"}),
        409,
        "does not wait to be settled",
    )
    [entry] = await timeline(otto, api_key, "D-7", "operator_settled")
    assert (entry["detail"]["operator"], entry["detail"]["outcome"]) == ("otto", "sent")
    assert entry["detail"]["note"] == "The relay's log shows it accepted."


async def test_settled_as_not_sent_by_two_operators_at_once_a_contact_is_sent_exactly_once_more(
    console_factory: Any,
    operators: dict[str, str],
    api_key: str,
    smtp_settings: Settings,
    smtp_server: SmtpRecorder,
) -> None:
    otto = await acting(console_factory, "otto")
    ada = await acting(console_factory, "ada")
    contact_id = await _awaiting_reconciliation(otto, api_key, smtp_settings, smtp_server, 8)

    form = {"contact_id": contact_id, "outcome": "not_sent", "note": "The relay has no trace of it."}
    first, second = await asyncio.gather(
        otto.post("/console/actions/settle", form, allow_redirects=False),
        ada.post("/console/actions/settle", form, allow_redirects=False),
    )
    assert sorted([first.status, second.status]) == [303, 409]

    await drain(smtp_settings, clock=open_clock())
    await drain(smtp_settings, clock=open_clock())
    assert smtp_server.per_contact() == {contact_id: 2}  # the lost one, and exactly one after settling
    contact = await contact_of(otto, api_key, contact_id)
    assert contact["status"] == "sent"
    assert [(a["status"], a["status_reason"]) for a in contact["attempts"]] == [
        ("failed", "operator_confirmed_not_sent"),
        ("sent", None),
    ]
    assert len(await timeline(otto, api_key, "D-8", "operator_settled")) == 1


# -------------------------------------------------------------------------------------------- addresses


async def test_an_address_corrected_after_a_returned_letter_gets_the_letter_again_once(
    console_factory: Any,
    operators: dict[str, str],
    api_key: str,
    sessions: Any,
    redis: Any,
    settings: Settings,
) -> None:
    otto = await acting(console_factory, "otto")
    contact_id, task_id = await returned_letter_task(otto, api_key, sessions, redis, settings, 9)
    assert len(outbox_letters(settings)) == 1
    ref = await ref_of(sessions, "D-9")
    form = {
        "debtor_ref": ref,
        "lines": "Nygata 5\r\n",
        "postal_code": "0150",
        "city": "Oslo",
        "country": "NO",
        "provenance": "debtor_by_phone",
        "note": "The debtor called and gave the new address.",
        "task_id": task_id,
    }

    await refused(
        await otto.post("/console/actions/correct-address", {**form, "postal_code": "150"}),
        400,
        "postal_code",
        "4 digits",
    )
    await refused(await otto.post("/console/actions/correct-address", {**form, "lines": " "}), 400, "lines")
    await refused(
        await otto.post("/console/actions/correct-address", {**form, "lines": "a\nb\nc\nd\ne"}),
        400,
        "at most 4",
    )
    await refused(
        await otto.post("/console/actions/correct-address", {**form, "provenance": "rumour"}),
        400,
        "provenance",
    )
    await refused(
        await otto.post("/console/actions/correct-address", {**form, "provenance": "other", "note": ""}),
        400,
        "note",
    )
    await refused(
        await otto.post(
            "/console/actions/correct-address", {**form, "lines": "Storgata 9", "postal_code": "0155"}
        ),
        409,
        "already came back",
    )
    async with sessions() as session:
        untouched = await session.get(Debtor, "D-9")
        assert untouched is not None and not untouched.registry_addresses

    response = await otto.post("/console/actions/correct-address", form, allow_redirects=False)
    assert response.status == 303, await response.text()
    assert response.headers["Location"] == f"/console/debtors/{ref}?done=address_corrected"
    async with sessions() as session:
        debtor = await session.get(Debtor, "D-9")
        assert debtor is not None
        [stored] = debtor.registry_addresses or []
        task = await session.get(OperatorTask, task_id)
        assert task is not None
    assert (stored["lines"], stored["postal_code"], stored["city"], stored["country"]) == (
        ["Nygata 5"],
        "0150",
        "OSLO",
        "NO",
    )
    assert (stored["source"], stored["operator"], stored["provenance"]) == (
        "operator",
        "otto",
        "debtor_by_phone",
    )
    assert stored["note"] == "The debtor called and gave the new address." and stored["found_at"]
    assert task.resolved_at is not None
    assert task.resolution == {
        "operator": "otto",
        "outcome": "address_corrected",
        "note": "The debtor called and gave the new address.",
    }

    await drain(settings, clock=open_clock())
    contact = await contact_of(otto, api_key, contact_id)
    assert contact["status"] == "sent"
    assert [a["status"] for a in contact["attempts"]] == ["returned", "sent"]
    assert contact["attempts"][1]["address"] == "Nygata 5\n0150 OSLO"
    assert len(outbox_letters(settings)) == 2
    [entry] = await timeline(otto, api_key, "D-9", "operator_address_corrected")
    assert (entry["detail"]["operator"], entry["detail"]["provenance"]) == ("otto", "debtor_by_phone")
    assert (entry["detail"]["resent"], entry["detail"]["task_id"]) == ([contact_id], task_id)
    [resent] = await timeline(otto, api_key, "D-9", "address_updated_resent")
    assert (resent["source"], resent["detail"]["operator"]) == ("operator", "otto")

    # The task is done: the same form again is stale.
    await refused(await otto.post("/console/actions/correct-address", form), 409, "already resolved by otto")

    # The new address returns the letter too: a third letter never goes, whatever an operator does.
    await return_letter(sessions, redis, settings, contact_id, contact["attempts"][1]["id"])
    assert (await contact_of(otto, api_key, contact_id))["status"] == "returned"
    again = {**form, "lines": "Postboks 7", "postal_code": "0101", "task_id": ""}
    response = await otto.post("/console/actions/correct-address", again, allow_redirects=False)
    assert response.status == 303, await response.text()
    response = await otto.post(
        "/console/actions/retry-contact", {"contact_id": contact_id}, allow_redirects=False
    )
    assert response.status == 303, await response.text()
    await drain(settings, clock=open_clock())
    assert len(outbox_letters(settings)) == 2
    contact = await contact_of(otto, api_key, contact_id)
    assert contact["status"] == "suppressed"  # the letter stayed excluded and no other channel reaches her
    [second_entry, first_entry] = sorted(
        await timeline(otto, api_key, "D-9", "operator_address_corrected"),
        key=lambda e: e["detail"]["resent"],
    )
    assert (second_entry["detail"]["resent"], second_entry["detail"]["not_resent_returned_twice"]) == (
        [],
        [contact_id],
    )
    assert first_entry["detail"]["resent"] == [contact_id]
