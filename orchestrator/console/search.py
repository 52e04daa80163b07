"""Searching the contact log: the form, its results page by page, and the results as CSV.

A search's criteria (names, phones, e-mails) never go into a URL: the form is POSTed, the criteria are kept
server-side (``console_searches``, a day, for the operator who made them) and the results live at
``/console/search/{search_id}`` with an unguessable id. Pages are keyset pages over the contact id (a ULID,
ours), so page 2,000 costs what page 1 costs. The SQL is in :mod:`orchestrator.console.search_store`.
"""

from __future__ import annotations

import base64
import binascii
import csv
import io
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Final

from aiohttp import web

from orchestrator import identifiers, search_terms
from orchestrator.appkeys import SESSIONS
from orchestrator.console import pages, security, store
from orchestrator.console.search_store import Found, SearchFilter, count_up_to, search_page
from orchestrator.db import write_session
from orchestrator.models import ulid_floor, utcnow
from orchestrator.schemas import CHANNELS, KINDS, STATUSES

routes = web.RouteTableDef()
ROLES: Final[dict[str, str]] = {
    "console_search": "viewer",
    "console_search_submit": "viewer",
    "console_search_results": "viewer",
    "console_search_csv": "viewer",
}

PAGE_SIZE: Final = 50
KEEP: Final = timedelta(days=1)
# A file larger than this is refused: nobody reads it, and building it would hold a worker for minutes.
EXPORT_MAX_ROWS: Final = 100_000
_EXPORT_CHUNK: Final = 2_000
_MAX_NAME_WORDS: Final = 5
_MAX_CHARS: Final = 200
_FIRST_DAY: Final = date(2000, 1, 1)
_LAST_DAY: Final = date(2099, 12, 31)

FIELDS: Final = (
    "debtor_id",
    "case_id",
    "name",
    "phone",
    "email",
    "status",
    "channel",
    "kind",
    "since",
    "until",
)
LABELS: Final[Mapping[str, str]] = {
    "debtor_id": "Debtor id",
    "case_id": "Case id",
    "name": "Name",
    "phone": "Phone",
    "email": "E-mail",
    "status": "Status",
    "channel": "Channel",
    "kind": "Kind",
    "since": "From",
    "until": "To (inclusive)",
}
CHOICES: Final[Mapping[str, tuple[str, ...]]] = {"status": STATUSES, "channel": CHANNELS, "kind": KINDS}
CSV_HEADER: Final = (
    "contact_id",
    "created_at",
    "debtor_id",
    "debtor_name",
    "case_id",
    "kind",
    "channel",
    "status",
    "status_reason",
    "send_at",
    "updated_at",
)
# the colour of a status: reached the debtor, ended without reaching, or stopped by policy
PILL: Final[Mapping[str, str]] = {
    "sent": "ok",
    "delivered": "ok",
    "read": "ok",
    "failed": "bad",
    "bounced": "bad",
    "returned": "bad",
    "expired": "bad",
    "held": "warn",
    "suppressed": "warn",
    "cancelled": "warn",
}
_SEARCH_ID: Final = "[A-Za-z0-9_-]{16,64}"
_ULID: Final = re.compile(r"^[0-9A-HJKMNP-TV-Z]{26}$")


# ---- the criteria ----


