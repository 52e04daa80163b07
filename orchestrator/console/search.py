"""(being written)"""

from __future__ import annotations

from typing import Final

from aiohttp import web

from orchestrator.console import pages

routes = web.RouteTableDef()
ROLES: Final[dict[str, str]] = {"console_search": "viewer"}


@routes.get("/console/search", name="console_search")
async def console_search(request: web.Request) -> web.Response:
    return pages.render(request, "search.html")
