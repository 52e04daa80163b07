"""The upstream API (API.md): enqueue contacts, report case events, read the contact log."""

from __future__ import annotations

import base64
import binascii
import json
import re
from datetime import datetime
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from orchestrator import case_events, intake, queue
from orchestrator import contact_log as store
from orchestrator.appkeys import REDIS, SESSIONS, SETTINGS
from orchestrator.db import write_session
from orchestrator.models import Attempt, Contact, TimelineEvent, utcnow
from orchestrator.policy.rules import rules_for
from orchestrator.problems import ProblemError, problem
from orchestrator.schemas import (
    STATUSES,
    Accepted,
    AttemptOut,
    BatchItemResult,
    BatchResult,
    CaseEventAccepted,
    CaseEventRequest,
    ContactOut,
    ContactPage,
    ContactSummary,
    DecisionOut,
    EventOut,
    Links,
    Problem,
    Timeline,
    TimelineItem,
)

routes = web.RouteTableDef()


MAX_BODY_BYTES = 64 * 1024 * 1024


def json_model(model: Any, status: int = 200) -> web.Response:
    return web.Response(
        body=model.model_dump_json(exclude_none=False).encode(),
        status=status,
        content_type="application/json",
    )


async def read_json(request: web.Request) -> Any:
    try:
        return json.loads(await request.read())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ProblemError(400, "Malformed JSON", f"the request body is not valid JSON: {exc}") from exc


def _item_problem(result: intake.ItemResult) -> Problem:
    return Problem.model_validate(
        {
            "type": "about:blank",
            "title": result.title or "Rejected",
            "status": result.http_status,
            "detail": result.detail or "",
            "errors": result.errors or None,
        }
    )


@routes.post("/v1/contacts", name="create_contact")
async def create_contact(request: web.Request) -> web.Response:
    raw = await read_json(request)
    parsed = intake.parse_item(0, raw)
    [result] = await intake.accept(
        request.app[SESSIONS], request.app[REDIS], request.app[SETTINGS].queue_name, [parsed]
    )
    if not result.ok:
        return problem(
            result.http_status, result.title or "Rejected", result.detail or "", errors=result.errors
        )
    assert result.id is not None and result.status is not None
    body = Accepted(id=result.id, status=result.status, links=Links(self=f"/v1/contacts/{result.id}"))
    return json_model(body, status=result.http_status)


@routes.post("/v1/contacts:batch", name="create_contacts_batch")
async def create_contacts_batch(request: web.Request) -> web.Response:
    content_type = request.content_type
    items: list[Any]
    if content_type in ("application/x-ndjson", "application/jsonl", "application/json-seq"):
        items = []
        text = (await request.read()).decode("utf-8", errors="replace")
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                items.append(json.loads(line))
            except json.JSONDecodeError as exc:
                items.append(_BadLine(number, str(exc)))
    else:
        body = await read_json(request)
        if not isinstance(body, dict) or not isinstance(body.get("contacts"), list):
            raise ProblemError(
                422,
                "Invalid batch",
                'expected {"contacts": [...]} or an application/x-ndjson body',
                errors=[{"loc": ["contacts"], "msg": "a list of contact requests is required"}],
            )
        items = body["contacts"]
    if len(items) > intake.MAX_BATCH:
        raise ProblemError(
            413,
            "Batch too large",
            f"a batch holds at most {intake.MAX_BATCH} contacts; this one has {len(items)}: split it",
        )
    parsed: list[Any] = []
    for index, item in enumerate(items):
        if isinstance(item, _BadLine):
            parsed.append(
                intake.ItemResult(
                    index=index,
                    http_status=400,
                    title="Malformed JSON",
                    detail=f"line {item.line} of the NDJSON body is not valid JSON",
                    errors=[{"loc": [], "msg": item.error}],
                )
            )
        else:
            parsed.append(intake.parse_item(index, item))
    results = await intake.accept(
        request.app[SESSIONS], request.app[REDIS], request.app[SETTINGS].queue_name, parsed
    )
    out = BatchResult(
        results=[
            BatchItemResult(index=r.index, id=r.id, status=r.status, existing=r.existing)
            if r.ok
            else BatchItemResult(index=r.index, error=_item_problem(r))
            for r in results
        ],
        queued=sum(1 for r in results if r.ok and not r.existing),
        existing=sum(1 for r in results if r.existing),
        rejected=sum(1 for r in results if not r.ok),
    )
    return json_model(out)


