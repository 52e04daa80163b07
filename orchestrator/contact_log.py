"""The contact log store: every SQL statement the orchestrator runs lives here.

Callers (HTTP handlers, jobs) own the transaction; these functions only read and write within it. Status
changes are conditional updates (``WHERE status IN (...)``) so that concurrent workers, late callbacks and
operator actions never move a contact backwards or send it twice.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, and_, delete, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from orchestrator.models import (
    ApiKey,
    Attempt,
    Base,
    CarrierEvent,
    Case,
    CaseEvent,
    ChatLink,
    Contact,
    Debtor,
    OperatorTask,
    ReturnedLetter,
    TimelineEvent,
    new_id,
    utcnow,
)

_CHUNK = 500
OPEN_STATUSES = ("queued", "scheduled")
# Updates go through the Core tables: the ORM's bulk-update path costs more than the statement itself.
CONTACTS = cast(Table, Contact.__table__)
ATTEMPTS = cast(Table, Attempt.__table__)
CASES = cast(Table, Case.__table__)
CHAT_LINKS = cast(Table, ChatLink.__table__)
CARRIER_EVENTS = cast(Table, CarrierEvent.__table__)
DEBTORS = cast(Table, Debtor.__table__)


def _insert(session: AsyncSession, table: Any) -> Any:
    dialect = session.get_bind().dialect.name
    return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table)


def _chunks(items: Sequence[Any], size: int = _CHUNK) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


# ---- API keys ----


async def insert_api_key(session: AsyncSession, *, name: str, key_hash: str, scopes: list[str]) -> str:
    key_id = new_id()
    session.add(ApiKey(id=key_id, name=name, key_hash=key_hash, scopes=scopes, created_at=utcnow()))
    await session.flush()
    return key_id


async def find_api_key_scopes(session: AsyncSession, key_hash: str) -> list[str] | None:
    row = (
        await session.execute(
            select(ApiKey.scopes).where(ApiKey.key_hash == key_hash, ApiKey.revoked_at.is_(None))
        )
    ).first()
    return list(row[0]) if row else None


# ---- intake ----


async def find_contacts_by_keys(
    session: AsyncSession, keys: Sequence[str]
) -> dict[str, tuple[str, str, str]]:
    """idempotency_key -> (contact id, body sha256, status)."""
    found: dict[str, tuple[str, str, str]] = {}
    for chunk in _chunks(keys):
        rows = await session.execute(
            select(Contact.idempotency_key, Contact.id, Contact.body_sha256, Contact.status).where(
                Contact.idempotency_key.in_(chunk)
            )
        )
        for key, cid, sha, status in rows:
            found[key] = (cid, sha, status)
    return found


async def find_case_owners(session: AsyncSession, case_ids: Sequence[str]) -> dict[str, str]:
    owners: dict[str, str] = {}
    for chunk in _chunks(case_ids):
        for cid, debtor_id in await session.execute(
            select(Case.id, Case.debtor_id).where(Case.id.in_(chunk))
        ):
            owners[cid] = debtor_id
    return owners


async def upsert_debtors(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    """Latest data from upstream wins; a debtor appears once per call."""
    if not rows:
        return
    stmt = _insert(session, Debtor)
    stmt = stmt.on_conflict_do_update(
        index_elements=[Debtor.id],
        set_={
            "type": stmt.excluded.type,
            "name": stmt.excluded.name,
            "national_id": func.coalesce(stmt.excluded.national_id, Debtor.national_id),
            "organisation_number": func.coalesce(
                stmt.excluded.organisation_number, Debtor.organisation_number
            ),
            "contact_points": stmt.excluded.contact_points,
            "updated_at": stmt.excluded.updated_at,
        },
    )
    for chunk in _chunks(rows):
        await session.execute(stmt, list(chunk))


async def upsert_cases(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    """Case details follow upstream; the case's status (held, closed) is ours and is not overwritten."""
    if not rows:
        return
    stmt = _insert(session, Case)
    stmt = stmt.on_conflict_do_update(
        index_elements=[Case.id],
        set_={
            "creditor_name": stmt.excluded.creditor_name,
            "details": stmt.excluded.details,
            "updated_at": stmt.excluded.updated_at,
        },
    )
    for chunk in _chunks(rows):
        await session.execute(stmt, list(chunk))


