"""``orchestrator demo``: everything on embedded defaults with the carriers' and registries' sandboxes, a
sample portfolio through the public API, the returned-mail and bounce loop, and a summary of where each
contact went and where to look.

The loop: the print provider sandbox returns the letters to addresses nobody lives at any more and reports
each one to our own ``POST /webhooks/letters/returns``, signed as a print provider would; the registry sandbox
answers the look-ups that follow (Brreg, Maskinporten, Folkeregisteret); the SMTP sandbox relay bounces mail
to its unknown users with a DSN to our VERP bounce receiver. Only URLs and credentials differ from production.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import socket
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
from pydantic import SecretStr

from orchestrator import auth, db, runtime
from orchestrator.carrier_jobs import BAD_ADDRESS_REASONS
from orchestrator.console import accounts
from orchestrator.logs import get_logger
from orchestrator.sandbox import digipost, linkmobility, registries, twilio
from orchestrator.sandbox.print_provider import PrintProviderSandbox, ReturnedLetter, serve_print_sandbox
from orchestrator.sandbox.sample_portfolio import (
    BOUNCING_EMAIL,
    DIGIPOST_USER,
    LOOP_DEBTORS,
    add_registry_entries,
    comes_back,
    sample_portfolio,
)
from orchestrator.sandbox.smtp import SmtpSandbox
from orchestrator.settings import Settings
from webhooks.bounces import verp_attempt_id
from webhooks.returns import SIGNATURE_HEADER, sign

log = get_logger(__name__)

ALWAYS_OPEN_RULES = Path(__file__).with_name("always_open_rules.toml")
DIGIPOST_SENDER = "123456"
MASKINPORTEN_CLIENT = "orchestrator-demo"
MASKINPORTEN_KEY_ID = "orchestrator-demo-key"
FOLKEREGISTERET_SCOPE = "skatteetaten:folkeregisteret/finans"
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
DEADLINE_S = 90.0
REPORT_GRACE_S = 5.0  # how long a sent SMS waits for its gateway's delivery report (through our webhook)
RETURNS_EVERY_S = 0.5  # how often the print provider sandbox looks for letters to send back
# The timeline entries that end the returned-mail loop for one letter (orchestrator.returned_mail).
RETURN_OUTCOMES = {"address_updated_resent", "address_stored", "address_request", "operator_task"}


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
    returns_secret = secrets.token_urlsafe(16)
    bounce_port = settings.bounce_smtp_port or _free_port(settings.bounce_smtp_host)
    sandbox_root = settings.state_dir.resolve()
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
        # The print provider (an SFTP server) returns letters to addresses nobody lives at any more, through
        # our own returned-letters webhook; and Digipost, with the sample's mailbox user.
        http = await stack.enter_async_context(aiohttp.ClientSession())
        printer = await stack.enter_async_context(
            serve_print_sandbox(
                sandbox_root / "sandbox-print-provider",
                return_if=comes_back,
                on_return=_post_return(http, f"{base}/webhooks/letters/returns", returns_secret),
            )
        )
        private_pem, public_pem = digipost.generate_key_pair()
        mailbox = digipost.DigipostSandbox()
        mailbox.add_sender(DIGIPOST_SENDER, public_pem)
        mailbox.add_user(DIGIPOST_USER)
        mailbox_url = await stack.enter_async_context(digipost.serve(mailbox))
        # Brreg, Maskinporten and Folkeregisteret with the loop's debtors in them.
        registry = registries.RegistriesSandbox(folkeregisteret_scope=FOLKEREGISTERET_SCOPE)
        client_private, client_public = registries.generate_client_key()
        registry.add_client(
            MASKINPORTEN_CLIENT, client_public, [FOLKEREGISTERET_SCOPE], key_id=MASKINPORTEN_KEY_ID
        )
        add_registry_entries(registry)
        registry_url = await stack.enter_async_context(registries.serve(registry))
        # An SMTP relay that keeps every message and bounces its unknown users to our VERP bounce receiver.
        smtp = await stack.enter_async_context(
            SmtpSandbox(
                sandbox_root / "sandbox-smtp",
                bounce_host=settings.bounce_smtp_host,
                bounce_port=bounce_port,
                unknown_users=[BOUNCING_EMAIL],
            )
        )
        await stack.enter_async_context(_every(RETURNS_EVERY_S, printer.process_returns))
        settings = settings.model_copy(
            update={
                "print_delivery": "sftp",
                "print_sftp_host": printer.host,
                "print_sftp_port": printer.port,
                "print_sftp_username": printer.username,
                "print_sftp_password": SecretStr(str(printer.password)),
                "print_sftp_known_hosts": printer.known_hosts_path,
                "print_batch_max_wait_s": 1.0,
                "print_returns_webhook_secret": SecretStr(returns_secret),
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
                "smtp_host": smtp.host,
                "smtp_port": smtp.port,
                "smtp_security": "none",
                "bounce_smtp_port": bounce_port,
                "brreg_url": f"{registry_url}/enhetsregisteret/api",
                "folkeregisteret_url": registry_url,
                "folkeregisteret_package": "finans",
                "maskinporten_token_url": f"{registry_url}/token",
                "maskinporten_audience": f"{registry_url}/",
                "maskinporten_client_id": MASKINPORTEN_CLIENT,
                "maskinporten_scope": FOLKEREGISTERET_SCOPE,
                "maskinporten_private_key": SecretStr(client_private.decode("ascii")),
                "maskinporten_key_id": MASKINPORTEN_KEY_ID,
            }
        )
        return await _run(settings, exit_when_done, Sandboxes(link, tw, printer, mailbox, registry, smtp))


def _post_return(
    http: aiohttp.ClientSession, url: str, secret: str
) -> Callable[[ReturnedLetter], Awaitable[None]]:
    """The print provider's callback for a letter that came back, signed as ``webhooks.returns`` verifies."""

    async def post(letter: ReturnedLetter) -> None:
        entry = {"reference": letter.reference, "reason": letter.reason, "returned_at": datetime.now(UTC)}
        body = json.dumps({"returns": [entry]}, default=datetime.isoformat).encode()
        headers = {"Content-Type": "application/json", SIGNATURE_HEADER: sign(body, secret)}
        for pause in (0.5, 1.0, 2.0, None):  # a provider retries a callback it could not deliver
            try:
                async with http.post(url, data=body, headers=headers) as resp:
                    resp.raise_for_status()
                    return
            except aiohttp.ClientError as exc:
                if pause is None:
                    log.warning("demo: a returned letter could not be reported", error=str(exc))
                    return
            await asyncio.sleep(pause)

    return post


