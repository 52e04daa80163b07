"""``GET /openapi.json`` matches what the service really serves, accepts and returns: every route is
documented and every documented operation is served, the request schemas carry API.md's fields, and real
responses of the running service validate against the documented schema for their status and content type."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from jsonschema import Draft202012Validator, FormatChecker
from jsonschema.validators import validator_for
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from orchestrator import auth
from orchestrator.settings import Settings
from tests.conftest import bearer, drain
from tests.factories import contact_payload, open_clock

DOC_URI = "urn:orchestrator:openapi"
KINDS = {
    "reminder",
    "inkassovarsel",
    "betalingsoppfordring",
    "payment_plan_offer",
    "payment_plan_confirmation",
    "address_request",
    "dispute_acknowledgement",
    "payment_confirmation",
}
CASE_EVENT_TYPES = {
    "payment_received",
    "paid_in_full",
    "dispute_raised",
    "dispute_resolved",
    "payment_plan_agreed",
    "bankrupt",
    "closed",
    "complaint_received",  # an outcome experiments are measured on (issue 6)
}
FORMATS = FormatChecker()


@FORMATS.checks("date-time", raises=ValueError)
def _rfc3339_with_offset(value: object) -> bool:
    """API.md: times are RFC 3339 with an offset (jsonschema has no date-time checker of its own here)."""
    if not isinstance(value, str):
        return True
    if "T" not in value.upper() or datetime.fromisoformat(value).tzinfo is None:
        raise ValueError(f"{value!r} is not an RFC 3339 time with an offset")
    return True


@pytest.fixture
async def doc(client: TestClient[Any, Any]) -> dict[str, Any]:
    r = await client.get("/openapi.json")
    assert r.status == 200
    assert r.content_type == "application/json"
    body: dict[str, Any] = await r.json()
    assert body["openapi"].startswith("3.1")
    return body


def schema_errors(doc: dict[str, Any], schema: dict[str, Any], instance: Any) -> list[str]:
    """Errors of ``instance`` against ``schema``, whose ``$ref``s resolve against the whole document."""
    registry: Registry[Any] = Registry().with_resource(
        DOC_URI, Resource.from_contents(doc, default_specification=DRAFT202012)
    )
    assert set(schema) == {"$ref"}, f"expected a reference to a component, got {schema}"
    wrapped = {"$ref": DOC_URI + schema["$ref"]}
    cls = validator_for(wrapped, default=Draft202012Validator)
    validator = cls(wrapped, registry=registry, format_checker=FORMATS)
    return [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(instance)]


def component(doc: dict[str, Any], name: str) -> dict[str, Any]:
    schema: dict[str, Any] = doc["components"]["schemas"][name]
    return schema


def resolve(doc: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = component(doc, schema["$ref"].rsplit("/", 1)[1])
    return schema


async def check(doc: dict[str, Any], method: str, path: str, response: Any) -> Any:
    """The response's status and content type are documented for the operation, and its body validates."""
    operation = doc["paths"][path][method]
    documented = operation["responses"]
    status = str(response.status)
    assert status in documented, (
        f"{method.upper()} {path} answered {status}, documented: {sorted(documented)}"
    )
    content = documented[status].get("content", {})
    assert response.content_type in content, (
        f"{method.upper()} {path} {status} is {response.content_type}, documented: {sorted(content)}"
    )
    body = await response.json(content_type=None)
    errors = schema_errors(doc, content[response.content_type]["schema"], body)
    assert not errors, f"{method.upper()} {path} {status} does not match the document:\n" + "\n".join(errors)
    return body


# ---- the document and the router ----


