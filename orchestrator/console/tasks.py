"""The operator task queue: what the orchestrator could not settle alone and a person must look at.

Tasks are raised by the returned-mail loop (:mod:`orchestrator.returned_mail`): a letter came back and no new
address was found (``no_address_found``), a company is bankrupt, being wound up or deleted
(``stop_collection``, R8: the case is held), a person's address is graded (``graded_address``, R9: nothing
stored or shown). ``GET /console/tasks`` lists the open ones oldest first, 50 a page, with a count per kind
and a filter by kind; ``?view=resolved`` lists the most recently resolved with who, when and how. An operator
resolves a task (``handled`` or ``no_action``, with a note) once: a second resolution is refused (409), and
the resolution is written into the debtor's timeline. A returned-mail task is usually resolved by correcting
the address on the debtor's page, which resolves the task with it (:mod:`orchestrator.console.actions`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, NoReturn

from aiohttp import web

from orchestrator import contact_log
from orchestrator.appkeys import SESSIONS
from orchestrator.console import action_store, pages
from orchestrator.console.actions import note_of
from orchestrator.db import write_session
from orchestrator.models import utcnow

routes = web.RouteTableDef()
ROLES: Final[dict[str, str]] = {"console_tasks": "viewer", "console_resolve_task": "operator"}

PAGE_SIZE: Final = 50
RESOLVED_SHOWN: Final = 100
KINDS: Final = {
    "no_address_found": "Returned mail: no address found",
    "stop_collection": "Collection stopped: bankruptcy or winding-up",
    "graded_address": "Graded address",
}
# the kinds that a corrected postal address answers
ADDRESS_KINDS: Final = frozenset({"no_address_found"})
REASONS: Final = {
    "no_new_address_no_electronic_channel": (
        "A letter came back. No registry or Posten gave a new address, and the debtor has no mobile number "
        "or e-mail address to ask for one."
    ),
    "address_request_invalid": (
        "A letter came back and no new address was found. An address request by SMS or e-mail could not be "
        "made from the debtor's details."
    ),
    "address_request_refused": (
        "A letter came back and no new address was found. The address request by SMS or e-mail was refused "
        "at intake."
    ),
    "bankruptcy": (
        "Enhetsregisteret (Brønnøysund) says the company is bankrupt (konkurs). Ordinary collection stops "
        "and the case is held (R8)."
    ),
    "winding_up": (
        "Enhetsregisteret (Brønnøysund) says the company is being wound up. Ordinary collection stops and "
        "the case is held (R8)."
    ),
    "organisation_deleted": (
        "Enhetsregisteret (Brønnøysund) no longer has the company. Ordinary collection stops and the case is "
        "held (R8)."
    ),
    "graded_address": (
        "Folkeregisteret says the person's address is graded (fortrolig or strengt fortrolig). It is neither "
        "stored nor shown (R9): post may go only to the address the register itself returns."
    ),
}
OUTCOMES: Final = {
    "handled": "Handled",
    "no_action": "No action needed",
    "address_corrected": "Address corrected",
}
_ID = re.compile(r"[0-9A-HJKMNP-TV-Z]{26}")
_NOTHING_CHANGED: Final = "Nothing was changed."


def _words(key: str) -> str:
    return key.replace("_", " ").capitalize()


def detail_words(detail: dict[str, Any]) -> list[str]:
    """A task's detail as sentences. Only what the loop records is there: never a graded address (none is
    stored), and a national id that slipped in is masked when the page prints it."""
    out: list[str] = []
    for key, value in detail.items():
        if key == "contacts_affected" and isinstance(value, list):
            held = len(value)
            out.append(f"{held} queued or scheduled contact{'s' if held != 1 else ''} of the case held.")
        elif isinstance(value, list | dict):
            out.append(f"{_words(key)}: {len(value)}")
        elif value not in (None, ""):
            out.append(f"{_words(key)}: {value}")
    return out


@dataclass
class TaskView:
    id: str
    kind: str
    kind_label: str
    reason: str
    reason_words: str
    debtor_name: str
    debtor_ref: str | None
    case_id: str | None
    creditor: str | None
    contact_id: str | None
    created_at: datetime
    details: list[str] = field(default_factory=list)
    resolved_at: datetime | None = None
    resolved_by: str = ""
    outcome: str = ""
    note: str = ""
    corrects_address: bool = False


def _view(row: action_store.TaskRow) -> TaskView:
    task = row.task
    resolution = task.resolution or {}
    return TaskView(
        id=task.id,
        kind=task.kind,
        kind_label=KINDS.get(task.kind, _words(task.kind)),
        reason=task.reason,
        reason_words=REASONS.get(task.reason, _words(task.reason)),
        debtor_name=row.debtor_name or "(debtor no longer in the log)",
        debtor_ref=row.debtor_ref,
        case_id=task.case_id,
        creditor=row.creditor_name,
        contact_id=task.contact_id,
        created_at=task.created_at,
        details=detail_words(task.detail or {}),
        resolved_at=task.resolved_at,
        resolved_by=str(resolution.get("operator", "")),
        outcome=OUTCOMES.get(str(resolution.get("outcome", "")), str(resolution.get("outcome", ""))),
        note=str(resolution.get("note") or ""),
        corrects_address=task.kind in ADDRESS_KINDS and row.debtor_ref is not None,
    )


@routes.get("/console/tasks", name="console_tasks")
async def task_queue(request: web.Request) -> web.Response:
    view = request.query.get("view", "open")
    if view not in ("open", "resolved"):
        raise web.HTTPBadRequest(text="view must be 'open' or 'resolved'.")
    kind = request.query.get("kind") or None
    after = request.query.get("after") or None
    if after is not None and not _ID.fullmatch(after):
        raise web.HTTPBadRequest(text="after must be a task id (26 characters).")
    async with request.app[SESSIONS]() as session:
        counts = await action_store.open_task_counts(session)
        if kind is not None and kind not in KINDS and kind not in counts:
            raise web.HTTPBadRequest(text=f"kind must be one of: {', '.join(sorted({*KINDS, *counts}))}.")
        if view == "open":
            rows = await action_store.open_tasks(session, kind=kind, after_id=after, limit=PAGE_SIZE + 1)
        else:
            rows = await action_store.resolved_tasks(session, kind=kind, limit=RESOLVED_SHOWN)
    more = view == "open" and len(rows) > PAGE_SIZE
    tasks = [_view(row) for row in (rows[:PAGE_SIZE] if view == "open" else rows)]
    await pages.audit(request, "view_tasks", view=view, kind=kind or "", shown=len(tasks))
    return pages.render(
        request,
        "tasks.html",
        view=view,
        kind=kind or "",
        kinds={**KINDS, **{k: _words(k) for k in counts if k not in KINDS}},
        counts=counts,
        total=sum(counts.values()),
        tasks=tasks,
        next_after=tasks[-1].id if more else None,
        first_page=after is None,
        done=request.query.get("done") == "task_resolved",
        may_act=pages.me(request).may("operator"),
    )


@routes.post("/console/tasks/{task_id}/resolve", name="console_resolve_task")
async def resolve_task(request: web.Request) -> NoReturn:
    task_id = request.match_info["task_id"]
    form = await request.post()
    given = form.get("outcome")
    outcome = given.strip() if isinstance(given, str) else ""
    if outcome not in ("handled", "no_action"):
        raise web.HTTPBadRequest(
            text="outcome must be 'handled' (you dealt with it) or 'no_action' (nothing needs doing). "
            + _NOTHING_CHANGED
        )
    note = note_of(form, required=outcome == "no_action", why=" when nothing needs doing")
    operator = pages.me(request)
    now = utcnow()
    async with write_session(request.app[SESSIONS]) as session:
        task = await action_store.get_task(session, task_id)
        if task is None:
            raise web.HTTPNotFound(text=f"There is no task {task_id!r}. {_NOTHING_CHANGED}")
        resolution = {"operator": operator.username, "outcome": outcome, "note": note}
        if not await action_store.resolve_task(session, task.id, resolution=resolution, now=now):
            fresh = await action_store.get_task(session, task.id)
            who = ((fresh.resolution if fresh else None) or {}).get("operator", "someone")
            when = pages.oslo(fresh.resolved_at) if fresh else ""
            raise web.HTTPConflict(
                text=f"This task was already resolved by {who} at {when}. {_NOTHING_CHANGED}"
            )
        await contact_log.add_timeline(
            session,
            [
                pages.operator_event(
                    request,
                    action="task_resolved",
                    debtor_id=task.debtor_id,
                    case_id=task.case_id,
                    contact_id=task.contact_id,
                    attempt_id=task.attempt_id,
                    detail={
                        "task_id": task.id,
                        "kind": task.kind,
                        "reason": task.reason,
                        "outcome": outcome,
                        "note": note,
                    },
                    at=now,
                )
            ],
        )
        await pages.audit_in(
            session, request, "task_resolved", debtor_id=task.debtor_id, task_id=task.id, outcome=outcome
        )
    raise pages.redirect("/console/tasks?done=task_resolved")
