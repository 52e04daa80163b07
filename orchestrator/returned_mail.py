"""The returned-mail loop: a letter came back, so look for a better address instead of stopping.

``handle_returned_letter(attempt_id)`` runs in the worker once per returned letter attempt (job id
``returned:<attempt id>``, enqueued by :mod:`orchestrator.carrier_jobs`). It claims the attempt in
``returned_letters`` (a second run does nothing), then:

1. an organisation is looked up in Enhetsregisteret (Brreg): bankrupt, being wound up or removed → the case
   is held and an operator task raised (R8); else its ``postadresse`` (else ``forretningsadresse``);
2. a person with a national id is looked up in Folkeregisteret (through Maskinporten) when it is configured:
   a graded address → an operator task and nothing stored or shown (R9); ``ukjentBosted`` or nothing → on;
3. a ``new_address`` that the print provider or Posten sent with the return counts as found (``posten``);
4. so does an address from the latest Posten address-update (EA) file: a letter Posten forwarded stores the
   debtor's new address (:mod:`orchestrator.carrier_jobs`), and one stored after this letter was sent is used.

A found address that is not the returned one and not already unusable is stored on the debtor with its
provenance, and the SAME contact is sent again: ``returned`` → ``queued`` with ``address_updated_resent``,
the one deliberate step back in the status model (a new delivery of the same contact). The policy then picks
the new address because the returned one is unusable. A contact whose letter has come back twice is never
sent a third time. No new address → an ``address_request`` by SMS or e-mail when the debtor has a usable one,
otherwise an operator task ``no_address_found``; either way the same message goes on through the next lawful
channel if there is one (fallback chains, :mod:`orchestrator.fallback`). Every step writes a timeline entry
with its reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

import aiohttp
from arq import Retry
from arq.connections import ArqRedis
from pydantic import ValidationError

from orchestrator import contact_log as store
from orchestrator import intake, queue
from orchestrator.db import write_session
from orchestrator.fallback import try_next_channel
from orchestrator.identifiers import is_mobile
from orchestrator.jobs import WorkerState
from orchestrator.logs import get_logger
from orchestrator.models import Attempt, Case, Contact, Debtor
from orchestrator.policy.decide import format_address
from orchestrator.registries import (
    PermanentRegistryError,
    RegistryAddress,
    RegistryConfigurationError,
    RegistryError,
    TransientRegistryError,
)
from orchestrator.registries.brreg import lookup_organisation
from orchestrator.registries.folkeregisteret import lookup_person
from orchestrator.registries.maskinporten import MaskinportenClient
from orchestrator.schemas import ContactRequest
from orchestrator.settings import Settings

log = get_logger(__name__)

HANDLE_RETURNED_LETTER: Final = "handle_returned_letter"
RESENT_REASON: Final = "address_updated_resent"
# Registry outages are retried this many times before the loop goes on without that registry.
MAX_TRIES: Final = 5
_HTTP = "returned_mail_http"
_MASKINPORTEN = "returned_mail_maskinporten"
_CLIENTS = "returned_mail_clients"


def job_id(attempt_id: str) -> str:
    return f"returned:{attempt_id}"


async def enqueue_returned_letter(redis: ArqRedis, queue_name: str, attempt_id: str) -> None:
    await redis.enqueue_job(
        HANDLE_RETURNED_LETTER, attempt_id, _job_id=job_id(attempt_id), _queue_name=queue_name
    )


@dataclass
class _Step:
    """One timeline entry: which registry (or we) did what, and why."""

    source: str
    step: str
    reason: str
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Lookup:
    steps: list[_Step] = field(default_factory=list)
    stop_reason: str | None = None  # R8: hold the case
    graded: bool = False  # R9: nothing stored or shown
    found: list[tuple[dict[str, Any], str]] = field(default_factory=list)  # (address, source), best first


def _address_json(address: RegistryAddress) -> dict[str, Any]:
    return {
        "lines": list(address.lines),
        "postal_code": address.postal_code,
        "city": address.city,
        "country": address.country or "NO",
    }


def open_registry_clients(ctx: dict[str, Any]) -> None:
    """Worker start-up: a place for the registries' HTTP session and token client. A job's ctx is a shallow
    copy of the worker's, so what jobs put in this dict is shared and closed at shutdown."""
    ctx[_CLIENTS] = {}


def _clients(ctx: dict[str, Any]) -> dict[str, Any]:
    clients: dict[str, Any] = ctx.setdefault(_CLIENTS, {})
    return clients


