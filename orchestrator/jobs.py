"""The worker's jobs. Every job is safe to run twice: arq delivers at least once.

``process_contact`` decides, renders, claims (queued/scheduled → sending, committed), sends and records. A run
that finds its contact already ``sending`` cannot know whether the carrier took it, so it never sends again:
it marks the contact ``needs_reconciliation``.
"""

from __future__ import annotations

import json
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
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
from orchestrator import chat_links, metrics, queue, unsubscribe
from orchestrator import contact_log as store
from orchestrator.db import write_session
from orchestrator.experiments import store as experiment_store
from orchestrator.experiments.assign import Assignment
from orchestrator.experiments.dispatch import ExperimentCache, apply_arm, assignment_for
from orchestrator.identifiers import is_mobile, mask_national_id
from orchestrator.logs import get_logger
from orchestrator.message_context import build_context
from orchestrator.models import Case, Contact, Debtor, new_id, utcnow
from orchestrator.policy.content_guard import Violation, check_message
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
from orchestrator.schemas import KINDS
from orchestrator.settings import Settings

log = get_logger(__name__)
DEBTOR_TYPES = ("person", "organisation")
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
    # Called with the contact id after the decision and rendering, right before the claim: where a dispute
    # or another worker's send can slip in. Tests use it to make that race happen on purpose.
    before_claim: Callable[[str], Awaitable[None]] | None = None
    # The response rates last read from Redis ("groups") and when ("read_at").
    rates_cache: dict[str, Any] = field(default_factory=dict)
    # Running experiments and their adaptive statistics, read at most once a minute.
    experiments: ExperimentCache = field(default_factory=ExperimentCache)

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


@dataclass(frozen=True)
class History:
    """What the policy must know of the past: when the debtor was last reached (R6), fee-bearing messages
    already sent for the claim (R10)."""

    recent_contacts: tuple[datetime, ...] = ()
    fee_reminders_sent: int = 0
    response_rates: dict[str, tuple[int, int]] = field(default_factory=dict)


async def load_history(session: AsyncSession, contact: Contact, rules: RuleSet, now: datetime) -> History:
    recent = await store.reach_times(
        session,
        contact.debtor_id,
        since=now - timedelta(days=8),  # the 7-day cap window, and the Oslo day around it
        exclude_contact_id=contact.id,
        exclude_kinds=rules.pressure_cap.exempt_kinds,
    )
    fees = await store.fee_contacts_sent(session, contact.case_id, exclude_contact_id=contact.id)
    return History(recent_contacts=tuple(sorted(recent)), fee_reminders_sent=fees)


async def history_for(
    state: WorkerState, session: AsyncSession, contact: Contact, debtor: Debtor, now: datetime
) -> History:
    history = await load_history(session, contact, state.rules, now)
    rates = await _response_rates(state, debtor.type, contact.kind, now)
    return History(history.recent_contacts, history.fee_reminders_sent, rates)


# Response rates are an aggregate over many contacts, so they stay out of the per-contact path: a cron job
# (``refresh_response_rates``) computes them for every (debtor type, kind) into Redis, shared by all workers,
# and each worker reads that at most once a minute. A ranking input, not a legal one: minutes of staleness
# are fine.
RATES_KEY = "orchestrator:response-rates:{queue}"
RATES_READ_EVERY = timedelta(minutes=1)
RATES_KEEP_S = 3600


async def refresh_response_rates(ctx: dict[str, Any]) -> int:
    """Observed outcomes per channel for comparable contacts, into Redis; returns how many groups."""
    state: WorkerState = ctx["state"]
    ranking = state.rules.ranking
    now = state.clock()
    found: dict[str, dict[str, list[int]]] = {}
    async with state.sessions() as session:
        for debtor_type in DEBTOR_TYPES:
            for kind in KINDS:
                counts = await store.response_counts(
                    session,
                    debtor_type=debtor_type,
                    kind=kind,
                    since=now - timedelta(days=ranking.history_days),
                    now=now,
                    window_days=ranking.response_window_days,
                    responses=ranking.response_events,
                )
                if counts:
                    found[f"{debtor_type}:{kind}"] = {ch: [r, n] for ch, (r, n) in counts.items()}
    key = RATES_KEY.format(queue=state.settings.queue_name)
    await state.redis.set(key, json.dumps(found), ex=RATES_KEEP_S)
    state.rates_cache.clear()
    return len(found)