@contextlib.asynccontextmanager
async def _every(seconds: float, job: Callable[[], Awaitable[object]]) -> AsyncIterator[None]:
    """Run ``job`` every ``seconds`` for the duration of the block."""

    async def loop() -> None:
        while True:
            try:
                await job()
            except Exception as exc:  # a sandbox hiccup must not end the demo
                log.warning("demo: periodic sandbox job failed", error=repr(exc))
            await asyncio.sleep(seconds)

    task = asyncio.create_task(loop())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@dataclass
class Sandboxes:
    link: linkmobility.LinkMobilitySandbox
    twilio: twilio.TwilioSandbox
    printer: PrintProviderSandbox
    mailbox: digipost.DigipostSandbox
    registry: registries.RegistriesSandbox
    smtp: SmtpSandbox


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
                # an administrator for the console, with a new password on every run
                password = accounts.generate_password()
                await accounts.create_operator(
                    db.session_factory(engine),
                    username="demo",
                    role="admin",
                    password=password,
                    display_name="Demo administrator",
                    reset=True,
                )
            finally:
                await engine.dispose()
            ok = await _drive(settings, handle.url, key, sandboxes)
            _out(f"  operator console: {handle.url}/console/ — sign in as 'demo' with password {password}")
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
        views, ok = await _settle(http, ids, sandboxes, settings.bounce_domain)
        _decisions(ids, views)
        await _loop_summary(http)
    _where(settings, base, key, sandboxes)
    if any(v["status"] == "scheduled" for v in views.values()):
        _out(
            "\n  Some contacts wait for the next contact window (R5: weekdays 08-21, Saturdays 09-15,"
            " never on Sundays or holidays).\n  To see them flow right now:"
            " `.venv/bin/orchestrator demo --always-open` (a demo-only, not lawful rule set)."
        )
    if not ok:
        _out(f"\n  Not everything settled within {DEADLINE_S:.0f} s: see the statuses above.")
    sys.stdout.flush()
    return ok


