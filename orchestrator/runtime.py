"""Starting and stopping the pieces: embedded Redis when none is configured, the web app, workers."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

from aiohttp import web
from arq.worker import Worker

from orchestrator import db, embedded_redis
from orchestrator.logs import get_logger
from orchestrator.settings import Settings
from orchestrator.web import create_app
from orchestrator.worker import build_worker

log = get_logger(__name__)


def tune_gc() -> None:
    """Fewer cyclic garbage collections for a long-running service.

    Intake and dispatch allocate many short-lived objects (a 10,000-item batch keeps its models alive while it
    is written); with CPython's default threshold (700) the collector runs hundreds of times per batch and
    costs about 40 % of intake CPU. Objects alive at start-up are frozen out of collection altogether.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)


@contextlib.contextmanager
def redis_for(settings: Settings) -> Iterator[str]:
    """The configured Redis URL, or an embedded Redis for the state directory (stopped on exit if we
    started it)."""
    if settings.redis_url:
        yield settings.redis_url
        return
    server = embedded_redis.start(settings.state_dir)
    if server.process is not None:
        log.info("embedded redis started", url=server.url, data=str(settings.state_dir / "redis"))
    try:
        yield server.url
    finally:
        server.stop()


@dataclass
class Running:
    url: str
    runner: web.AppRunner | None
    worker: Worker | None
    worker_task: asyncio.Task[None] | None

    async def stop(self) -> None:
        if self.worker is not None and self.worker_task is not None:
            if self.worker.main_task is not None:
                self.worker.main_task.cancel()
            self.worker_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.worker_task
            await self.worker.close()
        if self.runner is not None:
            await self.runner.cleanup()


async def start(settings: Settings, redis_url: str, *, web_app: bool = True, worker: bool = True) -> Running:
    runner = None
    url = ""
    if web_app:
        runner = web.AppRunner(create_app(settings, redis_url=redis_url), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, settings.http_host, settings.http_port)
        await site.start()
        bound = runner.addresses  # the real port when ORCH_HTTP_PORT=0
        port = bound[0][1] if bound else settings.http_port
        url = f"http://{settings.http_host}:{port}"
        log.info("http listening", url=url)
    arq_worker = None
    task = None
    if worker:
        arq_worker = build_worker(settings, redis_url)
        task = asyncio.create_task(arq_worker.async_run())
    return Running(url=url, runner=runner, worker=arq_worker, worker_task=task)


@contextlib.asynccontextmanager
async def running(
    settings: Settings, redis_url: str, *, web_app: bool = True, worker: bool = True, migrate: bool = False
) -> AsyncIterator[Running]:
    if migrate:
        await db.upgrade(settings.resolved_database_url)
    handle = await start(settings, redis_url, web_app=web_app, worker=worker)
    try:
        yield handle
    finally:
        await handle.stop()


async def wait_for_signal() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
