"""The worker's jobs. Every job is safe to run twice: arq delivers at least once.

``process_contact`` decides, renders, claims (queued/scheduled → sending, committed), sends and records. A run
that finds its contact already ``sending`` cannot know whether the carrier took it, so it never sends again:
it marks the contact ``needs_reconciliation``.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from arq import Retry
from arq.connections import ArqRedis
from pydantic import SecretStr
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from channels.base import (
    Channel,
    ChannelConfigurationError,
    Outgoing,
    PermanentChannelError,
    PostalAddress,
    TransientChannelError,
    UncertainDeliveryError,
)
from orchestrator import chat_links, metrics, queue
from orchestrator import contact_log as store
from orchestrator.db import write_session
from orchestrator.identifiers import is_mobile, mask_national_id
from orchestrator.logs import get_logger
from orchestrator.message_context import build_context
from orchestrator.models import Case, Contact, Debtor, new_id, utcnow
from orchestrator.policy.decide import (
    STATUTORY_KINDS,
    ChannelOption,
    DebtorFacts,
    Decision,
    DecisionInput,
    decide,
    format_address,
)
from orchestrator.policy.rules import RuleSet
from orchestrator.rendering import RenderedMessage, Renderer, RenderError, TemplateNotFound
from orchestrator.settings import Settings

log = get_logger(__name__)
# An address request goes out when our contact data may be stale, and the self-service page shows the claim:
# no link, so a stranger at an old address learns nothing (R7).
NO_LINK_KINDS = frozenset({"address_request"})
# A deferred job may wake a little early; within this slack it is "now".
SCHEDULE_SLACK = timedelta(seconds=1)


@dataclass
class WorkerState:
    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    redis: ArqRedis
    channels: dict[str, Channel]
    renderer: Renderer
    templates: frozenset[tuple[str, str, str, str]]
    rules: RuleSet
    # The time source; tests pin it to a Friday night or a holiday.
    clock: Callable[[], datetime] = utcnow

    @property
    def channel_options(self) -> dict[str, ChannelOption]:
        return {name: ChannelOption(name, ch.provider, ch.limits) for name, ch in self.channels.items()}


_POSTAL_FIELDS = ("lines", "postal_code", "city", "country")


def debtor_addresses(debtor: Debtor) -> list[dict[str, Any]]:
    """The debtor's postal addresses: those a registry or Posten gave us after a returned letter first
    (newest first), then upstream's; each address once."""
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    registry = [{k: a[k] for k in _POSTAL_FIELDS if k in a} for a in debtor.registry_addresses or []]
    for address in [*registry, *debtor.contact_points.get("addresses", [])]:
        key = format_address(address)
        if key not in seen:
            seen.add(key)
            out.append(address)
    return out


def decision_input(contact: Contact, debtor: Debtor, case: Case) -> DecisionInput:
    points = debtor.contact_points
    return DecisionInput(
        kind=contact.kind,
        language=contact.language,
        channel_preference=contact.channel_preference,
        not_before=contact.not_before,
        debtor=DebtorFacts(
            type=debtor.type,
            emails=tuple(points.get("emails", [])),
            mobiles=tuple(p for p in points.get("phones", []) if is_mobile(p)),
            addresses=tuple(debtor_addresses(debtor)),
            evidence=tuple(points.get("electronic_notice_evidence", [])),
            unusable=frozenset(debtor.unusable_addresses or []),
            national_id_masked=mask_national_id(debtor.national_id) if debtor.national_id else None,
        ),
        case_status=case.status,
        case_status_reason=case.status_reason,
        due_date=datetime.fromisoformat(case.details["due_date"]).date(),
    )


def retry_delay_s(settings: Settings, tries: int) -> float:
    """Exponential backoff with ±10 % jitter so that a carrier outage does not end in a thundering herd."""
    delay = min(settings.retry_base_delay_s * (2.0 ** max(tries - 1, 0)), settings.retry_max_delay_s)
    return delay * random.uniform(0.9, 1.1)