async def _response_rates(
    state: WorkerState, debtor_type: str, kind: str, now: datetime
) -> dict[str, tuple[int, int]]:
    cache = state.rates_cache
    if cache.get("read_at") is None or cache["read_at"] + RATES_READ_EVERY <= now:
        raw = await state.redis.get(RATES_KEY.format(queue=state.settings.queue_name))
        cache["groups"] = json.loads(raw) if raw else {}
        cache["read_at"] = now
    group = cache["groups"].get(f"{debtor_type}:{kind}", {})
    return {channel: (int(r), int(n)) for channel, (r, n) in group.items()}


def carries_fee(contact: Contact, case: Case, rules: RuleSet) -> bool:
    """R10: this message adds a reminder or varsel fee to the claim."""
    if contact.kind not in ("reminder", "inkassovarsel"):
        return False
    return any(cost.get("kind") in rules.fees.fee_kinds for cost in case.details.get("costs", []))


def decision_input(
    contact: Contact, debtor: Debtor, case: Case, history: History | None = None, rules: RuleSet | None = None
) -> DecisionInput:
    points = debtor.contact_points
    history = history or History()
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
            opted_out=frozenset(str(o.get("reach")) for o in debtor.opted_out or []),
            preferred_channel=points.get("preferred_channel"),
        ),
        case_status=case.status,
        case_status_reason=case.status_reason,
        due_date=datetime.fromisoformat(case.details["due_date"]).date(),
        recent_contacts=history.recent_contacts,
        response_rates=history.response_rates,
        carries_fee=carries_fee(contact, case, rules) if rules is not None else False,
        fee_reminders_sent=history.fee_reminders_sent,
        tried_channels=frozenset(contact.tried_channels or []),
    )


def decision_json(decision: Decision, inputs: DecisionInput) -> dict[str, Any]:
    """The decision as stored: with what it was made from, so that ``orchestrator explain`` can replay it."""
    return {**decision.as_json(), "inputs": inputs.as_json()}


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
    *,
    unsubscribe_url: str | None = None,
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
        unsubscribe_url=unsubscribe_url,
    )


