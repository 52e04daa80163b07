"""Fallback chains: when the chosen channel fails, bounces or stays silent, try the next eligible channel.

``try_next_channel`` runs inside the caller's transaction. It remembers the failed channel on the contact
(``tried_channels``), asks the pure policy what it would decide without it, and only when that is a send
on another channel does it reopen the contact (``queued``, ``fallback:<channel>:<reason>``) — the one other
deliberate step back in the status model besides a re-send after a returned letter. The legal guard still
decides the new channel: a statutory notice never falls back to one that is not lawful for it (R3), and
the windows and the pressure cap apply. The caller enqueues the contact after its commit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from orchestrator import contact_log as store
from orchestrator.jobs import WorkerState, decision_input, history_for
from orchestrator.logs import get_logger
from orchestrator.policy.decide import decide

log = get_logger(__name__)


async def try_next_channel(
    state: WorkerState,
    session: AsyncSession,
    contact_id: str,
    *,
    failed_channel: str,
    reason: str,
    from_statuses: Sequence[str],
    now: datetime,
) -> bool:
    """True when the contact was reopened for another channel (enqueue it after the commit)."""
    if not state.rules.fallback.enabled:
        return False
    row = await store.load_for_dispatch(session, contact_id)
    if row is None:
        return False
    contact, debtor, case = row
    if contact.status not in from_statuses:
        return False
    # Asked first with the failed channel left out; remembered only when another channel takes over, so
    # that a later re-send on the same channel (a letter to a newly found address) stays possible.
    tried = [*(contact.tried_channels or []), failed_channel]
    history = await history_for(state, session, contact, debtor, now)
    inputs = replace(
        decision_input(contact, debtor, case, history, state.rules), tried_channels=frozenset(tried)
    )
    decision = decide(
        inputs, channels=state.channel_options, templates=state.templates, rules=state.rules, now=now
    )
    if decision.outcome != "send" or decision.channel is None:
        await store.log_contact_event(
            session,
            contact,
            type="fallback",
            status=None,
            detail={
                "from_channel": failed_channel,
                "reason": reason,
                "tried_channels": tried,
                "outcome": decision.status_reason or decision.outcome,
                "rejected": [{"channel": r.channel, "reason": r.reason} for r in decision.rejected],
            },
            at=now,
        )
        return False
    why = f"fallback:{failed_channel}:{reason}"
    if not await store.set_contact_status(
        session, contact_id, status="queued", reason=why, expected=from_statuses, now=now, send_at=None
    ):
        return False
    tried = await store.add_tried_channel(session, contact_id, failed_channel, now=now)
    await store.log_contact_event(
        session,
        contact,
        type="fallback",
        status="queued",
        detail={
            "from_channel": failed_channel,
            "reason": reason,
            "to_channel": decision.channel,
            "tried_channels": tried,
            "send_at": decision.send_at.isoformat() if decision.send_at else None,
        },
        at=now,
    )
    log.info("falling back to the next channel", contact_id=contact_id, to=decision.channel, why=why)
    return True
