"""The SQL behind the console's debtor, contact and preview pages (read only). What the contact log's own
store already answers (a contact, its attempts and their events, a case) is taken from
:mod:`orchestrator.contact_log`; this module adds what only these pages ask."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from orchestrator.models import Attempt, Case, Contact, Debtor, OperatorTask, TimelineEvent


async def debtor_by_ref(session: AsyncSession, ref: str) -> Debtor | None:
    """A debtor by our own opaque reference (what the console's URLs carry)."""
    found = await session.execute(select(Debtor).where(Debtor.ref == ref))
    return found.scalar_one_or_none()


async def debtor_by_id(session: AsyncSession, debtor_id: str) -> Debtor | None:
    return await session.get(Debtor, debtor_id)


async def cases_of(session: AsyncSession, debtor_id: str) -> list[Case]:
    found = await session.execute(select(Case).where(Case.debtor_id == debtor_id).order_by(Case.created_at))
    return list(found.scalars())


async def contacts_of(session: AsyncSession, debtor_id: str, *, limit: int) -> tuple[list[Contact], int]:
    """The debtor's newest ``limit`` contacts and how many there are in all."""
    found = await session.execute(
        select(Contact).where(Contact.debtor_id == debtor_id).order_by(Contact.id.desc()).limit(limit)
    )
    total = await session.execute(
        select(func.count()).select_from(Contact).where(Contact.debtor_id == debtor_id)
    )
    return list(found.scalars()), int(total.scalar_one())


async def open_tasks_of(session: AsyncSession, debtor_id: str) -> list[OperatorTask]:
    found = await session.execute(
        select(OperatorTask)
        .where(OperatorTask.debtor_id == debtor_id, OperatorTask.resolved_at.is_(None))
        .order_by(OperatorTask.id)
    )
    return list(found.scalars())


async def timeline_page(
    session: AsyncSession, debtor_id: str, *, after_id: str | None, limit: int
) -> tuple[list[TimelineEvent], bool]:
    """Up to ``limit`` timeline entries, oldest first, after ``after_id``; and whether more follow."""
    query = select(TimelineEvent).where(TimelineEvent.debtor_id == debtor_id)
    if after_id is not None:
        query = query.where(TimelineEvent.id > after_id)
    found = list((await session.execute(query.order_by(TimelineEvent.id).limit(limit + 1))).scalars())
    return found[:limit], len(found) > limit


async def attempt_with_contact(session: AsyncSession, attempt_id: str) -> tuple[Attempt, Contact] | None:
    found = (
        await session.execute(
            select(Attempt, Contact)
            .join(Contact, Contact.id == Attempt.contact_id)
            .where(Attempt.id == attempt_id)
        )
    ).first()
    return None if found is None else (found[0], found[1])