async def _finish_without_sending(
    state: WorkerState, contact: Contact, decision: Decision, inputs: DecisionInput, now: datetime
) -> str:
    async with write_session(state.sessions) as session:
        moved = await store.set_contact_status(
            session,
            contact.id,
            status=decision.outcome,
            reason=decision.status_reason,
            expected=store.OPEN_STATUSES,
            now=now,
            decision=decision_json(decision, inputs),
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


async def _schedule(
    state: WorkerState, contact: Contact, decision: Decision, inputs: DecisionInput, now: datetime
) -> str:
    assert decision.send_at is not None
    async with write_session(state.sessions) as session:
        moved = await store.set_contact_status(
            session,
            contact.id,
            status="scheduled",
            reason=decision.status_reason or "outside_contact_window",
            expected=store.OPEN_STATUSES,
            now=now,
            send_at=decision.send_at,
            channel=decision.channel,
            decision=decision_json(decision, inputs),
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


def _cap_check(contact: Contact, now: datetime, rules: RuleSet) -> store.CapCheck:
    cap, zone = rules.pressure_cap, rules.contact_windows.zone
    day_start = datetime.combine(now.astimezone(zone).date(), time(0), zone).astimezone(UTC)
    return store.CapCheck(
        debtor_id=contact.debtor_id,
        day_start=day_start,
        week_start=now - timedelta(days=7),
        max_per_day=cap.max_per_day,
        max_per_7_days=cap.max_per_7_days,
        exempt_kinds=cap.exempt_kinds,
    )


def capped(kind: str, rules: RuleSet) -> bool:
    """R6 applies: not a statutory notice, not an exempt kind."""
    return kind not in STATUTORY_KINDS and kind not in rules.pressure_cap.exempt_kinds


def _exposure(assignment: Assignment | None, decision: Decision) -> dict[str, Any] | None:
    """The arm as recorded on the attempt, with the variant actually sent (the control where the arm's variant
    is not written for the chosen channel)."""
    if assignment is None:
        return None
    return {**assignment.as_json(), "sent_variant": decision.variant}


async def process_contact(ctx: dict[str, Any], contact_id: str) -> str:
    return await _process(ctx, contact_id, redecide=2)


async def _process(ctx: dict[str, Any], contact_id: str, redecide: int) -> str:
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

    async with state.sessions() as session:
        history = await history_for(state, session, contact, debtor, now)
    inputs = decision_input(contact, debtor, case, history, state.rules)
    options = state.channel_options
    assignment = await assignment_for(
        state.experiments,
        state.sessions,
        debtor_id=contact.debtor_id,
        inputs=inputs,
        channels=options,
        templates=state.templates,
        rules=state.rules,
        now=now,
    )
    if assignment is not None:
        inputs = apply_arm(inputs, assignment, now, state.rules)
    decision = decide(inputs, channels=options, templates=state.templates, rules=state.rules, now=now)
    if assignment is not None:
        decision.reasons.append(f"experiment:{assignment.experiment_id}:{assignment.arm}")
    if decision.outcome != "send":
        return await _finish_without_sending(state, contact, decision, inputs, now)
    assert decision.send_at is not None and decision.channel is not None
    if decision.send_at > now + SCHEDULE_SLACK:
        return await _schedule(state, contact, decision, inputs, now)

    zone = state.rules.contact_windows.zone
    channel = state.channels[decision.channel]
    link = None
    if channel.limits.supports_links:
        # An address request goes out when our data may be stale: its link opens only an address form, so a
        # stranger at an old number or mailbox learns nothing of the claim (R7).
        link = chat_links.issue(
            purpose=chat_links.PURPOSE_BY_KIND.get(contact.kind, "case"),
            base_url=state.settings.resolved_public_base_url,
            debtor_id=contact.debtor_id,
            case_id=contact.case_id,
            contact_id=contact.id,
            now=now,
            ttl_days=state.settings.chat_link_ttl_days,
        )
    # E-mail the debtor may refuse carries a one-click unsubscribe link (RFC 8058; orchestrator.unsubscribe).
    unsubscribe_link = unsubscribe.issue(state.settings, contact, channel.limits, now)
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

    # R7/R9 on the message as rendered: nothing leaves with "inkasso" where others see it, or a national id.
    violations = check_message(rendered, channel.limits)
    if violations:
        if await _refused_by_content_guard(state, contact, decision, inputs, violations, now):
            return await _process(ctx, contact_id, redecide)  # the next lawful channel, if any
        return "failed"

    attempt_id = new_id()
    if state.before_claim is not None:
        await state.before_claim(contact_id)
    async with write_session(state.sessions) as session:
        # The guard again, inside the claim itself: a dispute or bankruptcy that arrived since the decision,
        # or another worker that reached this debtor meanwhile (R6), and the contact is not claimed.
        await store.lock_debtor(session, contact.debtor_id)
        claimed = await store.claim_for_sending(
            session,
            contact_id,
            now=now,
            case_id=contact.case_id,
            case_statuses=state.rules.holds.case_statuses(contact.kind),
            cap=_cap_check(contact, now, state.rules) if capped(contact.kind, state.rules) else None,
            channel=decision.channel,
            decision=decision_json(decision, inputs),
            send_at=now,
        )
        if claimed:
            # The attempt is written with the claim: another worker's cap check counts it at once.
            if link is not None:
                await store.insert_chat_link(session, link.row)
            if unsubscribe_link is not None:
                await store.insert_chat_link(session, unsubscribe_link.row)
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
                    "assignment": _exposure(assignment, decision),
                    "template_fallback": rendered.fallback_from,
                    "created_at": now,
                    "updated_at": now,
                },
            )
            if assignment is not None:
                await experiment_store.mark_exposed(
                    session,
                    experiment_id=assignment.experiment_id,
                    debtor_id=contact.debtor_id,
                    contact_id=contact_id,
                    case_id=contact.case_id,
                    channel=decision.channel,
                    now=now,
                )
            await store.log_contact_event(
                session,
                contact,
                type="decision",
                status="sending",
                detail=decision.as_json(),
                at=now,
            )
    if not claimed:
        async with state.sessions() as session:
            if not await store.claimable(session, contact_id):
                return "lost_claim"  # another worker has it, or it was held, cancelled ...
        log.info("the guard refused the claim; deciding again", contact_id=contact_id)
        if redecide > 0:
            return await _process(ctx, contact_id, redecide - 1)
        return "skipped:claim_refused"
    metrics.DECISIONS.labels("send").inc()
    # From here until the result is committed, a crash leaves the contact "sending": never re-sent blindly.
    print_if_unread_after = None
    if contact.kind in STATUTORY_KINDS:
        # R3: digital first, paper if unread (carriers that cannot print ignore it).
        days = state.rules.print_if_unread_after_days
        print_if_unread_after = now.astimezone(zone).date() + timedelta(days=days)
    outgoing = _outgoing(
        contact,
        attempt_id,
        decision,
        debtor,
        case,
        rendered,
        print_if_unread_after,
        unsubscribe_url=unsubscribe_link.url if unsubscribe_link is not None else None,
    )
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


