"""The SQL behind the console's actions and its task queue (:mod:`orchestrator.console.actions`,
:mod:`orchestrator.console.tasks`).

The handlers own the transaction. Every change here is a conditional update on the state the operator saw
(``WHERE status = ...``, ``WHERE resolved_at IS NULL``), so two operators acting at once, or an operator and
the worker, never both win: the loser changes nothing and is told so.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from orchestrator.models import Attempt, Case, Contact, Debtor, OperatorTask
from orchestrator.policy.decide import format_address

CONTACTS = cast(Table, Contact.__table__)
ATTEMPTS = cast(Table, Attempt.__table__)
CASES = cast(Table, Case.__table__)
DEBTORS = cast(Table, Debtor.__table__)
TASKS = cast(Table, OperatorTask.__table__)


# ---- debtors and cases ----


async def debtor_by_ref(session: AsyncSession, ref: str) -> Debtor | None:
    found = await session.execute(select(Debtor).where(Debtor.ref == ref))
    return found.scalar_one_or_none()


async def debtor_ref(session: AsyncSession, debtor_id: str) -> str | None:
    found = await session.execute(select(Debtor.ref).where(Debtor.id == debtor_id))
    return found.scalar_one_or_none()


async def lock_case(session: AsyncSession, case_id: str) -> Case | None:
    """The case as it is now, locked until the commit: a second operator acting on the same case waits and
    then sees the first one's change (PostgreSQL row lock; SQLite write transactions are serial already)."""
    query = select(Case).where(Case.id == case_id).execution_options(populate_existing=True)
    if session.get_bind().dialect.name != "sqlite":
        query = query.with_for_update()
    return (await session.execute(query)).scalar_one_or_none()


async def get_contact(session: AsyncSession, contact_id: str) -> Contact | None:
    query = select(Contact).where(Contact.id == contact_id).execution_options(populate_existing=True)
    return (await session.execute(query)).scalar_one_or_none()


# ---- retry and settlement ----


