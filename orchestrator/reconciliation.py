"""Before the sweeper hands a silent attempt to an operator, it asks the carrier what became of it.

An attempt is silent when its contact is stuck in ``sending`` beyond ``sending_timeout_s`` (the carrier's
answer to the send never reached us: a crash, a dropped connection) or ``sent`` on a reporting channel with no
carrier report within ``delivery_report_timeout_s[channel]``. When its channel implements
``channels.base.StatusQuery`` the carrier is asked, at most ``reconcile_max_queries_per_sweep`` times per
sweep, least recently asked first:

- a status that moves the attempt forward is recorded as the carrier event a webhook would have recorded
  (event id ``status:<attempt id>:<status>``, so the same answer is recorded once however often it is
  given), with a ``reconciled`` entry in the debtor's timeline (source: the carrier), and the worker applies
  it (``process_carrier_event``). For an attempt stuck in ``sending``, ``accepted`` (the carrier holds it)
  is what ``sent`` records;
- anything else (no status API, "cannot say", an error, a status that moves nothing, an answer recorded at an
  earlier sweep that has still not moved the contact) leaves the contact to the sweeper, which flags it for
  an operator as before; what the carrier said goes into that flag.

Asking never sends anything. An asked attempt is asked again only after another timeout; a carrier that fails
is not asked again in the same sweep, so an outage costs one request per channel and sweep; and asking stops
after half the job timeout, so that the sweep always reaches its flagging step (what was not asked is flagged
now and asked at a later sweep).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from channels.base import CarrierStatus, CarrierStatusValue, ChannelError, SentAttempt, StatusQuery
from orchestrator import contact_log as store
from orchestrator.carrier_jobs import PROCESS_CARRIER_EVENT
from orchestrator.db import write_session
from orchestrator.jobs import WorkerState
from orchestrator.logs import get_logger
from orchestrator.models import Attempt
from orchestrator.tracking import MOVING, RANK
from webhooks.events import CarrierEvent
from webhooks.ingress import event_rows

log = get_logger(__name__)


@dataclass
class Reconciliation:
    """What one sweep's reconciliation did."""

    asked: int = 0
    reconciled: int = 0  # carrier reports recorded
    # contact id -> what the carrier said, for the operator's flag
    notes: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class _Silent:
    attempt: Attempt
    debtor_id: str
    case_id: str
    why: str


async def reconcile(state: WorkerState, now: datetime) -> Reconciliation:
    settings = state.settings
    askable = {name: ch for name, ch in state.channels.items() if isinstance(ch, StatusQuery)}
    sending_s = settings.sending_timeout_s
    # Stuck in "sending" first: a debtor may have been reached and we do not even know it was sent.
    groups = [("sending", sending_s, list(askable), f"sending for more than {sending_s:.0f} s")]
    groups += [
        ("sent", timeout_s, [channel], f"no {channel} delivery report within {timeout_s:.0f} s")
        for channel, timeout_s in settings.delivery_report_timeout_s.items()
        if channel in askable
    ]
    done = Reconciliation()
    budget = settings.reconcile_max_queries_per_sweep
    failing: set[str] = set()
    deadline = time.monotonic() + settings.job_timeout_s / 2
    for status, timeout_s, channels, why in groups:
        async with state.sessions() as session:
            rows = await store.reconciliation_candidates(
                session,
                status=status,
                channels=channels,
                before=now - timedelta(seconds=timeout_s),
                limit=budget - done.asked,
            )
        for attempt, debtor_id, case_id in rows:
            if attempt.channel in failing or time.monotonic() > deadline:
                continue
            done.asked += 1
            if not await _settle(
                state, askable[attempt.channel], _Silent(attempt, debtor_id, case_id, why), now, done
            ):
                failing.add(attempt.channel)
    return done