async def test_every_route_is_documented_and_every_operation_served(
    client: TestClient[Any, Any], doc: dict[str, Any]
) -> None:
    served = {
        (route.resource.canonical, route.method.lower())
        for route in client.server.app.router.routes()
        if route.method != "HEAD"
        and route.resource is not None
        # the console is HTML pages for operators, not the API
        and not (route.name or "").startswith("console_")
    }
    documented = {(path, method) for path, ops in doc["paths"].items() for method in ops}
    assert served == documented
    assert ("/v1/contacts", "post") in served
    assert ("/v1/contacts:batch", "post") in served

    for path, ops in doc["paths"].items():
        names = {part[1:-1] for part in path.split("/") if part.startswith("{")}
        for method, op in ops.items():
            params = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
            assert params == names, f"{method} {path}"
            assert op["responses"], f"{method} {path}"


async def test_documented_security_is_enforced(
    client: TestClient[Any, Any], doc: dict[str, Any], api_key: str
) -> None:
    secured = []
    for path, ops in doc["paths"].items():
        concrete = re.sub(r"\{[a-z_]+\}", "X", path)
        for method, op in ops.items():
            r = await client.request(method.upper(), concrete, json={})
            if "security" in op:
                secured.append((path, method))
                assert r.status == 401, f"{method} {path} is documented as secured but answered {r.status}"
                await check(doc, method, path, r)
            else:
                assert r.status not in (401, 403), f"{method} {path} is documented as public"
    assert ("/v1/contacts", "post") in secured
    assert ("/v1/cases/{case_id}/events", "post") in secured
    assert len(secured) == 11  # 6 contact and case routes, 5 experiment routes


async def test_contact_request_schema_has_the_fields_of_api_md(doc: dict[str, Any]) -> None:
    body = doc["paths"]["/v1/contacts"]["post"]["requestBody"]
    assert body["required"] is True
    request = resolve(doc, body["content"]["application/json"]["schema"])
    props = request["properties"]
    assert set(props) == {
        "idempotency_key",
        "kind",
        "channel",
        "language",
        "not_before",
        "debtor",
        "case",
        "variables",
    }
    assert {"idempotency_key", "kind", "debtor", "case"} <= set(request["required"])
    assert set(props["kind"]["enum"]) == KINDS
    assert set(props["channel"]["enum"]) == {"auto", "letter", "email", "sms", "chat_link", "digital_mailbox"}
    assert request.get("additionalProperties") is False

    debtor = resolve(doc, props["debtor"])
    assert set(debtor["properties"]) >= {
        "id",
        "type",
        "name",
        "national_id",
        "organisation_number",
        "addresses",
        "phones",
        "emails",
        "electronic_notice_evidence",
    }
    address = resolve(doc, debtor["properties"]["addresses"]["items"])
    assert set(address["properties"]) >= {"lines", "postal_code", "city", "country"}
    evidence = resolve(doc, debtor["properties"]["electronic_notice_evidence"]["items"])
    assert set(evidence["properties"]) >= {"channel", "address", "basis", "observed_at"}

    case = resolve(doc, props["case"])
    assert set(case["properties"]) >= {
        "id",
        "creditor",
        "reference",
        "principal",
        "costs",
        "interest",
        "due_date",
        "kid",
        "account_number",
    }
    assert set(resolve(doc, case["properties"]["creditor"])["properties"]) >= {"name", "organisation_number"}
    interest = next(s for s in case["properties"]["interest"]["anyOf"] if "$ref" in s)
    assert set(resolve(doc, interest)["properties"]) >= {"rate_percent", "from"}

    # what the service accepts validates against what it documents, and a typo does not
    assert schema_errors(doc, body["content"]["application/json"]["schema"], contact_payload(1)) == []
    assert schema_errors(doc, body["content"]["application/json"]["schema"], contact_payload(1, chanel="sms"))

    batch = doc["paths"]["/v1/contacts:batch"]["post"]["requestBody"]["content"]
    assert set(batch) == {"application/json", "application/x-ndjson"}
    assert "contacts" in resolve(doc, batch["application/json"]["schema"])["properties"]
    assert resolve(doc, batch["application/x-ndjson"]["schema"]) == request

    event = resolve(
        doc,
        doc["paths"]["/v1/cases/{case_id}/events"]["post"]["requestBody"]["content"]["application/json"][
            "schema"
        ],
    )
    assert set(event["properties"]["type"]["enum"]) == CASE_EVENT_TYPES

    listing = doc["paths"]["/v1/contacts"]["get"]
    assert {p["name"] for p in listing["parameters"] if p["in"] == "query"} == {
        "debtor_id",
        "case_id",
        "status",
        "channel",
        "kind",
        "since",
        "until",
        "cursor",
        "limit",
    }


