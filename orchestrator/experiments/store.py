"""All SQL for experiments: specs, assignments (one per debtor and experiment), exposures and outcomes."""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from orchestrator.contact_log import dialect_insert as _insert
from orchestrator.experiments.report import Exposure, OutcomeEvent
from orchestrator.experiments.spec import OUTCOMES
from orchestrator.models import CaseEvent, Experiment, ExperimentAssignment, new_id

EXPERIMENTS = cast(Table, Experiment.__table__)
ASSIGNMENTS = cast(Table, ExperimentAssignment.__table__)
OUTCOME_TYPES = sorted({t for types in OUTCOMES.values() for t in types})


async def insert_experiment(session: AsyncSession, *, spec: dict[str, Any], name: str, now: datetime) -> bool:
    """False when an experiment with this id exists already (ids are never reused: reports refer to them)."""
    stmt = (
        _insert(session, Experiment)
        .values(id=spec["id"], name=name, status="running", spec=spec, created_at=now, updated_at=now)
        .on_conflict_do_nothing(index_elements=[Experiment.id])
    )
    result = await session.execute(stmt)
    return bool(getattr(result, "rowcount", 0))


async def get_experiment(session: AsyncSession, experiment_id: str) -> Experiment | None:
    return await session.get(Experiment, experiment_id)


async def list_experiments(session: AsyncSession, status: str | None = None) -> list[Experiment]:
    stmt = select(Experiment).order_by(Experiment.created_at.desc(), Experiment.id)
    if status is not None:
        stmt = stmt.where(Experiment.status == status)
    return list((await session.scalars(stmt)).all())


async def stop_experiment(session: AsyncSession, experiment_id: str, now: datetime) -> bool:
    result = await session.execute(
        update(Experiment)
        .where(Experiment.id == experiment_id, Experiment.status == "running")
        .values(status="stopped", stopped_at=now, updated_at=now)
    )
    return bool(getattr(result, "rowcount", 0))


async def get_assignment(
    session: AsyncSession, experiment_id: str, debtor_id: str
) -> ExperimentAssignment | None:
    return cast(
        ExperimentAssignment | None,
        await session.scalar(
            select(ExperimentAssignment).where(
                ExperimentAssignment.experiment_id == experiment_id,
                ExperimentAssignment.debtor_id == debtor_id,
            )
        ),
    )


async def insert_assignment(
    session: AsyncSession, *, experiment_id: str, debtor_id: str, detail: dict[str, Any], now: datetime
) -> None:
    """Keeps the first assignment when two workers assign the same debtor at once (unique per experiment)."""
    stmt = (
        _insert(session, ExperimentAssignment)
        .values(
            id=new_id(),
            experiment_id=experiment_id,
            debtor_id=debtor_id,
            arm=detail["arm"],
            variant=detail["variant"],
            holdout=bool(detail["holdout"]),
            detail=detail,
            assigned_at=now,
        )
        .on_conflict_do_nothing(
            index_elements=[ExperimentAssignment.experiment_id, ExperimentAssignment.debtor_id]
        )
    )
    await session.execute(stmt)


async def mark_exposed(
    session: AsyncSession,
    *,
    experiment_id: str,
    debtor_id: str,
    contact_id: str,
    case_id: str,
    channel: str | None,
    now: datetime,
) -> bool:
    """The first message under an assignment was claimed for sending: outcomes count from now."""
    result = await session.execute(
        update(ExperimentAssignment)
        .where(
            ExperimentAssignment.experiment_id == experiment_id,
            ExperimentAssignment.debtor_id == debtor_id,
            ExperimentAssignment.exposed_at.is_(None),
        )
        .values(exposed_at=now, contact_id=contact_id, case_id=case_id, channel=channel)
    )
    return bool(getattr(result, "rowcount", 0))


async def exposures(session: AsyncSession, experiment_id: str) -> list[Exposure]:
    rows = await session.execute(
        select(
            ExperimentAssignment.debtor_id,
            ExperimentAssignment.arm,
            ExperimentAssignment.variant,
            ExperimentAssignment.holdout,
            ExperimentAssignment.case_id,
            ExperimentAssignment.exposed_at,
            ExperimentAssignment.channel,
        )
        .where(
            ExperimentAssignment.experiment_id == experiment_id, ExperimentAssignment.exposed_at.is_not(None)
        )
        .order_by(ExperimentAssignment.exposed_at, ExperimentAssignment.id)
    )
    return [
        Exposure(
            debtor_id=debtor_id,
            arm=arm,
            variant=variant,
            holdout=bool(holdout),
            case_id=case_id or "",
            exposed_at=exposed_at,
            channel=channel,
        )
        for debtor_id, arm, variant, holdout, case_id, exposed_at, channel in rows.all()
        if exposed_at is not None
    ]


async def outcome_events(session: AsyncSession, experiment_id: str) -> list[OutcomeEvent]:
    """Case events that can be an outcome, on the cases the experiment exposed, since its first exposure."""
    first = (
        select(func.min(ExperimentAssignment.exposed_at))
        .where(ExperimentAssignment.experiment_id == experiment_id)
        .scalar_subquery()
    )
    cases = select(ExperimentAssignment.case_id).where(
        ExperimentAssignment.experiment_id == experiment_id, ExperimentAssignment.exposed_at.is_not(None)
    )
    rows = await session.execute(
        select(CaseEvent.case_id, CaseEvent.type, CaseEvent.at).where(
            CaseEvent.case_id.in_(cases), CaseEvent.type.in_(OUTCOME_TYPES), CaseEvent.at >= first
        )
    )
    return [OutcomeEvent(case_id=case_id, type=type_, at=at) for case_id, type_, at in rows.all()]
