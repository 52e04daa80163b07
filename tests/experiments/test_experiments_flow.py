"""Experiments end to end: created over the API, assigned in the worker (once per debtor, only arms the legal
guard allows), recorded on the attempt, measured on case events, reported as JSON and CSV. Real HTTP intake,
real SMTP server, real database."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from orchestrator import auth
from orchestrator.experiments.assign import assign
from orchestrator.experiments.spec import ExperimentSpec
from orchestrator.jobs import process_contact
from orchestrator.models import Attempt, Contact, ExperimentAssignment
from orchestrator.settings import Settings
from orchestrator.worker import shutdown, startup
from tests.conftest import SmtpRecorder, assert_problem, bearer, make_client
from tests.factories import contact_payload

OSLO = ZoneInfo("Europe/Oslo")
MONDAY_TEN = datetime(2026, 11, 30, 10, 0, tzinfo=OSLO)  # an ordinary working day


class Clock:
    def __init__(self, at: datetime) -> None:
        self.at = at.astimezone(UTC)

    def __call__(self) -> datetime:
        return self.at


@pytest.fixture
async def world(
    smtp_settings: Settings, smtp_server: SmtpRecorder, sessions: Any, redis: Any
) -> AsyncIterator[tuple[Any, str, dict[str, Any]]]:
    key = await auth.create_api_key(
        sessions, name="tests", scopes=["contacts:write", "contacts:read", "cases:write", "experiments:write"]
    )
    client = await make_client(smtp_settings)
    ctx: dict[str, Any] = {"settings": smtp_settings, "redis": redis, "clock": Clock(MONDAY_TEN)}
    await startup(ctx)
    try:
        yield client, key, ctx
    finally:
        await shutdown(ctx)
        await client.close()
        await redis.delete(smtp_settings.queue_name)


EXPERIMENT: dict[str, Any] = {
    "id": "reminder-tone",
    "name": "Reminder: the debtor's name and a named handler",
    "kinds": ["reminder"],
    "arms": [
        {"name": "control", "variant": "neutral"},
        {"name": "personal", "variant": "personalisation"},
    ],
    "holdout_share": 0.2,
    "window_days": 1,
    "outcome": "paid",
}


async def _create(client: Any, key: str, body: dict[str, Any]) -> Any:
    return await client.post("/v1/experiments", json=body, headers=bearer(key))


async def _enqueue(client: Any, key: str, payload: dict[str, Any]) -> str:
    r = await client.post("/v1/contacts", json=payload, headers=bearer(key))
    assert r.status == 202, await r.text()
    contact_id: str = (await r.json())["id"]
    return contact_id


async def _attempt(sessions: Any, contact_id: str) -> Attempt:
    async with sessions() as session:
        attempt = await session.scalar(select(Attempt).where(Attempt.contact_id == contact_id))
    assert attempt is not None
    return attempt


async def test_experiments_api_creates_lists_refuses_and_stops(
    world: tuple[Any, str, dict[str, Any]], api_key: str
) -> None:
    client, key, _ctx = world
    r = await _create(client, key, EXPERIMENT)
    assert r.status == 201, await r.text()
    created = await r.json()
    assert created["status"] == "running"
    assert created["spec"]["control"] == "control"  # the neutral arm, named by default
    assert created["links"]["report"] == "/v1/experiments/reminder-tone/report"

    body = await assert_problem(await _create(client, key, EXPERIMENT), 409)
    assert "reminder-tone" in body["detail"]
    bad = {
        **EXPERIMENT,
        "id": "bad",
        "arms": [{"name": "a", "variant": "neutral"}, {"name": "b", "variant": "shouting"}],
    }
    body = await assert_problem(await _create(client, key, bad), 422)
    assert any("unknown variant 'shouting'" in e["msg"] for e in body["errors"])
    body = await assert_problem(
        await _create(client, key, {**EXPERIMENT, "id": "x", "holdout_share": 2}), 422
    )
    assert body["errors"][0]["loc"] == ["holdout_share"]
    # an upstream key without experiments:write may read but not start one
    await assert_problem(await _create(client, api_key, {**EXPERIMENT, "id": "other"}), 403)

    listed = await (await client.get("/v1/experiments", headers=bearer(api_key))).json()
    assert [item["id"] for item in listed["items"]] == ["reminder-tone"]
    r = await client.post("/v1/experiments/reminder-tone/stop", headers=bearer(key))
    assert r.status == 200
    assert (await r.json())["status"] == "stopped"
    running = await (await client.get("/v1/experiments?status=running", headers=bearer(api_key))).json()
    assert running["items"] == []
    await assert_problem(await client.get("/v1/experiments/nope", headers=bearer(api_key)), 404)


async def test_each_debtor_keeps_one_arm_recorded_on_the_attempt_and_outcomes_reach_the_report(
    world: tuple[Any, str, dict[str, Any]], sessions: Any, smtp_server: SmtpRecorder
) -> None:
    client, key, ctx = world
    assert (await _create(client, key, EXPERIMENT)).status == 201
    spec = ExperimentSpec.model_validate(EXPERIMENT)
    debtors = range(1, 31)
    contact_ids = {n: await _enqueue(client, key, contact_payload(n)) for n in debtors}
    for contact_id in contact_ids.values():
        assert await process_contact(ctx, contact_id) == "sent"

    expected = {n: assign(spec, f"D-{n}") for n in debtors}
    assert {a.arm for a in expected.values()} == {"control", "personal"}  # both arms are exercised
    assert any(a.holdout for a in expected.values())
    for n, contact_id in contact_ids.items():
        attempt = await _attempt(sessions, contact_id)
        assert attempt.assignment is not None
        assert attempt.assignment["arm"] == expected[n].arm
        assert attempt.assignment["holdout"] == expected[n].holdout
        assert attempt.variant == expected[n].variant
        assert attempt.template == f"nb/reminder/{expected[n].variant}/email"
        assert attempt.template_fallback is None
    # the arm shows in the decision's reasons, for operators and upstream
    view = await (await client.get(f"/v1/contacts/{contact_ids[1]}", headers=bearer(key))).json()
    assert f"experiment:reminder-tone:{expected[1].arm}" in view["decision"]["reasons"]

    # a later contact for the same debtor keeps the arm it got the first time
    again = await _enqueue(
        client, key, contact_payload(1, idempotency_key="eksempel-as/inv-1/reminder-2", case__id="C-1b")
    )
    assert await process_contact(ctx, again) == "sent"
    assert (await _attempt(sessions, again)).assignment["arm"] == expected[1].arm  # type: ignore[index]
    async with sessions() as session:
        rows = (await session.scalars(select(ExperimentAssignment))).all()
    assert len(rows) == len(debtors)  # one per debtor, not per contact
    assert all(row.exposed_at is not None and row.case_id == f"C-{row.debtor_id[2:]}" for row in rows)

    # outcomes: payments within the one-day window on half the cases, one too late, one dispute
    paid = [n for n in debtors if n % 2 == 0]
    sent_at = ctx["clock"]()
    for n in paid:
        event = {
            "type": "payment_received",
            "amount": "100.00",
            "at": (sent_at + timedelta(hours=3)).isoformat(),
        }
        assert (await client.post(f"/v1/cases/C-{n}/events", json=event, headers=bearer(key))).status == 201
    late = {"type": "paid_in_full", "at": (sent_at + timedelta(days=2)).isoformat()}
    assert (await client.post("/v1/cases/C-1/events", json=late, headers=bearer(key))).status == 201
    dispute = {"type": "dispute_raised", "at": (sent_at + timedelta(hours=1)).isoformat()}
    assert (await client.post("/v1/cases/C-3/events", json=dispute, headers=bearer(key))).status == 201

    r = await client.get("/v1/experiments/reminder-tone/report", headers=bearer(key))
    assert r.status == 200, await r.text()
    report = await r.json()
    assert report["baseline"] == "holdout"
    by_arm = {row["arm"]: row for row in report["arms"]}

    def group(n: int) -> str:
        return "holdout" if expected[n].holdout else expected[n].arm

    for name, row in by_arm.items():
        members = [n for n in debtors if group(n) == name]
        hits = [n for n in members if n in paid]
        assert row["exposed"] == row["matured"] == len(members), name
        assert row["outcomes"]["paid"]["successes"] == len(hits), name
        if members:
            assert row["outcomes"]["paid"]["rate"] == pytest.approx(len(hits) / len(members)), name
        assert row["outcomes"]["dispute"]["successes"] == (1 if group(3) == name else 0), name

    r = await client.get("/v1/experiments/reminder-tone/report?format=csv", headers=bearer(key))
    assert r.status == 200
    assert r.content_type == "text/csv"
    rows = {row["arm"]: row for row in csv.DictReader(io.StringIO(await r.text()))}
    assert set(rows) == set(by_arm)
    for name, row in rows.items():
        assert int(row["paid_successes"]) == by_arm[name]["outcomes"]["paid"]["successes"]


async def test_an_arm_the_legal_guard_refuses_is_never_sent(
    world: tuple[Any, str, dict[str, Any]], sessions: Any
) -> None:
    """An arm asking for SMS is offered for reminders to debtors with a mobile, never for an inkassovarsel
    (R3): the statutory notice goes on a lawful channel under the control."""
    client, key, ctx = world
    experiment = {
        "id": "channel-test",
        "name": "SMS first",
        "kinds": ["reminder", "inkassovarsel"],
        "arms": [
            {"name": "control", "variant": "neutral"},
            {"name": "sms", "variant": "simplicity", "channel": "sms", "share": 3},
        ],
        "holdout_share": 0.0,
    }
    assert (await _create(client, key, experiment)).status == 201, "created"
    spec = ExperimentSpec.model_validate(experiment)
    notices = {}
    for n in range(1, 21):
        payload = contact_payload(n, kind="inkassovarsel", idempotency_key=f"eksempel-as/inv-{n}/varsel")
        notices[n] = await _enqueue(client, key, payload)
    for contact_id in notices.values():
        assert await process_contact(ctx, contact_id) == "sent"
    hashed_to_sms = [n for n in notices if assign(spec, f"D-{n}").arm == "sms"]
    assert hashed_to_sms  # the hash would have sent these by SMS
    for n, contact_id in notices.items():
        attempt = await _attempt(sessions, contact_id)
        assert attempt.channel != "sms"
        assert attempt.assignment is not None
        if n in hashed_to_sms:
            assert attempt.assignment["arm"] == "control"
            assert attempt.assignment["reason"] == "arm_not_allowed:sms"
            assert attempt.variant == "neutral"

    # the same arm is lawful for a reminder to a debtor with a mobile: it goes by SMS in that arm's variant
    reminder_debtor = 100 + next(n for n in range(100) if assign(spec, f"D-{100 + n}").arm == "sms")
    contact_id = await _enqueue(client, key, contact_payload(reminder_debtor))
    assert await process_contact(ctx, contact_id) == "sent"
    attempt = await _attempt(sessions, contact_id)
    assert (attempt.channel, attempt.variant) == ("sms", "simplicity")
    async with sessions() as session:
        contact = await session.get(Contact, contact_id)
    assert contact is not None and contact.channel_preference == "auto"  # upstream's request is unchanged


async def test_adaptive_mode_in_the_worker_learns_from_the_outcomes_per_channel(
    world: tuple[Any, str, dict[str, Any]], sessions: Any
) -> None:
    client, key, ctx = world
    experiment = {**EXPERIMENT, "id": "adaptive-tone", "mode": "adaptive", "holdout_share": 0.1}
    assert (await _create(client, key, experiment)).status == 201
    first = {n: await _enqueue(client, key, contact_payload(n)) for n in range(1, 21)}
    for contact_id in first.values():
        assert await process_contact(ctx, contact_id) == "sent"
    reasons = {(await _attempt(sessions, c)).assignment["reason"] for c in first.values()}  # type: ignore[index]
    assert reasons <= {"thompson_sampling", "holdout"} and "thompson_sampling" in reasons

    # every "personal" debtor pays within the window, nobody else: the worker's next read sees it
    sent_at = ctx["clock"]()
    for n, contact_id in first.items():
        if (await _attempt(sessions, contact_id)).assignment["arm"] == "personal":  # type: ignore[index]
            event = {"type": "payment_received", "at": (sent_at + timedelta(hours=2)).isoformat()}
            assert (
                await client.post(f"/v1/cases/C-{n}/events", json=event, headers=bearer(key))
            ).status == 201
    state = ctx["state"]
    state.experiments.clear()
    ctx["clock"].at = sent_at + timedelta(days=2)  # every window (1 day) has closed
    await state.experiments.refresh(state.sessions, ctx["clock"]())
    stats = state.experiments.stats["adaptive-tone"]
    assert set(stats) >= {"*", "email"}  # all channels, and the channel the messages went on
    successes, trials = stats["email"]["personal"]
    assert trials > 0 and successes == trials
    assert stats["email"]["control"][0] == 0

    later = {n: await _enqueue(client, key, contact_payload(n)) for n in range(21, 61)}
    for contact_id in later.values():
        assert await process_contact(ctx, contact_id) == "sent"
    arms = [(await _attempt(sessions, c)).assignment for c in later.values()]
    adaptive = [a for a in arms if a is not None and not a["holdout"]]
    personal = sum(a["arm"] == "personal" for a in adaptive)
    assert personal >= 0.8 * len(adaptive), (personal, len(adaptive))


async def test_an_arm_with_a_send_hour_waits_for_it_inside_the_contact_window(
    world: tuple[Any, str, dict[str, Any]], sessions: Any
) -> None:
    client, key, ctx = world
    experiment = {
        "id": "evening",
        "name": "Evening reminders",
        "kinds": ["reminder"],
        "arms": [
            {"name": "control", "variant": "neutral"},
            {"name": "evening", "variant": "neutral", "send_hour": 18},
        ],
        "holdout_share": 0.0,
    }
    assert (await _create(client, key, experiment)).status == 201
    spec = ExperimentSpec.model_validate(experiment)
    evening = next(n for n in range(1, 200) if assign(spec, f"D-{n}").arm == "evening")
    daytime = next(n for n in range(1, 200) if assign(spec, f"D-{n}").arm == "control")
    assert await process_contact(ctx, await _enqueue(client, key, contact_payload(daytime))) == "sent"
    contact_id = await _enqueue(client, key, contact_payload(evening))
    assert await process_contact(ctx, contact_id) == "scheduled"  # Monday 10:00 -> 18:00 the same day
    async with sessions() as session:
        contact = await session.get(Contact, contact_id)
    assert contact is not None and contact.send_at is not None
    assert contact.send_at.astimezone(OSLO) == MONDAY_TEN.replace(hour=18)
    ctx["clock"].at = MONDAY_TEN.replace(hour=18, minute=0, second=1).astimezone(UTC)
    assert await process_contact(ctx, contact_id) == "sent"  # inside its hour: sent, not put off a day
