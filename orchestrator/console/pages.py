"""Rendering console pages: one jinja2 environment over ``templates/console``, the signed-in operator and
the CSRF token in every page, and helpers every console module shares (the access log, operator entries in
the debtor's timeline, CSV responses).

Every value a page prints passes :func:`redact_national_ids` (jinja2's ``finalize``): a national id that
reached a note, a reason or a carrier's text is masked wherever it shows (R9), without each template having to
remember it.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Final
from zoneinfo import ZoneInfo

from aiohttp import web
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from markupsafe import Markup
from sqlalchemy.ext.asyncio import AsyncSession

from orchestrator import contact_log
from orchestrator.appkeys import SESSIONS
from orchestrator.console import store
from orchestrator.console.accounts import SignedIn
from orchestrator.db import write_session
from orchestrator.identifiers import mask_national_id, redact_national_ids
from orchestrator.models import utcnow
from orchestrator.rendering import nok, templates_root

OSLO: Final = ZoneInfo("Europe/Oslo")
ME: Final = web.RequestKey("console_operator", SignedIn)
CSRF: Final = web.RequestKey("console_csrf", str)
SESSION_ID: Final = web.RequestKey("console_session_id", str)


def _finalize(value: Any) -> Any:
    if isinstance(value, Markup):  # markup we built stays markup (a national id in it is masked all the same)
        return Markup(redact_national_ids(str(value)))  # noqa: S704 - masking puts in only digits and "*"
    return redact_national_ids(value) if isinstance(value, str) else value


def oslo(value: datetime | None, fmt: str = "%Y-%m-%d %H:%M") -> str:
    """A time as Norwegian operators read it: Oslo time."""
    return "" if value is None else value.astimezone(OSLO).strftime(fmt)


def money(value: Decimal | str | int | float | None) -> str:
    return "" if value is None else nok(value)


def masked_id(value: str | None) -> str:
    return "" if not value else mask_national_id(value)


_env = Environment(
    loader=FileSystemLoader(templates_root() / "console"),
    undefined=StrictUndefined,
    autoescape=select_autoescape(["html", "svg"]),
    finalize=_finalize,
    trim_blocks=True,
    lstrip_blocks=True,
)
_env.filters.update({"oslo": oslo, "money": money, "masked_id": masked_id})


def me(request: web.Request) -> SignedIn:
    return request[ME]


def render_text(name: str, **context: Any) -> str:
    return _env.get_template(name).render(**context)


def render(request: web.Request, name: str, *, status: int = 200, **context: Any) -> web.Response:
    """A console page; ``me`` (the operator; None on the sign-in page) and ``csrf_token`` are always set."""
    context.setdefault("me", request.get(ME))
    context.setdefault("csrf_token", request.get(CSRF, ""))
    context.setdefault("path", request.path)
    body = render_text(name, **context)
    return web.Response(text=body, status=status, content_type="text/html", charset="utf-8")


def redirect(location: str) -> web.HTTPSeeOther:
    """After a form: 303 to a page of ours (never to a URL taken from the request)."""
    if not location.startswith("/console/"):
        location = "/console/"
    return web.HTTPSeeOther(location)


def csv_response(filename: str, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> web.Response:
    """A CSV download (UTF-8 with a BOM, so that Excel in Norway opens æøå right). Cells that a spreadsheet
    would run as a formula are quoted with a leading apostrophe (CSV injection)."""
    out = io.StringIO()
    out.write("\ufeff")
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow([_cell(v) for v in row])
    return web.Response(
        body=out.getvalue().encode("utf-8"),
        headers={
            "Content-Type": "text/csv; charset=utf-8",
            "Content-Disposition": f'attachment; filename="{filename}"',
        },
    )


def csv_cells(row: Sequence[Any]) -> list[str]:
    """One row's cells exactly as :func:`csv_response` writes them, for a CSV streamed in chunks."""
    return [_cell(v) for v in row]


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.astimezone(OSLO).isoformat(timespec="seconds")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, int | float | Decimal) and not isinstance(value, bool):
        return str(value)  # a number is no formula, negative or not
    text = redact_national_ids(str(value))
    if text[:1] in ("=", "+", "-", "@", "\t", "\r"):
        text = "'" + text
    return text


async def audit(request: web.Request, action: str, *, debtor_id: str | None = None, **detail: Any) -> None:
    """Record in the console's access log what an operator looked at (in its own transaction)."""
    async with write_session(request.app[SESSIONS]) as session:
        await audit_in(session, request, action, debtor_id=debtor_id, **detail)


async def audit_in(
    session: AsyncSession, request: web.Request, action: str, *, debtor_id: str | None = None, **detail: Any
) -> None:
    """The same inside the caller's transaction (actions: recorded if and only if they happen)."""
    operator = request.get(ME)
    await store.audit(
        session,
        operator_id=operator.id if operator is not None else None,
        action=action,
        now=utcnow(),
        debtor_id=debtor_id,
        detail=detail,
    )


def operator_event(
    request: web.Request,
    *,
    action: str,
    debtor_id: str,
    case_id: str | None = None,
    contact_id: str | None = None,
    attempt_id: str | None = None,
    status: str | None = None,
    detail: dict[str, Any] | None = None,
    at: datetime | None = None,
) -> dict[str, Any]:
    """A debtor-timeline row for an operator's action: type ``operator_<action>``, source ``operator``, and
    who did it (username and role) in the detail."""
    operator = me(request)
    return contact_log.timeline_row(
        debtor_id=debtor_id,
        case_id=case_id,
        contact_id=contact_id,
        attempt_id=attempt_id,
        type=f"operator_{action}",
        status=status,
        source="operator",
        at=at or utcnow(),
        detail={"operator": operator.username, "role": operator.role, **(detail or {})},
    )
