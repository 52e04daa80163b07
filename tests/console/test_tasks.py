"""The operator task queue: tasks the returned-mail loop raised, listed oldest first with their counts, worked
by operators once each, and looked at (not worked) by viewers."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime
from typing import Any

from orchestrator import contact_log as store
from orchestrator.db import write_session
from orchestrator.models import OperatorTask
from orchestrator.settings import Settings
from tests.console.conftest import signed_in
from tests.console.test_actions import acting, enqueue, ref_of, refused, returned_letter_task, timeline
from tests.factories import contact_payload, national_id

TASK = re.compile(r'data-testid="task" data-task-id="([0-9A-Z]{26})"')


def task_ids(page: str) -> list[str]:
    return TASK.findall(page)


async def raise_task(sessions: Any, debtor_id: str, kind: str, reason: str, **detail: Any) -> str:
    """A task as the returned-mail loop writes it (for kinds that need a registry to raise for real)."""
    async with write_session(sessions) as session:
        return await store.insert_operator_task(
            session,
            {
                "kind": kind,
                "debtor_id": debtor_id,
                "case_id": debtor_id.replace("D-", "C-"),
                "contact_id": None,
                "attempt_id": None,
                "reason": reason,
                "detail": detail,
                "created_at": datetime.now(UTC),
            },
        )


async def test_a_returned_letter_task_is_listed_and_resolved_once_by_an_operator_not_a_viewer(
    console_factory: Any,
    operators: dict[str, str],
    api_key: str,
    sessions: Any,
    redis: Any,
    settings: Settings,
) -> None:
    otto = await acting(console_factory, "otto")
    contact_id, task_id = await returned_letter_task(otto, api_key, sessions, redis, settings, 21)

    vera = await signed_in(console_factory, "vera")
    page = await vera.page("/console/tasks")
    assert task_ids(page) == [task_id]
    assert "Kari Nordmann 21" in page
    assert "A letter came back. No registry or Posten gave a new address" in page
    assert 'data-testid="count-no_address_found">\n    <strong>1</strong>' in page
    assert f"/console/tasks/{task_id}/resolve" not in page  # a viewer sees no resolve form
    assert "Correct the address" not in page
    response = await vera.post(f"/console/tasks/{task_id}/resolve", {"outcome": "handled", "note": "x"})
    await refused(response, 403, "operator")

    page = await otto.page("/console/tasks")
    assert f'action="/console/tasks/{task_id}/resolve"' in page
    debtor_ref = await ref_of(sessions, "D-21")
    assert f'href="/console/debtors/{debtor_ref}?task_id={task_id}#correct-address"' in page
    assert f'href="/console/debtors/{debtor_ref}"' in page

    await refused(await otto.post(f"/console/tasks/{task_id}/resolve", {"outcome": "closed"}), 400, "outcome")
    await refused(await otto.post(f"/console/tasks/{task_id}/resolve", {"outcome": "no_action"}), 400, "note")
    response = await otto.post(
        f"/console/tasks/{task_id}/resolve",
        {"outcome": "handled", "note": "Asked the creditor for a new address."},
        allow_redirects=False,
    )
    assert response.status == 303, await response.text()
    assert response.headers["Location"] == "/console/tasks?done=task_resolved"
    page = await otto.page("/console/tasks?done=task_resolved")
    assert 'class="notice" role="status" data-testid="done"' in page
    assert task_ids(page) == []
    assert 'data-testid="no-tasks"' in page

    resolved = await otto.page("/console/tasks?view=resolved")
    assert task_ids(resolved) == [task_id]
    assert "Handled by <strong>otto</strong>" in resolved
    assert "Asked the creditor for a new address." in resolved

    again = await otto.post(f"/console/tasks/{task_id}/resolve", {"outcome": "no_action", "note": "dup"})
    await refused(again, 409, "already resolved by otto")
    await refused(
        await otto.post(f"/console/tasks/{'0' * 26}/resolve", {"outcome": "handled"}), 404, "no task"
    )

    async with sessions() as session:
        task = await session.get(OperatorTask, task_id)
        assert task is not None
    assert task.resolved_at is not None
    assert task.resolution == {
        "operator": "otto",
        "outcome": "handled",
        "note": "Asked the creditor for a new address.",
    }
    [entry] = await timeline(otto, api_key, "D-21", "operator_task_resolved")
    assert (entry["source"], entry["contact_id"]) == ("operator", contact_id)
    assert (entry["detail"]["operator"], entry["detail"]["outcome"], entry["detail"]["kind"]) == (
        "otto",
        "handled",
        "no_address_found",
    )


async def test_the_queue_counts_each_kind_filters_by_kind_and_never_shows_a_national_id(
    console_factory: Any, operators: dict[str, str], api_key: str, sessions: Any
) -> None:
    vera = await signed_in(console_factory, "vera")
    fnr = national_id("010190", "120")
    await enqueue(vera, api_key, contact_payload(22, debtor__national_id=fnr))
    await enqueue(vera, api_key, contact_payload(23, debtor__type="organisation", debtor__name="Kunde 23 AS"))
    graded = await raise_task(sessions, "D-22", "graded_address", "graded_address", looked_up_for=fnr)
    await asyncio.sleep(0.01)  # a later millisecond: a later id
    bankrupt = await raise_task(
        sessions, "D-23", "stop_collection", "bankruptcy", contacts_affected=["01A", "01B"]
    )

    page = await vera.page("/console/tasks")
    assert task_ids(page) == [graded, bankrupt]  # oldest first
    assert 'data-testid="count-all">2</strong>' in page
    assert 'data-testid="count-graded_address">\n    <strong>1</strong>' in page
    assert 'data-testid="count-stop_collection">\n    <strong>1</strong>' in page
    assert "Folkeregisteret says the person&#39;s address is graded" in page
    assert "says the company is bankrupt (konkurs)" in page
    assert "2 queued or scheduled contacts of the case held." in page
    assert fnr not in page and f"{fnr[:6]}*****" in page  # R9: masked wherever it shows

    only = await vera.page("/console/tasks?kind=stop_collection")
    assert task_ids(only) == [bankrupt]
    assert '<option value="stop_collection" selected>' in only
    await vera.page("/console/tasks?kind=nonsense", status=400)
    await vera.page("/console/tasks?view=everything", status=400)
    await vera.page("/console/tasks?after=not-an-id", status=400)


async def test_the_queue_pages_fifty_tasks_at_a_time(
    console_factory: Any, operators: dict[str, str], api_key: str, sessions: Any
) -> None:
    otto = await signed_in(console_factory, "otto")
    await enqueue(otto, api_key, contact_payload(24))
    # ids are time-ordered to the millisecond: within one, the queue's order is the ids' order
    ids = sorted(
        [await raise_task(sessions, "D-24", "no_address_found", "address_request_refused") for _ in range(51)]
    )

    first = await otto.page("/console/tasks")
    assert task_ids(first) == ids[:50]
    assert f'after={ids[49]}" data-testid="next-page"' in first
    second = await otto.page(f"/console/tasks?after={ids[49]}")
    assert task_ids(second) == ids[50:]
    assert 'data-testid="next-page"' not in second