class _BadLine:
    def __init__(self, line: int, error: str) -> None:
        self.line = line
        self.error = error


def _decision_out(decision: dict[str, Any] | None) -> DecisionOut | None:
    if not decision:
        return None
    return DecisionOut.model_validate(decision)


def _event_out(event: TimelineEvent) -> EventOut:
    return EventOut(
        status=event.status, at=event.at, source=event.source, type=event.type, detail=event.detail
    )


def _attempt_out(attempt: Attempt, events: list[TimelineEvent]) -> AttemptOut:
    return AttemptOut(
        id=attempt.id,
        channel=attempt.channel,
        provider=attempt.provider,
        provider_message_id=attempt.provider_message_id,
        address=attempt.address,
        status=attempt.status,
        status_reason=attempt.status_reason,
        template=attempt.template,
        variant=attempt.variant,
        rule_version=attempt.rule_version,
        content_sha256=attempt.content_sha256,
        encoding=attempt.encoding,
        segments=attempt.segments,
        created_at=attempt.created_at,
        events=[_event_out(e) for e in events],
    )


def _summary(contact: Contact) -> ContactSummary:
    return ContactSummary(
        id=contact.id,
        idempotency_key=contact.idempotency_key,
        kind=contact.kind,
        channel=contact.channel or contact.channel_preference,
        status=contact.status,
        status_reason=contact.status_reason,
        debtor_id=contact.debtor_id,
        case_id=contact.case_id,
        send_at=contact.send_at,
        created_at=contact.created_at,
        updated_at=contact.updated_at,
    )


@routes.get("/v1/contacts/{contact_id}", name="get_contact")
async def get_contact(request: web.Request) -> web.Response:
    contact_id = request.match_info["contact_id"]
    async with request.app[SESSIONS]() as session:
        contact = await store.get_contact(session, contact_id)
        if contact is None:
            raise ProblemError(404, "Not found", f"no contact with id {contact_id!r}")
        attempts = await store.get_attempts(session, contact_id)
        events = await store.get_events_for_attempts(session, [a.id for a in attempts])
    out = ContactOut(
        id=contact.id,
        idempotency_key=contact.idempotency_key,
        kind=contact.kind,
        channel=contact.channel or contact.channel_preference,
        language=contact.language,
        status=contact.status,
        status_reason=contact.status_reason,
        debtor_id=contact.debtor_id,
        case_id=contact.case_id,
        not_before=contact.not_before,
        send_at=contact.send_at,
        created_at=contact.created_at,
        updated_at=contact.updated_at,
        decision=_decision_out(contact.decision),
        attempts=[_attempt_out(a, events[a.id]) for a in attempts],
    )
    return json_model(out)


def _encode_cursor(value: str) -> str:
    return base64.urlsafe_b64encode(value.encode()).decode().rstrip("=")


_ULID = re.compile(r"^[0-9A-HJKMNP-TV-Z]{26}$")


def _decode_cursor(value: str) -> str:
    """A cursor is the base64url of a row id; anything else is refused, never silently misread."""
    try:
        decoded = base64.b64decode(value + "=" * (-len(value) % 4), altchars=b"-_", validate=True)
        row_id = decoded.decode("ascii")
    except (binascii.Error, ValueError):
        row_id = ""
    if not _ULID.match(row_id):
        raise ProblemError(
            400,
            "Invalid cursor",
            "the cursor is not one this API gave out",
            errors=[{"loc": ["query", "cursor"], "msg": "invalid cursor"}],
        )
    return row_id


def _limit(request: web.Request, default: int, maximum: int) -> int:
    raw = request.query.get("limit")
    if raw is None:
        return default
    if not raw.isdigit() or not 1 <= int(raw) <= maximum:
        raise ProblemError(
            400,
            "Invalid query",
            f"limit must be a whole number from 1 to {maximum}",
            errors=[{"loc": ["query", "limit"], "msg": f"must be 1..{maximum}"}],
        )
    return int(raw)