async def _refused_by_content_guard(
    state: WorkerState,
    contact: Contact,
    decision: Decision,
    inputs: DecisionInput,
    violations: list[Violation],
    now: datetime,
) -> bool:
    """Record the refusal. True when another channel may be tried (a fallback chain): a subject or short
    text that may not carry the creditor's name may still go as a letter."""
    reason = f"legal_guard:{violations[0].code}"
    channel = decision.channel or ""
    log.error("message refused by the legal guard", contact_id=contact.id, channel=channel, reason=reason)
    detail = {
        "reason": reason,
        "channel": channel,
        "template": decision.template,
        # The messages mask any national id; they name the rule, the place and the word.
        "violations": [
            {"rule": v.rule, "code": v.code, "where": v.where, "message": v.message} for v in violations
        ],
    }
    fallback = state.rules.fallback.enabled
    async with write_session(state.sessions) as session:
        if fallback:
            await store.add_tried_channel(session, contact.id, channel, now=now)
        else:
            refused = Decision(**{**decision.__dict__, "outcome": "suppressed", "status_reason": reason})
            await store.set_contact_status(
                session,
                contact.id,
                status="failed",
                reason=reason,
                expected=store.OPEN_STATUSES,
                now=now,
                decision=decision_json(refused, inputs),
            )
        await store.log_contact_event(
            session,
            contact,
            type="legal_guard_refused",
            status=None if fallback else "failed",
            detail=detail,
            at=now,
        )
    metrics.DECISIONS.labels("legal_guard").inc()
    return fallback


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
    # Imported here: the fallback module builds on this one.
    from orchestrator.fallback import try_next_channel

    now = state.clock()
    reason = getattr(exc, "reason", "carrier_error")
    reopened = False
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
        # The carrier refused this message for this address (not our configuration): another channel may
        # reach the debtor.
        if isinstance(exc, PermanentChannelError):
            reopened = await try_next_channel(
                state,
                session,
                contact.id,
                failed_channel=decision.channel or "",
                reason=reason,
                from_statuses=("failed",),
                now=now,
            )
    metrics.SENDS.labels(decision.channel or "", decision.provider or "", "failed").inc()
    log.warning("carrier refused the message", contact_id=contact.id, reason=reason)
    if reopened:
        # This job's own id is still taken while it runs: the next channel gets a job of its own.
        await queue.enqueue_contact(state.redis, state.settings.queue_name, contact.id, send_at=utcnow())
        return "fallback"
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
    """Re-enqueue contacts a crash left without a job; ask the carriers about contacts stuck in ``sending``
    and contacts ``sent`` on a reporting channel that no carrier report followed
    (``orchestrator.reconciliation``); flag for an operator those the carriers could not settle."""
    # Imported here: reconciliation and fallback build on this module (WorkerState, decision inputs).
    from orchestrator.fallback import try_next_channel
    from orchestrator.reconciliation import reconcile

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
    # Carriers settle what they can first; a contact they settled is no longer stale below.
    reconciliation = await reconcile(state, now)
    notes = reconciliation.notes
    flagged = 0
    reopened: list[str] = []
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
                            detail={
                                "why": f"sending for more than {settings.sending_timeout_s:.0f} s",
                                **notes.get(contact_id, {}),
                            },
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
                # Fallback chains: a channel that stays silent past its timeout hands over to the next one
                # (windows and the cap apply: the silent message counts as having reached the debtor).
                if await try_next_channel(
                    state,
                    session,
                    contact_id,
                    failed_channel=channel,
                    reason="no_delivery_report",
                    from_statuses=("sent",),
                    now=now,
                ):
                    reopened.append(contact_id)
                await store.add_timeline(
                    session,
                    [
                        store.timeline_row(
                            debtor_id=debtor_id,
                            contact_id=contact_id,
                            type="needs_reconciliation",
                            status="sent",
                            source="sweeper",
                            detail={
                                "why": f"no {channel} delivery report within {timeout_s:.0f} s",
                                **notes.get(contact_id, {}),
                            },
                            at=now,
                        )
                    ],
                )
    if reopened:
        await queue.enqueue_contacts(state.redis, settings.queue_name, reopened)
    metrics.SWEEPS.labels("requeued").inc(requeued)
    metrics.SWEEPS.labels("status_queries").inc(reconciliation.asked)
    metrics.SWEEPS.labels("reconciled").inc(reconciliation.reconciled)
    metrics.SWEEPS.labels("needs_reconciliation").inc(flagged)
    if requeued or flagged or reconciliation.asked:
        log.info(
            "sweeper",
            requeued=requeued,
            status_queries=reconciliation.asked,
            reconciled=reconciliation.reconciled,
            needs_reconciliation=flagged,
        )
    return {
        "requeued": requeued,
        "status_queries": reconciliation.asked,
        "reconciled": reconciliation.reconciled,
        "needs_reconciliation": flagged,
    }