async def _get(http: aiohttp.ClientSession, path: str) -> Any:
    async with http.get(path) as resp:
        resp.raise_for_status()
        return await resp.json()


async def _settle(
    http: aiohttp.ClientSession, ids: list[str], sandboxes: Sandboxes, bounce_domain: str
) -> tuple[dict[str, Any], bool]:
    """Poll the contact log until every contact settled and every loop ran to its end: each returned letter
    has its outcome (and an address request it started has settled too), each DSN the relay sent has bounced
    its attempt, and each SMS had a few seconds for its delivery report. Returns the contacts' views and
    whether all that happened before the deadline."""
    deadline = time.monotonic() + DEADLINE_S
    watched = list(ids)
    views: dict[str, Any] = {}
    sent_at: dict[str, float] = {}
    while True:
        # Judge the letters delivered by now, so that none is "sent" here and returned only after the summary.
        waiting = bool(await sandboxes.printer.process_returns()) or sandboxes.smtp.pending_bounces() > 0
        for cid in list(watched):
            views[cid] = await _get(http, f"/v1/contacts/{cid}")
        waiting = await _returns_pending(http, sandboxes.printer.returned, views, watched) or waiting
        attempts = {a["id"]: a for view in views.values() for a in view.get("attempts", [])}
        for bounce in sandboxes.smtp.bounces:
            attempt = attempts.get(verp_attempt_id(bounce.to, bounce_domain) or "")
            if bounce.reply.startswith("250") and attempt is not None and attempt["status"] != "bounced":
                waiting = True
        now = time.monotonic()
        for cid, view in views.items():
            if view["status"] == "sent" and view["channel"] in ("sms", "chat_link"):
                since = sent_at.setdefault(cid, now)
                waiting = waiting or now - since < REPORT_GRACE_S
        settled = all(view["status"] in SETTLED for view in views.values())
        if (settled and not waiting) or now > deadline:
            return views, settled and not waiting
        await asyncio.sleep(0.3)


async def _returns_pending(
    http: aiohttp.ClientSession, returned: list[ReturnedLetter], views: dict[str, Any], watched: list[str]
) -> bool:
    """Whether a returned letter still waits for its outcome in the timeline, or for the address request it
    started (added to ``watched``) to be looked at."""
    pending = False
    timelines: dict[str, list[dict[str, Any]]] = {}
    for letter in returned:
        if letter.contact_id not in views:
            continue
        debtor_id = views[letter.contact_id]["debtor_id"]
        if debtor_id not in timelines:
            timelines[debtor_id] = await _timeline(http, debtor_id)
        outcomes = [
            item
            for item in timelines[debtor_id]
            if item["attempt_id"] == letter.attempt_id and item["type"] in RETURN_OUTCOMES
        ]
        request_id = outcomes[0]["detail"].get("address_request_contact_id") if outcomes else None
        if not outcomes or (request_id and request_id not in views):
            pending = True
            if request_id and request_id not in watched:
                watched.append(request_id)
    return pending


async def _timeline(http: aiohttp.ClientSession, debtor_id: str) -> list[dict[str, Any]]:
    body = await _get(http, f"/v1/debtors/{debtor_id}/timeline?limit=1000")
    items: list[dict[str, Any]] = body["items"]
    return items


def _decisions(ids: list[str], views: dict[str, Any]) -> None:
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