def _http(ctx: dict[str, Any]) -> aiohttp.ClientSession:
    clients = _clients(ctx)
    session: aiohttp.ClientSession | None = clients.get(_HTTP)
    if session is None or session.closed:
        session = aiohttp.ClientSession()
        clients[_HTTP] = session
    return session


async def close_registry_clients(ctx: dict[str, Any]) -> None:
    """Close the registries' HTTP session (worker shutdown)."""
    clients = _clients(ctx)
    session: aiohttp.ClientSession | None = clients.pop(_HTTP, None)
    clients.pop(_MASKINPORTEN, None)
    if session is not None and not session.closed:
        await session.close()


def _folkeregisteret_configured(settings: Settings) -> bool:
    return all(
        (
            settings.folkeregisteret_url,
            settings.folkeregisteret_package,
            settings.maskinporten_token_url,
            settings.maskinporten_audience,
            settings.maskinporten_client_id,
            settings.maskinporten_scope,
            settings.maskinporten_private_key,
            settings.maskinporten_key_id,
        )
    )


def _maskinporten(ctx: dict[str, Any], settings: Settings) -> MaskinportenClient:
    client: MaskinportenClient | None = _clients(ctx).get(_MASKINPORTEN)
    session = _http(ctx)
    if client is None or client.session is not session:
        assert settings.maskinporten_private_key is not None
        try:
            client = MaskinportenClient(
                session,
                token_url=str(settings.maskinporten_token_url),
                client_id=str(settings.maskinporten_client_id),
                scope=str(settings.maskinporten_scope),
                private_key=settings.maskinporten_private_key,
                audience=str(settings.maskinporten_audience),
                key_id=settings.maskinporten_key_id,
                timeout_s=settings.registry_timeout_s,
            )
        except ValueError as exc:
            raise RegistryConfigurationError("maskinporten_misconfigured", str(exc)) from None
        _clients(ctx)[_MASKINPORTEN] = client
    return client


async def _look_up(ctx: dict[str, Any], settings: Settings, debtor: Debtor, result: _Lookup) -> None:
    """Ask the registry for this kind of debtor; fills ``result``. Transient errors propagate."""
    if debtor.type == "organisation":
        if not settings.brreg_url:
            result.steps.append(_Step("brreg", "skipped", "not_configured"))
            return
        if not debtor.organisation_number:
            result.steps.append(_Step("brreg", "skipped", "no_organisation_number"))
            return
        org = await lookup_organisation(
            _http(ctx), settings.brreg_url, debtor.organisation_number, timeout_s=settings.registry_timeout_s
        )
        if not org.found:
            result.steps.append(_Step("brreg", "looked_up", "not_found"))
            return
        if org.stop_collection:
            reason = (
                "bankruptcy" if org.bankrupt else "winding_up" if org.winding_up else "organisation_deleted"
            )
            result.stop_reason = reason
            result.steps.append(_Step("brreg", "looked_up", reason))
            return
        if org.address is None:
            result.steps.append(_Step("brreg", "looked_up", "no_address"))
            return
        result.found.append((_address_json(org.address), "brreg"))
        result.steps.append(_Step("brreg", "looked_up", "address_found"))
        return
    if not _folkeregisteret_configured(settings):
        result.steps.append(_Step("folkeregisteret", "skipped", "not_configured"))
        return
    if not debtor.national_id:
        result.steps.append(_Step("folkeregisteret", "skipped", "no_national_id"))
        return
    person = await lookup_person(
        _maskinporten(ctx, settings),
        str(settings.folkeregisteret_url),
        str(settings.folkeregisteret_package),
        debtor.national_id,
        timeout_s=settings.registry_timeout_s,
    )
    if not person.found:
        result.steps.append(_Step("folkeregisteret", "looked_up", "not_found"))
    elif person.graded:
        # R9: the only thing recorded is that the address is graded; never the address.
        result.graded = True
        result.steps.append(_Step("folkeregisteret", "looked_up", "graded_address"))
    elif person.address is not None:
        result.found.append((_address_json(person.address), "folkeregisteret"))
        result.steps.append(_Step("folkeregisteret", "looked_up", "address_found"))
    elif person.unknown_residence:
        result.steps.append(_Step("folkeregisteret", "looked_up", "unknown_residence"))
    else:
        result.steps.append(_Step("folkeregisteret", "looked_up", "no_address"))