@dataclass
class Criteria:
    """A search as the operator typed it (``form``, shown back) and as it runs (``filter``), with a line per
    criterion for the results page (``summary``)."""

    form: dict[str, str]
    filter: SearchFilter
    summary: list[tuple[str, str]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        f = self.filter
        return {
            "form": self.form,
            "summary": [list(item) for item in self.summary],
            "filter": {
                "debtor_id": f.debtor_id,
                "case_id": f.case_id,
                "status": f.status,
                "channel": f.channel,
                "kind": f.kind,
                "created_from": f.created_from.isoformat() if f.created_from else None,
                "created_before": f.created_before.isoformat() if f.created_before else None,
                "term_prefixes": list(f.term_prefixes),
                "exact_terms": list(f.exact_terms),
            },
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Criteria:
        raw = data["filter"]

        def moment(value: str | None) -> datetime | None:
            return None if value is None else datetime.fromisoformat(value)

        return cls(
            form={str(k): str(v) for k, v in data["form"].items()},
            filter=SearchFilter(
                debtor_id=raw["debtor_id"],
                case_id=raw["case_id"],
                status=raw["status"],
                channel=raw["channel"],
                kind=raw["kind"],
                created_from=moment(raw["created_from"]),
                created_before=moment(raw["created_before"]),
                term_prefixes=tuple(raw["term_prefixes"]),
                exact_terms=tuple(raw["exact_terms"]),
            ),
            summary=[(str(label), str(value)) for label, value in data["summary"]],
        )


def _oslo_midnight(day: date) -> datetime:
    return datetime.combine(day, time(), tzinfo=pages.OSLO).astimezone(UTC)


def _day(raw: str) -> date:
    try:
        day = date.fromisoformat(raw)
    except ValueError:
        day = None
    if day is None or len(raw) != 10:
        raise ValueError(f"“{raw[:20]}” is not a date: enter it as YYYY-MM-DD, e.g. 2026-11-23.")
    if not _FIRST_DAY <= day <= _LAST_DAY:
        raise ValueError(f"Enter a date from {_FIRST_DAY.isoformat()} to {_LAST_DAY.isoformat()}.")
    return day


def _email_term(raw: str) -> tuple[str, bool]:
    """The e-mail's search term, and whether it is a whole address (matched exactly) or its start."""
    if any(c.isspace() for c in raw):
        raise ValueError("An e-mail address has no spaces.")
    if raw.count("@") > 1:
        raise ValueError("An e-mail address has only one @.")
    if raw.startswith("@"):
        raise ValueError(
            "Type the start of the address, e.g. “kari@” or “kari.nordmann@example.no”; "
            "searching by the part after the @ alone is not possible."
        )
    if len(raw) < 2:
        raise ValueError("Type at least 2 characters of the e-mail address.")
    try:
        whole = identifiers.normalize_email(raw)
    except ValueError:
        return search_terms.email_term(raw), False
    return search_terms.EMAIL + whole.casefold(), True


def parse(data: Mapping[str, str]) -> tuple[dict[str, str], Criteria | None, dict[str, str]]:
    """The search form's values (stripped), the criteria they make, and a message per field that is wrong
    (no criteria then). Nothing filled in is a valid search: every contact, newest first."""
    form = {name: str(data.get(name, "")).strip() for name in FIELDS}
    for name in CHOICES:
        if form[name] == "any":
            form[name] = ""
    errors: dict[str, str] = {}
    shown: dict[str, str] = {}  # each criterion as the results page states it
    values: dict[str, Any] = {}
    for name in FIELDS:
        if len(form[name]) > _MAX_CHARS:
            errors[name] = f"Type at most {_MAX_CHARS} characters."
    for name in ("debtor_id", "case_id"):
        if form[name] and name not in errors:
            values[name] = form[name]
            shown[name] = form[name]
    for name, allowed in CHOICES.items():
        if form[name]:
            if form[name] in allowed:
                values[name] = form[name]
                shown[name] = form[name].replace("_", " ")
            else:
                errors[name] = f"Choose a {LABELS[name].lower()} from the list."
    prefixes: list[str] = []
    exact: list[str] = []
    if form["name"] and "name" not in errors:
        words = [w for w in search_terms.name_words(form["name"]) if len(w) >= 2]
        if not words:
            errors["name"] = "Type at least one name word of 2 or more letters, e.g. “Nordmann” or “nord”."
        elif len(words) > _MAX_NAME_WORDS:
            errors["name"] = f"Use at most {_MAX_NAME_WORDS} name words."
        else:
            prefixes += [search_terms.NAME + w for w in words]
            shown["name"] = "words starting with " + ", ".join(f"“{w}”" for w in words)
    if form["phone"] and "phone" not in errors:
        try:
            term = search_terms.phone_term(form["phone"])
        except ValueError:
            errors["phone"] = (
                f"“{form['phone'][:40]}” is not a valid phone number: type the whole number, 8 digits for "
                "Norway (e.g. 912 34 567) or with its country code (e.g. +46 70 123 45 67)."
            )
        else:
            exact.append(term)
            shown["phone"] = term.removeprefix(search_terms.PHONE)
    if form["email"] and "email" not in errors:
        try:
            term, whole = _email_term(form["email"])
        except ValueError as exc:
            errors["email"] = str(exc)
        else:
            (exact if whole else prefixes).append(term)
            address = term.removeprefix(search_terms.EMAIL)
            shown["email"] = address if whole else f"starting with “{address}”"
    days: dict[str, date] = {}
    for name in ("since", "until"):
        if form[name] and name not in errors:
            try:
                days[name] = _day(form[name])
            except ValueError as exc:
                errors[name] = str(exc)
    if "since" in days and "until" in days and days["since"] > days["until"]:
        errors["until"] = "The end date is before the start date."
    if errors:
        return form, None, errors
    if "since" in days:
        values["created_from"] = _oslo_midnight(days["since"])
    if "until" in days:
        values["created_before"] = _oslo_midnight(days["until"] + timedelta(days=1))
    summary = [(LABELS[name], shown[name]) for name in FIELDS if name in shown]
    if "since" in days and "until" in days:
        summary.append(
            ("Created", f"from {days['since']} to {days['until']}, both days included (Oslo dates)")
        )
    elif "since" in days:
        summary.append(("Created", f"on {days['since']} or later (Oslo dates)"))
    elif "until" in days:
        summary.append(("Created", f"on {days['until']} or earlier (Oslo dates)"))
    search_filter = SearchFilter(**values, term_prefixes=tuple(prefixes), exact_terms=tuple(exact))
    shown_form = {name: value for name, value in form.items() if value}
    return form, Criteria(form=shown_form, filter=search_filter, summary=summary), {}


# ---- cursors ----


def encode_cursor(contact_id: str) -> str:
    return base64.urlsafe_b64encode(contact_id.encode()).decode().rstrip("=")


def decode_cursor(value: str) -> str:
    """The contact id of a ``?page=`` cursor; anything this console did not give out is refused."""
    try:
        contact_id = base64.b64decode(value + "=" * (-len(value) % 4), altchars=b"-_", validate=True).decode()
    except (binascii.Error, ValueError):
        contact_id = ""
    if not _ULID.match(contact_id):
        raise web.HTTPBadRequest(
            text="This page link is not one the console gave out. Go back to the first page of the search."
        )
    return contact_id


# ---- pages ----


def _render(
    request: web.Request,
    *,
    status: int = 200,
    form: Mapping[str, str] | None = None,
    errors: Mapping[str, str] | None = None,
    rows: list[Found] | None = None,
    **context: Any,
) -> web.Response:
    context.setdefault("search_id", None)
    context.setdefault("summary", [])
    context.setdefault("next_page", None)
    context.setdefault("first_page", None)
    context.setdefault("newest", False)
    return pages.render(
        request,
        "search.html",
        status=status,
        form={name: (form or {}).get(name, "") for name in FIELDS},
        errors=errors or {},
        rows=rows,
        labels=LABELS,
        choices=CHOICES,
        pill=PILL,
        page_size=PAGE_SIZE,
        export_max=EXPORT_MAX_ROWS,
        **context,
    )


@routes.get("/console/search", name="console_search")
async def console_search(request: web.Request) -> web.Response:
    async with request.app[SESSIONS]() as session:
        rows = await search_page(session, SearchFilter(), before_id=None, limit=PAGE_SIZE)
    return _render(request, rows=rows, newest=True)


@routes.post("/console/search", name="console_search_submit")
async def console_search_submit(request: web.Request) -> web.Response:
    data = await request.post()
    form, criteria, errors = parse({k: v for k, v in data.items() if isinstance(v, str)})
    if criteria is None:
        return _render(request, status=400, form=form, errors=errors)
    search_id = secrets.token_urlsafe(16)
    async with write_session(request.app[SESSIONS]) as session:
        await store.insert_search(
            session,
            search_id=search_id,
            operator_id=pages.me(request).id,
            criteria=criteria.to_json(),
            now=utcnow(),
            keep=KEEP,
        )
        # which fields were used, never what was typed in them: the access log is no place for names
        await pages.audit_in(session, request, "search", search_id=search_id, fields=sorted(criteria.form))
    raise pages.redirect(f"/console/search/{search_id}")


async def _criteria(request: web.Request) -> tuple[str, Criteria]:
    search_id = request.match_info["search_id"]
    async with request.app[SESSIONS]() as session:
        saved = await store.get_search(session, search_id, pages.me(request).id)
    criteria = None
    if saved is not None and saved.created_at > utcnow() - KEEP:
        try:
            criteria = Criteria.from_json(saved.criteria)
        except (KeyError, TypeError, ValueError):
            criteria = None
    if criteria is None:
        raise web.HTTPNotFound(
            text="This search has expired (searches are kept for a day, for the operator who made them). "
            "Search again."
        )
    return search_id, criteria


@routes.get("/console/search/{search_id:" + _SEARCH_ID + "}", name="console_search_results")
async def console_search_results(request: web.Request) -> web.Response:
    search_id, criteria = await _criteria(request)
    cursor = request.query.get("page")
    before_id = decode_cursor(cursor) if cursor else None
    async with request.app[SESSIONS]() as session:
        rows = await search_page(session, criteria.filter, before_id=before_id, limit=PAGE_SIZE + 1)
    more = len(rows) > PAGE_SIZE
    rows = rows[:PAGE_SIZE]
    base = f"/console/search/{search_id}"
    return _render(
        request,
        form=criteria.form,
        rows=rows,
        search_id=search_id,
        summary=criteria.summary,
        next_page=f"{base}?page={encode_cursor(rows[-1].contact_id)}" if more and rows else None,
        first_page=base if before_id is not None else None,
        newest=False,
    )


def _csv_row(row: Found) -> tuple[Any, ...]:
    return (
        row.contact_id,
        row.created_at,
        row.debtor_id,
        row.debtor_name,
        row.case_id,
        row.kind,
        row.channel or "",
        row.status,
        row.status_reason or "",
        row.send_at,
        row.updated_at,
    )


def _csv_text(rows: list[tuple[Any, ...]]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerows(pages.csv_cells(row) for row in rows)
    return out.getvalue().encode("utf-8")


@routes.get("/console/search/{search_id:" + _SEARCH_ID + "}.csv", name="console_search_csv")
async def console_search_csv(request: web.Request) -> web.StreamResponse:
    """Every matching contact, newest first, read and written in keyset chunks so that memory stays flat
    however many rows there are (up to :data:`EXPORT_MAX_ROWS`)."""
    search_id, criteria = await _criteria(request)
    # the file is the log as it stands now: contacts made while it downloads (newer ids) are left out, so
    # that the rows counted, the rows written and the access log agree
    newest = ulid_floor(utcnow() + timedelta(milliseconds=1))
    async with request.app[SESSIONS]() as session:
        total = await count_up_to(session, criteria.filter, EXPORT_MAX_ROWS, before_id=newest)
    if total > EXPORT_MAX_ROWS:
        raise web.HTTPBadRequest(
            text=f"This search matches more than {EXPORT_MAX_ROWS:,} contacts, too many for one file. "
            "Narrow it (a date range, a status, a channel or a kind) and download again."
        )
    response = web.StreamResponse(
        headers={
            **security.HEADERS,
            "Content-Type": "text/csv; charset=utf-8",
            "Content-Disposition": f'attachment; filename="search-{utcnow():%Y%m%d-%H%M%S}.csv"',
        }
    )
    await pages.audit(request, "export_search", search_id=search_id, fields=sorted(criteria.form), rows=total)
    await response.prepare(request)
    # a BOM, so that Excel in Norway opens æøå right (as pages.csv_response does)
    await response.write("\ufeff".encode() + _csv_text([CSV_HEADER]))
    written = 0
    before_id = newest
    while written < total:
        # a short read per chunk: a slow download holds no database connection while the client reads
        async with request.app[SESSIONS]() as session:
            limit = min(_EXPORT_CHUNK, total - written)
            chunk = await search_page(session, criteria.filter, before_id=before_id, limit=limit)
        if chunk:
            await response.write(_csv_text([_csv_row(row) for row in chunk]))
            written += len(chunk)
            before_id = chunk[-1].contact_id
        if len(chunk) < limit:
            break
    await response.write_eof()
    return response