async def _loop_summary(http: aiohttp.ClientSession) -> None:
    _out("\nThe returned-mail and bounce loop, step by step (GET /v1/debtors/{id}/timeline):")
    for debtor_id, story in LOOP_DEBTORS.items():
        _out(f"  {debtor_id}: {story}")
        for item in await _timeline(http, debtor_id):
            line = _step(item)
            if line is not None:
                at = datetime.fromisoformat(item["at"]).astimezone(ZoneInfo("Europe/Oslo"))
                _out(f"    {at:%H:%M:%S}  {line}")


def _oneline(address: object) -> str:
    return ", ".join(str(address or "").splitlines())


def _step(item: dict[str, Any]) -> str | None:
    """One timeline entry as a line of the loop's story; decisions are shown in full above."""
    kind, detail = item["type"], item.get("detail") or {}
    reason = detail.get("reason")
    if kind == "decision":
        return None
    if kind == "contact_received":
        return f"contact received: {detail.get('kind')} ({item['contact_id']})"
    if kind == "scheduled":
        return f"scheduled: {detail.get('channel')} at {detail.get('send_at')}"
    if kind == "attempt":
        return f"{item['status']}: {detail.get('channel')} to {_oneline(detail.get('address'))}"
    if kind == "carrier_event":
        code = detail.get("status_code") or detail.get("reason_code")
        line = f"{item['source']} reports {item['status']}" + (f": {reason}" if reason else "")
        line += f" ({code})" if code and code != reason else ""
        if item["status"] == "returned" or reason in BAD_ADDRESS_REASONS:
            line += "; the address is now unusable for later decisions"
        return line
    if kind == "returned_mail":
        return f"returned mail: {item['source']} {detail.get('step')}: {reason}"
    if kind == "address_updated_resent":
        return f"the same letter again, to {_oneline(detail.get('address'))} (from {detail.get('source')})"
    if kind == "address_request":
        return f"address request sent as a new contact ({detail.get('address_request_contact_id')})"
    if kind == "case_held":
        held = detail.get("contacts_affected")
        return f"case held: {reason}" + (f" ({len(held)} more open contact(s) held)" if held else "")
    if kind == "operator_task":
        return f"operator task: {detail.get('kind')} ({reason})"
    return f"{kind}: {item.get('status') or ''} {reason or ''}".rstrip()


def _where(settings: Settings, base: str, key: str, sandboxes: Sandboxes) -> None:
    smtp, printer = sandboxes.smtp, sandboxes.printer
    _out("\nWhere to look:")
    _out(
        f"  e-mail (SMTP sandbox relay on {smtp.host}:{smtp.port}): {len(smtp.messages)} message(s) kept as "
        f".eml in {smtp.folder}"
    )
    _out(
        f"    {len(smtp.bounces)} bounced: a DSN each to our bounce receiver "
        f"({settings.bounce_smtp_host}:{settings.bounce_smtp_port}), copies in {smtp.dsn_folder}"
    )
    _out(
        f"  SMS gateways (sandboxes): Link Mobility took {len(sandboxes.link.messages)}, "
        f"Twilio took {len(sandboxes.twilio.messages)}"
    )
    batches = printer.batches()
    _out(
        f"  print provider (SFTP sandbox): {len(batches)} batch(es), "
        f"{sum(len(b.letters) for b in batches)} letter(s) in {printer.drop_dir}"
    )
    _out(f"    {len(printer.returned)} came back, reported to POST {base}/webhooks/letters/returns")
    _out(
        "  digital mailbox (Digipost sandbox): "
        + (", ".join(m.delivery for m in sandboxes.mailbox.messages) or "nothing")
    )
    registry = sandboxes.registry
    _out(
        f"  registries (sandbox): {registry.count('brreg')} Brreg and {registry.count('folkeregisteret')} "
        f"Folkeregisteret look-up(s), {registry.count('token')} Maskinporten token(s)"
    )
    _out(f"  contact log:   curl -H 'Authorization: Bearer {key}' {base}/v1/contacts")
    _out(f"  a timeline:    curl -H 'Authorization: Bearer {key}' {base}/v1/debtors/DEMO-D-8/timeline")
    _out(f"  API document:  {base}/openapi.json    metrics: {base}/metrics")