def _found_after(stored: dict[str, Any], moment: datetime) -> bool:
    try:
        # Stored by us as an aware ISO timestamp; anything else is not trusted to be newer.
        return datetime.fromisoformat(str(stored.get("found_at"))) > moment
    except (ValueError, TypeError):
        return False


def _usable_electronic(debtor: Debtor) -> bool:
    points = debtor.contact_points
    unusable = {u.lower() for u in debtor.unusable_addresses or []}
    mobiles = [p for p in points.get("phones", []) if is_mobile(p) and p.lower() not in unusable]
    emails = [e for e in points.get("emails", []) if e.lower() not in unusable]
    return bool(mobiles or emails)


def _address_request(contact: Contact, debtor: Debtor, case: Case) -> ContactRequest:
    debtor_in: dict[str, Any] = {
        "id": debtor.id,
        "type": debtor.type,
        "name": debtor.name,
        **{k: v for k, v in debtor.contact_points.items() if v is not None},
    }
    if debtor.national_id:
        debtor_in["national_id"] = debtor.national_id
    if debtor.organisation_number:
        debtor_in["organisation_number"] = debtor.organisation_number
    return ContactRequest.model_validate(
        {
            "idempotency_key": f"address-request:{contact.id}",
            "kind": "address_request",
            "channel": "auto",
            "language": contact.language,
            "debtor": debtor_in,
            "case": {"id": case.id, **{k: v for k, v in case.details.items() if v is not None}},
            "variables": {},
        }
    )


