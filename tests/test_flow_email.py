"""A contact's whole way: HTTP intake → arq worker → policy → rendering → a real SMTP server → contact log."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from orchestrator import contact_log as store
from orchestrator.db import write_session
from orchestrator.jobs import process_contact, sweep
from orchestrator.rendering import content_sha256
from orchestrator.settings import Settings
from orchestrator.worker import build_worker, shutdown, startup
from tests.conftest import SmtpRecorder, drain, make_client
from tests.factories import contact_payload, open_clock

OSLO = ZoneInfo("Europe/Oslo")


async def _post(settings: Settings, api_key: str, payload: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    client = await make_client(settings)
    try:
        resp = await client.post("/v1/contacts", json=payload, headers={"Authorization": f"Bearer {api_key}"})
        return resp.status, await resp.json()
    finally:
        await client.close()


async def _get(settings: Settings, api_key: str, path: str) -> dict[str, Any]:
    client = await make_client(settings)
    try:
        resp = await client.get(path, headers={"Authorization": f"Bearer {api_key}"})
        assert resp.status == 200, await resp.text()
        body: dict[str, Any] = await resp.json()
        return body
    finally:
        await client.close()


def _normalise(text: str) -> str:
    return text.replace("\r\n", "\n")


async def test_contact_over_http_arrives_at_smtp_and_is_logged_as_sent(
    smtp_settings: Settings, smtp_server: SmtpRecorder, sessions: Any, api_key: str
) -> None:
    status, accepted = await _post(smtp_settings, api_key, contact_payload(1, kind="inkassovarsel"))
    assert status == 202
    contact_id = accepted["id"]

    await drain(smtp_settings, clock=open_clock())

    assert len(smtp_server.messages) == 1
    envelope, message = smtp_server.messages[0]
    contact = await _get(smtp_settings, api_key, f"/v1/contacts/{contact_id}")
    assert contact["status"] == "sent"
    [attempt] = contact["attempts"]
    assert attempt["status"] == "sent"
    assert attempt["channel"] == "email" and attempt["provider"] == "smtp"
    assert attempt["address"] == "debtor1@example.no"
    assert attempt["template"] == "nb/inkassovarsel/neutral/email"
    assert attempt["rule_version"] == contact["decision"]["rule_version"]

    # Headers: our ids travel with the message so that callbacks find their contact.
    assert (
        str(message["Message-ID"]).strip() == f"<{contact_id}.{attempt['id']}@{smtp_settings.email_domain}>"
    )
    assert attempt["provider_message_id"] == str(message["Message-ID"]).strip()
    assert message["X-Orchestrator-Contact"] == contact_id
    assert envelope.mail_from == f"bounce+{attempt['id']}@{smtp_settings.bounce_domain}"
    assert envelope.rcpt_tos == ["debtor1@example.no"]
    assert "debtor1@example.no" in str(message["To"])
    assert "inkasso" not in str(message["Subject"]).lower()  # R7: discretion in subjects

    # Body: multipart text + HTML, both rendered from the templates, with the claim's facts.
    text_part = message.get_body(preferencelist=("plain",))
    html_part = message.get_body(preferencelist=("html",))
    assert text_part is not None and html_part is not None
    text = _normalise(text_part.get_content())
    html = _normalise(html_part.get_content())
    for needle in ("Kari Nordmann 1", "1 285,00 kr", contact_payload(1)["case"]["kid"]):
        assert needle in text
        assert needle in html
    # The stored evidence hash is the hash of exactly what the SMTP server received.
    # The stored evidence is exactly what the SMTP server received, and its hash is over that content.
    async with sessions() as session:
        [stored] = await store.get_attempts(session, contact_id)
    assert stored.content["text"] == text
    assert stored.content["html"] == html
    # (encoded-word folding may double a space when the subject is decoded again)
    assert " ".join(str(message["Subject"]).split()) == stored.content["subject"]
    assert attempt["content_sha256"] == content_sha256(stored.content["subject"], text, html)

    timeline = await _get(smtp_settings, api_key, "/v1/debtors/D-1/timeline")
    kinds = [(item["type"], item["status"]) for item in timeline["items"]]
    assert kinds == [("contact_received", "queued"), ("decision", "sending"), ("attempt", "sent")]


async def test_repeated_idempotency_key_sends_once_and_changed_body_is_409(
    smtp_settings: Settings, smtp_server: SmtpRecorder, sessions: Any, api_key: str
) -> None:
    payload = contact_payload(2)
    first_status, first = await _post(smtp_settings, api_key, payload)
    again_status, again = await _post(smtp_settings, api_key, payload)
    assert (first_status, again_status) == (202, 200)
    assert again["id"] == first["id"]

    await drain(smtp_settings, clock=open_clock())
    late_status, late = await _post(smtp_settings, api_key, payload)
    await drain(smtp_settings, clock=open_clock())

    assert late_status == 200 and late["id"] == first["id"] and late["status"] == "sent"
    changed = contact_payload(2, case__principal="999.00")
    changed_status, problem = await _post(smtp_settings, api_key, changed)
    assert changed_status == 409
    assert problem["status"] == 409 and problem["errors"][0]["loc"] == ["idempotency_key"]
    await drain(smtp_settings, clock=open_clock())
    assert len(smtp_server.messages) == 1


async def test_smtp_4xx_is_retried_with_backoff_then_succeeds(
    smtp_settings: Settings, smtp_server: SmtpRecorder, sessions: Any, api_key: str
) -> None:
    smtp_server.scripted = ["451 4.3.0 Try again later", "421 4.7.0 Too busy"]
    _, accepted = await _post(smtp_settings, api_key, contact_payload(3))

    await drain(smtp_settings, clock=open_clock())

    contact = await _get(smtp_settings, api_key, f"/v1/contacts/{accepted['id']}")
    assert contact["status"] == "sent"
    assert [a["status"] for a in contact["attempts"]] == ["failed", "failed", "sent"]
    assert [a["status_reason"] for a in contact["attempts"][:2]] == ["smtp_4xx", "smtp_4xx"]
    assert len(smtp_server.messages) == 1
    timeline = await _get(smtp_settings, api_key, "/v1/debtors/D-3/timeline")
    retries = [i["detail"] for i in timeline["items"] if i["type"] == "attempt" and i["status"] == "failed"]
    assert [r["tries"] for r in retries] == [1, 2]
    assert all(r["transient"] and r["retry_at"] for r in retries)


async def test_smtp_5xx_ends_failed_with_the_reason_and_is_not_retried(
    smtp_settings: Settings, smtp_server: SmtpRecorder, sessions: Any, api_key: str
) -> None:
    smtp_server.scripted = ["550 5.1.1 No such user here"]
    # E-mail is the only way to reach this debtor, so no other channel can take over (fallback chains).
    only_email = contact_payload(4, debtor__phones=[], debtor__addresses=[])
    _, accepted = await _post(smtp_settings, api_key, only_email)

    await drain(smtp_settings, clock=open_clock())

    contact = await _get(smtp_settings, api_key, f"/v1/contacts/{accepted['id']}")
    assert contact["status"] == "failed"
    assert contact["status_reason"] == "smtp_5xx"
    [attempt] = contact["attempts"]
    assert attempt["status"] == "failed" and attempt["status_reason"] == "smtp_5xx"
    assert "550" in attempt["events"][0]["detail"]["error"]
    assert smtp_server.messages == []


async def test_retries_exhausted_end_failed(
    smtp_settings: Settings, smtp_server: SmtpRecorder, sessions: Any, api_key: str
) -> None:
    settings = smtp_settings.model_copy(update={"send_max_tries": 3})
    smtp_server.scripted = ["451 4.3.0 Try again later"] * 5
    _, accepted = await _post(settings, api_key, contact_payload(5))

    await drain(settings, clock=open_clock())

    contact = await _get(settings, api_key, f"/v1/contacts/{accepted['id']}")
    assert contact["status"] == "failed"
    assert contact["status_reason"] == "retries_exhausted:smtp_4xx"
    assert len(contact["attempts"]) == 3
    assert len(smtp_server.scripted) == 2  # exactly three tries reached the server


async def test_connection_lost_during_data_awaits_reconciliation_and_is_never_resent(
    smtp_settings: Settings, smtp_server: SmtpRecorder, sessions: Any, api_key: str
) -> None:
    smtp_server.hang_up_in_data = True
    _, accepted = await _post(smtp_settings, api_key, contact_payload(6))

    await drain(smtp_settings, clock=open_clock())
    await drain(smtp_settings, clock=open_clock())

    contact = await _get(smtp_settings, api_key, f"/v1/contacts/{accepted['id']}")
    assert contact["status"] == "sending"
    assert contact["status_reason"] == "needs_reconciliation"
    assert contact["attempts"][0]["status_reason"] == "smtp_outcome_unknown"
    assert len(smtp_server.messages) == 1  # the relay had it once; nobody sent it again


async def _worker_ctx(settings: Settings, redis: Any, clock: Any) -> dict[str, Any]:
    ctx: dict[str, Any] = {"settings": settings, "redis": redis, "clock": clock}
    await startup(ctx)
    return ctx


async def test_friday_night_contact_is_scheduled_for_saturday_morning_and_sent_then(
    smtp_settings: Settings, smtp_server: SmtpRecorder, sessions: Any, api_key: str, redis: Any
) -> None:
    _, accepted = await _post(smtp_settings, api_key, contact_payload(7))
    friday_night = datetime(2026, 11, 27, 22, 30, tzinfo=OSLO)
    ctx = await _worker_ctx(smtp_settings, redis, lambda: friday_night.astimezone(UTC))
    try:
        assert await process_contact(ctx, accepted["id"]) == "scheduled"
        contact = await _get(smtp_settings, api_key, f"/v1/contacts/{accepted['id']}")
        assert contact["status"] == "scheduled"
        assert contact["status_reason"] == "outside_contact_window"
        saturday_nine = datetime(2026, 11, 28, 9, 0, tzinfo=OSLO)
        assert datetime.fromisoformat(contact["send_at"]) == saturday_nine
        # The deferred job waits in Redis for exactly that moment.
        score = await redis.zscore(
            smtp_settings.queue_name, f"contact:{accepted['id']}:{int(saturday_nine.timestamp())}"
        )
        assert score == saturday_nine.timestamp() * 1000
        assert smtp_server.messages == []

        ctx["state"].clock = lambda: saturday_nine.astimezone(UTC)
        assert await process_contact(ctx, accepted["id"]) == "sent"
        assert len(smtp_server.messages) == 1
    finally:
        await shutdown(ctx)
        await redis.delete(smtp_settings.queue_name)


async def test_sunday_evening_before_17_may_is_scheduled_for_tuesday(
    settings: Settings, sessions: Any, api_key: str, redis: Any
) -> None:
    _, accepted = await _post(settings, api_key, contact_payload(8))
    sunday = datetime(2027, 5, 16, 21, 30, tzinfo=OSLO)
    ctx = await _worker_ctx(settings, redis, lambda: sunday.astimezone(UTC))
    try:
        assert await process_contact(ctx, accepted["id"]) == "scheduled"
    finally:
        await shutdown(ctx)
        await redis.delete(settings.queue_name)
    contact = await _get(settings, api_key, f"/v1/contacts/{accepted['id']}")
    assert datetime.fromisoformat(contact["send_at"]) == datetime(2027, 5, 18, 8, 0, tzinfo=OSLO)
    assert "outside_contact_window" in contact["decision"]["reasons"]


async def test_sweeper_enqueues_a_contact_a_crash_left_without_a_job(
    smtp_settings: Settings, smtp_server: SmtpRecorder, sessions: Any, redis: Any
) -> None:
    from orchestrator import intake

    settings = smtp_settings.model_copy(update={"sweeper_stale_after_s": 0})
    # Committed, never enqueued: what a crash between COMMIT and enqueue leaves behind.
    [result] = await intake.accept(
        sessions, None, settings.queue_name, [intake.parse_item(0, contact_payload(9))]
    )
    assert result.status == "queued"
    assert await redis.zcard(settings.queue_name) == 0

    ctx = await _worker_ctx(settings, redis, open_clock())
    try:
        assert (await sweep(ctx))["requeued"] == 1
    finally:
        await shutdown(ctx)
    await drain(settings, clock=open_clock())

    assert len(smtp_server.messages) == 1
    assert smtp_server.messages[0][1]["X-Orchestrator-Contact"] == result.id
    worker = build_worker(settings, "redis://unused")
    assert [job.name for job in worker.cron_jobs] == ["cron:sweep", "cron:refresh_response_rates"]


async def test_a_second_run_on_a_sending_contact_never_sends_and_the_sweeper_flags_stuck_ones(
    smtp_settings: Settings, smtp_server: SmtpRecorder, sessions: Any, redis: Any
) -> None:
    from orchestrator import intake

    settings = smtp_settings.model_copy(update={"sending_timeout_s": 0.001})
    results = await intake.accept(
        sessions, None, settings.queue_name, [intake.parse_item(i, contact_payload(10 + i)) for i in range(2)]
    )
    now = datetime.now(UTC)
    async with write_session(sessions) as session:
        for r in results:
            assert r.id is not None
            assert await store.claim_for_sending(session, r.id, now=now)  # a worker died after this commit

    ctx = await _worker_ctx(settings, redis, open_clock())
    try:
        assert await process_contact(ctx, str(results[0].id)) == "needs_reconciliation"
        assert (await sweep(ctx))["needs_reconciliation"] == 1  # the other one, found by age
    finally:
        await shutdown(ctx)

    assert smtp_server.messages == []
    async with sessions() as session:
        for r in results:
            contact = await store.get_contact(session, str(r.id))
            assert contact is not None
            assert (contact.status, contact.status_reason) == ("sending", "needs_reconciliation")
