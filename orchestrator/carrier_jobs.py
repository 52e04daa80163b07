"""Processing carrier events in the worker: find the attempt, move it (and its contact) forward only, mark a
hard-bounced or returned address unusable, and write the event into the debtor's timeline."""

from __future__ import annotations

from typing import Any

from orchestrator import contact_log as store
from orchestrator.db import write_session
from orchestrator.jobs import WorkerState
from orchestrator.logs import get_logger
from orchestrator.returned_mail import enqueue_returned_letter
from orchestrator.tracking import MOVING, below

log = get_logger(__name__)
PROCESS_CARRIER_EVENT = "process_carrier_event"
# A report that makes the address itself unusable for later decisions.
BAD_ADDRESS_REASONS = frozenset({"hard_bounce", "unknown_user", "invalid_destination", "unknown_handset"})


async def process_carrier_event(ctx: dict[str, Any], event_row_id: str) -> str:
    state: WorkerState = ctx["state"]
    now = state.clock()
    async with write_session(state.sessions) as session:
        row = await store.get_carrier_event(session, event_row_id)
        if row is None or row.processed_at is not None:
            return "skipped"
        event = row.payload.get("event")
        if event is None:  # kept for inspection; nothing to apply
            await store.mark_carrier_event_processed(session, event_row_id, attempt_id=None, now=now)
            return "malformed_kept"
        attempt = await store.find_attempt(
            session,
            attempt_id=event.get("attempt_id"),
            provider=None,
            provider_message_id=event.get("provider_message_id"),
        )
        if not await store.mark_carrier_event_processed(
            session, event_row_id, attempt_id=attempt.id if attempt else None, now=now
        ):
            return "skipped"
        if attempt is None:
            log.warning("carrier event matches no attempt", carrier=row.carrier, event_id=row.event_id)
            return "unmatched"
        contact = await store.get_contact(session, attempt.contact_id)
        assert contact is not None
        status, reason = event["status"], event.get("reason")
        moved = False
        if status in MOVING:
            moved = await store.move_attempt_forward(
                session, attempt.id, status=status, reason=reason, allowed_from=below(status), now=now
            )
            if moved:
                await store.set_contact_status(
                    session, contact.id, status=status, reason=reason, expected=below(status), now=now
                )
        if status in ("bounced", "returned", "failed") and (
            status == "returned" or reason in BAD_ADDRESS_REASONS
        ):
            await store.add_unusable_address(session, contact.debtor_id, attempt.address, now=now)
        await store.log_contact_event(
            session,
            contact,
            type="carrier_event",
            status=status,
            source=row.carrier,
            attempt_id=attempt.id,
            detail={
                "reason": reason,
                "event_id": row.event_id,
                "moved": moved,
                "carrier_at": event.get("at"),
                **event.get("detail", {}),
            },
            at=now,
        )
    if moved and status == "returned" and attempt.channel == "letter":
        # The returned-mail loop: look for a better address (orchestrator.returned_mail).
        await enqueue_returned_letter(state.redis, state.settings.queue_name, attempt.id)
    return status if moved else f"absorbed:{status}"