def _outgoing(
    contact: Contact,
    attempt_id: str,
    decision: Decision,
    debtor: Debtor,
    case: Case,
    msg: RenderedMessage,
    print_if_unread_after: date | None,
) -> Outgoing:
    creditor_organisation_number = case.details["creditor"].get("organisation_number")
    # The letter's address, or (for a digital mailbox that may fall back to print) the first one we have.
    addresses = debtor_addresses(debtor)
    chosen = next((a for a in addresses if format_address(a) == decision.address), None)
    chosen = chosen or (addresses[0] if addresses else None)
    postal = None
    if chosen is not None:
        postal = PostalAddress(
            lines=tuple(chosen["lines"]),
            postal_code=chosen["postal_code"],
            city=chosen["city"],
            country=chosen.get("country", "NO"),
        )
    metadata: dict[str, Any] = {
        "kind": contact.kind,
        "template": msg.template,
        "creditor_organisation_number": creditor_organisation_number,
    }
    if debtor.national_id is not None:
        # Identification only (R9): a SecretStr, so no repr or log line can show it.
        metadata["national_id"] = SecretStr(debtor.national_id)
    if print_if_unread_after is not None:
        metadata["print_if_unread_after"] = print_if_unread_after
    return Outgoing(
        contact_id=contact.id,
        attempt_id=attempt_id,
        channel=decision.channel or "",
        to=decision.address or "",
        recipient_name=debtor.name,
        subject=msg.subject,
        text=msg.text,
        html=msg.html,
        postal_address=postal,
        metadata=metadata,
    )


async def _finish_without_sending(
    state: WorkerState, contact: Contact, decision: Decision, now: datetime
) -> str:
    async with write_session(state.sessions) as session:
        moved = await store.set_contact_status(
            session,
            contact.id,
            status=decision.outcome,
            reason=decision.status_reason,
            expected=store.OPEN_STATUSES,
            now=now,
            decision=decision.as_json(),
        )
        if moved:
            await store.log_contact_event(
                session,
                contact,
                type="decision",
                status=decision.outcome,
                detail=decision.as_json(),
                at=now,
            )
    metrics.DECISIONS.labels(decision.outcome).inc()
    return decision.outcome if moved else "skipped"


async def _schedule(state: WorkerState, contact: Contact, decision: Decision, now: datetime) -> str:
    assert decision.send_at is not None
    async with write_session(state.sessions) as session:
        moved = await store.set_contact_status(
            session,
            contact.id,
            status="scheduled",
            reason="outside_contact_window" if "outside_contact_window" in decision.reasons else "not_before",
            expected=store.OPEN_STATUSES,
            now=now,
            send_at=decision.send_at,
            channel=decision.channel,
            decision=decision.as_json(),
        )
        if moved and (contact.status != "scheduled" or contact.send_at != decision.send_at):
            await store.log_contact_event(
                session,
                contact,
                type="scheduled",
                status="scheduled",
                detail=decision.as_json(),
                at=now,
            )
    if moved:
        await queue.enqueue_contact(
            state.redis, state.settings.queue_name, contact.id, send_at=decision.send_at
        )
    metrics.DECISIONS.labels("scheduled").inc()
    return "scheduled" if moved else "skipped"