async def _settle(
    state: WorkerState, channel: StatusQuery, silent: _Silent, now: datetime, done: Reconciliation
) -> bool:
    """Ask about one attempt and act on the answer; False if the carrier failed."""
    attempt = silent.attempt
    content = attempt.content or {}
    try:
        answer = await channel.query_status(
            SentAttempt(
                attempt_id=attempt.id,
                provider=attempt.provider,
                provider_message_id=attempt.provider_message_id,
                address=attempt.address,
                text=content.get("text"),
                created_at=attempt.created_at,
            )
        )
    except Exception as exc:  # a failing carrier (or a bug in asking it) must not stop the sweep
        reason = exc.reason if isinstance(exc, ChannelError) else type(exc).__name__
        log.warning(
            "carrier status query failed", attempt_id=attempt.id, channel=attempt.channel, reason=reason
        )
        done.notes[attempt.contact_id] = {"carrier_error": reason}
        return False

    status = _status_for(attempt.status, answer)
    if answer is None or status is None:
        async with write_session(state.sessions) as session:
            await store.mark_attempt_asked(session, attempt.id, now=now)
        done.notes[attempt.contact_id] = {"carrier_status": answer.status if answer else "unknown"}
        return True

    if await _record(state, silent, answer, status, now):
        done.reconciled += 1
    else:
        # Recorded at an earlier sweep and still not applied: something is stuck, an operator looks.
        done.notes[attempt.contact_id] = {
            "carrier_status": status,
            "carrier_report": "recorded earlier, not applied",
        }
    return True


def _status_for(current: str, answer: CarrierStatus | None) -> CarrierStatusValue | None:
    """The status the carrier's answer moves the attempt to, or None if it moves nothing."""
    if answer is None:
        return None
    status: CarrierStatusValue = (
        "sent" if answer.status == "accepted" and current == "sending" else answer.status
    )
    return status if status in MOVING and RANK[status] > RANK[current] else None


async def _record(
    state: WorkerState, silent: _Silent, answer: CarrierStatus, status: CarrierStatusValue, now: datetime
) -> bool:
    """Record the answer as a carrier event and enqueue it, as ``webhooks.ingress.record_events`` does; the
    timeline entry commits with the event. False if this answer was recorded before."""
    attempt = silent.attempt
    event_id = f"status:{attempt.id}:{status}"
    event = CarrierEvent(
        carrier=answer.provider,
        event_id=event_id,
        status=status,
        at=answer.at,
        attempt_id=attempt.id,
        provider_message_id=answer.provider_message_id,
        reason=answer.reason,
        detail={**answer.detail, "carrier_status": answer.status, "source": "status_api"},
    )
    raw = {"status_api": answer.provider, "asked_at": now.isoformat(), "why": silent.why}
    async with write_session(state.sessions) as session:
        fresh = await store.record_carrier_events(session, event_rows(answer.provider, [event], raw))
        await store.mark_attempt_asked(
            session,
            attempt.id,
            now=now,
            provider=answer.provider,
            provider_message_id=answer.provider_message_id,
        )
        if fresh:
            await store.mark_contact_reconciled(session, attempt.contact_id, status=attempt.status, now=now)
            await store.add_timeline(
                session,
                [
                    store.timeline_row(
                        debtor_id=silent.debtor_id,
                        case_id=silent.case_id,
                        contact_id=attempt.contact_id,
                        attempt_id=attempt.id,
                        type="reconciled",
                        status=status,
                        source=answer.provider,
                        detail={
                            "why": silent.why,
                            "was": attempt.status,
                            "carrier_status": answer.status,
                            "reason": answer.reason,
                            "event_id": event_id,
                            "carrier_at": answer.at.isoformat(),
                        },
                        at=now,
                    )
                ],
            )
    for row_id in fresh:
        await state.redis.enqueue_job(
            PROCESS_CARRIER_EVENT,
            row_id,
            _job_id=f"carrier-event:{row_id}",
            _queue_name=state.settings.queue_name,
        )
    if fresh:
        log.info("reconciled by the carrier", attempt_id=attempt.id, carrier=answer.provider, status=status)
    return bool(fresh)
