"""The legal guard in the running worker: a dispute holds what is scheduled and what a worker already has in
hand, the R6 pressure cap counts every upstream system and every worker, and R10 fees wait for their day.
Real HTTP intake, real SMTP server, real database; the worker's job runs as arq would run it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from orchestrator import auth
from orchestrator.jobs import process_contact, refresh_response_rates, sweep
from orchestrator.policy.rules import DEFAULT_RULES_FILE
from orchestrator.settings import Settings
from orchestrator.worker import shutdown, startup
from tests.conftest import SmtpRecorder, bearer, make_client
from tests.factories import contact_payload

OSLO = ZoneInfo("Europe/Oslo")
# Monday 30 November 2026: an ordinary working day.
MONDAY_TEN = datetime(2026, 11, 30, 10, 0, tzinfo=OSLO)


class Clock:
    def __init__(self, at: datetime) -> None:
        self.at = at.astimezone(UTC)

    def __call__(self) -> datetime:
        return self.at


@pytest.fixture
async def world(
    smtp_settings: Settings, smtp_server: SmtpRecorder, sessions: Any, api_key: str, redis: Any
) -> AsyncIterator[tuple[Settings, Any, Clock, dict[str, Any]]]:
    # The packaged rules: the pressure cap as shipped.
    settings = smtp_settings.model_copy(update={"rules_file": None})
    client = await make_client(settings)
    clock = Clock(MONDAY_TEN)
    ctx: dict[str, Any] = {"settings": settings, "redis": redis, "clock": clock}
    await startup(ctx)
    try:
        yield settings, client, clock, ctx
    finally:
        await shutdown(ctx)
        await client.close()
        await redis.delete(settings.queue_name)


async def _enqueue(client: Any, key: str, payload: dict[str, Any]) -> str:
    r = await client.post("/v1/contacts", json=payload, headers=bearer(key))
    assert r.status == 202, await r.text()
    contact_id: str = (await r.json())["id"]
    return contact_id


async def _view(client: Any, key: str, contact_id: str) -> dict[str, Any]:
    r = await client.get(f"/v1/contacts/{contact_id}", headers=bearer(key))
    assert r.status == 200
    body: dict[str, Any] = await r.json()
    return body


async def _case_event(client: Any, key: str, case_id: str, kind: str) -> None:
    event = {"type": kind, "at": datetime.now(UTC).isoformat()}
    r = await client.post(f"/v1/cases/{case_id}/events", json=event, headers=bearer(key))
    assert r.status in (200, 201), await r.text()


async def test_a_dispute_holds_a_scheduled_contact_and_nothing_is_sent_until_it_is_resolved(
    world: tuple[Settings, Any, Clock, dict[str, Any]], smtp_server: SmtpRecorder, api_key: str
) -> None:
    _settings, client, clock, ctx = world
    clock.at = datetime(2026, 11, 27, 22, 30, tzinfo=OSLO).astimezone(UTC)  # Friday night: scheduled
    contact_id = await _enqueue(client, api_key, contact_payload(1))
    assert await process_contact(ctx, contact_id) == "scheduled"

    await _case_event(client, api_key, "C-1", "dispute_raised")
    view = await _view(client, api_key, contact_id)
    assert (view["status"], view["status_reason"]) == ("held", "dispute")

    # Saturday 09:00: the deferred job wakes up, finds the contact held, sends nothing.
    clock.at = datetime(2026, 11, 28, 9, 0, tzinfo=OSLO).astimezone(UTC)
    assert await process_contact(ctx, contact_id) == "skipped:held"
    assert smtp_server.messages == []

    await _case_event(client, api_key, "C-1", "dispute_resolved")
    assert await process_contact(ctx, contact_id) == "sent"
    assert len(smtp_server.messages) == 1


async def test_a_contact_a_worker_already_has_in_hand_is_not_sent_when_a_dispute_arrives(
    world: tuple[Settings, Any, Clock, dict[str, Any]], smtp_server: SmtpRecorder, api_key: str
) -> None:
    _settings, client, _clock, ctx = world
    contact_id = await _enqueue(client, api_key, contact_payload(2))
    raised: list[str] = []

    async def dispute_now(in_hand: str) -> None:
        # The worker has dequeued the job, decided "send" and rendered: the dispute lands right now.
        raised.append(in_hand)
        await _case_event(client, api_key, "C-2", "dispute_raised")

    ctx["state"].before_claim = dispute_now
    outcome = await process_contact(ctx, contact_id)

    assert raised == [contact_id]
    assert outcome in ("skipped:held", "lost_claim")
    assert smtp_server.messages == []
    view = await _view(client, api_key, contact_id)
    assert (view["status"], view["status_reason"], view["attempts"]) == ("held", "dispute", [])


async def test_the_pressure_cap_counts_contacts_from_another_upstream_system(
    world: tuple[Settings, Any, Clock, dict[str, Any]],
    smtp_server: SmtpRecorder,
    api_key: str,
    sessions: Any,
) -> None:
    _settings, client, _clock, ctx = world
    other_system = await auth.create_api_key(sessions, name="other-upstream", scopes=["contacts:write"])
    first = await _enqueue(client, api_key, contact_payload(3))
    # Another creditor's system, another case, the same debtor.
    theirs = contact_payload(3, idempotency_key="annen-kreditor/inv-9/reminder", case__id="C-OTHER-3")
    second = await _enqueue(client, other_system, theirs)

    assert await process_contact(ctx, first) == "sent"
    assert await process_contact(ctx, second) == "scheduled"

    view = await _view(client, api_key, second)
    assert (view["status"], view["status_reason"]) == ("scheduled", "pressure_cap")
    assert "pressure_cap_deferred" in view["decision"]["reasons"]
    # R6 default: at most one a day; the next opening is Tuesday 08:00.
    assert datetime.fromisoformat(view["send_at"]) == datetime(2026, 12, 1, 8, 0, tzinfo=OSLO)
    assert len(smtp_server.messages) == 1


async def test_a_statutory_notice_is_counted_but_never_held_back_by_the_cap(
    world: tuple[Settings, Any, Clock, dict[str, Any]], smtp_server: SmtpRecorder, api_key: str
) -> None:
    _settings, client, _clock, ctx = world
    reminder = await _enqueue(client, api_key, contact_payload(4))
    notice = await _enqueue(
        client, api_key, contact_payload(4, kind="inkassovarsel", idempotency_key="eksempel-as/inv-4/varsel")
    )
    assert await process_contact(ctx, reminder) == "sent"
    assert await process_contact(ctx, notice) == "sent"
    assert len(smtp_server.messages) == 2


async def test_two_workers_racing_for_one_debtor_send_one_message_under_the_cap(
    world: tuple[Settings, Any, Clock, dict[str, Any]], smtp_server: SmtpRecorder, api_key: str, redis: Any
) -> None:
    settings, client, clock, ctx = world
    ids = [
        await _enqueue(client, api_key, contact_payload(5, idempotency_key=f"sys-{n}/inv-5/reminder"))
        for n in range(2)
    ]
    other: dict[str, Any] = {"settings": settings, "redis": redis, "clock": clock}
    await startup(other)
    try:
        # Each worker has decided "send" for its contact before either claims: both saw no contact today.
        both_decided: list[str] = []
        both = asyncio.Event()

        async def wait_for_the_other(contact_id: str) -> None:
            both_decided.append(contact_id)
            if len(both_decided) == 2:
                both.set()
            await asyncio.wait_for(both.wait(), 10)

        ctx["state"].before_claim = wait_for_the_other
        other["state"].before_claim = wait_for_the_other
        outcomes = await asyncio.gather(process_contact(ctx, ids[0]), process_contact(other, ids[1]))
    finally:
        await shutdown(other)

    assert sorted(outcomes) == ["scheduled", "sent"]
    assert len(smtp_server.messages) == 1
    views = [await _view(client, api_key, cid) for cid in ids]
    assert sorted(v["status"] for v in views) == ["scheduled", "sent"]
    [waiting] = [v for v in views if v["status"] == "scheduled"]
    assert waiting["status_reason"] == "pressure_cap"


async def test_a_fee_reminder_waits_until_14_days_after_the_due_date(
    world: tuple[Settings, Any, Clock, dict[str, Any]], smtp_server: SmtpRecorder, api_key: str
) -> None:
    _settings, client, _clock, ctx = world
    due = MONDAY_TEN.date() - timedelta(days=3)
    payload = contact_payload(6, case__due_date=due.isoformat(), case__interest__from=due.isoformat())
    contact_id = await _enqueue(client, api_key, payload)

    assert await process_contact(ctx, contact_id) == "scheduled"
    view = await _view(client, api_key, contact_id)
    assert view["status_reason"] == "fee_gate"
    # Due Friday 27 November + 14 days = Friday 11 December, 08:00.
    assert datetime.fromisoformat(view["send_at"]) == datetime(2026, 12, 11, 8, 0, tzinfo=OSLO)
    assert smtp_server.messages == []


async def test_no_third_fee_bearing_reminder_for_one_claim(
    world: tuple[Settings, Any, Clock, dict[str, Any]], smtp_server: SmtpRecorder, api_key: str
) -> None:
    _settings, client, clock, ctx = world
    outcomes = []
    for n in range(3):
        contact_id = await _enqueue(
            client, api_key, contact_payload(7, idempotency_key=f"inv-7/reminder-{n}")
        )
        outcomes.append(await process_contact(ctx, contact_id))
        clock.at += timedelta(days=3)  # past the daily and weekly cap
    assert outcomes == ["sent", "sent", "suppressed"]
    view = await _view(client, api_key, contact_id)
    assert view["status_reason"] == "fee_reminder_limit_reached"
    assert len(smtp_server.messages) == 2


async def test_a_refused_e_mail_falls_back_to_sms_and_a_statutory_notice_only_to_paper(
    world: tuple[Settings, Any, Clock, dict[str, Any]], smtp_server: SmtpRecorder, api_key: str
) -> None:
    settings, client, _clock, ctx = world
    smtp_server.scripted = ["550 5.1.1 No such user here", "550 5.1.1 No such user here"]
    reminder = await _enqueue(client, api_key, contact_payload(8))
    notice = await _enqueue(
        client, api_key, contact_payload(9, kind="inkassovarsel", idempotency_key="eksempel-as/inv-9/varsel")
    )

    assert await process_contact(ctx, reminder) == "fallback"
    assert await process_contact(ctx, reminder) == "sent"
    assert await process_contact(ctx, notice) == "fallback"
    assert await process_contact(ctx, notice) == "sent"

    view = await _view(client, api_key, reminder)
    assert [(a["channel"], a["status"]) for a in view["attempts"]] == [("email", "failed"), ("sms", "sent")]
    assert "fallback:email" in view["decision"]["reasons"]
    # R3: the varsel never goes by SMS, whatever failed: paper it is.
    view = await _view(client, api_key, notice)
    assert [(a["channel"], a["status"]) for a in view["attempts"]] == [
        ("email", "failed"),
        ("letter", "sent"),
    ]
    assert {"channel": "sms", "reason": "not_lawful_for_statutory_notice"} in view["decision"]["rejected"]
    assert list((settings.resolved_outbox_dir / "letter").glob("*.pdf"))


async def test_a_creditor_named_inkasso_is_kept_out_of_subjects_and_sms_and_the_letter_goes(
    world: tuple[Settings, Any, Clock, dict[str, Any]], smtp_server: SmtpRecorder, api_key: str
) -> None:
    settings, client, _clock, ctx = world
    payload = contact_payload(10, case__creditor__name="Nordisk Inkasso AS")
    contact_id = await _enqueue(client, api_key, payload)

    assert await process_contact(ctx, contact_id) == "sent"

    view = await _view(client, api_key, contact_id)
    # R7: the e-mail subject and the SMS would say "Inkasso" where others see it; the letter window does not.
    assert [a["channel"] for a in view["attempts"]] == ["letter"]
    assert smtp_server.messages == []
    timeline = await (await client.get("/v1/debtors/D-10/timeline", headers=bearer(api_key))).json()
    refused = [e["detail"] for e in timeline["items"] if e["type"] == "legal_guard_refused"]
    assert [(r["channel"], r["reason"]) for r in refused] == [
        ("email", "legal_guard:inkasso_in_subject"),
        ("sms", "legal_guard:inkasso_in_short_message"),
    ]
    assert not list((settings.resolved_outbox_dir / "sms").glob("*.jsonl"))


async def test_observed_response_rates_steer_the_channel_once_enough_history_exists(
    world: tuple[Settings, Any, Clock, dict[str, Any]], tmp_path: Any, api_key: str, redis: Any
) -> None:
    settings, client, clock, _ctx = world
    rules = tmp_path / "rules.toml"
    rules.write_text(
        DEFAULT_RULES_FILE.read_text(encoding="utf-8").replace(
            "min_observations = 200", "min_observations = 20"
        ),
        encoding="utf-8",
    )
    settings = settings.model_copy(update={"rules_file": rules})
    ctx: dict[str, Any] = {"settings": settings, "redis": redis, "clock": clock}
    await startup(ctx)
    try:
        # History, three weeks back (each window of 14 days has closed): 40 reminders by e-mail, one paid;
        # 40 by SMS, 30 paid within the window.
        clock.at = (MONDAY_TEN - timedelta(days=20)).astimezone(UTC)
        for n in range(100, 180):
            channel = "email" if n < 140 else "sms"
            contact_id = await _enqueue(client, api_key, contact_payload(n, channel=channel))
            assert await process_contact(ctx, contact_id) == "sent"
            if n == 100 or 140 <= n < 170:
                at = (clock.at + timedelta(days=2)).isoformat()
                paid = {"type": "payment_received", "amount": "100.00", "at": at}
                r = await client.post(f"/v1/cases/C-{n}/events", json=paid, headers=bearer(api_key))
                assert r.status == 201
        # Today the cron job computes the rates (for every worker, through Redis), shrunk towards the 10 %
        # prior: e-mail (1 + 2) / 60 = 5 %, SMS (30 + 2) / 60 = 53 %. A new debtor: e-mail is cheaper per
        # message (0.05 vs 0.45 kr), SMS per payment (0.84 vs 1.00 kr).
        clock.at = MONDAY_TEN.astimezone(UTC)
        assert await refresh_response_rates(ctx) >= 1
        fresh = await _enqueue(client, api_key, contact_payload(200))
        assert await process_contact(ctx, fresh) == "sent"
    finally:
        await shutdown(ctx)
    view = await _view(client, api_key, fresh)
    assert view["decision"]["channel"] == "sms"
    assert "lowest_cost_per_response" in view["decision"]["reasons"]
    assert {"channel": "email", "reason": "ranked_lower:cost_per_response_nok=1.00"} in view["decision"][
        "rejected"
    ]


async def test_an_sms_without_a_delivery_report_hands_over_to_the_next_channel(
    world: tuple[Settings, Any, Clock, dict[str, Any]], smtp_server: SmtpRecorder, api_key: str
) -> None:
    settings, client, clock, ctx = world
    payload = contact_payload(11, channel="sms", debtor__emails=[], debtor__electronic_notice_evidence=[])
    contact_id = await _enqueue(client, api_key, payload)
    assert await process_contact(ctx, contact_id) == "sent"

    # Two days later still no report: flagged, and the reminder goes on by letter, inside the windows.
    clock.at += timedelta(days=2, hours=1)
    swept = await sweep(ctx)
    assert swept["needs_reconciliation"] == 1
    view = await _view(client, api_key, contact_id)
    assert (view["status"], view["status_reason"]) == ("queued", "fallback:sms:no_delivery_report")
    assert await process_contact(ctx, contact_id) == "sent"
    view = await _view(client, api_key, contact_id)
    assert [a["channel"] for a in view["attempts"]] == ["sms", "letter"]
    assert list((settings.resolved_outbox_dir / "letter").glob("*.pdf"))


async def test_a_dispute_holds_the_reminder_but_its_acknowledgement_goes_out(
    world: tuple[Settings, Any, Clock, dict[str, Any]], smtp_server: SmtpRecorder, api_key: str
) -> None:
    _settings, client, _clock, ctx = world
    reminder = await _enqueue(client, api_key, contact_payload(31))
    await _case_event(client, api_key, "C-31", "dispute_raised")
    acknowledgement = await _enqueue(
        client,
        api_key,
        contact_payload(31, kind="dispute_acknowledgement", idempotency_key="eksempel-as/inv-31/ack"),
    )
    assert (await _view(client, api_key, reminder))["status"] == "held"
    assert await process_contact(ctx, reminder) == "skipped:held"
    assert await process_contact(ctx, acknowledgement) == "sent"
    view = await _view(client, api_key, acknowledgement)
    assert "sent_on_held_case:dispute_acknowledgement" in view["decision"]["reasons"]
    assert len(smtp_server.messages) == 1

    # paid in full: what is still queued is cancelled, a payment confirmation still goes
    later = await _enqueue(client, api_key, contact_payload(32))
    await _case_event(client, api_key, "C-32", "paid_in_full")
    confirmation = await _enqueue(
        client,
        api_key,
        contact_payload(32, kind="payment_confirmation", idempotency_key="eksempel-as/inv-32/paid"),
    )
    assert (await _view(client, api_key, later))["status"] == "cancelled"
    assert await process_contact(ctx, confirmation) == "sent"
    assert len(smtp_server.messages) == 2