async def reopen_for_retry(
    session: AsyncSession,
    contact_id: str,
    *,
    expected_status: str,
    reason: str,
    tried_channels: list[str] | None,
    now: datetime,
) -> bool:
    """``expected_status`` (a terminal failure) -> ``queued`` for a fresh decision, only while the contact is
    still in that status and its case is open. True for exactly one caller."""
    case_open = select(CASES.c.id).where(CASES.c.id == CONTACTS.c.case_id, CASES.c.status == "open").exists()
    result = await session.execute(
        update(CONTACTS)
        .where(CONTACTS.c.id == contact_id, CONTACTS.c.status == expected_status, case_open)
        .values(
            status="queued",
            status_reason=reason,
            send_at=None,
            # a fresh budget of carrier tries; the attempts already made stay as they are
            send_tries=0,
            tried_channels=tried_channels,
            updated_at=now,
        )
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def settle_contact(
    session: AsyncSession,
    contact_id: str,
    *,
    from_status: str,
    from_reasons: Sequence[str],
    to_status: str,
    reason: str,
    now: datetime,
    **values: Any,
) -> bool:
    """Settle a contact that waits for an operator: only while it is still ``from_status`` for one of
    ``from_reasons`` (a carrier report or another operator may have settled it meanwhile)."""
    result = await session.execute(
        update(CONTACTS)
        .where(
            CONTACTS.c.id == contact_id,
            CONTACTS.c.status == from_status,
            CONTACTS.c.status_reason.in_(from_reasons),
        )
        .values(status=to_status, status_reason=reason, updated_at=now, **values)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def settle_attempts(
    session: AsyncSession, contact_id: str, *, from_status: str, to_status: str, reason: str, now: datetime
) -> list[str]:
    """Move the contact's attempts in ``from_status`` to ``to_status``; returns their ids."""
    ids = [
        r[0]
        for r in await session.execute(
            select(Attempt.id)
            .where(Attempt.contact_id == contact_id, Attempt.status == from_status)
            .order_by(Attempt.id)
        )
    ]
    if ids:
        await session.execute(
            update(ATTEMPTS)
            .where(ATTEMPTS.c.id.in_(ids), ATTEMPTS.c.status == from_status)
            .values(status=to_status, status_reason=reason, updated_at=now)
        )
    return ids


# ---- addresses ----


async def put_address_first(
    session: AsyncSession, debtor_id: str, address: dict[str, Any], *, now: datetime
) -> bool:
    """Store an address on the debtor (with its provenance) as the newest, ahead of every other: the policy
    takes the first usable one, so the next letter goes to it. The same postal address stored before is
    replaced, not repeated. False if the debtor is gone."""
    debtor = await session.get(Debtor, debtor_id, with_for_update=True, populate_existing=True)
    if debtor is None:
        return False
    key = format_address(address)
    kept = [item for item in debtor.registry_addresses or [] if format_address(item) != key]
    await session.execute(
        update(DEBTORS)
        .where(DEBTORS.c.id == debtor_id)
        .values(registry_addresses=[dict(address), *kept], updated_at=now)
    )
    return True


async def returned_contacts_in_open_cases(session: AsyncSession, debtor_id: str) -> list[Contact]:
    """The debtor's contacts whose letter came back and was not sent again, in cases still open."""
    found = await session.execute(
        select(Contact)
        .join(Case, Case.id == Contact.case_id)
        .where(Contact.debtor_id == debtor_id, Contact.status == "returned", Case.status == "open")
        .order_by(Contact.id)
    )
    return list(found.scalars())


# ---- operator tasks ----


@dataclass(frozen=True)
class TaskRow:
    """A task with what the queue shows beside it."""

    task: OperatorTask
    debtor_name: str | None
    debtor_ref: str | None
    creditor_name: str | None


async def get_task(session: AsyncSession, task_id: str) -> OperatorTask | None:
    query = select(OperatorTask).where(OperatorTask.id == task_id).execution_options(populate_existing=True)
    return (await session.execute(query)).scalar_one_or_none()


async def resolve_task(
    session: AsyncSession, task_id: str, *, resolution: dict[str, Any], now: datetime
) -> bool:
    """Close a task once: True for the first operator, False if it was already resolved."""
    result = await session.execute(
        update(TASKS)
        .where(TASKS.c.id == task_id, TASKS.c.resolved_at.is_(None))
        .values(resolved_at=now, resolution=resolution)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def open_task_counts(session: AsyncSession) -> dict[str, int]:
    rows = await session.execute(
        select(OperatorTask.kind, func.count())
        .where(OperatorTask.resolved_at.is_(None))
        .group_by(OperatorTask.kind)
    )
    return {kind: int(count) for kind, count in rows}


def _with_names() -> Any:
    return (
        select(OperatorTask, Debtor.name, Debtor.ref, Case.creditor_name)
        .outerjoin(Debtor, Debtor.id == OperatorTask.debtor_id)
        .outerjoin(Case, Case.id == OperatorTask.case_id)
    )


async def open_tasks(
    session: AsyncSession, *, kind: str | None, after_id: str | None, limit: int
) -> list[TaskRow]:
    """Open tasks, oldest first (ids are time-ordered), from after ``after_id``."""
    query = _with_names().where(OperatorTask.resolved_at.is_(None))
    if kind is not None:
        query = query.where(OperatorTask.kind == kind)
    if after_id is not None:
        query = query.where(OperatorTask.id > after_id)
    rows = await session.execute(query.order_by(OperatorTask.id).limit(limit))
    return [TaskRow(task, name, ref, creditor) for task, name, ref, creditor in rows]


async def resolved_tasks(session: AsyncSession, *, kind: str | None, limit: int) -> list[TaskRow]:
    """The most recently resolved tasks, newest resolution first (the index on (resolved_at, id))."""
    query = _with_names().where(OperatorTask.resolved_at.is_not(None))
    if kind is not None:
        query = query.where(OperatorTask.kind == kind)
    rows = await session.execute(
        query.order_by(OperatorTask.resolved_at.desc(), OperatorTask.id.desc()).limit(limit)
    )
    return [TaskRow(task, name, ref, creditor) for task, name, ref, creditor in rows]
