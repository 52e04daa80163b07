"""``POST /webhooks/{carrier}``: verify → record once → enqueue → 2xx, the same for every carrier.

Each carrier module only verifies and parses (``webhooks.events.CarrierWebhook``). Here every callback is
kept: one row per carrier event, unique by (carrier, event id), so a replay is recorded once; an authentic but
unreadable callback is kept too and answered as the carrier expects (never a 5xx, never lost). The worker
applies the events (``orchestrator.carrier_jobs``).
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict
from typing import Any, Protocol, runtime_checkable

from aiohttp import web

from orchestrator import contact_log as store
from orchestrator.appkeys import REDIS, SESSIONS, SETTINGS
from orchestrator.carrier_jobs import PROCESS_CARRIER_EVENT
from orchestrator.db import write_session
from orchestrator.logs import get_logger
from orchestrator.models import new_id, utcnow
from orchestrator.problems import problem
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
    now = utcnow()
    rows: list[dict[str, Any]]
    answer = 200
    try:
        events = module.parse(url=url, headers=headers, body=body)
        rows = [
            {
                "id": new_id(),
                "carrier": module.name,
                "event_id": event.event_id,
                "attempt_id": None,
                "payload": {"event": _event_json(event), "raw": raw},
                "received_at": now,
                "processed_at": None,
            }
            for event in events
        ]
    except MalformedPayload as exc:
        answer = exc.status
        log.warning("webhook payload kept but not understood", carrier=module.name, why=str(exc))
        rows = [
            {
                "id": new_id(),
                "carrier": module.name,
                "event_id": "malformed:" + hashlib.sha256(body).hexdigest(),
                "attempt_id": None,
                "payload": {"event": None, "error": str(exc), "raw": raw},
                "received_at": now,
                "processed_at": None,
            }
        ]
    async with write_session(request.app[SESSIONS]) as session:
        fresh = await store.record_carrier_events(session, rows)
    redis = request.app[REDIS]
    queue_name = settings.queue_name
    for row_id in fresh:
        await redis.enqueue_job(
            PROCESS_CARRIER_EVENT, row_id, _job_id=f"carrier-event:{row_id}", _queue_name=queue_name
        )
    return web.json_response({"received": len(rows), "new": len(fresh)}, status=answer)