async def handle_returned_letter(ctx: dict[str, Any], attempt_id: str) -> str:
    state: WorkerState = ctx["state"]
    settings = state.settings
    async with state.sessions() as session:
        if await store.returned_letter_claimed(session, attempt_id):
            return "skipped"
        attempt = await session.get(Attempt, attempt_id)
        if attempt is None or attempt.channel != "letter" or attempt.status != "returned":
            return "skipped:not_a_returned_letter"
        row = await store.load_for_dispatch(session, attempt.contact_id)
        if row is None:
            return "skipped:missing"
        contact, debtor, case = row
        detail = await store.returned_event_detail(session, attempt_id)
        returned_letters = await store.count_returned_attempts(session, contact.id, "letter")
        attempt_sent_at = attempt.created_at

    lookup = _Lookup()
    registry = "brreg" if debtor.type == "organisation" else "folkeregisteret"
    try:
        await _look_up(ctx, settings, debtor, lookup)
    except TransientRegistryError as exc:
        tries = int(ctx.get("job_try", 1))
        if tries < MAX_TRIES:
            log.info("registry unavailable; retrying", attempt_id=attempt_id, reason=exc.reason, tries=tries)
            raise Retry(defer=exc.retry_after_s or min(5.0 * 2**tries, 300.0)) from None
        lookup.steps.append(_Step(registry, "failed", exc.reason, {"transient": True}))
    except (PermanentRegistryError, RegistryConfigurationError, RegistryError) as exc:
        lookup.steps.append(_Step(registry, "failed", exc.reason))

    # Posten's (or the print provider's) new address, when the return carried one (never for R8/R9 cases).
    posten = detail.get("new_address")
    if isinstance(posten, dict) and not lookup.graded and lookup.stop_reason is None:
        address = {k: posten[k] for k in ("lines", "postal_code", "city", "country") if k in posten}
        if address.get("lines") and address.get("postal_code"):
            address.setdefault("country", "NO")
            lookup.found.append((address, "posten"))
            lookup.steps.append(_Step("posten", "reported", "address_found"))
    if not lookup.graded and lookup.stop_reason is None:
        # The latest Posten address-update (EA) file: a new address it gave for another of this debtor's
        # letters (forwarded, see carrier_jobs) that is newer than this letter.
        for stored in debtor.registry_addresses or []:
            if stored.get("source") == "posten" and _found_after(stored, attempt_sent_at):
                address = {k: stored[k] for k in ("lines", "postal_code", "city", "country") if k in stored}
                lookup.found.append((address, "posten"))
                lookup.steps.append(_Step("posten", "address_file", "address_found"))

    unusable = set(debtor.unusable_addresses or []) | {attempt.address}
    chosen: tuple[dict[str, Any], str] | None = None
    if not lookup.graded and lookup.stop_reason is None:
        for address, source in lookup.found:
            if format_address(address) in unusable:
                lookup.steps.append(_Step(source, "compared", "address_not_new"))
            elif chosen is None:
                chosen = (address, source)
    if chosen is not None and returned_letters >= 2:
        lookup.steps.append(_Step("orchestrator", "resend_refused", "letter_returned_twice"))
        chosen = None

    now = state.clock()
    request_id: str | None = None
    wants_request = (
        not lookup.graded and lookup.stop_reason is None and chosen is None and _usable_electronic(debtor)
    )
    request_problem: str | None = None
    if wants_request:
        try:
            request = _address_request(contact, debtor, case)
        except ValidationError:
            request_problem = "address_request_invalid"
        else:
            [result] = await intake.accept(
                state.sessions, state.redis, settings.queue_name, [request], source="returned_mail"
            )
            if result.ok and result.id is not None:
                request_id = result.id
            else:
                request_problem = "address_request_refused"

    async with write_session(state.sessions) as session:
        if not await store.claim_returned_letter(session, attempt_id, contact_id=contact.id, now=now):
            return "skipped"
        for step in lookup.steps:
            await store.log_contact_event(
                session,
                contact,
                type="returned_mail",
                status=None,
                source=step.source,
                attempt_id=attempt_id,
                detail={"step": step.step, "reason": step.reason, **step.extra},
                at=now,
            )
        task: tuple[str, str, dict[str, Any]] | None = None
        resend = False
        fell_back = False
        if lookup.stop_reason is not None:
            outcome = "held"
            await store.set_case_status(session, case.id, status="held", reason=lookup.stop_reason, now=now)
            held = await store.move_case_contacts(
                session,
                case.id,
                from_statuses=store.OPEN_STATUSES,
                to_status="held",
                reason=lookup.stop_reason,
                now=now,
                except_kinds=state.rules.holds.sendable_while_held,
            )
            await store.log_contact_event(
                session,
                contact,
                type="case_held",
                status="held",
                attempt_id=attempt_id,
                detail={"reason": lookup.stop_reason, "contacts_affected": held},
                at=now,
            )
            task = ("stop_collection", lookup.stop_reason, {"contacts_affected": held})
        elif lookup.graded:
            outcome = "graded_address"
            task = ("graded_address", "graded_address", {})
        elif chosen is not None:
            address, source = chosen
            await store.add_registry_address(
                session, debtor.id, {**address, "source": source, "found_at": now.isoformat()}, now=now
            )
            resend = await store.reopen_returned_contact(session, contact.id, reason=RESENT_REASON, now=now)
            outcome = "resent" if resend else "address_stored"
            await store.log_contact_event(
                session,
                contact,
                type=RESENT_REASON if resend else "address_stored",
                status="queued" if resend else None,
                attempt_id=attempt_id,
                detail={
                    "reason": RESENT_REASON if resend else "contact_not_returned",
                    "source": source,
                    "address": format_address(address),
                    "why": "the same contact, delivered again to the address found after the return",
                },
                at=now,
            )
        else:
            # No better postal address: the same message goes on through the next lawful channel (fallback
            # chains; a statutory notice only by digital mailbox or e-mail with evidence, R3), and the
            # address request asks for the postal address for next time.
            fell_back = await try_next_channel(
                state,
                session,
                contact.id,
                failed_channel="letter",
                reason="returned_no_new_address",
                from_statuses=("returned",),
                now=now,
            )
            if request_id is not None:
                outcome = "address_request"
                await store.log_contact_event(
                    session,
                    contact,
                    type="address_request",
                    status=None,
                    attempt_id=attempt_id,
                    detail={"reason": "no_new_address", "address_request_contact_id": request_id},
                    at=now,
                )
            else:
                outcome = "no_address_found"
                task = ("no_address_found", request_problem or "no_new_address_no_electronic_channel", {})
        if task is not None:
            kind, reason, extra = task
            task_id = await store.insert_operator_task(
                session,
                {
                    "kind": kind,
                    "debtor_id": debtor.id,
                    "case_id": case.id,
                    "contact_id": contact.id,
                    "attempt_id": attempt_id,
                    "reason": reason,
                    "detail": extra,
                    "created_at": now,
                },
            )
            await store.log_contact_event(
                session,
                contact,
                type="operator_task",
                status=None,
                attempt_id=attempt_id,
                detail={"task_id": task_id, "kind": kind, "reason": reason},
                at=now,
            )
        await store.set_returned_letter_outcome(session, attempt_id, outcome)
    if resend or fell_back:
        await queue.enqueue_contact(state.redis, settings.queue_name, contact.id)
    log.info("returned letter handled", attempt_id=attempt_id, outcome=outcome)
    return outcome
