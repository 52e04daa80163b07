"""POST /v1/contacts and /v1/contacts:batch against the real app, database and Redis: authentication,
validation with precise error locations, idempotency, and batches that never reject good items because of
bad ones."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from orchestrator import auth
from orchestrator.identifiers import luhn_check_digit, mod11_check_digit
from orchestrator.settings import Settings
from tests.conftest import assert_problem, bearer, drain
from tests.factories import REMOVE, contact_payload, kid_for, national_id, open_clock, with_


async def contacts_of(client: TestClient[Any, Any], key: str, **query: str) -> list[dict[str, Any]]:
    """Every contact the log lists for ``query``, following the cursor."""
    items: list[dict[str, Any]] = []
    params = {**query, "limit": "500"}
    while True:
        r = await client.get("/v1/contacts", params=params, headers=bearer(key))
        assert r.status == 200
        page = await r.json()
        items += page["items"]
        if page["next_cursor"] is None:
            return items
        params["cursor"] = page["next_cursor"]


def wrong_kid(n: int) -> str:
    """Case ``n``'s KID with a check digit that is neither the MOD10 nor the MOD11 one."""
    payload = kid_for(n)[:-1]
    weights = [(2, 3, 4, 5, 6, 7)[(len(payload) - 1 - i) % 6] for i in range(len(payload))]
    valid = {luhn_check_digit(payload), mod11_check_digit(payload, weights)}
    return payload + str(next(d for d in range(10) if d not in valid))


BAD_NATIONAL_ID = national_id()[:-1] + str((int(national_id()[-1]) + 1) % 10)

# (test id, dotted path, value, loc of the one error it causes)
SINGLE_ERRORS = [
    ("phone", "debtor.phones", ["+4791234567", "12345"], ["debtor", "phones", 1]),
    ("email", "debtor.emails", ["kari.example.no"], ["debtor", "emails", 0]),
    ("national-id-control-digits", "debtor.national_id", BAD_NATIONAL_ID, ["debtor", "national_id"]),
    (
        "creditor-organisation-number",
        "case.creditor.organisation_number",
        "974760674",
        ["case", "creditor", "organisation_number"],
    ),
    ("kid-check-digit", "case.kid", wrong_kid(1), ["case", "kid"]),
    ("account-number", "case.account_number", "86011117948", ["case", "account_number"]),
    ("postal-code", "debtor.addresses.0.postal_code", "015", ["debtor", "addresses", 0, "postal_code"]),
    (
        "organisation-number-on-person",
        "debtor.organisation_number",
        "974760673",
        ["debtor", "organisation_number"],
    ),
    ("kind", "kind", "purring", ["kind"]),
    ("unknown-field", "chanel", "sms", ["chanel"]),
    ("missing-case", "case", REMOVE, ["case"]),
]


# ---- the happy path ----


async def test_create_returns_202_and_the_contact_is_queued(
    client: TestClient[Any, Any], api_key: str
) -> None:
    r = await client.post("/v1/contacts", json=contact_payload(1), headers=bearer(api_key))
    assert r.status == 202
    body = await r.json()
    assert set(body) == {"id", "status", "links"}
    assert body["status"] == "queued"
    assert body["links"] == {"self": f"/v1/contacts/{body['id']}"}

    r = await client.get(body["links"]["self"], headers=bearer(api_key))
    assert r.status == 200
    contact = await r.json()
    assert contact["id"] == body["id"]
    assert contact["status"] == "queued"
    assert contact["debtor_id"] == "D-1"
    assert contact["case_id"] == "C-1"
    assert contact["kind"] == "reminder"
    assert contact["idempotency_key"] == "eksempel-as/inv-1/reminder"
    assert contact["attempts"] == []


# ---- authentication ----


async def test_no_authorization_is_401(client: TestClient[Any, Any]) -> None:
    r = await client.post("/v1/contacts", json=contact_payload(1))
    await assert_problem(r, 401)
    r = await client.post("/v1/contacts", json=contact_payload(1), headers={"Authorization": "Bearer "})
    await assert_problem(r, 401)


async def test_unknown_key_is_401(client: TestClient[Any, Any], api_key: str) -> None:
    r = await client.post("/v1/contacts", json=contact_payload(1), headers=bearer(api_key + "x"))
    await assert_problem(r, 401)
    r = await client.post(
        "/v1/contacts", json=contact_payload(1), headers={"Authorization": f"Basic {api_key}"}
    )
    await assert_problem(r, 401)


