"""``/v1/experiments``: create, list, read and stop experiments, and their reports as JSON or CSV."""

from __future__ import annotations

from functools import cache

from aiohttp import web
from pydantic import ValidationError

from orchestrator import intake
from orchestrator.api import json_model, read_json
from orchestrator.appkeys import SESSIONS
from orchestrator.db import write_session
from orchestrator.experiments import store
from orchestrator.experiments.report import build_report, report_csv
from orchestrator.experiments.schemas import ExperimentList, ExperimentOut, ExperimentReport
from orchestrator.experiments.spec import ExperimentSpec
from orchestrator.models import Experiment, utcnow
from orchestrator.problems import ProblemError, problem
from orchestrator.rendering import CATALOGUE_FILE, templates_root
from orchestrator.variants import Catalogue, load_catalogue

routes = web.RouteTableDef()


@cache
def _catalogue() -> Catalogue:
    return load_catalogue(templates_root() / "messages" / CATALOGUE_FILE)


def _out(row: Experiment) -> ExperimentOut:
    return ExperimentOut(
        id=row.id,
        name=row.name,
        status=row.status,
        spec=ExperimentSpec.model_validate(row.spec),
        created_at=row.created_at,
        stopped_at=row.stopped_at,
        links={"self": f"/v1/experiments/{row.id}", "report": f"/v1/experiments/{row.id}/report"},
    )


async def _get(request: web.Request) -> Experiment:
    experiment_id = request.match_info["experiment_id"]
    async with request.app[SESSIONS]() as session:
        row = await store.get_experiment(session, experiment_id)
    if row is None:
        raise ProblemError(404, "Not found", f"no experiment with id {experiment_id!r}")
    return row


@routes.post("/v1/experiments", name="create_experiment")
async def create_experiment(request: web.Request) -> web.Response:
    raw = await read_json(request)
    try:
        spec = ExperimentSpec.model_validate(raw, context={"catalogue": _catalogue()})
    except ValidationError as exc:
        errors = intake.validation_errors(exc)
        return problem(
            422, "Invalid experiment", f"{len(errors)} problem(s) in the experiment", errors=errors
        )
    now = utcnow()
    async with write_session(request.app[SESSIONS]) as session:
        created = await store.insert_experiment(
            session, spec=spec.model_dump(mode="json"), name=spec.name, now=now
        )
        row = await store.get_experiment(session, spec.id)
    assert row is not None
    if not created:
        raise ProblemError(
            409, "Conflict", f"an experiment with id {spec.id!r} exists already; ids are never reused"
        )
    return json_model(_out(row), status=201)


@routes.get("/v1/experiments", name="list_experiments")
async def list_experiments(request: web.Request) -> web.Response:
    status = request.query.get("status")
    if status not in (None, "running", "stopped"):
        raise ProblemError(422, "Invalid query", f"status must be running or stopped, not {status!r}")
    async with request.app[SESSIONS]() as session:
        rows = await store.list_experiments(session, status=status)
    return json_model(ExperimentList(items=[_out(row) for row in rows]))


@routes.get("/v1/experiments/{experiment_id}", name="get_experiment")
async def get_experiment(request: web.Request) -> web.Response:
    return json_model(_out(await _get(request)))


@routes.post("/v1/experiments/{experiment_id}/stop", name="stop_experiment")
async def stop_experiment(request: web.Request) -> web.Response:
    row = await _get(request)
    async with write_session(request.app[SESSIONS]) as session:
        await store.stop_experiment(session, row.id, utcnow())
        stopped = await store.get_experiment(session, row.id)
    assert stopped is not None
    return json_model(_out(stopped))


@routes.get("/v1/experiments/{experiment_id}/report", name="experiment_report")
async def experiment_report(request: web.Request) -> web.StreamResponse:
    row = await _get(request)
    spec = ExperimentSpec.model_validate(row.spec)
    async with request.app[SESSIONS]() as session:
        exposures = await store.exposures(session, spec.id)
        events = await store.outcome_events(session, spec.id)
    report = build_report(spec, exposures, events, utcnow(), status=row.status)
    wants_csv = request.query.get("format") == "csv" or "text/csv" in request.headers.get("Accept", "")
    if wants_csv:
        return web.Response(
            text=report_csv(report),
            content_type="text/csv",
            charset="utf-8",
            headers={"Content-Disposition": f'attachment; filename="experiment-{spec.id}.csv"'},
        )
    return json_model(ExperimentReport.model_validate(report))
