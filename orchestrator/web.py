"""The aiohttp application factory: API, health, metrics and OpenAPI, wired through ``cleanup_ctx``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from orchestrator import api, console, metrics, queue, selfservice, unsubscribe
from orchestrator.appkeys import ENGINE, KEYS, OPENAPI, REDIS, SESSIONS, SETTINGS
from orchestrator.auth import KeyCache
from orchestrator.db import create_engine, session_factory
from orchestrator.experiments import api as experiments_api
from orchestrator.logs import get_logger
from orchestrator.openapi import build_openapi
from orchestrator.problems import ProblemError, problem
from orchestrator.schemas import Health
from orchestrator.settings import Settings
from webhooks import ingress

log = get_logger(__name__)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Which scope each route needs; a route missing here is public.
ROUTE_SCOPES = {
    "create_contact": "contacts:write",
    "create_contacts_batch": "contacts:write",
    "get_contact": "contacts:read",
    "list_contacts": "contacts:read",
    "debtor_timeline": "contacts:read",
    "case_event": "cases:write",
    "create_experiment": "experiments:write",
    "stop_experiment": "experiments:write",
    "list_experiments": "contacts:read",
    "get_experiment": "contacts:read",
    "experiment_report": "contacts:read",
}


@web.middleware
async def problems_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    route = request.match_info.route.name or "unmatched"
    try:
        response = await handler(request)
    except ProblemError as exc:
        response = exc.response
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        response = problem(exc.status, exc.reason, exc.text or exc.reason)
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("unhandled error", route=route)
        response = problem(500, "Internal Server Error", "the server failed; the error is logged")
    metrics.HTTP_REQUESTS.labels(route, str(response.status)).inc()
    return response


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    scope = ROUTE_SCOPES.get(request.match_info.route.name or "")
    if scope is None:
        return await handler(request)
    header = request.headers.get("Authorization", "")
    if not header.startswith("Bearer ") or not header[7:].strip():
        raise ProblemError(401, "Unauthorized", "send 'Authorization: Bearer <api key>'")
    scopes = await request.app[KEYS].scopes(request.app[SESSIONS], header[7:].strip())
    if scopes is None:
        raise ProblemError(401, "Unauthorized", "the API key is unknown or revoked")
    if scope not in scopes:
        raise ProblemError(403, "Forbidden", f"this API key lacks the scope {scope!r}")
    return await handler(request)


async def healthz(_request: web.Request) -> web.Response:
    return web.json_response(Health(status="ok").model_dump())


async def readyz(request: web.Request) -> web.Response:
    checks: dict[str, str] = {}
    try:
        async with request.app[ENGINE].connect() as conn:
            await asyncio.wait_for(conn.execute(text("SELECT 1")), 5)
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"] = f"error: {type(exc).__name__}"
    try:
        await asyncio.wait_for(request.app[REDIS].ping(), 5)
        checks["redis"] = "ok"
    except Exception as exc:
        checks["redis"] = f"error: {type(exc).__name__}"
    ready = all(v == "ok" for v in checks.values())
    return web.json_response(
        Health(status="ok" if ready else "unavailable", checks=checks).model_dump(),
        status=200 if ready else 503,
    )


async def metrics_view(_request: web.Request) -> web.Response:
    return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})


async def openapi_view(request: web.Request) -> web.Response:
    return web.json_response(request.app[OPENAPI])


def create_app(settings: Settings, *, redis_url: str) -> web.Application:
    app = web.Application(
        middlewares=[problems_middleware, auth_middleware, console.middleware],
        client_max_size=api.MAX_BODY_BYTES,
    )
    app[SETTINGS] = settings
    app[KEYS] = KeyCache()

    async def resources(app: web.Application) -> AsyncIterator[None]:
        engine = create_engine(settings.resolved_database_url)
        app[ENGINE] = engine
        app[SESSIONS] = session_factory(engine)
        app[REDIS] = await queue.connect(redis_url)
        yield
        await app[REDIS].aclose()
        await engine.dispose()

    app.cleanup_ctx.append(resources)
    app.cleanup_ctx.append(ingress.bounce_receiver)
    app.router.add_routes(api.routes)
    app.router.add_routes(experiments_api.routes)
    app.router.add_routes(selfservice.routes)
    app.router.add_routes(unsubscribe.routes)
    app.router.add_routes(ingress.routes)
    console.setup(app)
    app.router.add_get("/healthz", healthz, name="healthz")
    app.router.add_get("/readyz", readyz, name="readyz")
    app.router.add_get("/metrics", metrics_view, name="metrics")
    app.router.add_get("/openapi.json", openapi_view, name="openapi")
    app[OPENAPI] = build_openapi(app, ROUTE_SCOPES)
    return app
