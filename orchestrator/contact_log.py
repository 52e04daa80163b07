"""The contact log store: every SQL statement the orchestrator runs lives here.

Callers (HTTP handlers, jobs) own the transaction; these functions only read and write within it. Status
changes are conditional updates (``WHERE status IN (...)``) so that concurrent workers, late callbacks and
operator actions never move a contact backwards or send it twice.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, and_, delete, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from orchestrator import search_terms
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
    DebtorSearchTerm,
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


# For the other stores: an INSERT that knows ON CONFLICT on both backends.
dialect_insert = _insert


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
    # render_nulls: every row is one statement shape, so a batch goes out as one executemany; without it the
    # ORM groups rows by which columns are None (a national id here, none there) and sends many statements
    stmt = stmt.execution_options(render_nulls=True)
    for chunk in _chunks(rows):
        # ``ref`` is only taken on insert: a debtor keeps the one it got first
        await session.execute(stmt, [{"ref": new_id(), **row} for row in chunk])
        ids = [row["id"] for row in chunk]
        await session.execute(delete(DebtorSearchTerm).where(DebtorSearchTerm.debtor_id.in_(ids)))
        terms = search_terms.rows_for(chunk)
        if terms:
            await session.execute(_insert(session, DebtorSearchTerm).on_conflict_do_nothing(), terms)


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
    ).execution_options(render_nulls=True)
    for chunk in _chunks(rows):
        await session.execute(stmt, list(chunk))


async def insert_contacts(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    """Insert new contacts; a key that a concurrent request already took is skipped, not an error."""
    if not rows:
        return
    stmt = (
        _insert(session, Contact)
        .on_conflict_do_nothing(index_elements=[Contact.idempotency_key])
        .execution_options(render_nulls=True)
    )
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
            # Rows this session already holds may have been changed by Core updates since: read them anew.
            .execution_options(populate_existing=True)
        )
    ).first()
    return (row[0], row[1], row[2]) if row else None


# ---- what the policy needs to know of the past (R6 pressure cap, R10 fees, fallback) ----

# An attempt that may have reached the debtor (in flight counts: another worker may be sending it now).
REACHING = ("sending", "sent", "delivered", "read")


async def reach_times(
    session: AsyncSession,
    debtor_id: str,
    *,
    since: datetime,
    exclude_contact_id: str,
    exclude_kinds: Sequence[str] = (),
) -> list[datetime]:
    """When this debtor was reached (or is being reached) since ``since``: any case, any upstream system."""
    query = (
        select(Attempt.created_at)
        .join(Contact, Contact.id == Attempt.contact_id)
        .where(
            Contact.debtor_id == debtor_id,
            Contact.id != exclude_contact_id,
            Attempt.status.in_(REACHING),
            Attempt.created_at >= since,
        )
    )
    if exclude_kinds:
        query = query.where(Contact.kind.not_in(exclude_kinds))
    return list((await session.execute(query)).scalars())


async def fee_contacts_sent(session: AsyncSession, case_id: str, *, exclude_contact_id: str) -> int:
    """Fee-bearing messages already sent for this claim (R10): decided with ``carries_fee`` and sent."""
    found = await session.execute(
        select(Contact.decision).where(
            Contact.case_id == case_id,
            Contact.id != exclude_contact_id,
            Contact.status.in_(("sent", "delivered", "read")),
        )
    )
    return sum(1 for d in found.scalars() if d and (d.get("inputs") or {}).get("carries_fee"))


async def add_tried_channel(
    session: AsyncSession, contact_id: str, channel: str, *, now: datetime
) -> list[str]:
    """Remember that ``channel`` failed for this contact (fallback chains); returns the channels tried."""
    contact = await session.get(Contact, contact_id, with_for_update=True)
    if contact is None:
        return []
    tried = list(contact.tried_channels or [])
    if channel not in tried:
        tried.append(channel)
        await session.execute(
            update(CONTACTS).where(CONTACTS.c.id == contact_id).values(tried_channels=tried, updated_at=now)
        )
    return tried


async def response_counts(
    session: AsyncSession,
    *,
    debtor_type: str,
    kind: str,
    since: datetime,
    now: datetime,
    window_days: int,
    responses: Sequence[str],
    sample: int = 5000,
) -> dict[str, tuple[int, int]]:
    """Per channel, for comparable contacts (same debtor type and kind, sent since ``since``, the newest
    ``sample``): how many were followed within ``window_days`` by a response on their case (a payment, a
    plan, a dispute), and how many there were. What the ranking learns from (outcomes, not opens). Only
    contacts whose window has closed by ``now`` count: a young one has not had its chance to be answered."""
    sent = (
        await session.execute(
            select(Contact.channel, Contact.send_at, Contact.case_id)
            .join(Debtor, Debtor.id == Contact.debtor_id)
            .where(
                Debtor.type == debtor_type,
                Contact.kind == kind,
                Contact.status.in_(("sent", "delivered", "read")),
                Contact.send_at >= since,
                Contact.send_at <= now - timedelta(days=window_days),
            )
            .order_by(Contact.send_at.desc())
            .limit(sample)
        )
    ).all()
    if not sent:
        return {}
    case_ids = sorted({row[2] for row in sent})
    events: dict[str, list[datetime]] = {}
    for chunk in _chunks(case_ids):
        found = await session.execute(
            select(CaseEvent.case_id, CaseEvent.at).where(
                CaseEvent.case_id.in_(chunk), CaseEvent.type.in_(responses), CaseEvent.at >= since
            )
        )
        for case_id, at in found.all():
            events.setdefault(case_id, []).append(at)
    window = timedelta(days=window_days)
    out: dict[str, tuple[int, int]] = {}
    for channel, send_at, case_id in sent:
        if channel is None or send_at is None:
            continue
        start = send_at
        hit = any(start <= at <= start + window for at in events.get(case_id, ()))
        responded, total = out.get(channel, (0, 0))
        out[channel] = (responded + int(hit), total + 1)
    return out


async def lock_debtor(session: AsyncSession, debtor_id: str) -> None:
    """Serialise claims for one debtor across workers (a PostgreSQL row lock; SQLite write transactions are
    serial already), so two workers cannot both take the last place under the pressure cap."""
    if session.get_bind().dialect.name != "sqlite":
        await session.execute(select(Debtor.id).where(Debtor.id == debtor_id).with_for_update())


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


@dataclass(frozen=True)
class CapCheck:
    """R6 inside the claim: at most ``max_per_day`` contacts since ``day_start`` and ``max_per_7_days``
    since ``week_start`` may have reached the debtor (kinds in ``exempt_kinds`` not counted)."""

    debtor_id: str
    day_start: datetime
    week_start: datetime
    max_per_day: int
    max_per_7_days: int
    exempt_kinds: Sequence[str] = ()


def _reached_since(cap: CapCheck, since: datetime, strict: bool) -> Any:
    other = CONTACTS.alias("other")
    query = (
        select(func.count())
        .select_from(ATTEMPTS.join(other, other.c.id == ATTEMPTS.c.contact_id))
        .where(
            other.c.debtor_id == cap.debtor_id,
            ATTEMPTS.c.status.in_(REACHING),
            ATTEMPTS.c.created_at > since if strict else ATTEMPTS.c.created_at >= since,
        )
    )
    if cap.exempt_kinds:
        query = query.where(other.c.kind.not_in(cap.exempt_kinds))
    return query.scalar_subquery()


async def claim_for_sending(
    session: AsyncSession,
    contact_id: str,
    *,
    now: datetime,
    case_id: str | None = None,
    case_statuses: Sequence[str] = ("open",),
    cap: CapCheck | None = None,
    **values: Any,
) -> bool:
    """queued/scheduled -> sending, counted as one more try. Committed before any carrier is called.

    One conditional statement, so the legal guard holds at the moment of the claim: with ``case_id`` the case
    must still be open, or in ``case_statuses`` (a dispute or bankruptcy that arrived since the decision wins,
    R4/R8, except for the messages about the hold itself); with ``cap``
    the pressure cap must still allow one more (another worker may have reached the debtor meanwhile, R6).
    On PostgreSQL the caller locks the debtor row first (:func:`lock_debtor`); SQLite writes are serial."""
    conditions = [CONTACTS.c.id == contact_id, CONTACTS.c.status.in_(OPEN_STATUSES)]
    if case_id is not None:
        conditions.append(
            select(CASES.c.id).where(CASES.c.id == case_id, CASES.c.status.in_(case_statuses)).exists()
        )
    if cap is not None:
        conditions.append(_reached_since(cap, cap.day_start, strict=False) < cap.max_per_day)
        conditions.append(_reached_since(cap, cap.week_start, strict=True) < cap.max_per_7_days)
    result = await session.execute(
        update(CONTACTS)
        .where(*conditions)
        .values(
            status="sending",
            status_reason=None,
            updated_at=now,
            send_tries=CONTACTS.c.send_tries + 1,
            **values,
        )
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def claimable(session: AsyncSession, contact_id: str) -> bool:
    """Still waiting to be sent (after a refused claim: the guard said no, not another worker)."""
    found = await session.execute(select(Contact.status).where(Contact.id == contact_id))
    return found.scalar_one_or_none() in OPEN_STATUSES


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
    except_kinds: Sequence[str] = (),
) -> list[str]:
    """Move every contact of a case in ``from_statuses`` at once (a dispute holds them all), but those of
    ``except_kinds``.

    Returns the ids of the contacts moved."""
    conditions = [Contact.case_id == case_id, Contact.status.in_(from_statuses)]
    if except_kinds:
        conditions.append(Contact.kind.not_in(except_kinds))
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


async def add_opt_out(
    session: AsyncSession, debtor_id: str, reach: str, *, source: str, now: datetime
) -> bool:
    """The debtor wants no more non-statutory messages on this reach ("mobile", "email"). True if new."""
    debtor = await session.get(Debtor, debtor_id, with_for_update=True)
    if debtor is None:
        return False
    current = list(debtor.opted_out or [])
    if any(item.get("reach") == reach for item in current):
        return False
    current.append({"reach": reach, "source": source, "at": now.isoformat()})
    await session.execute(
        update(DEBTORS).where(DEBTORS.c.id == debtor_id).values(opted_out=current, updated_at=now)
    )
    return True


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


async def count_attempts_with_reason(session: AsyncSession, contact_id: str, reason: str) -> int:
    found = await session.execute(
        select(func.count())
        .select_from(Attempt)
        .where(Attempt.contact_id == contact_id, Attempt.status_reason == reason)
    )
    return int(found.scalar_one())


async def latest_attempt_id(session: AsyncSession, contact_id: str) -> str | None:
    found = await session.execute(
        select(Attempt.id).where(Attempt.contact_id == contact_id).order_by(Attempt.id.desc()).limit(1)
    )
    return found.scalar_one_or_none()


async def reschedule_bounced_contact(
    session: AsyncSession, contact_id: str, *, reason: str, send_at: datetime, now: datetime
) -> bool:
    """``sent`` -> ``scheduled``: a soft-bounced e-mail is delivered again later, the same contact (the
    carrier gave up, so nothing is in flight). Conditional, so it happens once per bounce."""
    return await set_contact_status(
        session,
        contact_id,
        status="scheduled",
        reason=reason,
        expected=("sending", "sent"),
        now=now,
        send_at=send_at,
    )


async def returned_contacts(session: AsyncSession, case_id: str) -> list[Contact]:
    """The case's contacts whose letter came back and that were not sent again."""
    found = await session.execute(
        select(Contact).where(Contact.case_id == case_id, Contact.status == "returned").order_by(Contact.id)
    )
    return list(found.scalars())


