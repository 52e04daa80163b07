"""RFC 9457 problem responses: every error the API gives is ``application/problem+json``."""

from __future__ import annotations

from typing import Any

from aiohttp import web

PROBLEM_TYPE_BASE = "https://orchestrator.invalid/problems/"
CONTENT_TYPE = "application/problem+json"


def problem_body(
    status: int,
    title: str,
    detail: str,
    *,
    type_: str | None = None,
    errors: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE_BASE + type_ if type_ else "about:blank",
        "title": title,
        "status": status,
        "detail": detail,
    }
    if errors is not None:
        body["errors"] = errors
    return body


def problem(
    status: int,
    title: str,
    detail: str,
    *,
    type_: str | None = None,
    errors: list[dict[str, Any]] | None = None,
) -> web.Response:
    return web.json_response(
        problem_body(status, title, detail, type_=type_, errors=errors),
        status=status,
        content_type=CONTENT_TYPE,
    )


class ProblemError(Exception):
    """Raise from a handler to answer with a problem."""

    def __init__(
        self,
        status: int,
        title: str,
        detail: str,
        *,
        type_: str | None = None,
        errors: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(detail)
        self.response = problem(status, title, detail, type_=type_, errors=errors)
