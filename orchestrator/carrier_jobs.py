"""Processing carrier events in the worker: find the attempt, move it (and its contact) forward only, mark a
hard-bounced or returned address unusable, and write the event into the debtor's timeline.

Two reports do more than move a status:

* a soft bounce the sending MTA gave up on (``soft_bounce`` with ``final``: mailbox full, a transient 5.x.x)
  ends that attempt and schedules the same contact again after ``soft_bounce_retry_after_s``, at most
  ``soft_bounce_max_retries`` times, then the contact ends ``bounced`` (the address stays usable: it was not
  refused). A soft bounce the MTA is still retrying changes nothing;
* a letter Posten forwarded (electronic address updating, ``forwarded_new_address``) carries the debtor's new
  address: it is stored with its provenance so later letters go there (the returned-mail loop's Posten file).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from orchestrator import contact_log as store
from orchestrator import opt_outs, queue
from orchestrator.db import write_session
from orchestrator.fallback import try_next_channel
from orchestrator.jobs import WorkerState
from orchestrator.logs import get_logger
from orchestrator.models import Attempt, Contact, utcnow
from orchestrator.policy.decide import format_address
from orchestrator.returned_mail import enqueue_returned_letter
from orchestrator.tracking import MOVING, below

log = get_logger(__name__)
PROCESS_CARRIER_EVENT = "process_carrier_event"
# A report that makes the address itself unusable for later decisions.
BAD_ADDRESS_REASONS = frozenset({"hard_bounce", "unknown_user", "invalid_destination", "unknown_handset"})
SOFT_BOUNCE = "soft_bounce"
# Reports after which another channel may still reach the debtor (a returned letter has its own loop).
FALLBACK_STATUSES = frozenset({"bounced", "failed", "expired"})
FORWARDED = "forwarded_new_address"
_POSTAL_FIELDS = ("lines", "postal_code", "city", "country")


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
        if event.get("status") == opt_outs.INBOUND:  # a debtor's reply, not news of a message we sent
            return await opt_outs.process_inbound_reply(session, row, event, now=now)
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
        detail: dict[str, Any] = dict(event.get("detail", {}))
        retry_at: datetime | None = None
        fell_back = False
        if (
            moved
            and status in FALLBACK_STATUSES
            and await store.latest_attempt_id(session, contact.id) == attempt.id
        ):
            fell_back = await try_next_channel(
                state,
                session,
                contact.id,
                failed_channel=attempt.channel,
                reason=reason or status,
                from_statuses=(status,),
                now=now,
            )
            detail["outcome"] = "fallback" if fell_back else "no_fallback"
        if reason == SOFT_BOUNCE and detail.get("final") is True:
            retry_at, detail["outcome"] = await _after_soft_bounce(state, session, contact, attempt, now)
        if reason == FORWARDED and isinstance(detail.get("new_address"), dict):
            detail["outcome"] = await _store_forwarded_address(session, contact, detail["new_address"], now)
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
                **detail,
            },
            at=now,
        )
    if fell_back:
        await queue.enqueue_contacts(state.redis, state.settings.queue_name, [contact.id])
    if retry_at is not None:
        # The queue defers on its own (wall) clock, whatever clock the policy runs on.
        wake = utcnow() + (retry_at - now)
        await queue.enqueue_contact(state.redis, state.settings.queue_name, contact.id, send_at=wake)
    if moved and status == "returned" and attempt.channel == "letter":
        # The returned-mail loop: look for a better address (orchestrator.returned_mail).
        await enqueue_returned_letter(state.redis, state.settings.queue_name, attempt.id)
    return status if moved else f"absorbed:{status}"


async def _after_soft_bounce(
    state: WorkerState, session: AsyncSession, contact: Contact, attempt: Attempt, now: datetime
) -> tuple[datetime | None, str]:
    """The MTA gave up for now: end this attempt and send the same contact again later, a bounded number of
    times. Only the contact's latest attempt counts (a bounce of an older one changes nothing)."""
    settings = state.settings
    if not await store.move_attempt_forward(
        session, attempt.id, status="failed", reason=SOFT_BOUNCE, allowed_from=("sending", "sent"), now=now
    ):
        return None, "attempt_already_settled"
    if await store.latest_attempt_id(session, contact.id) != attempt.id:
        return None, "not_the_latest_attempt"
    bounced = await store.count_attempts_with_reason(session, contact.id, SOFT_BOUNCE)
    if bounced > settings.soft_bounce_max_retries:
        await store.set_contact_status(
            session,
            contact.id,
            status="bounced",
            reason="soft_bounce_retries_exhausted",
            expected=("sending", "sent"),
            now=now,
        )
        return None, "retries_exhausted"
    retry_at = now + timedelta(seconds=settings.soft_bounce_retry_after_s)
    if not await store.reschedule_bounced_contact(
        session, contact.id, reason=f"retry:{SOFT_BOUNCE}", send_at=retry_at, now=now
    ):
        return None, "contact_already_settled"
    await store.log_contact_event(
        session,
        contact,
        type="scheduled",
        status="scheduled",
        attempt_id=attempt.id,
        detail={"reason": f"retry:{SOFT_BOUNCE}", "send_at": retry_at.isoformat(), "soft_bounces": bounced},
        at=now,
    )
    return retry_at, "retry_scheduled"


async def _store_forwarded_address(
    session: AsyncSession, contact: Contact, new_address: dict[str, Any], now: datetime
) -> str:
    address = {k: new_address[k] for k in _POSTAL_FIELDS if new_address.get(k)}
    if not address.get("lines") or not address.get("postal_code"):
        return "address_incomplete"
    address.setdefault("country", "NO")
    stored = await store.add_registry_address(
        session, contact.debtor_id, {**address, "source": "posten", "found_at": now.isoformat()}, now=now
    )
    if stored:
        await store.log_contact_event(
            session,
            contact,
            type="address_stored",
            status=None,
            source="posten",
            detail={"reason": FORWARDED, "source": "posten", "address": format_address(address)},
            at=now,
        )
    return "address_stored" if stored else "address_known"