async def test_key_without_the_scope_is_403_and_nothing_is_created(
    client: TestClient[Any, Any], sessions: Any, api_key: str
) -> None:
    reader = await auth.create_api_key(sessions, name="reader", scopes=["contacts:read"])
    r = await client.post("/v1/contacts", json=contact_payload(1), headers=bearer(reader))
    body = await assert_problem(r, 403)
    assert "contacts:write" in body["detail"]
    r = await client.post(
        "/v1/contacts:batch", json={"contacts": [contact_payload(1)]}, headers=bearer(reader)
    )
    await assert_problem(r, 403)
    # the key may still read, and nothing was created
    assert await contacts_of(client, reader) == []


# ---- validation ----


async def test_malformed_json_is_400(client: TestClient[Any, Any], api_key: str) -> None:
    r = await client.post(
        "/v1/contacts",
        data=b'{"idempotency_key": "k", ',
        headers={**bearer(api_key), "Content-Type": "application/json"},
    )
    await assert_problem(r, 400)


@pytest.mark.parametrize(
    ("path", "value", "loc"), [e[1:] for e in SINGLE_ERRORS], ids=[e[0] for e in SINGLE_ERRORS]
)
async def test_one_invalid_field_is_422_at_its_exact_location(
    client: TestClient[Any, Any], api_key: str, path: str, value: Any, loc: list[Any]
) -> None:
    r = await client.post(
        "/v1/contacts", json=with_(contact_payload(1), path, value), headers=bearer(api_key)
    )
    body = await assert_problem(r, 422)
    assert [e["loc"] for e in body["errors"]] == [loc]
    assert body["errors"][0]["msg"]
    assert await contacts_of(client, api_key) == []


async def test_every_error_of_one_request_is_listed(client: TestClient[Any, Any], api_key: str) -> None:
    payload = contact_payload(1)
    changes = [e for e in SINGLE_ERRORS if e[0] != "missing-case"]
    for _, path, value, _ in changes:
        payload = with_(payload, path, value)
    r = await client.post("/v1/contacts", json=payload, headers=bearer(api_key))
    body = await assert_problem(r, 422)
    locs = [e["loc"] for e in body["errors"]]
    assert sorted(map(json.dumps, locs)) == sorted(json.dumps(e[3]) for e in changes)
    assert all(e["msg"] for e in body["errors"])


async def test_a_rejected_national_id_never_appears_in_the_response(
    client: TestClient[Any, Any], api_key: str
) -> None:
    # a valid national id pasted into a phone field by mistake is not echoed either, not even in the message
    # that says it is not a phone number
    pasted = national_id("020285", "135")
    r = await client.post(
        "/v1/contacts",
        json=contact_payload(1, debtor__national_id=BAD_NATIONAL_ID, debtor__phones=[pasted]),
        headers=bearer(api_key),
    )
    body = await assert_problem(r, 422)
    assert [e["loc"] for e in body["errors"]] == [["debtor", "national_id"], ["debtor", "phones", 0]]
    text = await r.text()
    for secret in (BAD_NATIONAL_ID, pasted, pasted[6:]):
        assert secret not in text


@pytest.mark.parametrize(
    ("debtor_type", "field", "value"),
    [("person", "organisation_number", "974760673"), ("organisation", "national_id", national_id())],
)
async def test_identity_number_of_the_other_debtor_type_is_rejected(
    client: TestClient[Any, Any], api_key: str, debtor_type: str, field: str, value: str
) -> None:
    payload = contact_payload(1, debtor__type=debtor_type, **{f"debtor__{field}": value})
    r = await client.post("/v1/contacts", json=payload, headers=bearer(api_key))
    body = await assert_problem(r, 422)
    [error] = body["errors"]
    assert error["loc"] == ["debtor", field]
    assert debtor_type in error["msg"] or field in error["msg"]
    assert value not in await r.text()


async def test_organisation_number_on_a_person_is_located_and_listed_with_other_errors(
    client: TestClient[Any, Any], api_key: str
) -> None:
    payload = contact_payload(1, debtor__organisation_number="974760673", debtor__phones=["12345"])
    r = await client.post("/v1/contacts", json=payload, headers=bearer(api_key))
    body = await assert_problem(r, 422)
    locs = [e["loc"] for e in body["errors"]]
    assert ["debtor", "phones", 0] in locs
    assert ["debtor", "organisation_number"] in locs


