"""The operator console (``/console/``): server-rendered pages behind sign-in, for the people who answer
debtors' calls and who must show a complaints board what was sent.

One module per page family, each with its ``routes`` and the role each route needs (``ROLES``):
``login`` (sign-in, sign-out), ``search`` (the contact log, CSV), ``debtors`` (a debtor's page and
timeline, a contact's decision and attempts), ``preview`` (each message as sent), ``actions`` (what
operators do to cases and contacts), ``tasks`` (the operator task queue), ``reports`` (charts and CSV),
``admin`` (operators and the access log). :mod:`orchestrator.console.security` guards them all.
"""

from __future__ import annotations

from aiohttp import web

from channels import letter
from orchestrator.console import actions, admin, debtors, login, preview, reports, search, security, tasks

MODULES = (login, search, debtors, preview, actions, tasks, reports, admin)
middleware = security.console_middleware


async def _close_renderer(_app: web.Application) -> None:
    # a letter preview may have started the PDF render pool in this web process
    await letter.close_default_renderer()


def setup(app: web.Application) -> None:
    app.on_cleanup.append(_close_renderer)
    roles: dict[str, str] = {}
    for module in MODULES:
        app.router.add_routes(module.routes)
        roles.update(module.ROLES)
    app[security.CONSOLE_ROLES] = roles
