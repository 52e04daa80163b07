"""arq worker settings. Any number of worker processes on any number of hosts may share one Redis and one
database: claims and dedupe live in the database, timing in Redis, nothing in process memory."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, ClassVar

from arq import cron, func
from arq.worker import Worker

from orchestrator import queue
from orchestrator.carrier_jobs import PROCESS_CARRIER_EVENT, process_carrier_event
from orchestrator.channel_registry import build_channels, close_channels
from orchestrator.db import create_engine, session_factory
from orchestrator.jobs import WorkerState, process_contact, refresh_response_rates, sweep
from orchestrator.logs import get_logger
from orchestrator.models import utcnow
from orchestrator.policy.rules import load_rules
from orchestrator.rendering import Renderer, available_templates
from orchestrator.returned_mail import (
    HANDLE_RETURNED_LETTER,
    close_registry_clients,
    handle_returned_letter,
    open_registry_clients,
)
from orchestrator.settings import Settings

log = get_logger(__name__)


async def startup(ctx: dict[str, Any]) -> None:
    settings: Settings = ctx["settings"]
    engine = create_engine(settings.resolved_database_url)
    renderer = Renderer()
    open_registry_clients(ctx)
    ctx["state"] = WorkerState(
        settings=settings,
        engine=engine,
        sessions=session_factory(engine),
        redis=ctx["redis"],
        channels=build_channels(settings, ctx["redis"]),
        renderer=renderer,
        templates=available_templates(renderer),
        rules=load_rules(settings.rules_file),
        clock=ctx.get("clock", utcnow),
        before_claim=ctx.get("before_claim"),
    )
    if settings.worker_metrics_port is not None:
        from prometheus_client import start_http_server

        start_http_server(settings.worker_metrics_port, addr=settings.http_host)
    log.info("worker ready", queue=settings.queue_name, channels=sorted(ctx["state"].channels))


async def shutdown(ctx: dict[str, Any]) -> None:
    await close_registry_clients(ctx)
    state: WorkerState | None = ctx.get("state")
    if state is None:
        return
    await close_channels(state.channels)
    await state.engine.dispose()


def build_worker(
    settings: Settings,
    redis_url: str,
    *,
    clock: Callable[[], datetime] | None = None,
    before_claim: Callable[[str], Awaitable[None]] | None = None,
    **overrides: Any,
) -> Worker:
    """A worker for ``settings``; used by ``orchestrator worker``, ``orchestrator run`` and the tests."""
    from arq.connections import RedisSettings

    seconds = set(range(0, 60, settings.sweeper_interval_s))
    options: dict[str, Any] = {
        "functions": [
            # Our database counts tries (send_max_tries); arq's own count must never stop a job first,
            # and results are not kept so that a later run of the same contact can be enqueued again.
            func(process_contact, name=queue.PROCESS_CONTACT, max_tries=10_000, keep_result=0),
            func(process_carrier_event, name=PROCESS_CARRIER_EVENT, max_tries=20, keep_result=0),
            func(handle_returned_letter, name=HANDLE_RETURNED_LETTER, max_tries=20, keep_result=0),
        ],
        "cron_jobs": [
            cron(sweep, second=seconds, run_at_startup=True, unique=True, keep_result=0),
            # Observed response rates for the ranking: an aggregate, every ten minutes, shared through Redis.
            cron(
                refresh_response_rates,
                minute=set(range(0, 60, 10)),
                second={30},
                run_at_startup=True,
                unique=True,
                keep_result=0,
            ),
        ],
        "redis_settings": RedisSettings.from_dsn(redis_url),
        "queue_name": settings.queue_name,
        "max_jobs": settings.worker_max_jobs,
        "job_timeout": settings.job_timeout_s,
        "keep_result": 0,
        "poll_delay": 0.2,
        "job_serializer": queue.json_serializer,
        "job_deserializer": queue.json_deserializer,
        "on_startup": startup,
        "on_shutdown": shutdown,
        "ctx": {
            "settings": settings,
            **({"clock": clock} if clock else {}),
            **({"before_claim": before_claim} if before_claim else {}),
        },
        "handle_signals": False,
        "expires_extra_ms": queue.EXPIRES_EXTRA_MS,
    }
    options.update(overrides)
    return Worker(**options)


class WorkerSettings:
    """For ``arq orchestrator.worker.WorkerSettings``; ``orchestrator worker`` is the usual way."""

    functions: ClassVar[list[Any]] = [
        func(process_contact, name=queue.PROCESS_CONTACT, max_tries=10_000, keep_result=0),
        func(process_carrier_event, name=PROCESS_CARRIER_EVENT, max_tries=20, keep_result=0),
        func(handle_returned_letter, name=HANDLE_RETURNED_LETTER, max_tries=20, keep_result=0),
    ]
    cron_jobs: ClassVar[list[Any]] = [
        cron(sweep, second={0}, run_at_startup=True, unique=True, keep_result=0),
        cron(
            refresh_response_rates,
            minute=set(range(0, 60, 10)),
            second={30},
            run_at_startup=True,
            unique=True,
            keep_result=0,
        ),
    ]
    on_startup = startup
    on_shutdown = shutdown
    job_serializer = queue.json_serializer
    job_deserializer = queue.json_deserializer
    keep_result = 0