async def test_bad_organisation_number_of_an_organisation_debtor(
    client: TestClient[Any, Any], api_key: str
) -> None:
    payload = contact_payload(1, debtor__type="organisation", debtor__organisation_number="123456789")
    r = await client.post("/v1/contacts", json=payload, headers=bearer(api_key))
    body = await assert_problem(r, 422)
    assert [e["loc"] for e in body["errors"]] == [["debtor", "organisation_number"]]

    ok = contact_payload(1, debtor__type="organisation", debtor__organisation_number="974760673")
    r = await client.post("/v1/contacts", json=ok, headers=bearer(api_key))
    assert r.status == 202


async def test_national_id_valid_only_under_the_2032_rule_is_accepted(
    client: TestClient[Any, Any], api_key: str
) -> None:
    for n, remainder in ((1, 1), (2, 2), (3, 3)):
        r = await client.post(
            "/v1/contacts",
            json=contact_payload(n, debtor__national_id=national_id(k1_remainder=remainder)),
            headers=bearer(api_key),
        )
        assert r.status == 202, await r.text()
    r = await client.post(
        "/v1/contacts", json=contact_payload(4, debtor__national_id="30108299939"), headers=bearer(api_key)
    )
    assert r.status == 202, await r.text()
    assert len(await contacts_of(client, api_key)) == 4


# ---- idempotency ----


async def test_same_key_and_body_returns_the_existing_contact_and_sends_once(
    client: TestClient[Any, Any], api_key: str, settings: Settings
) -> None:
    payload = contact_payload(1)
    first = await client.post("/v1/contacts", json=payload, headers=bearer(api_key))
    assert first.status == 202
    contact_id = (await first.json())["id"]

    again = await client.post("/v1/contacts", json=payload, headers=bearer(api_key))
    assert again.status == 200
    body = await again.json()
    assert body["id"] == contact_id
    assert body["links"]["self"] == f"/v1/contacts/{contact_id}"
    assert [c["id"] for c in await contacts_of(client, api_key, debtor_id="D-1")] == [contact_id]

    other = await client.post(
        "/v1/contacts", json=contact_payload(1, case__principal="999.00"), headers=bearer(api_key)
    )
    problem = await assert_problem(other, 409)
    assert problem["errors"][0]["loc"] == ["idempotency_key"]

    await drain(settings, clock=open_clock())
    r = await client.get(f"/v1/contacts/{contact_id}", headers=bearer(api_key))
    contact = await r.json()
    assert contact["status"] == "sent"
    assert len(contact["attempts"]) == 1

    # asking again after it was sent returns it as it stands, and sends nothing more
    later = await client.post("/v1/contacts", json=payload, headers=bearer(api_key))
    assert later.status == 200
    assert await later.json() == {
        "id": contact_id,
        "status": "sent",
        "links": {"self": f"/v1/contacts/{contact_id}"},
    }
    await drain(settings, clock=open_clock())
    r = await client.get(f"/v1/contacts/{contact_id}", headers=bearer(api_key))
    assert len((await r.json())["attempts"]) == 1
    assert len(await contacts_of(client, api_key)) == 1


async def test_concurrent_requests_with_one_key_create_one_contact(
    client: TestClient[Any, Any], api_key: str
) -> None:
    responses = await asyncio.gather(
        *[client.post("/v1/contacts", json=contact_payload(1), headers=bearer(api_key)) for _ in range(10)]
    )
    assert sorted(r.status for r in responses) == [200] * 9 + [202]
    ids = {(await r.json())["id"] for r in responses}
    assert len(ids) == 1
    assert [c["id"] for c in await contacts_of(client, api_key)] == list(ids)


# ---- batches ----

BATCH_ERRORS: dict[int, tuple[str, Any, list[Any]]] = {
    7: ("debtor.phones.0", "12345", ["debtor", "phones", 0]),
    42: ("debtor.emails.0", "no-at-sign", ["debtor", "emails", 0]),
    100: ("debtor.national_id", BAD_NATIONAL_ID, ["debtor", "national_id"]),
    250: ("debtor.addresses.0.postal_code", "015", ["debtor", "addresses", 0, "postal_code"]),
    333: ("case.kid", wrong_kid(333), ["case", "kid"]),
    500: ("case.account_number", "86011117948", ["case", "account_number"]),
    640: ("kind", "purring", ["kind"]),
    777: ("chanel", "sms", ["chanel"]),
    888: ("case", REMOVE, ["case"]),
    999: ("case.creditor.organisation_number", "974760674", ["case", "creditor", "organisation_number"]),
}


