"""``/openapi.json``, built from the router and the very pydantic models the handlers use.

Every route the application serves must have an entry in ``OPERATIONS``; ``build_openapi`` refuses to start
otherwise, so the document cannot drift from what the service does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from orchestrator import schemas
from orchestrator.experiments.schemas import ExperimentList, ExperimentOut, ExperimentReport
from orchestrator.experiments.spec import ExperimentSpec

PROBLEM = "application/problem+json"


@dataclass(frozen=True)
class Operation:
    summary: str
    body: type[BaseModel] | None = None
    ndjson: bool = False
    responses: dict[int, tuple[str, type[BaseModel] | None, str]] = field(default_factory=dict)
    query: tuple[tuple[str, str], ...] = ()
    tag: str = "contacts"


_ERR = {
    401: ("Missing or unknown API key", schemas.Problem, PROBLEM),
    403: ("The API key lacks the scope", schemas.Problem, PROBLEM),
}

OPERATIONS: dict[str, Operation] = {
    "create_contact": Operation(
        "Enqueue one contact request",
        body=schemas.ContactRequest,
        responses={
            202: ("Accepted and queued", schemas.Accepted, "application/json"),
            200: (
                "Same idempotency key and body: the existing contact; nothing is sent again",
                schemas.Accepted,
                "application/json",
            ),
            400: ("Malformed JSON", schemas.Problem, PROBLEM),
            409: ("Same idempotency key with a different body", schemas.Problem, PROBLEM),
            422: ("Invalid request; every problem listed with its location", schemas.Problem, PROBLEM),
            **_ERR,
        },
    ),
    "create_contacts_batch": Operation(
        "Enqueue up to 10,000 contact requests, each judged on its own",
        body=schemas.BatchRequest,
        ndjson=True,
        responses={
            200: ("One result per item, in order", schemas.BatchResult, "application/json"),
            400: ("Malformed JSON", schemas.Problem, PROBLEM),
            413: ("More than 10,000 items", schemas.Problem, PROBLEM),
            422: ("Not a batch", schemas.Problem, PROBLEM),
            **_ERR,
        },
    ),
    "get_contact": Operation(
        "A contact with its decision and attempts",
        responses={
            200: ("The contact", schemas.ContactOut, "application/json"),
            404: ("No such contact", schemas.Problem, PROBLEM),
            **_ERR,
        },
    ),
    "list_contacts": Operation(
        "Search the contact log, newest first, with cursor pagination",
        query=(
            ("debtor_id", "string"),
            ("case_id", "string"),
            ("status", "string"),
            ("channel", "string"),
            ("kind", "string"),
            ("since", "string"),
            ("until", "string"),
            ("cursor", "string"),
            ("limit", "integer"),
        ),
        responses={
            200: ("A page of contacts", schemas.ContactPage, "application/json"),
            400: ("Invalid query", schemas.Problem, PROBLEM),
            **_ERR,
        },
    ),
    "debtor_timeline": Operation(
        "Everything that passed between the orchestrator and a debtor, in time order",
        query=(("cursor", "string"), ("limit", "integer")),
        responses={
            200: ("The timeline", schemas.Timeline, "application/json"),
            400: ("Invalid limit or cursor", schemas.Problem, PROBLEM),
            404: ("No such debtor", schemas.Problem, PROBLEM),
            **_ERR,
        },
    ),
    "case_event": Operation(
        "Report what happened to a case; a dispute or bankruptcy holds every open contact at once",
        body=schemas.CaseEventRequest,
        tag="cases",
        responses={
            201: ("Recorded", schemas.CaseEventAccepted, "application/json"),
            400: ("Malformed JSON", schemas.Problem, PROBLEM),
            404: ("No such case", schemas.Problem, PROBLEM),
            422: ("Invalid event", schemas.Problem, PROBLEM),
            **_ERR,
        },
    ),
    "self_service": Operation(
        "The debtor's self-service page behind a chat link (the token is the credential)",
        tag="self-service",
        responses={
            200: (
                "The claim and how to pay, or (an address request's link) only an address form",
                None,
                "text/html",
            ),
            410: ("Unknown, expired or revoked link: the same page, revealing nothing", None, "text/html"),
        },
    ),
    "self_service_dispute": Operation(
        "The debtor objects to the claim from the self-service page (form field note, optional): the case is "
        "held at once (R4) until a person resolves it",
        tag="self-service",
        responses={
            200: ("Objection received", None, "text/html"),
            410: ("Unknown, expired or revoked link, or not a claim link", None, "text/html"),
        },
    ),
    "self_service_address": Operation(
        "A new postal address from the address form (form-encoded line1, line2, postal_code, city): stored "
        "with its provenance, the case's returned letters sent again to it, the link spent",
        tag="self-service",
        responses={
            200: ("Address received", None, "text/html"),
            410: ("Unknown, expired, revoked or spent link, or not an address link", None, "text/html"),
            422: ("The form again, with what is wrong", None, "text/html"),
        },
    ),
    "self_service_payment_date": Operation(
        "The debtor chooses the date they will pay (form field date, YYYY-MM-DD, from today up to 30 "
        "days ahead, Europe/Oslo): recorded as the case event payment_date_chosen",
        tag="self-service",
        responses={
            200: ("The date is recorded", None, "text/html"),
            410: (
                "Unknown, expired or revoked link, not a claim link, or a held or closed case: nothing "
                "recorded",
                None,
                "text/html",
            ),
            422: (
                "The page again, saying which dates may be chosen; nothing recorded",
                None,
                "text/html",
            ),
        },
    ),
    "self_service_payment_plan": Operation(
        "The debtor proposes a monthly payment plan (form field installments, 2-12): recorded as the "
        "case event payment_plan_agreed with the monthly amount (the total divided, rounded up to whole "
        "kroner); one per case, a second proposal shows the first and records nothing",
        tag="self-service",
        responses={
            200: ("The plan is recorded, or the plan recorded before is shown", None, "text/html"),
            410: (
                "Unknown, expired or revoked link, not a claim link, or a held or closed case: nothing "
                "recorded",
                None,
                "text/html",
            ),
            422: ("The page again, saying how many instalments may be chosen", None, "text/html"),
        },
    ),
    "unsubscribe_page": Operation(
        "The page behind an e-mail's List-Unsubscribe link: a button that unsubscribes (a GET never does, "
        "since mail scanners fetch links)",
        tag="self-service",
        responses={
            200: ("The confirmation page", None, "text/html"),
            410: ("Unknown, expired or not an unsubscribe link", None, "text/html"),
        },
    ),
    "unsubscribe": Operation(
        "One-click unsubscribe (RFC 8058; any body, e.g. List-Unsubscribe=One-Click): no more non-statutory "
        "e-mail to the debtor; idempotent",
        tag="self-service",
        responses={
            200: ("Unsubscribed (also when already unsubscribed)", None, "text/html"),
            410: ("Unknown, expired or not an unsubscribe link", None, "text/html"),
        },
    ),
    "webhook": Operation(
        "A carrier's callback (delivery report, bounce, receipt, returned letter, a debtor's SMS reply), "
        "verified as that carrier signs; recorded once by its event id and processed in the worker",
        tag="carriers",
        responses={
            200: ("Recorded (or kept for inspection when unreadable)", None, "application/json"),
            400: ("The carrier's authentication is missing", schemas.Problem, PROBLEM),
            401: ("The carrier's authentication is wrong", schemas.Problem, PROBLEM),
            404: ("No such carrier is configured", schemas.Problem, PROBLEM),
        },
    ),
    "webhook_with_secret": Operation(
        "The same, for carriers authenticated by a secret path segment (Link Mobility), and Twilio's "
        "incoming messages (/webhooks/twilio/inbound)",
        tag="carriers",
        responses={
            200: ("Recorded (or kept for inspection when unreadable)", None, "application/json"),
            400: ("The carrier's authentication is missing", schemas.Problem, PROBLEM),
            401: ("The carrier's authentication is wrong", schemas.Problem, PROBLEM),
            404: ("No such carrier is configured", schemas.Problem, PROBLEM),
        },
    ),
    "create_experiment": Operation(
        "Start an experiment: tone variants (and, where the legal guard allows, channels or send hours) "
        "assigned per debtor by hash, with a holdout that always gets the control; fixed shares or adaptive "
        "(Thompson sampling)",
        body=ExperimentSpec,
        tag="experiments",
        responses={
            201: ("Started", ExperimentOut, "application/json"),
            400: ("Malformed JSON", schemas.Problem, PROBLEM),
            409: ("An experiment with this id exists already", schemas.Problem, PROBLEM),
            422: ("Invalid experiment; every problem listed with its location", schemas.Problem, PROBLEM),
            **_ERR,
        },
    ),
    "list_experiments": Operation(
        "Experiments, newest first",
        query=(("status", "string"),),
        tag="experiments",
        responses={200: ("The experiments", ExperimentList, "application/json"), **_ERR},
    ),
    "get_experiment": Operation(
        "One experiment",
        tag="experiments",
        responses={
            200: ("The experiment", ExperimentOut, "application/json"),
            404: ("No such experiment", schemas.Problem, PROBLEM),
            **_ERR,
        },
    ),
    "stop_experiment": Operation(
        "Stop assigning new debtors (those assigned keep their arm; outcomes keep counting)",
        tag="experiments",
        responses={
            200: ("Stopped", ExperimentOut, "application/json"),
            404: ("No such experiment", schemas.Problem, PROBLEM),
            **_ERR,
        },
    ),
    "experiment_report": Operation(
        "Per arm: exposures, each outcome's rate with a 95 % Wilson interval, the difference to the baseline "
        "with a 95 % Newcombe interval; CSV with ?format=csv or Accept: text/csv",
        query=(("format", "string"),),
        tag="experiments",
        responses={
            200: ("The report (JSON, or text/csv)", ExperimentReport, "application/json"),
            404: ("No such experiment", schemas.Problem, PROBLEM),
            **_ERR,
        },
    ),
    "healthz": Operation(
        "Alive", tag="operations", responses={200: ("Alive", schemas.Health, "application/json")}
    ),
    "readyz": Operation(
        "Redis and the database are reachable",
        tag="operations",
        responses={
            200: ("Ready", schemas.Health, "application/json"),
            503: ("Not ready", schemas.Health, "application/json"),
        },
    ),
    "metrics": Operation(
        "Prometheus metrics",
        tag="operations",
        responses={200: ("Prometheus text format", None, "text/plain")},
    ),
    "openapi": Operation(
        "This document", tag="operations", responses={200: ("OpenAPI 3.1", None, "application/json")}
    ),
}


def build_openapi(app: web.Application, scopes: dict[str, str]) -> dict[str, Any]:
    models: set[type[BaseModel]] = set()
    for declared in OPERATIONS.values():
        if declared.body is not None:
            models.add(declared.body)
        models.update(m for _, m, _ in declared.responses.values() if m is not None)
    ordered = sorted(models, key=lambda m: m.__name__)
    _, top = models_json_schema(
        [(m, "validation") for m in ordered], ref_template="#/components/schemas/{model}"
    )
    components = top.get("$defs", {})

    def ref(model: type[BaseModel]) -> dict[str, str]:
        return {"$ref": f"#/components/schemas/{model.__name__}"}

    paths: dict[str, dict[str, Any]] = {}
    for route in app.router.routes():
        if route.method == "HEAD" or route.name is None or route.name.startswith("console_"):
            continue  # the console is HTML for people, not part of the API
        op = OPERATIONS.get(route.name)
        if op is None:
            raise RuntimeError(f"route {route.name!r} has no OpenAPI entry in orchestrator/openapi.py")
        path = route.resource.canonical if route.resource is not None else ""
        entry: dict[str, Any] = {
            "operationId": route.name,
            "summary": op.summary,
            "tags": [op.tag],
            "responses": {
                str(code): {"description": desc, "content": {ct: {"schema": ref(m)} if m else {}}}
                for code, (desc, m, ct) in sorted(op.responses.items())
            },
        }
        params = [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            for name in _path_params(path)
        ]
        params += [
            {"name": name, "in": "query", "required": False, "schema": {"type": t}} for name, t in op.query
        ]
        if params:
            entry["parameters"] = params
        if op.body is not None:
            content: dict[str, Any] = {"application/json": {"schema": ref(op.body)}}
            if op.ndjson:
                content["application/x-ndjson"] = {
                    "schema": ref(schemas.ContactRequest),
                    "description": "one contact request per line",
                }
            entry["requestBody"] = {"required": True, "content": content}
        if route.name in scopes:
            entry["security"] = [{"apiKey": [scopes[route.name]]}]
        paths.setdefault(path, {})[route.method.lower()] = entry
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Debt contact orchestrator",
            "version": "1",
            "description": "Enqueue contacts, report case events, read the contact log. Errors are "
            "application/problem+json (RFC 9457). API keys carry scopes: contacts:write, contacts:read, "
            "cases:write, console.",
        },
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"apiKey": {"type": "http", "scheme": "bearer"}},
        },
    }


def _path_params(path: str) -> list[str]:
    out = []
    for part in path.split("/"):
        if part.startswith("{") and part.endswith("}"):
            out.append(part[1:-1].split(":")[0])
    return out