async def process_contact(ctx: dict[str, Any], contact_id: str) -> str:
    state: WorkerState = ctx["state"]
    now = state.clock()
    async with state.sessions() as session:
        row = await store.load_for_dispatch(session, contact_id)
    if row is None:
        log.warning("contact not found", contact_id=contact_id)
        return "missing"
    contact, debtor, case = row

    if contact.status == "sending":
        async with write_session(state.sessions) as session:
            if await store.mark_needs_reconciliation(session, contact_id, now=now):
                await store.log_contact_event(
                    session,
                    contact,
                    type="needs_reconciliation",
                    status="sending",
                    detail={"why": "a second run found the contact already being sent; not re-sent"},
                    at=now,
                )
        log.warning("contact already sending; marked for reconciliation", contact_id=contact_id)
        return "needs_reconciliation"
    if contact.status not in store.OPEN_STATUSES:
        return f"skipped:{contact.status}"

    decision = decide(
        decision_input(contact, debtor, case),
        channels=state.channel_options,
        templates=state.templates,
        rules=state.rules,
        now=now,
    )
    if decision.outcome != "send":
        return await _finish_without_sending(state, contact, decision, now)
    assert decision.send_at is not None and decision.channel is not None
    if decision.send_at > now + SCHEDULE_SLACK:
        return await _schedule(state, contact, decision, now)

    zone = state.rules.contact_windows.zone
    channel = state.channels[decision.channel]
    link = None
    if channel.limits.supports_links and contact.kind not in NO_LINK_KINDS:
        link = chat_links.issue(
            base_url=state.settings.resolved_public_base_url,
            debtor_id=contact.debtor_id,
            case_id=contact.case_id,
            contact_id=contact.id,
            now=now,
            ttl_days=state.settings.chat_link_ttl_days,
        )
    try:
        rendered = state.renderer.render(
            language=contact.language,
            kind=contact.kind,
            variant=decision.variant or "neutral",
            channel=decision.channel,
            context=build_context(
                contact=contact,
                debtor=debtor,
                case=case,
                decision=decision,
                send_date=now.astimezone(zone).date(),
                self_service_url=link.url if link else None,
            ),
        )
    except (TemplateNotFound, RenderError) as exc:
        log.error("template failed", contact_id=contact_id, error=str(exc))
        failed = Decision(**{**decision.__dict__, "outcome": "suppressed", "status_reason": "template_error"})
        async with write_session(state.sessions) as session:
            await store.set_contact_status(
                session,
                contact_id,
                status="failed",
                reason="template_error",
                expected=store.OPEN_STATUSES,
                now=now,
                decision=failed.as_json(),
            )
            await store.log_contact_event(
                session,
                contact,
                type="failed",
                status="failed",
                detail={"reason": "template_error", "error": str(exc)},
                at=now,
            )
        return "failed"

    attempt_id = new_id()
    async with write_session(state.sessions) as session:
        if not await store.claim_for_sending(
            session, contact_id, now=now, channel=decision.channel, decision=decision.as_json(), send_at=now
        ):
            return "lost_claim"
        if link is not None:
            await store.insert_chat_link(session, link.row)
        await store.insert_attempt(
            session,
            {
                "id": attempt_id,
                "contact_id": contact_id,
                "channel": decision.channel,
                "provider": channel.provider,
                "provider_message_id": None,
                "address": decision.address or "",
                "status": "sending",
                "status_reason": None,
                "template": rendered.template,
                "variant": decision.variant or "neutral",
                "rule_version": decision.rule_version,
                "content_sha256": rendered.content_sha256,
                "content": {"subject": rendered.subject, "text": rendered.text, "html": rendered.html},
                "detail": None,
                "encoding": None,
                "segments": None,
                "created_at": now,
                "updated_at": now,
            },
        )
        await store.log_contact_event(
            session,
            contact,
            type="decision",
            status="sending",
            detail=decision.as_json(),
            at=now,
        )
    metrics.DECISIONS.labels("send").inc()
    # From here until the result is committed, a crash leaves the contact "sending": never re-sent blindly.
    print_if_unread_after = None
    if contact.kind in STATUTORY_KINDS:
        # R3: digital first, paper if unread (carriers that cannot print ignore it).
        days = state.rules.print_if_unread_after_days
        print_if_unread_after = now.astimezone(zone).date() + timedelta(days=days)
    outgoing = _outgoing(contact, attempt_id, decision, debtor, case, rendered, print_if_unread_after)
    with metrics.SEND_SECONDS.labels(decision.channel, channel.provider).time():
        try:
            receipt = await channel.send(outgoing)
        except TransientChannelError as exc:
            return await _after_transient(state, contact, attempt_id, decision, exc)
        except (PermanentChannelError, ChannelConfigurationError) as exc:
            return await _after_failure(state, contact, attempt_id, decision, exc)
        except UncertainDeliveryError as exc:
            return await _after_uncertain(state, contact, attempt_id, decision, exc)

    done = state.clock()
    async with write_session(state.sessions) as session:
        # A carrier report may already have moved the attempt past "sent": forward only.
        await store.move_attempt_forward(
            session, attempt_id, status="sent", reason=None, allowed_from=("sending",), now=done
        )
        await store.update_attempt(
            session,
            attempt_id,
            now=done,
            provider=receipt.provider,
            provider_message_id=receipt.provider_message_id,
            detail=receipt.detail,
            encoding=receipt.detail.get("encoding"),
            segments=receipt.detail.get("segments"),
        )
        await store.set_contact_status(
            session, contact_id, status="sent", reason=None, expected=("sending",), now=done
        )
        await store.log_contact_event(
            session,
            contact,
            attempt_id=attempt_id,
            type="attempt",
            status="sent",
            source=receipt.provider,
            detail={
                "channel": decision.channel,
                "address": decision.address,
                "provider_message_id": receipt.provider_message_id,
                **receipt.detail,
            },
            at=done,
        )
    metrics.SENDS.labels(decision.channel, receipt.provider, "sent").inc()
    log.info("sent", contact_id=contact_id, attempt_id=attempt_id, channel=decision.channel)
    return "sent"