async def test_batch_of_1000_with_10_invalid(client: TestClient[Any, Any], api_key: str) -> None:
    items = [contact_payload(n) for n in range(1000)]
    for index, (path, value, _) in BATCH_ERRORS.items():
        items[index] = with_(items[index], path, value)
    r = await client.post("/v1/contacts:batch", json={"contacts": items}, headers=bearer(api_key))
    assert r.status == 200
    body = await r.json()
    assert (body["queued"], body["existing"], body["rejected"]) == (990, 0, 10)
    results = body["results"]
    assert [res["index"] for res in results] == list(range(1000))
    accepted = {}
    for res in results:
        if res["index"] in BATCH_ERRORS:
            error = res["error"]
            assert error["status"] == 422
            assert [e["loc"] for e in error["errors"]] == [BATCH_ERRORS[res["index"]][2]]
            assert res.get("id") is None
        else:
            assert res["status"] == "queued"
            assert res.get("error") is None
            accepted[res["id"]] = res["index"]
    assert len(accepted) == 990
    assert BAD_NATIONAL_ID not in await r.text()

    listed = await contacts_of(client, api_key)
    assert {c["id"] for c in listed} == set(accepted)
    assert all(c["debtor_id"] == f"D-{accepted[c['id']]}" for c in listed)


async def test_ndjson_batch_with_a_malformed_line(client: TestClient[Any, Any], api_key: str) -> None:
    lines = [json.dumps(contact_payload(n)) for n in range(20)]
    lines[5] = '{"idempotency_key": "broken", '
    lines[12] = json.dumps(contact_payload(12, kind="purring"))
    r = await client.post(
        "/v1/contacts:batch",
        data="\n".join(lines) + "\n",
        headers={**bearer(api_key), "Content-Type": "application/x-ndjson"},
    )
    assert r.status == 200
    body = await r.json()
    assert (body["queued"], body["rejected"]) == (18, 2)
    results = body["results"]
    assert [res["index"] for res in results] == list(range(20))
    assert results[5]["error"]["status"] == 400
    assert results[12]["error"]["status"] == 422
    assert results[12]["error"]["errors"][0]["loc"] == ["kind"]
    ok = {res["id"]: res["index"] for res in results if res.get("id")}
    assert set(ok.values()) == set(range(20)) - {5, 12}
    assert {c["id"] for c in await contacts_of(client, api_key)} == set(ok)


async def test_ndjson_malformed_line_is_named_by_its_line_number(
    client: TestClient[Any, Any], api_key: str
) -> None:
    body = json.dumps(contact_payload(1)) + "\n\n{broken\n" + json.dumps(contact_payload(2)) + "\n"
    r = await client.post(
        "/v1/contacts:batch", data=body, headers={**bearer(api_key), "Content-Type": "application/x-ndjson"}
    )
    assert r.status == 200
    results = (await r.json())["results"]
    assert [res.get("status") for res in results] == ["queued", None, "queued"]
    assert "line 3" in results[1]["error"]["detail"]


async def test_batch_duplicate_keys_within_the_batch(client: TestClient[Any, Any], api_key: str) -> None:
    items = [
        contact_payload(1),
        contact_payload(2),
        contact_payload(1),
        contact_payload(2, case__principal="1.00"),
    ]
    r = await client.post("/v1/contacts:batch", json={"contacts": items}, headers=bearer(api_key))
    assert r.status == 200
    body = await r.json()
    first, second, same, different = body["results"]
    assert same["id"] == first["id"]
    assert same["existing"] is True
    assert not first.get("existing")
    assert different["error"]["status"] == 409
    assert second["status"] == "queued"
    assert (body["queued"], body["existing"], body["rejected"]) == (2, 1, 1)
    assert {c["id"] for c in await contacts_of(client, api_key)} == {first["id"], second["id"]}

    # the whole batch again: every item is the existing contact, nothing new
    r = await client.post("/v1/contacts:batch", json={"contacts": items[:3]}, headers=bearer(api_key))
    again = await r.json()
    assert [res["id"] for res in again["results"]] == [first["id"], second["id"], first["id"]]
    assert all(res["existing"] for res in again["results"])
    assert (again["queued"], again["existing"], again["rejected"]) == (0, 3, 0)