# ---- real responses against the document ----


async def test_real_responses_match_the_document(
    client: TestClient[Any, Any], doc: dict[str, Any], api_key: str, sessions: Any, settings: Settings
) -> None:
    key = bearer(api_key)

    r = await client.post("/v1/contacts", json=contact_payload(1), headers=key)
    assert r.status == 202
    created = await check(doc, "post", "/v1/contacts", r)
    contact_id = created["id"]

    r = await client.post("/v1/contacts", json=contact_payload(1), headers=key)
    assert r.status == 200
    await check(doc, "post", "/v1/contacts", r)

    r = await client.post("/v1/contacts", json=contact_payload(1, kind="inkassovarsel"), headers=key)
    assert r.status == 409
    await check(doc, "post", "/v1/contacts", r)

    r = await client.post(
        "/v1/contacts", json=contact_payload(2, debtor__phones=["1"], case__kid="12"), headers=key
    )
    assert r.status == 422
    problem = await check(doc, "post", "/v1/contacts", r)
    assert len(problem["errors"]) == 2

    r = await client.post("/v1/contacts", data=b"{", headers={**key, "Content-Type": "application/json"})
    assert r.status == 400
    await check(doc, "post", "/v1/contacts", r)

    await drain(settings, clock=open_clock())
    r = await client.get(f"/v1/contacts/{contact_id}", headers=key)
    assert r.status == 200
    contact = await check(doc, "get", "/v1/contacts/{contact_id}", r)
    assert contact["decision"] is not None
    assert contact["decision"]["channel"] == "email"
    assert len(contact["attempts"]) == 1
    assert contact["attempts"][0]["status"] == "sent"

    r = await client.get("/v1/contacts/NOPE", headers=key)
    assert r.status == 404
    await check(doc, "get", "/v1/contacts/{contact_id}", r)

    r = await client.post(
        "/v1/contacts:batch",
        json={"contacts": [contact_payload(1), contact_payload(3), contact_payload(4, kind="x"), "x"]},
        headers=key,
    )
    assert r.status == 200
    batch = await check(doc, "post", "/v1/contacts:batch", r)
    assert (batch["queued"], batch["existing"], batch["rejected"]) == (1, 1, 2)

    r = await client.post(
        "/v1/contacts:batch",
        data="\n".join(["{", '{"idempotency_key": "x"}']),
        headers={**key, "Content-Type": "application/x-ndjson"},
    )
    assert r.status == 200
    await check(doc, "post", "/v1/contacts:batch", r)

    r = await client.post("/v1/contacts:batch", json={"contacts": [{}] * 10_001}, headers=key)
    assert r.status == 413
    await check(doc, "post", "/v1/contacts:batch", r)

    r = await client.post("/v1/contacts:batch", json={"contacts": "x"}, headers=key)
    assert r.status == 422
    await check(doc, "post", "/v1/contacts:batch", r)

    r = await client.get("/v1/contacts", params={"limit": "1"}, headers=key)
    assert r.status == 200
    page = await check(doc, "get", "/v1/contacts", r)
    assert len(page["items"]) == 1
    assert page["next_cursor"]

    r = await client.get("/v1/contacts", params={"status": "nope"}, headers=key)
    assert r.status == 400
    await check(doc, "get", "/v1/contacts", r)

    r = await client.get("/v1/debtors/D-1/timeline", headers=key)
    assert r.status == 200
    timeline = await check(doc, "get", "/v1/debtors/{debtor_id}/timeline", r)
    assert [e["type"] for e in timeline["items"]] == ["contact_received", "decision", "attempt"]

    r = await client.get("/v1/debtors/D-404/timeline", headers=key)
    assert r.status == 404
    await check(doc, "get", "/v1/debtors/{debtor_id}/timeline", r)

    event = {"type": "dispute_raised", "at": "2026-11-23T08:00:00+01:00"}
    r = await client.post("/v1/cases/C-3/events", json=event, headers=key)
    assert r.status == 201
    await check(doc, "post", "/v1/cases/{case_id}/events", r)

    r = await client.post("/v1/cases/C-404/events", json=event, headers=key)
    assert r.status == 404
    await check(doc, "post", "/v1/cases/{case_id}/events", r)

    r = await client.post("/v1/cases/C-3/events", json={"type": "nope"}, headers=key)
    assert r.status == 422
    await check(doc, "post", "/v1/cases/{case_id}/events", r)

    reader = await auth.create_api_key(sessions, name="reader", scopes=["contacts:read"])
    r = await client.post("/v1/cases/C-3/events", json=event, headers=bearer(reader))
    assert r.status == 403
    await check(doc, "post", "/v1/cases/{case_id}/events", r)

    for path in ("/healthz", "/readyz"):
        r = await client.get(path)
        assert r.status == 200
        await check(doc, "get", path, r)

    r = await client.get("/metrics")
    assert r.status == 200
    assert "200" in doc["paths"]["/metrics"]["get"]["responses"]