async def _after_transient(
    state: WorkerState, contact: Contact, attempt_id: str, decision: Decision, exc: TransientChannelError
) -> str:
    now = state.clock()
    tries = contact.send_tries + 1
    exhausted = tries >= state.settings.send_max_tries
    delay = exc.retry_after_s if exc.retry_after_s is not None else retry_delay_s(state.settings, tries)
    retry_at = now + timedelta(seconds=delay)
    async with write_session(state.sessions) as session:
        await store.update_attempt(session, attempt_id, now=now, status="failed", status_reason=exc.reason)
        if exhausted:
            await store.set_contact_status(
                session,
                contact.id,
                status="failed",
                reason=f"retries_exhausted:{exc.reason}",
                expected=("sending",),
                now=now,
            )
        else:
            await store.set_contact_status(
                session,
                contact.id,
                status="scheduled",
                reason=f"retry:{exc.reason}",
                expected=("sending",),
                now=now,
                send_at=retry_at,
            )
        await store.log_contact_event(
            session,
            contact,
            attempt_id=attempt_id,
            type="attempt",
            status="failed",
            source=state.channels[decision.channel or ""].provider,
            detail={
                "reason": exc.reason,
                "error": str(exc),
                "transient": True,
                "tries": tries,
                "retry_at": None if exhausted else retry_at.isoformat(),
            },
            at=now,
        )
    metrics.SENDS.labels(decision.channel or "", decision.provider or "", "transient_error").inc()
    if exhausted:
        log.warning("retries exhausted", contact_id=contact.id, reason=exc.reason, tries=tries)
        return "failed"
    log.info("transient carrier error; retrying", contact_id=contact.id, reason=exc.reason, delay_s=delay)
    raise Retry(defer=delay)


async def _after_failure(
    state: WorkerState, contact: Contact, attempt_id: str, decision: Decision, exc: Exception
) -> str:
    now = state.clock()
    reason = getattr(exc, "reason", "carrier_error")
    async with write_session(state.sessions) as session:
        await store.update_attempt(session, attempt_id, now=now, status="failed", status_reason=reason)
        await store.set_contact_status(
            session, contact.id, status="failed", reason=reason, expected=("sending",), now=now
        )
        await store.log_contact_event(
            session,
            contact,
            attempt_id=attempt_id,
            type="attempt",
            status="failed",
            source=decision.provider or "",
            detail={"reason": reason, "error": str(exc), "transient": False},
            at=now,
        )
    metrics.SENDS.labels(decision.channel or "", decision.provider or "", "failed").inc()
    log.warning("carrier refused the message", contact_id=contact.id, reason=reason)
    return "failed"