async def test_batch_too_large_is_413(client: TestClient[Any, Any], api_key: str) -> None:
    r = await client.post("/v1/contacts:batch", json={"contacts": [{}] * 10_001}, headers=bearer(api_key))
    await assert_problem(r, 413)
    r = await client.post(
        "/v1/contacts:batch",
        data="{}\n" * 10_001,
        headers={**bearer(api_key), "Content-Type": "application/x-ndjson"},
    )
    await assert_problem(r, 413)


async def test_batch_of_exactly_10000_is_judged_item_by_item(
    client: TestClient[Any, Any], api_key: str
) -> None:
    r = await client.post("/v1/contacts:batch", json={"contacts": [{}] * 10_000}, headers=bearer(api_key))
    assert r.status == 200
    body = await r.json()
    assert (body["queued"], body["rejected"]) == (0, 10_000)
    assert body["results"][9_999]["error"]["status"] == 422


@pytest.mark.parametrize("body", [{"contacts": "x"}, {"items": []}, [contact_payload(1)]])
async def test_not_a_batch_is_422(client: TestClient[Any, Any], api_key: str, body: Any) -> None:
    r = await client.post("/v1/contacts:batch", json=body, headers=bearer(api_key))
    problem = await assert_problem(r, 422)
    assert problem["errors"][0]["loc"] == ["contacts"]


async def test_batch_item_not_an_object(client: TestClient[Any, Any], api_key: str) -> None:
    items = [contact_payload(1), "x", None]
    r = await client.post("/v1/contacts:batch", json={"contacts": items}, headers=bearer(api_key))
    body = await r.json()
    assert body["results"][0]["status"] == "queued"
    assert body["results"][1]["error"]["status"] == 422
    assert body["results"][2]["error"]["status"] == 422


async def test_case_id_reused_with_another_debtor_is_rejected(
    client: TestClient[Any, Any], api_key: str
) -> None:
    # within one batch
    items = [contact_payload(1), contact_payload(2, case__id="C-1"), contact_payload(3)]
    r = await client.post("/v1/contacts:batch", json={"contacts": items}, headers=bearer(api_key))
    body = await r.json()
    ok, clash, other = body["results"]
    assert ok["status"] == "queued"
    assert other["status"] == "queued"
    assert clash["error"]["status"] == 422
    assert [e["loc"] for e in clash["error"]["errors"]] == [["case", "id"]]

    # against a case already in the log, in a batch and alone
    r = await client.post(
        "/v1/contacts:batch", json={"contacts": [contact_payload(4, case__id="C-3")]}, headers=bearer(api_key)
    )
    assert (await r.json())["results"][0]["error"]["errors"][0]["loc"] == ["case", "id"]
    r = await client.post("/v1/contacts", json=contact_payload(5, case__id="C-1"), headers=bearer(api_key))
    problem = await assert_problem(r, 422)
    assert [e["loc"] for e in problem["errors"]] == [["case", "id"]]

    # the same debtor may add contacts to its own case
    r = await client.post(
        "/v1/contacts",
        json=contact_payload(1, idempotency_key="eksempel-as/inv-1/second", kind="inkassovarsel"),
        headers=bearer(api_key),
    )
    assert r.status == 202
    assert len(await contacts_of(client, api_key, case_id="C-1")) == 2
    assert await contacts_of(client, api_key, debtor_id="D-2") == []


async def test_concurrent_batches_sharing_debtors_all_succeed(
    client: TestClient[Any, Any], api_key: str
) -> None:
    statuses = []
    for round_ in range(3):
        forward = [contact_payload(n, idempotency_key=f"a{round_}/{n}") for n in range(200)]
        backward = [contact_payload(n, idempotency_key=f"b{round_}/{n}") for n in reversed(range(200))]
        responses = await asyncio.gather(
            *[
                client.post("/v1/contacts:batch", json={"contacts": batch}, headers=bearer(api_key))
                for batch in (forward, backward, forward[::2], backward[::3])
            ]
        )
        statuses += [r.status for r in responses]
    assert statuses == [200] * 12
    assert len(await contacts_of(client, api_key)) == 3 * 400
