"""``POST /webhooks/{carrier}``: verify → record once → enqueue → 2xx, the same for every carrier.

Each carrier module only verifies and parses (``webhooks.events.CarrierWebhook``). Here every callback is
kept: one row per carrier event, unique by (carrier, event id), so a replay is recorded once; an authentic but
unreadable callback is kept too and answered as the carrier expects (never a 5xx, never lost). The worker
applies the events (``orchestrator.carrier_jobs``).
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from dataclasses import asdict
from typing import Any, Protocol, runtime_checkable

from aiohttp import web
from arq.connections import ArqRedis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from orchestrator import contact_log as store
from orchestrator.appkeys import REDIS, SESSIONS, SETTINGS
from orchestrator.carrier_jobs import PROCESS_CARRIER_EVENT
from orchestrator.db import write_session
from orchestrator.logs import get_logger
from orchestrator.models import new_id, utcnow
from orchestrator.problems import problem
from webhooks.bounces import CARRIER, BounceReceiver
from webhooks.digipost import DigipostWebhook
from webhooks.events import CarrierEvent, CarrierWebhook, MalformedPayload, WebhookError
from webhooks.linkmobility import LinkMobilityWebhook
from webhooks.mailgun import MailgunWebhook
from webhooks.returns import PrintReturnsWebhook
from webhooks.sendgrid import SendGridWebhook
from webhooks.twilio import TwilioWebhook

log = get_logger(__name__)
routes = web.RouteTableDef()
MAX_RAW_CHARS = 1_000_000
# The one place carrier webhooks are registered (name -> module): a new carrier is one module and one entry.
WEBHOOKS: dict[str, CarrierWebhook] = {
    module.name: module
    for module in (
        TwilioWebhook(),
        LinkMobilityWebhook(),
        MailgunWebhook(),
        SendGridWebhook(),
        DigipostWebhook(),
        PrintReturnsWebhook(),
    )
}


@runtime_checkable
class ReplayGuard(Protocol):
    """A carrier whose signature does not cover the event (Mailgun: timestamp + token) keeps seen tokens."""

    async def check_replay(self, *, body: bytes, redis: Any = None) -> bool: ...


def _event_json(event: CarrierEvent) -> dict[str, Any]:
    data = asdict(event)
    data["at"] = event.at.isoformat()
    data["segment"] = list(event.segment) if event.segment else None
    return data


@routes.post("/webhooks/{carrier}", name="webhook")
@routes.post("/webhooks/{carrier}/{secret}", name="webhook_with_secret")
async def webhook(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    module = WEBHOOKS.get(request.match_info["carrier"])
    if module is None or not module.configured(settings):
        return problem(404, "Not found", "no such carrier is configured")
    body = await request.read()
    # The URL the carrier called (and signed): our public base URL, not what a proxy hands us.
    url = settings.resolved_public_base_url + request.path_qs
    headers = dict(request.headers)
    try:
        module.verify(url=url, headers=headers, body=body, settings=settings)
        if isinstance(module, ReplayGuard) and await module.check_replay(body=body, redis=request.app[REDIS]):
            return web.json_response({"received": 0, "new": 0, "replay": True})
    except WebhookError as exc:
        log.warning("webhook refused", carrier=module.name, status=exc.status, why=str(exc))
        titles = {400: "Bad Request", 401: "Unauthorized", 404: "Not Found"}
        return problem(exc.status, titles.get(exc.status, "Refused"), str(exc))
    raw = {
        "body": body.decode("utf-8", errors="replace")[:MAX_RAW_CHARS],
        "content_type": request.content_type,
    }
    answer = 200
    try:
        rows = event_rows(module.name, module.parse(url=url, headers=headers, body=body), raw)
    except MalformedPayload as exc:
        answer = exc.status
        log.warning("webhook payload kept but not understood", carrier=module.name, why=str(exc))
        rows = [unreadable_row(module.name, body, str(exc), raw)]
    fresh = await store_and_enqueue(request.app, rows)
    return web.json_response({"received": len(rows), "new": len(fresh)}, status=answer)


def event_rows(carrier: str, events: list[CarrierEvent], raw: dict[str, Any]) -> list[dict[str, Any]]:
    now = utcnow()
    return [
        {
            "id": new_id(),
            "carrier": carrier,
            "event_id": event.event_id,
            "attempt_id": None,
            "payload": {"event": _event_json(event), "raw": raw},
            "received_at": now,
            "processed_at": None,
        }
        for event in events
    ]


def unreadable_row(carrier: str, body: bytes, error: str, raw: dict[str, Any]) -> dict[str, Any]:
    """An authentic callback we could not read: kept for inspection, once per distinct body."""
    return {
        "id": new_id(),
        "carrier": carrier,
        "event_id": "malformed:" + hashlib.sha256(body).hexdigest(),
        "attempt_id": None,
        "payload": {"event": None, "error": error, "raw": raw},
        "received_at": utcnow(),
        "processed_at": None,
    }


async def store_and_enqueue(app: web.Application, rows: list[dict[str, Any]]) -> list[str]:
    return await record_events(app[SESSIONS], app[REDIS], app[SETTINGS].queue_name, rows)


async def record_events(
    sessions: async_sessionmaker[AsyncSession], redis: ArqRedis, queue_name: str, rows: list[dict[str, Any]]
) -> list[str]:
    """Record the rows (a replay is skipped), commit, then hand the new ones to the worker."""
    async with write_session(sessions) as session:
        fresh = await store.record_carrier_events(session, rows)
    for row_id in fresh:
        await redis.enqueue_job(
            PROCESS_CARRIER_EVENT, row_id, _job_id=f"carrier-event:{row_id}", _queue_name=queue_name
        )
    return fresh


async def bounce_receiver(app: web.Application) -> AsyncIterator[None]:
    """The VERP return path's SMTP receiver beside the web routes (when ORCH_BOUNCE_SMTP_PORT is set).

    A bounce is stored before the sending MTA gets its 250; a failure to store answers 451, and it retries."""

    async def on_event(event: CarrierEvent, raw: bytes) -> None:
        await store_and_enqueue(app, event_rows(CARRIER, [event], _raw_mail(raw)))

    async def on_unparsed(raw: bytes) -> None:
        await store_and_enqueue(
            app, [unreadable_row(CARRIER, raw, "not a bounce we could read", _raw_mail(raw))]
        )

    receiver = BounceReceiver.from_settings(app[SETTINGS], on_event=on_event, on_unparsed=on_unparsed)
    if receiver is None:
        yield
        return
    await receiver.start()
    log.info("bounce receiver listening", port=receiver.port)
    try:
        yield
    finally:
        await receiver.stop()


def _raw_mail(raw: bytes) -> dict[str, Any]:
    return {"body": raw.decode("utf-8", errors="replace")[:MAX_RAW_CHARS], "content_type": "message/rfc822"}