async def _after_uncertain(
    state: WorkerState, contact: Contact, attempt_id: str, decision: Decision, exc: UncertainDeliveryError
) -> str:
    """The carrier may have the message: leave the contact ``sending`` for reconciliation, never resend."""
    now = state.clock()
    async with write_session(state.sessions) as session:
        await store.update_attempt(session, attempt_id, now=now, status_reason=exc.reason)
        await store.mark_needs_reconciliation(session, contact.id, now=now)
        await store.log_contact_event(
            session,
            contact,
            attempt_id=attempt_id,
            type="needs_reconciliation",
            status="sending",
            source=decision.provider or "",
            detail={"reason": exc.reason, "error": str(exc)},
            at=now,
        )
    metrics.SENDS.labels(decision.channel or "", decision.provider or "", "uncertain").inc()
    log.warning("delivery outcome unknown; awaiting reconciliation", contact_id=contact.id, reason=exc.reason)
    return "needs_reconciliation"


async def sweep(ctx: dict[str, Any]) -> dict[str, int]:
    """Re-enqueue contacts a crash left without a job; flag contacts stuck in ``sending``, and contacts
    ``sent`` on a reporting channel that no carrier report followed."""
    state: WorkerState = ctx["state"]
    settings = state.settings
    now = state.clock()
    stale = now - timedelta(seconds=settings.sweeper_stale_after_s)
    async with state.sessions() as session:
        open_rows = await store.stale_open_contacts(
            session, queued_before=stale, due_before=stale, limit=5000
        )
    requeued = 0
    for contact_id, status, send_at in open_rows:
        if status == "queued":
            created = await queue.enqueue_contacts(state.redis, settings.queue_name, [contact_id])
        else:
            created = int(
                await queue.enqueue_contact(state.redis, settings.queue_name, contact_id, send_at=send_at)
            )
        requeued += created
    flagged = 0
    async with write_session(state.sessions) as session:
        stuck = await store.stale_sending_contacts(
            session, before=now - timedelta(seconds=settings.sending_timeout_s), limit=5000
        )
        for contact_id, debtor_id in stuck:
            if await store.mark_needs_reconciliation(session, contact_id, now=now):
                flagged += 1
                await store.add_timeline(
                    session,
                    [
                        store.timeline_row(
                            debtor_id=debtor_id,
                            contact_id=contact_id,
                            type="needs_reconciliation",
                            status="sending",
                            source="sweeper",
                            detail={"why": f"sending for more than {settings.sending_timeout_s:.0f} s"},
                            at=now,
                        )
                    ],
                )
        # Sent, but the carrier never said what became of it: nothing stays in limbo silently.
        for channel, timeout_s in settings.delivery_report_timeout_s.items():
            silent = await store.mark_sent_without_report(
                session, channel=channel, before=now - timedelta(seconds=timeout_s), now=now, limit=5000
            )
            for contact_id, debtor_id in silent:
                flagged += 1
                await store.add_timeline(
                    session,
                    [
                        store.timeline_row(
                            debtor_id=debtor_id,
                            contact_id=contact_id,
                            type="needs_reconciliation",
                            status="sent",
                            source="sweeper",
                            detail={"why": f"no {channel} delivery report within {timeout_s:.0f} s"},
                            at=now,
                        )
                    ],
                )
    metrics.SWEEPS.labels("requeued").inc(requeued)
    metrics.SWEEPS.labels("needs_reconciliation").inc(flagged)
    if requeued or flagged:
        log.info("sweeper", requeued=requeued, needs_reconciliation=flagged)
    return {"requeued": requeued, "needs_reconciliation": flagged}