def _time_param(request: web.Request, name: str) -> datetime | None:
    raw = request.query.get(name)
    if raw is None:
        return None
    try:
        value = datetime.fromisoformat(raw)
    except ValueError:
        value = None
    if value is None or value.tzinfo is None:
        raise ProblemError(
            400,
            "Invalid query",
            f"{name} must be an RFC 3339 time with an offset, e.g. 2026-11-23T08:00:00+01:00",
            errors=[{"loc": ["query", name], "msg": "not an RFC 3339 time with offset"}],
        )
    return value


@routes.get("/v1/contacts", name="list_contacts")
async def list_contacts(request: web.Request) -> web.Response:
    q = request.query
    status = q.get("status")
    if status is not None and status not in STATUSES:
        raise ProblemError(
            400,
            "Invalid query",
            f"unknown status {status!r}",
            errors=[{"loc": ["query", "status"], "msg": f"one of {', '.join(STATUSES)}"}],
        )
    limit = _limit(request, 50, 500)
    cursor = q.get("cursor")
    async with request.app[SESSIONS]() as session:
        rows = await store.list_contacts(
            session,
            debtor_id=q.get("debtor_id"),
            case_id=q.get("case_id"),
            status=status,
            channel=q.get("channel"),
            kind=q.get("kind"),
            since=_time_param(request, "since"),
            until=_time_param(request, "until"),
            before_id=_decode_cursor(cursor) if cursor else None,
            limit=limit + 1,
        )
    more = len(rows) > limit
    rows = rows[:limit]
    page = ContactPage(
        items=[_summary(c) for c in rows], next_cursor=_encode_cursor(rows[-1].id) if more and rows else None
    )
    return json_model(page)


@routes.get("/v1/debtors/{debtor_id}/timeline", name="debtor_timeline")
async def debtor_timeline(request: web.Request) -> web.Response:
    debtor_id = request.match_info["debtor_id"]
    limit = _limit(request, 200, 1000)
    cursor = request.query.get("cursor")
    async with request.app[SESSIONS]() as session:
        if not await store.debtor_exists(session, debtor_id):
            raise ProblemError(404, "Not found", f"no debtor with id {debtor_id!r}")
        rows = await store.timeline(
            session, debtor_id, after_id=_decode_cursor(cursor) if cursor else None, limit=limit + 1
        )
    more = len(rows) > limit
    rows = rows[:limit]
    out = Timeline(
        debtor_id=debtor_id,
        items=[
            TimelineItem(
                id=e.id,
                at=e.at,
                type=e.type,
                status=e.status,
                source=e.source,
                case_id=e.case_id,
                contact_id=e.contact_id,
                attempt_id=e.attempt_id,
                detail=e.detail,
            )
            for e in rows
        ],
        next_cursor=_encode_cursor(rows[-1].id) if more and rows else None,
    )
    return json_model(out)


@routes.post("/v1/cases/{case_id}/events", name="case_event")
async def case_event(request: web.Request) -> web.Response:
    case_id = request.match_info["case_id"]
    raw = await read_json(request)
    try:
        event = CaseEventRequest.model_validate(raw)
    except ValidationError as exc:
        errors = intake.validation_errors(exc)
        return problem(
            422, "Invalid case event", f"{len(errors)} problem(s) in the case event", errors=errors
        )
    async with write_session(request.app[SESSIONS]) as session:
        case = await store.get_case(session, case_id)
        if case is None:
            raise ProblemError(404, "Not found", f"no case with id {case_id!r}")
        applied = await case_events.apply(
            session,
            case,
            type=event.type,
            at=event.at,
            data=event.model_dump(mode="json", exclude={"type", "at", "source"}),
            source=event.source,
            now=utcnow(),
            holds=rules_for(request.app[SETTINGS].rules_file).holds,
        )
    resumed = applied.resumed
    if resumed:
        await queue.enqueue_contacts(request.app[REDIS], request.app[SETTINGS].queue_name, resumed)
    return json_model(
        CaseEventAccepted(
            id=applied.event_id,
            case_id=case_id,
            type=event.type,
            case_status=applied.case_status,
            contacts_affected=len(applied.affected),
        ),
        status=201,
    )