async def insert_contacts(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    """Insert new contacts; a key that a concurrent request already took is skipped, not an error."""
    if not rows:
        return
    stmt = _insert(session, Contact).on_conflict_do_nothing(index_elements=[Contact.idempotency_key])
    for chunk in _chunks(rows):
        await session.execute(stmt, list(chunk))


async def add_timeline(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    if not rows:
        return
    for chunk in _chunks(rows):
        await session.execute(_insert(session, TimelineEvent), [{"id": new_id(), **row} for row in chunk])


def timeline_row(
    *,
    debtor_id: str,
    type: str,
    source: str = "orchestrator",
    at: datetime | None = None,
    case_id: str | None = None,
    contact_id: str | None = None,
    attempt_id: str | None = None,
    status: str | None = None,
    detail: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "debtor_id": debtor_id,
        "case_id": case_id,
        "contact_id": contact_id,
        "attempt_id": attempt_id,
        "at": at or utcnow(),
        "type": type,
        "status": status,
        "source": source,
        "detail": detail or {},
    }


async def log_contact_event(
    session: AsyncSession,
    contact: Contact,
    *,
    type: str,
    status: str | None,
    at: datetime,
    detail: dict[str, Any],
    source: str = "orchestrator",
    attempt_id: str | None = None,
) -> None:
    """One entry in the timeline of the contact's debtor."""
    await add_timeline(
        session,
        [
            timeline_row(
                debtor_id=contact.debtor_id,
                case_id=contact.case_id,
                contact_id=contact.id,
                attempt_id=attempt_id,
                type=type,
                status=status,
                source=source,
                detail=detail,
                at=at,
            )
        ],
    )


# ---- reading the log ----


async def get_contact(session: AsyncSession, contact_id: str) -> Contact | None:
    return await session.get(Contact, contact_id)


async def get_attempts(session: AsyncSession, contact_id: str) -> list[Attempt]:
    rows = await session.execute(select(Attempt).where(Attempt.contact_id == contact_id).order_by(Attempt.id))
    return list(rows.scalars())


async def get_events_for_attempts(
    session: AsyncSession, attempt_ids: Sequence[str]
) -> dict[str, list[TimelineEvent]]:
    out: dict[str, list[TimelineEvent]] = {aid: [] for aid in attempt_ids}
    if not attempt_ids:
        return out
    rows = await session.execute(
        select(TimelineEvent).where(TimelineEvent.attempt_id.in_(attempt_ids)).order_by(TimelineEvent.id)
    )
    for event in rows.scalars():
        if event.attempt_id is not None:
            out[event.attempt_id].append(event)
    return out


async def list_contacts(
    session: AsyncSession,
    *,
    debtor_id: str | None = None,
    case_id: str | None = None,
    status: str | None = None,
    channel: str | None = None,
    kind: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    before_id: str | None = None,
    limit: int = 50,
) -> list[Contact]:
    """Newest first. ``channel`` matches the chosen channel (or the requested one before a decision)."""
    query = select(Contact)
    conditions = []
    if debtor_id is not None:
        conditions.append(Contact.debtor_id == debtor_id)
    if case_id is not None:
        conditions.append(Contact.case_id == case_id)
    if status is not None:
        conditions.append(Contact.status == status)
    if kind is not None:
        conditions.append(Contact.kind == kind)
    if channel is not None:
        conditions.append(Contact.channel == channel)
    if since is not None:
        conditions.append(Contact.created_at >= since)
    if until is not None:
        conditions.append(Contact.created_at < until)
    if before_id is not None:
        conditions.append(Contact.id < before_id)
    if conditions:
        query = query.where(and_(*conditions))
    rows = await session.execute(query.order_by(Contact.id.desc()).limit(limit))
    return list(rows.scalars())


async def debtor_exists(session: AsyncSession, debtor_id: str) -> bool:
    return (await session.get(Debtor, debtor_id)) is not None


async def timeline(
    session: AsyncSession, debtor_id: str, *, after_id: str | None = None, limit: int = 200
) -> list[TimelineEvent]:
    query = select(TimelineEvent).where(TimelineEvent.debtor_id == debtor_id)
    if after_id is not None:
        query = query.where(TimelineEvent.id > after_id)
    rows = await session.execute(query.order_by(TimelineEvent.id).limit(limit))
    return list(rows.scalars())


# ---- dispatch ----


async def load_for_dispatch(session: AsyncSession, contact_id: str) -> tuple[Contact, Debtor, Case] | None:
    row = (
        await session.execute(
            select(Contact, Debtor, Case)
            .join(Debtor, Debtor.id == Contact.debtor_id)
            .join(Case, Case.id == Contact.case_id)
            .where(Contact.id == contact_id)
        )
    ).first()
    return (row[0], row[1], row[2]) if row else None


async def set_contact_status(
    session: AsyncSession,
    contact_id: str,
    *,
    status: str,
    reason: str | None,
    expected: Sequence[str],
    now: datetime,
    **values: Any,
) -> bool:
    """Move a contact to ``status`` only if it is still in one of ``expected``. True if it moved."""
    result = await session.execute(
        update(CONTACTS)
        .where(Contact.id == contact_id, Contact.status.in_(expected))
        .values(status=status, status_reason=reason, updated_at=now, **values)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def claim_for_sending(session: AsyncSession, contact_id: str, *, now: datetime, **values: Any) -> bool:
    """queued/scheduled -> sending, counted as one more try. Committed before any carrier is called."""
    return await set_contact_status(
        session,
        contact_id,
        status="sending",
        reason=None,
        expected=OPEN_STATUSES,
        now=now,
        send_tries=CONTACTS.c.send_tries + 1,
        **values,
    )


async def insert_attempt(session: AsyncSession, row: dict[str, Any]) -> None:
    await session.execute(_insert(session, Attempt), [row])


async def update_attempt(session: AsyncSession, attempt_id: str, *, now: datetime, **values: Any) -> None:
    await session.execute(update(ATTEMPTS).where(Attempt.id == attempt_id).values(updated_at=now, **values))


async def mark_needs_reconciliation(session: AsyncSession, contact_id: str, *, now: datetime) -> bool:
    """A contact found ``sending`` by a second run: we cannot know whether the carrier took it, so we do not
    send again; an operator (or the carrier's status API) settles it."""
    result = await session.execute(
        update(CONTACTS)
        .where(
            Contact.id == contact_id,
            Contact.status == "sending",
            func.coalesce(Contact.status_reason, "") != "needs_reconciliation",
        )
        .values(status_reason="needs_reconciliation", updated_at=now)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def attempts_in_flight(session: AsyncSession, contact_id: str) -> list[str]:
    rows = await session.execute(
        select(Attempt.id).where(Attempt.contact_id == contact_id, Attempt.status == "sending")
    )
    return [r[0] for r in rows]


# ---- sweeper ----


async def stale_open_contacts(
    session: AsyncSession, *, queued_before: datetime, due_before: datetime, limit: int
) -> list[tuple[str, str, datetime | None]]:
    """Contacts a crash may have left without a job: queued for too long, or scheduled and overdue."""
    rows = await session.execute(
        select(Contact.id, Contact.status, Contact.send_at)
        .where(
            ((Contact.status == "queued") & (Contact.updated_at < queued_before))
            | ((Contact.status == "scheduled") & (Contact.send_at < due_before))
        )
        .order_by(Contact.id)
        .limit(limit)
    )
    return [(r[0], r[1], r[2]) for r in rows]


async def stale_sending_contacts(
    session: AsyncSession, *, before: datetime, limit: int
) -> list[tuple[str, str]]:
    rows = await session.execute(
        select(Contact.id, Contact.debtor_id)
        .where(
            Contact.status == "sending",
            Contact.updated_at < before,
            func.coalesce(Contact.status_reason, "") != "needs_reconciliation",
        )
        .limit(limit)
    )
    return [(r[0], r[1]) for r in rows]


async def mark_sent_without_report(
    session: AsyncSession, *, channel: str, before: datetime, now: datetime, limit: int
) -> list[tuple[str, str]]:
    """Contacts ``sent`` on ``channel`` before ``before`` that no carrier report moved on: flag them once."""
    rows = await session.execute(
        select(Contact.id, Contact.debtor_id)
        .where(
            Contact.status == "sent",
            Contact.channel == channel,
            Contact.updated_at < before,
            func.coalesce(Contact.status_reason, "") != "no_delivery_report",
        )
        .limit(limit)
    )
    found = [(r[0], r[1]) for r in rows]
    if found:
        await session.execute(
            update(CONTACTS)
            .where(CONTACTS.c.id.in_([cid for cid, _ in found]), CONTACTS.c.status == "sent")
            .values(status_reason="no_delivery_report", updated_at=now)
        )
    return found


# ---- cases ----


async def get_case(session: AsyncSession, case_id: str) -> Case | None:
    return await session.get(Case, case_id)


async def insert_case_event(session: AsyncSession, row: dict[str, Any]) -> None:
    await session.execute(_insert(session, CaseEvent), [row])


async def set_case_status(
    session: AsyncSession, case_id: str, *, status: str, reason: str | None, now: datetime
) -> None:
    await session.execute(
        update(CASES).where(Case.id == case_id).values(status=status, status_reason=reason, updated_at=now)
    )


async def move_case_contacts(
    session: AsyncSession,
    case_id: str,
    *,
    from_statuses: Sequence[str],
    to_status: str,
    reason: str,
    now: datetime,
    only_reason: str | None = None,
) -> list[str]:
    """Move every contact of a case in ``from_statuses`` at once (a dispute holds them all).

    Returns the ids of the contacts moved."""
    conditions = [Contact.case_id == case_id, Contact.status.in_(from_statuses)]
    if only_reason is not None:
        conditions.append(Contact.status_reason == only_reason)
    ids = [r[0] for r in await session.execute(select(Contact.id).where(*conditions))]
    if ids:
        await session.execute(
            update(CONTACTS)
            .where(Contact.id.in_(ids), Contact.status.in_(from_statuses))
            .values(status=to_status, status_reason=reason, updated_at=now)
        )
    return ids


# ---- carrier events ----


async def record_carrier_events(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> list[str]:
    """Store raw carrier events; one already stored (same carrier and event id) is skipped. Returns the ids of
    the rows this call stored, which are the ones still to be processed."""
    if not rows:
        return []
    stmt = _insert(session, CarrierEvent).on_conflict_do_nothing(
        index_elements=[CarrierEvent.carrier, CarrierEvent.event_id]
    )
    await session.execute(stmt, list(rows))
    found = await session.execute(
        select(CarrierEvent.id).where(CarrierEvent.id.in_([row["id"] for row in rows]))
    )
    return [r[0] for r in found]


async def get_carrier_event(session: AsyncSession, event_row_id: str) -> CarrierEvent | None:
    return await session.get(CarrierEvent, event_row_id)


async def mark_carrier_event_processed(
    session: AsyncSession, event_row_id: str, *, attempt_id: str | None, now: datetime
) -> bool:
    """Claim the event for processing: True only for the first caller (a replayed job does nothing)."""
    result = await session.execute(
        update(CARRIER_EVENTS)
        .where(CARRIER_EVENTS.c.id == event_row_id, CARRIER_EVENTS.c.processed_at.is_(None))
        .values(processed_at=now, attempt_id=attempt_id)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def find_attempt(
    session: AsyncSession, *, attempt_id: str | None, provider: str | None, provider_message_id: str | None
) -> Attempt | None:
    if attempt_id:
        found = await session.get(Attempt, attempt_id)
        if found is not None:
            return found
    if provider_message_id:
        query = select(Attempt).where(Attempt.provider_message_id == provider_message_id)
        if provider:
            query = query.where(Attempt.provider == provider)
        return (await session.execute(query.limit(1))).scalar_one_or_none()
    return None


async def move_attempt_forward(
    session: AsyncSession,
    attempt_id: str,
    *,
    status: str,
    reason: str | None,
    allowed_from: Sequence[str],
    now: datetime,
) -> bool:
    """Set an attempt's status if its current one ranks lower: late or repeated reports change nothing."""
    result = await session.execute(
        update(ATTEMPTS)
        .where(ATTEMPTS.c.id == attempt_id, ATTEMPTS.c.status.in_(allowed_from))
        .values(status=status, status_reason=reason, updated_at=now)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def add_unusable_address(session: AsyncSession, debtor_id: str, address: str, *, now: datetime) -> None:
    """Remember that an address bounced or returned mail, so later decisions avoid it."""
    debtor = await session.get(Debtor, debtor_id, with_for_update=True)
    if debtor is None:
        return
    unusable = list(debtor.unusable_addresses or [])
    if address not in unusable:
        unusable.append(address)
        await session.execute(
            update(DEBTORS)
            .where(DEBTORS.c.id == debtor_id)
            .values(unusable_addresses=unusable, updated_at=now)
        )


def _postal_key(address: dict[str, Any]) -> tuple[Any, ...]:
    return (
        tuple(address.get("lines") or ()),
        address.get("postal_code"),
        address.get("city"),
        address.get("country", "NO"),
    )


async def add_registry_address(
    session: AsyncSession, debtor_id: str, address: dict[str, Any], *, now: datetime
) -> bool:
    """Remember an address a registry (or Posten) gave for the debtor, with its provenance (``source``,
    ``found_at``), newest first; the same address is stored once. True if it was new."""
    debtor = await session.get(Debtor, debtor_id, with_for_update=True)
    if debtor is None:
        return False
    found = list(debtor.registry_addresses or [])
    if any(_postal_key(item) == _postal_key(address) for item in found):
        return False
    found.insert(0, dict(address))
    await session.execute(
        update(DEBTORS).where(DEBTORS.c.id == debtor_id).values(registry_addresses=found, updated_at=now)
    )
    return True


# ---- returned letters and operator tasks ----


async def returned_letter_claimed(session: AsyncSession, attempt_id: str) -> bool:
    return (await session.get(ReturnedLetter, attempt_id)) is not None


async def claim_returned_letter(
    session: AsyncSession, attempt_id: str, *, contact_id: str, now: datetime
) -> bool:
    """Claim a returned letter for handling: True only for the first caller (a second run does nothing)."""
    result = await session.execute(
        _insert(session, ReturnedLetter)
        .values(attempt_id=attempt_id, contact_id=contact_id, outcome=None, created_at=now)
        .on_conflict_do_nothing(index_elements=[ReturnedLetter.attempt_id])
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def set_returned_letter_outcome(session: AsyncSession, attempt_id: str, outcome: str) -> None:
    await session.execute(
        update(cast(Table, ReturnedLetter.__table__))
        .where(ReturnedLetter.attempt_id == attempt_id)
        .values(outcome=outcome)
    )


async def returned_event_detail(session: AsyncSession, attempt_id: str) -> dict[str, Any]:
    """The detail of the latest ``returned`` carrier event for an attempt (``new_address`` from Posten)."""
    rows = await session.execute(
        select(CarrierEvent.payload)
        .where(CarrierEvent.attempt_id == attempt_id)
        .order_by(CarrierEvent.id.desc())
    )
    for (payload,) in rows:
        event = (payload or {}).get("event") or {}
        if event.get("status") == "returned":
            return dict(event.get("detail") or {})
    return {}


async def count_returned_attempts(session: AsyncSession, contact_id: str, channel: str) -> int:
    found = await session.execute(
        select(func.count())
        .select_from(Attempt)
        .where(Attempt.contact_id == contact_id, Attempt.channel == channel, Attempt.status == "returned")
    )
    return int(found.scalar_one())


async def reopen_returned_contact(
    session: AsyncSession, contact_id: str, *, reason: str, now: datetime
) -> bool:
    """``returned`` -> ``queued``: the one deliberate step back, a new delivery of the same contact to a new
    address. Conditional, so it happens once."""
    return await set_contact_status(
        session,
        contact_id,
        status="queued",
        reason=reason,
        expected=("returned",),
        now=now,
        send_at=None,
    )


async def insert_operator_task(session: AsyncSession, row: dict[str, Any]) -> str:
    task_id = new_id()
    await session.execute(
        _insert(session, OperatorTask), [{"id": task_id, "resolved_at": None, "detail": {}, **row}]
    )
    return task_id


async def operator_tasks(session: AsyncSession, *, debtor_id: str | None = None) -> list[OperatorTask]:
    query = select(OperatorTask)
    if debtor_id is not None:
        query = query.where(OperatorTask.debtor_id == debtor_id)
    return list((await session.execute(query.order_by(OperatorTask.id))).scalars())


# ---- self-service links ----


async def insert_chat_link(session: AsyncSession, row: dict[str, Any]) -> None:
    await session.execute(_insert(session, ChatLink), [row])


async def find_chat_link(session: AsyncSession, token_hash: str) -> ChatLink | None:
    found = await session.execute(select(ChatLink).where(ChatLink.token_hash == token_hash))
    return found.scalar_one_or_none()


async def record_chat_link_open(session: AsyncSession, link_id: str, *, now: datetime) -> None:
    await session.execute(
        update(CHAT_LINKS)
        .where(CHAT_LINKS.c.id == link_id)
        .values(opened_count=CHAT_LINKS.c.opened_count + 1, last_opened_at=now)
    )


async def revoke_case_links(session: AsyncSession, case_id: str, *, now: datetime) -> int:
    result = await session.execute(
        update(CHAT_LINKS)
        .where(CHAT_LINKS.c.case_id == case_id, CHAT_LINKS.c.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


# ---- maintenance (tests, demo) ----


async def count_by_status(session: AsyncSession) -> dict[str, int]:
    rows = await session.execute(select(Contact.status, func.count()).group_by(Contact.status))
    return {status: count for status, count in rows}


async def delete_everything(session: AsyncSession) -> None:
    """Empty every table (tests only): children first."""
    for table in reversed(Base.metadata.sorted_tables):
        await session.execute(delete(table))
