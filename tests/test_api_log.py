"""Reading the contact log (list, get, timeline), case events from upstream, and the operations endpoints,
against the real app, database, Redis and a real arq worker (``drain``)."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from orchestrator import auth
from orchestrator.settings import Settings
from tests.conftest import assert_problem, bearer, drain
from tests.factories import contact_payload, national_id, open_clock

OSLO_WINTER = timezone(timedelta(hours=1))


async def create(client: TestClient[Any, Any], key: str, n: int, **overrides: Any) -> str:
    r = await client.post("/v1/contacts", json=contact_payload(n, **overrides), headers=bearer(key))
    assert r.status == 202, await r.text()
    contact_id: str = (await r.json())["id"]
    return contact_id


async def create_batch(client: TestClient[Any, Any], key: str, payloads: list[dict[str, Any]]) -> list[str]:
    r = await client.post("/v1/contacts:batch", json={"contacts": payloads}, headers=bearer(key))
    assert r.status == 200
    body = await r.json()
    assert body["rejected"] == 0, body
    return [res["id"] for res in body["results"]]


async def get_contact(client: TestClient[Any, Any], key: str, contact_id: str) -> dict[str, Any]:
    r = await client.get(f"/v1/contacts/{contact_id}", headers=bearer(key))
    assert r.status == 200
    body: dict[str, Any] = await r.json()
    return body


async def list_ids(client: TestClient[Any, Any], key: str, **query: str) -> set[str]:
    r = await client.get("/v1/contacts", params=query, headers=bearer(key))
    assert r.status == 200, await r.text()
    page = await r.json()
    assert page["next_cursor"] is None
    return {c["id"] for c in page["items"]}


async def case_event(client: TestClient[Any, Any], key: str, case_id: str, type_: str, **extra: Any) -> Any:
    body = {"type": type_, "at": datetime.now(OSLO_WINTER).isoformat(), **extra}
    return await client.post(f"/v1/cases/{case_id}/events", json=body, headers=bearer(key))


# ---- GET /v1/contacts ----


async def test_list_filters(client: TestClient[Any, Any], api_key: str) -> None:
    a1 = await create(client, api_key, 1)
    a2 = await create(client, api_key, 1, idempotency_key="k/1/inkassovarsel", kind="inkassovarsel")
    b1 = await create(client, api_key, 2)
    c1 = await create(client, api_key, 3, debtor__id="D-2", idempotency_key="k/3")  # debtor D-2's second case
    r = await case_event(client, api_key, "C-2", "dispute_raised")
    assert r.status == 201

    assert await list_ids(client, api_key) == {a1, a2, b1, c1}
    assert await list_ids(client, api_key, debtor_id="D-1") == {a1, a2}
    assert await list_ids(client, api_key, debtor_id="D-2") == {b1, c1}
    assert await list_ids(client, api_key, debtor_id="D-404") == set()
    assert await list_ids(client, api_key, case_id="C-1") == {a1, a2}
    assert await list_ids(client, api_key, case_id="C-3") == {c1}
    assert await list_ids(client, api_key, status="held") == {b1}
    assert await list_ids(client, api_key, status="queued") == {a1, a2, c1}
    assert await list_ids(client, api_key, status="sent") == set()
    assert await list_ids(client, api_key, kind="inkassovarsel") == {a2}
    assert await list_ids(client, api_key, kind="reminder", debtor_id="D-1") == {a1}
    assert await list_ids(client, api_key, debtor_id="D-2", status="queued") == {c1}

    r = await client.get("/v1/contacts", params={"debtor_id": "D-1"}, headers=bearer(api_key))
    items = (await r.json())["items"]
    assert {(c["debtor_id"], c["case_id"], c["status"]) for c in items} == {("D-1", "C-1", "queued")}


async def test_list_since_and_until(client: TestClient[Any, Any], api_key: str) -> None:
    early = set(await create_batch(client, api_key, [contact_payload(n) for n in range(3)]))
    middle = datetime.now(UTC)
    late = set(await create_batch(client, api_key, [contact_payload(n) for n in range(3, 5)]))

    for written in (
        middle.astimezone(OSLO_WINTER).isoformat(),
        middle.isoformat(),
        middle.isoformat()[:-6] + "Z",
    ):
        assert await list_ids(client, api_key, since=written) == late, written
        assert await list_ids(client, api_key, until=written) == early, written
    assert await list_ids(client, api_key, since=(middle - timedelta(hours=1)).isoformat()) == early | late
    assert (
        await list_ids(
            client,
            api_key,
            since=(middle - timedelta(hours=1)).isoformat(),
            until=middle.astimezone(OSLO_WINTER).isoformat(),
        )
        == early
    )
    assert await list_ids(client, api_key, since=(middle + timedelta(hours=1)).isoformat()) == set()


@pytest.mark.parametrize("name", ["since", "until"])
@pytest.mark.parametrize("value", ["2026-11-23T08:00:00", "2026-11-23", "yesterday", ""])
async def test_list_time_without_offset_is_400(
    client: TestClient[Any, Any], api_key: str, name: str, value: str
) -> None:
    r = await client.get("/v1/contacts", params={name: value}, headers=bearer(api_key))
    body = await assert_problem(r, 400)
    assert body["errors"][0]["loc"] == ["query", name]


async def test_list_pages_newest_first(client: TestClient[Any, Any], api_key: str) -> None:
    # three separate requests, so the three groups surely differ in creation time
    groups = [
        await create_batch(client, api_key, [contact_payload(n) for n in range(0, 10)]),
        await create_batch(client, api_key, [contact_payload(n) for n in range(10, 20)]),
        await create_batch(client, api_key, [contact_payload(n) for n in range(20, 25)]),
    ]
    group_of = {cid: g for g, ids in enumerate(groups) for cid in ids}

    pages: list[list[dict[str, Any]]] = []
    params = {"limit": "10"}
    while True:
        r = await client.get("/v1/contacts", params=params, headers=bearer(api_key))
        assert r.status == 200
        page = await r.json()
        pages.append(page["items"])
        if page["next_cursor"] is None:
            break
        assert len(pages) < 5, "the cursor does not end"
        params["cursor"] = page["next_cursor"]

    assert [len(p) for p in pages] == [10, 10, 5]
    seen = [c["id"] for p in pages for c in p]
    assert len(seen) == len(set(seen)) == 25
    assert set(seen) == set(group_of)
    assert [group_of[cid] for cid in seen] == [2] * 5 + [1] * 10 + [0] * 10
    created = [datetime.fromisoformat(c["created_at"]) for p in pages for c in p]
    assert created == sorted(created, reverse=True)

    # filters and pagination together
    r = await client.get("/v1/contacts", params={"limit": "3", "debtor_id": "D-7"}, headers=bearer(api_key))
    page = await r.json()
    assert [c["debtor_id"] for c in page["items"]] == ["D-7"]
    assert page["next_cursor"] is None


@pytest.mark.parametrize("limit", ["0", "-1", "501", "ten", "1.5", ""])
async def test_list_invalid_limit_is_400(client: TestClient[Any, Any], api_key: str, limit: str) -> None:
    r = await client.get("/v1/contacts", params={"limit": limit}, headers=bearer(api_key))
    body = await assert_problem(r, 400)
    assert body["errors"][0]["loc"] == ["query", "limit"]


async def test_list_limit_bounds_are_accepted(client: TestClient[Any, Any], api_key: str) -> None:
    await create(client, api_key, 1)
    await create(client, api_key, 2)
    r = await client.get("/v1/contacts", params={"limit": "1"}, headers=bearer(api_key))
    page = await r.json()
    assert len(page["items"]) == 1
    assert page["next_cursor"] is not None
    r = await client.get("/v1/contacts", params={"limit": "500"}, headers=bearer(api_key))
    assert len((await r.json())["items"]) == 2


INVALID_CURSORS = {
    "made-up": "not-a-cursor",
    "non-ascii": "\u00e6\u00f8\u00e5",
    "percent": "%%%",
    "bang": "!",
    "base64-of-garbage": base64.urlsafe_b64encode(b"0000000000").decode(),
    "base64-of-non-id": base64.urlsafe_b64encode(b"zzzzzzzzzzzzzzzzzzzzzzzzzz").decode().rstrip("="),
}


@pytest.mark.parametrize("cursor", INVALID_CURSORS.values(), ids=INVALID_CURSORS.keys())
@pytest.mark.parametrize("path", ["/v1/contacts", "/v1/debtors/D-1/timeline"])
async def test_invalid_cursor_is_400(
    client: TestClient[Any, Any], api_key: str, path: str, cursor: str
) -> None:
    await create(client, api_key, 1)
    r = await client.get(path, params={"cursor": cursor}, headers=bearer(api_key))
    body = await assert_problem(r, 400)
    assert body["errors"][0]["loc"] == ["query", "cursor"]


async def test_list_unknown_status_is_400(client: TestClient[Any, Any], api_key: str) -> None:
    r = await client.get("/v1/contacts", params={"status": "delivered-ish"}, headers=bearer(api_key))
    body = await assert_problem(r, 400)
    assert body["errors"][0]["loc"] == ["query", "status"]


# ---- GET /v1/contacts/{id} ----


async def test_unknown_contact_is_404(client: TestClient[Any, Any], api_key: str) -> None:
    r = await client.get("/v1/contacts/01ARZ3NDEKTSV4RRFFQ69G5FAV", headers=bearer(api_key))
    await assert_problem(r, 404)


async def test_reading_needs_the_read_scope(
    client: TestClient[Any, Any], sessions: Any, api_key: str
) -> None:
    contact_id = await create(client, api_key, 1)
    writer = await auth.create_api_key(sessions, name="writer", scopes=["contacts:write"])
    for path in (f"/v1/contacts/{contact_id}", "/v1/contacts", "/v1/debtors/D-1/timeline"):
        await assert_problem(await client.get(path, headers=bearer(writer)), 403)
        await assert_problem(await client.get(path), 401)


# ---- timeline ----


async def test_timeline_in_time_order(client: TestClient[Any, Any], api_key: str, settings: Settings) -> None:
    secret = national_id()
    contact_id = await create(client, api_key, 1, debtor__national_id=secret)

    r = await client.get("/v1/debtors/D-1/timeline", headers=bearer(api_key))
    assert r.status == 200
    body = await r.json()
    assert body["debtor_id"] == "D-1"
    assert [(e["type"], e["status"], e["contact_id"]) for e in body["items"]] == [
        ("contact_received", "queued", contact_id)
    ]

    await drain(settings, clock=open_clock())
    r = await client.get("/v1/debtors/D-1/timeline", headers=bearer(api_key))
    assert r.status == 200
    text = await r.text()
    items = (await r.json())["items"]
    assert [e["type"] for e in items] == ["contact_received", "decision", "attempt"]
    assert all(e["contact_id"] == contact_id and e["case_id"] == "C-1" for e in items)
    assert items[2]["status"] == "sent"
    assert items[2]["attempt_id"]
    times = [datetime.fromisoformat(e["at"]) for e in items]
    assert times == sorted(times)
    assert secret not in text

    contact = await get_contact(client, api_key, contact_id)
    assert contact["status"] == "sent"
    assert [a["id"] for a in contact["attempts"]] == [items[2]["attempt_id"]]
    assert contact["attempts"][0]["channel"] == "email"
    assert contact["attempts"][0]["address"] == "debtor1@example.no"
    assert (
        secret not in await (await client.get(f"/v1/contacts/{contact_id}", headers=bearer(api_key))).text()
    )


async def test_timeline_of_unknown_debtor_is_404(client: TestClient[Any, Any], api_key: str) -> None:
    await create(client, api_key, 1)
    r = await client.get("/v1/debtors/D-404/timeline", headers=bearer(api_key))
    await assert_problem(r, 404)


# ---- case events ----


async def test_dispute_holds_every_queued_contact_until_resolved(
    client: TestClient[Any, Any], api_key: str, settings: Settings
) -> None:
    disputed = [
        await create(client, api_key, 1, idempotency_key=f"k/1/{i}", kind=kind)
        for i, kind in enumerate(("reminder", "inkassovarsel", "reminder"))
    ]
    other_case = await create(client, api_key, 2)

    r = await case_event(client, api_key, "C-1", "dispute_raised", note="debtor disputes the claim")
    assert r.status == 201
    body = await r.json()
    assert (body["case_id"], body["type"], body["case_status"], body["contacts_affected"]) == (
        "C-1",
        "dispute_raised",
        "held",
        3,
    )
    for contact_id in disputed:
        contact = await get_contact(client, api_key, contact_id)
        assert (contact["status"], contact["status_reason"]) == ("held", "dispute")

    await drain(settings, clock=open_clock())
    for contact_id in disputed:
        contact = await get_contact(client, api_key, contact_id)
        assert (contact["status"], contact["status_reason"]) == ("held", "dispute")
        assert contact["attempts"] == []
    assert (await get_contact(client, api_key, other_case))["status"] == "sent"

    # a contact that arrives while the case is held is not sent either
    late = await create(client, api_key, 1, idempotency_key="k/1/late")
    await drain(settings, clock=open_clock())
    late_contact = await get_contact(client, api_key, late)
    assert late_contact["status"] == "held"
    assert late_contact["attempts"] == []

    r = await case_event(client, api_key, "C-1", "dispute_resolved")
    assert r.status == 201
    body = await r.json()
    assert (body["case_status"], body["contacts_affected"]) == ("open", 4)
    for contact_id in [*disputed, late]:
        contact = await get_contact(client, api_key, contact_id)
        assert contact["status"] == "queued"

    await drain(settings, clock=open_clock())
    for contact_id in [*disputed, late]:
        contact = await get_contact(client, api_key, contact_id)
        assert contact["status"] == "sent"
        assert len(contact["attempts"]) == 1

    r = await client.get("/v1/debtors/D-1/timeline", headers=bearer(api_key))
    types = [e["type"] for e in (await r.json())["items"]]
    assert "case_dispute_raised" in types
    assert "case_dispute_resolved" in types
    assert types.index("case_dispute_raised") < types.index("case_dispute_resolved")


async def test_bankruptcy_holds_the_case(
    client: TestClient[Any, Any], api_key: str, settings: Settings
) -> None:
    contact_id = await create(client, api_key, 1)
    r = await case_event(client, api_key, "C-1", "bankrupt")
    assert r.status == 201
    assert (await r.json())["case_status"] == "held"
    await drain(settings, clock=open_clock())
    contact = await get_contact(client, api_key, contact_id)
    assert (contact["status"], contact["status_reason"], contact["attempts"]) == ("held", "bankruptcy", [])
    # a dispute resolution does not lift a bankruptcy hold
    r = await case_event(client, api_key, "C-1", "dispute_resolved")
    assert (await r.json())["contacts_affected"] == 0
    assert (await get_contact(client, api_key, contact_id))["status"] == "held"


@pytest.mark.parametrize(("event", "reason"), [("paid_in_full", "paid_in_full"), ("closed", "case_closed")])
async def test_closing_a_case_cancels_open_contacts(
    client: TestClient[Any, Any], api_key: str, settings: Settings, event: str, reason: str
) -> None:
    sent = await create(client, api_key, 1, idempotency_key="k/1/first")
    await drain(settings, clock=open_clock())
    assert (await get_contact(client, api_key, sent))["status"] == "sent"
    open_ids = [await create(client, api_key, 1, idempotency_key=f"k/1/{i}") for i in range(2)]

    r = await case_event(client, api_key, "C-1", event, amount="1285.00")
    assert r.status == 201
    body = await r.json()
    assert (body["case_status"], body["contacts_affected"]) == ("closed", 2)
    await drain(settings, clock=open_clock())
    for contact_id in open_ids:
        contact = await get_contact(client, api_key, contact_id)
        assert (contact["status"], contact["status_reason"], contact["attempts"]) == ("cancelled", reason, [])
    assert (await get_contact(client, api_key, sent))["status"] == "sent"

    # a new contact for the closed case is not sent
    after = await create(client, api_key, 1, idempotency_key="k/1/after")
    await drain(settings, clock=open_clock())
    contact = await get_contact(client, api_key, after)
    assert contact["status"] != "sent"
    assert contact["attempts"] == []


async def test_payment_received_changes_no_contact(client: TestClient[Any, Any], api_key: str) -> None:
    contact_id = await create(client, api_key, 1)
    r = await case_event(client, api_key, "C-1", "payment_received", amount="500.00")
    assert r.status == 201
    body = await r.json()
    assert (body["case_status"], body["contacts_affected"]) == ("open", 0)
    assert (await get_contact(client, api_key, contact_id))["status"] == "queued"


async def test_case_event_unknown_case_is_404(client: TestClient[Any, Any], api_key: str) -> None:
    r = await case_event(client, api_key, "C-404", "dispute_raised")
    await assert_problem(r, 404)


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"type": "disputed", "at": "2026-11-23T08:00:00+01:00"}, ["type"]),
        ({"type": "dispute_raised"}, ["at"]),
        ({"type": "dispute_raised", "at": "2026-11-23T08:00:00"}, ["at"]),
        ({"type": "payment_received", "at": "2026-11-23T08:00:00+01:00", "amount": "-5"}, ["amount"]),
        ({"type": "dispute_raised", "at": "2026-11-23T08:00:00+01:00", "typo": 1}, ["typo"]),
    ],
)
async def test_invalid_case_event_is_422(
    client: TestClient[Any, Any], api_key: str, body: dict[str, Any], loc: list[str]
) -> None:
    contact_id = await create(client, api_key, 1)
    r = await client.post("/v1/cases/C-1/events", json=body, headers=bearer(api_key))
    problem = await assert_problem(r, 422)
    assert [e["loc"] for e in problem["errors"]] == [loc]
    assert (await get_contact(client, api_key, contact_id))["status"] == "queued"


async def test_case_event_needs_cases_write(
    client: TestClient[Any, Any], sessions: Any, api_key: str
) -> None:
    contact_id = await create(client, api_key, 1)
    contacts_only = await auth.create_api_key(
        sessions, name="contacts", scopes=["contacts:write", "contacts:read"]
    )
    body = {"type": "dispute_raised", "at": "2026-11-23T08:00:00+01:00"}
    r = await client.post("/v1/cases/C-1/events", json=body, headers=bearer(contacts_only))
    problem = await assert_problem(r, 403)
    assert "cases:write" in problem["detail"]
    await assert_problem(await client.post("/v1/cases/C-1/events", json=body), 401)
    assert (await get_contact(client, api_key, contact_id))["status"] == "queued"


# ---- operations ----


async def test_healthz_and_readyz(client: TestClient[Any, Any]) -> None:
    r = await client.get("/healthz")
    assert r.status == 200
    assert (await r.json())["status"] == "ok"
    r = await client.get("/readyz")
    assert r.status == 200
    body = await r.json()
    assert body["status"] == "ok"
    assert body["checks"] == {"database": "ok", "redis": "ok"}


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in the metrics")


async def test_metrics_count_accepted_contacts(client: TestClient[Any, Any], api_key: str) -> None:
    r = await client.get("/metrics")
    assert r.status == 200
    assert r.content_type == "text/plain"
    before = _metric(await r.text(), "orchestrator_contacts_accepted_total")
    await create_batch(client, api_key, [contact_payload(n) for n in range(3)])
    r = await client.get("/metrics")
    text = await r.text()
    assert "# TYPE orchestrator_contacts_accepted_total counter" in text
    assert _metric(text, "orchestrator_contacts_accepted_total") == before + 3
