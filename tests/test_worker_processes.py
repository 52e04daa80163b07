"""Real worker processes against one Redis, one database and one SMTP server: never send twice.

These start ``python -m orchestrator worker`` as separate processes, kill one with SIGKILL mid-flight, and
run two side by side, then count what the SMTP server received per contact.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import pytest

from orchestrator import contact_log as store
from orchestrator import intake, queue
from orchestrator.models import Contact
from orchestrator.sandbox.demo import ALWAYS_OPEN_RULES
from orchestrator.settings import Settings
from tests.conftest import SmtpRecorder, start_worker_process, stop_process, wait_until
from tests.factories import contact_payload

pytestmark = pytest.mark.slow
# A killed worker's jobs become visible to others after this + 10 s (arq's in-progress lock). Long enough
# that a job waiting its turn for SQLite's single writer behind 40 others is not cancelled on a slow machine.
JOB_TIMEOUT_S = 20


def _worker_env(settings: Settings, smtp_port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCH_")}
    env.update(
        {
            "ORCH_REDIS_URL": str(settings.redis_url),
            "ORCH_DATABASE_URL": str(settings.database_url),
            "ORCH_QUEUE_NAME": settings.queue_name,
            "ORCH_STATE_DIR": str(settings.state_dir),
            "ORCH_SMTP_HOST": "127.0.0.1",
            "ORCH_SMTP_PORT": str(smtp_port),
            "ORCH_SMTP_SECURITY": "none",
            # Windows open around the clock, so that the test sends whatever the hour.
            "ORCH_RULES_FILE": str(ALWAYS_OPEN_RULES),
            "ORCH_JOB_TIMEOUT_S": str(JOB_TIMEOUT_S),
            "ORCH_WORKER_MAX_JOBS": "20",
            # The sweeper re-enqueues what a dead worker left queued; "sending" is left to reconciliation.
            "ORCH_SWEEPER_INTERVAL_S": "5",
            "ORCH_SWEEPER_STALE_AFTER_S": "5",
            "ORCH_LOG_LEVEL": "INFO",
            "ORCH_LOG_FORMAT": "json",
        }
    )
    return env


async def _enqueue(sessions: Any, settings: Settings, count: int, first: int = 1) -> list[str]:
    redis = await queue.connect(str(settings.redis_url))
    try:
        ids: list[str] = []
        payloads = [contact_payload(n) for n in range(first, first + count)]
        for start in range(0, count, 500):
            items = [intake.parse_item(i, p) for i, p in enumerate(payloads[start : start + 500])]
            results = await intake.accept(sessions, redis, settings.queue_name, items)
            assert all(r.ok for r in results), [r.errors for r in results if not r.ok][:3]
            ids.extend(str(r.id) for r in results)
        return ids
    finally:
        await redis.aclose()


async def _contacts(sessions: Any, ids: list[str]) -> dict[str, Contact]:
    async with sessions() as session:
        out = {}
        for cid in ids:
            contact = await store.get_contact(session, cid)
            assert contact is not None
            out[cid] = contact
        return out


async def test_worker_killed_mid_flight_never_sends_twice(
    settings: Settings, smtp_server: SmtpRecorder, sessions: Any, tmp_path: Path
) -> None:
    # Each message takes a while at the relay, so that many are in flight (claimed, not yet answered) at once.
    smtp_server.delay_s = 0.25
    ids = await _enqueue(sessions, settings, 500)
    env = _worker_env(settings, smtp_server.port)
    log_path = tmp_path / "worker.log"

    first = start_worker_process(env, log_path)
    try:

        async def some_sent_and_some_in_flight() -> bool:
            if len(smtp_server.messages) < 60:
                return False
            async with sessions() as session:
                return (await store.count_by_status(session)).get("sending", 0) > 0

        await wait_until(some_sent_and_some_in_flight, 90, "the first worker to be mid-flight")
        first.send_signal(
            signal.SIGKILL
        )  # the relay is still busy with the in-flight ones: they stay in flight
        first.wait(timeout=10)
    finally:
        if first.poll() is None:
            first.kill()
    smtp_server.delay_s = 0.005
    at_kill = len(smtp_server.messages)
    assert at_kill < 500, "the worker finished before it could be killed; the test proves nothing"
    in_flight = [c for c in (await _contacts(sessions, ids)).values() if c.status == "sending"]
    assert in_flight, "no contact was in flight when the worker died"

    second = start_worker_process(env, log_path)
    try:

        async def all_settled() -> bool:
            contacts = await _contacts(sessions, ids)
            return all(
                c.status == "sent" or (c.status == "sending" and c.status_reason == "needs_reconciliation")
                for c in contacts.values()
            )

        await wait_until(all_settled, 120, "every contact to be sent or to await reconciliation")
    finally:
        stop_process(second)

    received = smtp_server.per_contact()
    contacts = await _contacts(sessions, ids)
    assert max(received.values()) == 1, {cid: n for cid, n in received.items() if n > 1}
    for cid, contact in contacts.items():
        if contact.status == "sent":
            assert received.get(cid) == 1, (
                f"{cid} is logged as sent but the SMTP server has {received.get(cid)}"
            )
        else:
            assert contact.status_reason == "needs_reconciliation"
            assert received.get(cid, 0) <= 1
    reconciling = [c for c in contacts.values() if c.status == "sending"]
    assert 0 < len(reconciling) <= 20  # at most one worker's max_jobs were in flight
    assert len(received) == sum(1 for c in contacts.values() if c.status == "sent") + sum(
        1 for c in reconciling if c.id in received
    )


async def test_two_worker_processes_drain_one_queue_and_send_each_contact_once(
    settings: Settings, smtp_server: SmtpRecorder, sessions: Any, tmp_path: Path
) -> None:
    smtp_server.delay_s = 0.005
    ids = await _enqueue(sessions, settings, 300, first=1000)
    env = _worker_env(settings, smtp_server.port)
    logs = [tmp_path / "worker-a.log", tmp_path / "worker-b.log"]
    workers = [start_worker_process(env, path) for path in logs]
    try:

        async def all_sent() -> bool:
            contacts = await _contacts(sessions, ids)
            return all(c.status == "sent" for c in contacts.values())

        await wait_until(all_sent, 120, "all 300 contacts to be sent")
    finally:
        for proc in workers:
            stop_process(proc)

    received = smtp_server.per_contact()
    assert sorted(received) == sorted(ids)
    assert set(received.values()) == {1}
    sent_by = [path.read_text().count('"event": "sent"') for path in logs]
    assert sum(sent_by) == 300
    assert all(n > 0 for n in sent_by), f"one worker did all the work: {sent_by}"