async def revoke_link(session: AsyncSession, link_id: str, *, now: datetime) -> None:
    await session.execute(
        update(ChatLink).where(ChatLink.id == link_id, ChatLink.revoked_at.is_(None)).values(revoked_at=now)
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


# ---- reconciliation ----


async def reconciliation_candidates(
    session: AsyncSession, *, status: str, channels: Sequence[str], before: datetime, limit: int
) -> list[tuple[Attempt, str, str]]:
    """(attempt, debtor id, case id) of contacts in ``status`` (``sending`` or ``sent``) on ``channels`` whose
    attempt in that status neither moved nor was asked about since ``before``: least recently touched
    first, so that a bounded sweep reaches every one in turn. One attempt per contact."""
    if not channels or limit <= 0:
        return []
    rows = await session.execute(
        select(Attempt, Contact.debtor_id, Contact.case_id)
        .join(Contact, Contact.id == Attempt.contact_id)
        .where(
            Contact.status == status,
            Contact.updated_at < before,
            Attempt.status == status,
            Attempt.channel.in_(channels),
            Attempt.updated_at < before,
        )
        .order_by(Attempt.updated_at, Attempt.id)
        .limit(limit)
    )
    found: dict[str, tuple[Attempt, str, str]] = {}
    for attempt, debtor_id, case_id in rows:
        found.setdefault(attempt.contact_id, (attempt, debtor_id, case_id))
    return list(found.values())


async def mark_attempt_asked(
    session: AsyncSession,
    attempt_id: str,
    *,
    now: datetime,
    provider: str | None = None,
    provider_message_id: str | None = None,
) -> None:
    """The carrier was asked about this attempt now (it is asked again only after another timeout). The
    carrier's id, when it named one, fills an attempt whose send was never answered."""
    await session.execute(update(ATTEMPTS).where(ATTEMPTS.c.id == attempt_id).values(updated_at=now))
    if provider is not None and provider_message_id is not None:
        await session.execute(
            update(ATTEMPTS)
            .where(ATTEMPTS.c.id == attempt_id, ATTEMPTS.c.provider_message_id.is_(None))
            .values(provider=provider, provider_message_id=provider_message_id)
        )


async def mark_contact_reconciled(
    session: AsyncSession, contact_id: str, *, status: str, now: datetime
) -> bool:
    """A carrier report for the contact is recorded and on its way to the worker: the contact counts as
    looked after now, so the sweeper does not flag it while the report is applied."""
    result = await session.execute(
        update(CONTACTS)
        .where(CONTACTS.c.id == contact_id, CONTACTS.c.status == status)
        .values(updated_at=now)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


# ---- inbound replies ----


async def debtors_texted_at(
    session: AsyncSession, number: str, *, limit: int = 20
) -> list[tuple[Debtor, Attempt, str]]:
    """The debtors we sent a message to at ``number`` (E.164, the address SMS and chat-link attempts store),
    each with our latest attempt to that number and its case id, the most recently texted first.

    Searching ``debtors.contact_points`` for the number would take JSON containment, which differs per
    database; the attempts' ``address`` is a plain equality on PostgreSQL and SQLite alike, and it finds the
    message being answered."""
    newest = func.max(Attempt.id)
    latest = await session.execute(
        select(newest)
        .join(Contact, Contact.id == Attempt.contact_id)
        .where(Attempt.address == number)
        .group_by(Contact.debtor_id)
        .order_by(newest.desc())
        .limit(limit)
    )
    attempt_ids = [row[0] for row in latest]
    if not attempt_ids:
        return []
    rows = await session.execute(
        select(Debtor, Attempt, Contact.case_id)
        .join(Contact, Contact.id == Attempt.contact_id)
        .join(Debtor, Debtor.id == Contact.debtor_id)
        .where(Attempt.id.in_(attempt_ids))
        .order_by(Attempt.id.desc())
    )
    return [(debtor, attempt, case_id) for debtor, attempt, case_id in rows]


# ---- self-service commitments ----


async def latest_self_service_event(session: AsyncSession, case_id: str, type: str) -> CaseEvent | None:
    """The newest case event of ``type`` that the debtor recorded on the self-service page."""
    rows = await session.scalars(
        select(CaseEvent)
        .where(CaseEvent.case_id == case_id, CaseEvent.type == type)
        .order_by(CaseEvent.id.desc())
    )
    # The source is inside the JSON data; a case has few events of one type, so it is filtered here.
    return next((e for e in rows if (e.data or {}).get("source") == "self_service"), None)
