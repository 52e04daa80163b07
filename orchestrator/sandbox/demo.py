"""``orchestrator demo``: everything on embedded defaults, a sample portfolio through the public API, and a
summary of where each contact went and where to look."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import socket
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
from pydantic import SecretStr

from orchestrator import auth, db, runtime
from orchestrator.sandbox import digipost, linkmobility, twilio
from orchestrator.sandbox.print_provider import PrintProviderSandbox, serve_print_sandbox
from orchestrator.sandbox.sample_portfolio import DIGIPOST_USER, sample_portfolio
from orchestrator.settings import Settings

ALWAYS_OPEN_RULES = Path(__file__).with_name("always_open_rules.toml")
DIGIPOST_SENDER = "123456"
SETTLED = {
    "sent",
    "delivered",
    "read",
    "failed",
    "bounced",
    "returned",
    "held",
    "suppressed",
    "cancelled",
    "scheduled",
}


def _free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _out(line: str = "") -> None:
    print(line, flush=True)


async def run_demo(settings: Settings, *, exit_when_done: bool, always_open: bool) -> int:
    if always_open:
        settings = settings.model_copy(update={"rules_file": ALWAYS_OPEN_RULES})
    if settings.http_port == 0:
        # The carriers' callbacks need our address before the server starts.
        settings = settings.model_copy(update={"http_port": _free_port(settings.http_host)})
    base = settings.public_base_url or f"http://{settings.http_host}:{settings.http_port}"
    webhook_secret = secrets.token_urlsafe(16)
    async with contextlib.AsyncExitStack() as stack:
        # The carriers' sandboxes: real local servers speaking Link Mobility's and Twilio's APIs.
        link = linkmobility.LinkMobilitySandbox()
        # Delivery reports go back to our own webhook, as Link Mobility's gate would send them.
        link.add_gate(
            "DEMO", f"{base}/webhooks/linkmobility/{webhook_secret}", username="gate", password=webhook_secret
        )
        link_url = await stack.enter_async_context(linkmobility.serve(link))
        tw = twilio.TwilioSandbox()
        tw_url = await stack.enter_async_context(twilio.serve(tw))
        # The print provider (an SFTP server) and Digipost, with the sample's mailbox user.
        printer = await stack.enter_async_context(
            serve_print_sandbox(settings.state_dir.resolve() / "sandbox-print-provider")
        )
        private_pem, public_pem = digipost.generate_key_pair()
        mailbox = digipost.DigipostSandbox()
        mailbox.add_sender(DIGIPOST_SENDER, public_pem)
        mailbox.add_user(DIGIPOST_USER)
        mailbox_url = await stack.enter_async_context(digipost.serve(mailbox))
        settings = settings.model_copy(
            update={
                "print_delivery": "sftp",
                "print_sftp_host": printer.host,
                "print_sftp_port": printer.port,
                "print_sftp_username": printer.username,
                "print_sftp_password": SecretStr(str(printer.password)),
                "print_sftp_known_hosts": printer.known_hosts_path,
                "print_batch_max_wait_s": 1.0,
                "digipost_url": mailbox_url,
                "digipost_sender_id": DIGIPOST_SENDER,
                "digipost_private_key": SecretStr(private_pem.decode()),
                "digipost_return_address": "Eksempel Kreditt AS; Postboks 1; 0101 OSLO",
                "linkmobility_url": link_url,
                "linkmobility_username": link.username,
                "linkmobility_password": SecretStr(link.password),
                "linkmobility_platform_id": link.platform_id,
                "linkmobility_platform_partner_id": link.platform_partner_id,
                "twilio_url": tw_url,
                "twilio_account_sid": tw.account_sid,
                "twilio_auth_token": SecretStr(tw.auth_token),
                "public_base_url": base,
                "linkmobility_delivery_report_gate": "DEMO",
                "linkmobility_webhook_username": "gate",
                "linkmobility_webhook_password": SecretStr(webhook_secret),
                "linkmobility_webhook_secret": SecretStr(webhook_secret),
                "twilio_status_callback_url": f"{base}/webhooks/twilio",
            }
        )
        return await _run(settings, exit_when_done, Sandboxes(link, tw, printer, mailbox))


@dataclass
class Sandboxes:
    link: linkmobility.LinkMobilitySandbox
    twilio: twilio.TwilioSandbox
    printer: PrintProviderSandbox
    mailbox: digipost.DigipostSandbox


async def _run(settings: Settings, exit_when_done: bool, sandboxes: Sandboxes) -> int:
    with runtime.redis_for(settings) as redis_url:
        async with runtime.running(settings, redis_url, migrate=True) as handle:
            engine = db.create_engine(settings.resolved_database_url)
            try:
                key = await auth.create_api_key(
                    db.session_factory(engine),
                    name=f"demo-{uuid.uuid4().hex[:8]}",
                    scopes=["contacts:write", "contacts:read", "cases:write"],
                )
            finally:
                await engine.dispose()
            ok = await _drive(settings, handle.url, key, sandboxes)
            if exit_when_done:
                return 0 if ok else 1
            _out(f"\nThe orchestrator keeps running on {handle.url} — press Ctrl-C to stop.")
            await runtime.wait_for_signal()
    return 0


async def _drive(settings: Settings, base: str, key: str, sandboxes: Sandboxes) -> bool:
    headers = {"Authorization": f"Bearer {key}"}
    today = datetime.now(ZoneInfo("Europe/Oslo")).date()
    contacts = sample_portfolio(today, uuid.uuid4().hex[:8])
    async with aiohttp.ClientSession(base_url=base, headers=headers) as http:
        async with http.post("/v1/contacts:batch", json={"contacts": contacts}) as resp:
            batch = await resp.json()
        _out(f"\nEnqueued a sample portfolio of {len(contacts)} through POST {base}/v1/contacts:batch:")
        _out(f"  {batch['queued']} queued, {batch['rejected']} rejected with precise reasons:")
        ids = []
        for result in batch["results"]:
            if result.get("error"):
                for err in result["error"]["errors"]:
                    _out(f"    item {result['index']}: {'.'.join(map(str, err['loc']))}: {err['msg']}")
            else:
                ids.append(result["id"])
        deadline = time.monotonic() + 60
        # Give the SMS gateways' delivery reports (through our webhooks) a few seconds to arrive.
        reports_by = time.monotonic() + 5
        views: dict[str, Any] = {}
        while time.monotonic() < deadline:
            for cid in ids:
                async with http.get(f"/v1/contacts/{cid}") as resp:
                    views[cid] = await resp.json()
            awaiting_report = any(
                v["status"] == "sent" and v["channel"] in ("sms", "chat_link") for v in views.values()
            )
            if all(v["status"] in SETTLED for v in views.values()) and (
                not awaiting_report or time.monotonic() > reports_by
            ):
                break
            await asyncio.sleep(0.3)
    _out("\nWhat the orchestrator decided (GET /v1/contacts/{id}):")
    for cid in ids:
        view = views[cid]
        decision = view.get("decision") or {}
        when = f" at {decision.get('send_at')}" if view["status"] == "scheduled" else ""
        _out(
            f"  {view['debtor_id']:<10} {view['kind']:<14} -> {view['status']:<10} "
            f"{view['channel']:<7}{when}  reasons: {', '.join(decision.get('reasons', []))}"
        )
        for rejected in decision.get("rejected", []):
            _out(f"  {'':<10} {'':<14}    not {rejected['channel']}: {rejected['reason']}")
    outbox = settings.resolved_outbox_dir.resolve()
    _out(f"\nWhere to look:\n  outbox (e-mail, as no SMTP relay is configured): {outbox}/email")
    for folder in ("email",):
        files = sorted((outbox / folder).glob("*")) if (outbox / folder).exists() else []
        _out(f"    {folder:<6} {len(files)} file(s)" + (f", newest {files[-1].name}" if files else ""))
    _out(
        f"  SMS gateways (sandboxes): Link Mobility took {len(sandboxes.link.messages)}, "
        f"Twilio took {len(sandboxes.twilio.messages)}"
    )
    batches = sandboxes.printer.batches()
    _out(
        f"  print provider (SFTP sandbox): {len(batches)} batch(es), "
        f"{sum(len(b.letters) for b in batches)} letter(s) in {sandboxes.printer.drop_dir}"
    )
    _out(
        "  digital mailbox (Digipost sandbox): "
        + (", ".join(m.delivery for m in sandboxes.mailbox.messages) or "nothing")
    )
    _out(f"  contact log:   curl -H 'Authorization: Bearer {key}' {base}/v1/contacts")
    _out(f"  a timeline:    curl -H 'Authorization: Bearer {key}' {base}/v1/debtors/DEMO-D-1/timeline")
    _out(f"  API document:  {base}/openapi.json    metrics: {base}/metrics")
    if any(v["status"] == "scheduled" for v in views.values()):
        _out(
            "\n  Some contacts wait for the next contact window (R5: weekdays 08-21, Saturdays 09-15,"
            " never on Sundays or holidays).\n  To see them flow right now:"
            " `.venv/bin/orchestrator demo --always-open` (a demo-only, not lawful rule set)."
        )
    sys.stdout.flush()
    return len(views) == len(ids) and all(v["status"] in SETTLED for v in views.values())
