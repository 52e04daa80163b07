"""(being written)"""

from __future__ import annotations

from typing import Final

from aiohttp import web

routes = web.RouteTableDef()
ROLES: Final[dict[str, str]] = {}