async def test_the_validation_is_not_vacuous(
    client: TestClient[Any, Any], doc: dict[str, Any], api_key: str
) -> None:
    """The same checks reject bodies that break the document: bad enum, missing field, time without offset."""
    r = await client.post("/v1/contacts", json=contact_payload(1), headers=bearer(api_key))
    accepted = await check(doc, "post", "/v1/contacts", r)
    ref = {"$ref": "#/components/schemas/Accepted"}
    assert schema_errors(doc, ref, {**accepted, "status": "posted"})
    assert schema_errors(doc, ref, {"id": accepted["id"], "status": "queued"})

    r = await client.get("/v1/contacts", headers=bearer(api_key))
    page = await check(doc, "get", "/v1/contacts", r)
    naive = {**page["items"][0], "created_at": "2026-11-23T08:00:00"}
    assert schema_errors(doc, {"$ref": "#/components/schemas/ContactPage"}, {**page, "items": [naive]})


async def test_bodies_without_a_model_document_their_content_type(
    client: TestClient[Any, Any], doc: dict[str, Any]
) -> None:
    for path in ("/metrics", "/openapi.json"):
        r = await client.get(path)
        assert r.content_type in doc["paths"][path]["get"]["responses"]["200"].get("content", {}), path


@pytest.mark.parametrize(
    ("method", "path", "url", "body"),
    [
        ("get", "/v1/debtors/{debtor_id}/timeline", "/v1/debtors/D-1/timeline?limit=0", None),
        ("post", "/v1/cases/{case_id}/events", "/v1/cases/C-1/events", b"{"),
    ],
    ids=["timeline-limit", "case-event-json"],
)
async def test_every_400_the_service_gives_is_documented(
    client: TestClient[Any, Any],
    doc: dict[str, Any],
    api_key: str,
    method: str,
    path: str,
    url: str,
    body: Any,
) -> None:
    r = await client.post("/v1/contacts", json=contact_payload(1), headers=bearer(api_key))
    assert r.status == 202
    r = await client.request(
        method.upper(), url, data=body, headers={**bearer(api_key), "Content-Type": "application/json"}
    )
    assert r.status == 400
    await check(doc, method, path, r)
