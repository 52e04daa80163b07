"""What happens to a case, from any source: upstream (the API), an operator, the debtor's self-service page,
or an inbound reply an operator flagged. One function, so a dispute holds the same way wherever it comes from.

A dispute (R4) or bankruptcy (R8) holds every queued and scheduled contact of the case at once; the worker
checks the case again inside its claim, so a contact it already has in hand is not sent either. Resolving the
dispute releases the held contacts (the caller enqueues them after the commit); paid in full or closed cancels
them and revokes the case's self-service links. Every event is stored and written into the debtor's timeline.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from sqlalchemy.ext.asyncio import AsyncSession

from orchestrator import contact_log as store
from orchestrator.models import Case, new_id
from orchestrator.policy.rules import Holds

HOLDS: Final = {"dispute_raised": "dispute", "bankrupt": "bankruptcy", "operator_hold": "operator"}
# what releases which hold: an operator's release never lifts a dispute or a bankruptcy
RELEASES: Final = {"dispute_resolved": "dispute", "hold_released": "operator"}
CLOSES: Final = {"paid_in_full": "paid_in_full", "closed": "case_closed"}
SOURCES: Final = ("upstream", "operator", "self_service", "inbound_reply")


@dataclass
class Applied:
    event_id: str
    case_status: str
    affected: list[str] = field(default_factory=list)
    resumed: list[str] = field(default_factory=list)  # to enqueue after the commit


async def apply(
    session: AsyncSession,
    case: Case,
    *,
    type: str,
    at: datetime,
    data: dict[str, Any],
    source: str,
    now: datetime,
    holds: Holds | None = None,
) -> Applied:
    event_id = new_id()
    await store.insert_case_event(
        session,
        {
            "id": event_id,
            "case_id": case.id,
            "type": type,
            "at": at,
            "data": {**data, "source": source},
            "created_at": now,
        },
    )
    out = Applied(event_id=event_id, case_status=case.status)
    # The messages about the hold or the closing themselves (a dispute's acknowledgement, a payment's
    # confirmation) stay where they are: the rule set's [holds] lets them through.
    holds = holds or Holds()
    if type == "operator_hold" and case.status != "open":
        pass  # already held for a weightier reason (or closed): the hold is recorded, the status stays
    elif type in HOLDS:
        out.case_status, reason = "held", HOLDS[type]
        await store.set_case_status(session, case.id, status="held", reason=reason, now=now)
        out.affected = await store.move_case_contacts(
            session,
            case.id,
            from_statuses=store.OPEN_STATUSES,
            to_status="held",
            reason=reason,
            now=now,
            except_kinds=holds.sendable_while_held,
        )
    elif type in RELEASES and case.status == "held" and case.status_reason == RELEASES[type]:
        out.case_status = "open"
        await store.set_case_status(session, case.id, status="open", reason=None, now=now)
        out.affected = out.resumed = await store.move_case_contacts(
            session, case.id, from_statuses=("held",), to_status="queued", reason=type, now=now
        )
    elif type in CLOSES:
        out.case_status, reason = "closed", CLOSES[type]
        await store.set_case_status(session, case.id, status="closed", reason=reason, now=now)
        await store.revoke_case_links(session, case.id, now=now)
        out.affected = await store.move_case_contacts(
            session,
            case.id,
            from_statuses=(*store.OPEN_STATUSES, "held"),
            to_status="cancelled",
            reason=reason,
            now=now,
            except_kinds=holds.sendable_when_closed,
        )
    await store.add_timeline(
        session,
        [
            store.timeline_row(
                debtor_id=case.debtor_id,
                case_id=case.id,
                type=f"case_{type}",
                source=source,
                detail={"type": type, "at": at.isoformat(), **data, "contacts_affected": out.affected},
                at=now,
            )
        ],
    )
    return out
