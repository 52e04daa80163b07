"""The console's own SQL: operators, sessions, saved searches and the access log."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from orchestrator.models import ConsoleAudit, ConsoleSearch, ConsoleSession, Operator, new_id

# ---- operators ----


async def get_operator_by_username(session: AsyncSession, username: str) -> Operator | None:
    rows = await session.execute(select(Operator).where(Operator.username == username))
    return rows.scalar_one_or_none()


async def insert_operator(session: AsyncSession, row: dict[str, Any]) -> None:
    session.add(Operator(**row))
    await session.flush()


async def update_operator(session: AsyncSession, operator_id: str, **values: Any) -> None:
    await session.execute(update(Operator).where(Operator.id == operator_id).values(**values))


async def list_operators(session: AsyncSession) -> list[Operator]:
    rows = await session.execute(select(Operator).order_by(Operator.username))
    return list(rows.scalars())


# ---- sessions ----


async def insert_session(session: AsyncSession, row: dict[str, Any]) -> None:
    session.add(ConsoleSession(**row))
    await session.flush()


async def load_session(
    session: AsyncSession, session_id: str, now: datetime
) -> tuple[ConsoleSession, Operator] | None:
    """The live session and its enabled operator; ``None`` when expired, revoked, idle or disabled."""
    rows = await session.execute(
        select(ConsoleSession, Operator)
        .join(Operator, Operator.id == ConsoleSession.operator_id)
        .where(
            ConsoleSession.id == session_id,
            ConsoleSession.revoked_at.is_(None),
            ConsoleSession.expires_at > now,
            Operator.disabled_at.is_(None),
        )
    )
    row = rows.first()
    return None if row is None else (row[0], row[1])


async def touch_session(session: AsyncSession, session_id: str, now: datetime) -> None:
    await session.execute(
        update(ConsoleSession).where(ConsoleSession.id == session_id).values(last_seen_at=now)
    )


async def revoke_session(session: AsyncSession, session_id: str, now: datetime) -> None:
    await session.execute(
        update(ConsoleSession)
        .where(ConsoleSession.id == session_id, ConsoleSession.revoked_at.is_(None))
        .values(revoked_at=now)
    )


async def revoke_operator_sessions(session: AsyncSession, operator_id: str, now: datetime) -> None:
    await session.execute(
        update(ConsoleSession)
        .where(ConsoleSession.operator_id == operator_id, ConsoleSession.revoked_at.is_(None))
        .values(revoked_at=now)
    )


# ---- saved searches ----


async def insert_search(
    session: AsyncSession,
    *,
    search_id: str,
    operator_id: str,
    criteria: dict[str, Any],
    now: datetime,
    keep: timedelta,
) -> None:
    # searches older than ``keep`` are gone: their URLs stop working, nothing else refers to them
    await session.execute(delete(ConsoleSearch).where(ConsoleSearch.created_at < now - keep))
    session.add(ConsoleSearch(id=search_id, operator_id=operator_id, criteria=criteria, created_at=now))
    await session.flush()


async def get_search(session: AsyncSession, search_id: str, operator_id: str) -> ConsoleSearch | None:
    rows = await session.execute(
        select(ConsoleSearch).where(ConsoleSearch.id == search_id, ConsoleSearch.operator_id == operator_id)
    )
    return rows.scalar_one_or_none()


# ---- the access log ----


async def audit(
    session: AsyncSession,
    *,
    operator_id: str | None,
    action: str,
    now: datetime,
    debtor_id: str | None = None,
    detail: dict[str, Any] | None = None,
) -> None:
    session.add(
        ConsoleAudit(
            id=new_id(),
            operator_id=operator_id,
            at=now,
            action=action,
            debtor_id=debtor_id,
            detail=detail or {},
        )
    )
    await session.flush()


async def audit_page(
    session: AsyncSession, *, before_id: str | None, limit: int
) -> list[tuple[ConsoleAudit, str | None]]:
    query = select(ConsoleAudit, Operator.username).outerjoin(
        Operator, Operator.id == ConsoleAudit.operator_id
    )
    if before_id is not None:
        query = query.where(ConsoleAudit.id < before_id)
    rows = await session.execute(query.order_by(ConsoleAudit.id.desc()).limit(limit))
    return [(row[0], row[1]) for row in rows]
