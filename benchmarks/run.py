"""Throughput benchmarks of the orchestrator, each measured against arq itself on the same Redis.

    .venv/bin/python benchmarks/run.py [--contacts 2000] [--batch 10000] [--repeat 3] [--json]
                                       [--only dispatch|intake] [--max-jobs N] [--poll-delay S]
                                       [--profile dispatch|noop|intake [--profiler cprofile|pyinstrument]]

(a) dispatch: contacts/s from a burst worker start until N e-mail contacts are ``sent`` through the outbox
    channel, versus a burst arq worker draining N no-op jobs (same max_jobs, JSON serializer, poll delay).
(b) intake:   contacts/s through ``POST /v1/contacts:batch`` (one batch of --batch items over a real aiohttp
    server on a loopback port), versus the same number of sequential ``await pool.enqueue_job(...)``.

Uses ORCH_REDIS_URL / ORCH_DATABASE_URL when set, else an embedded Redis and a SQLite file in a temp dir.
Machines are shared and noisy: the ratios (product rate / arq rate, measured back to back) are the numbers to
compare between runs. The exit code is 0 even when a target is missed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import io
import json
import os
import pstats
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from arq import func
from arq.connections import ArqRedis, RedisSettings
from arq.constants import in_progress_key_prefix, job_key_prefix, result_key_prefix, retry_key_prefix
from arq.worker import Worker
from sqlalchemy import delete, select
from sqlalchemy import func as sql_func
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from orchestrator import auth, db, embedded_redis, intake, logs, queue, runtime
from orchestrator.identifiers import luhn_check_digit
from orchestrator.models import ApiKey, Attempt, Case, ChatLink, Contact, Debtor, TimelineEvent
from orchestrator.sandbox.demo import ALWAYS_OPEN_RULES
from orchestrator.schemas import ContactRequest
from orchestrator.settings import Settings
from orchestrator.web import create_app
from orchestrator.worker import build_worker

DISPATCH_TARGET = 0.5
INTAKE_TARGET = 3.0
# Far beyond any benchmark run: the worker's sweeper must never pick up (or flag) rows that are not ours on a
# shared database.
NEVER_S = 10 * 365 * 24 * 3600.0
WORKER_TIMEOUT_S = 900.0


def _err(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


# ---- workloads


def _kid(n: int) -> str:
    payload = f"{n:09d}"
    return payload + str(luhn_check_digit(payload))


def contact_item(tag: str, i: int, today: date) -> dict[str, Any]:
    """One valid contact request: an inkassovarsel to a person with e-mail and evidence for it, so the
    policy picks e-mail (letter and SMS are there too, as in a real portfolio)."""
    email = f"debtor{i}.{tag.lower()}@example.no"
    return {
        "idempotency_key": f"{tag}/{i}/inkassovarsel",
        "kind": "inkassovarsel",
        "debtor": {
            "id": f"{tag}-D{i}",
            "type": "person",
            "name": f"Kari Nordmann {i}",
            "addresses": [{"lines": [f"Storgata {i % 200 + 1}"], "postal_code": "0155", "city": "OSLO"}],
            "phones": [f"+479{i % 10_000_000:07d}"],
            "emails": [email],
            "electronic_notice_evidence": [
                {
                    "channel": "email",
                    "address": email,
                    "basis": "debtor_used_address",
                    "observed_at": (today - timedelta(days=20)).isoformat() + "T10:00:00+02:00",
                }
            ],
        },
        "case": {
            "id": f"{tag}-C{i}",
            "creditor": {"name": "Eksempel Kreditt AS", "organisation_number": "974760673"},
            "reference": f"Faktura {100000 + i}",
            "principal": f"{1000 + i % 9000}.50",
            "costs": [{"kind": "reminder_fee", "amount": "35.00"}],
            "interest": {"rate_percent": "12.50", "from": (today - timedelta(days=30)).isoformat()},
            "due_date": (today - timedelta(days=30)).isoformat(),
            "kid": _kid(i),
            "account_number": "86011117947",
        },
    }


def contact_items(tag: str, n: int) -> list[dict[str, Any]]:
    today = datetime.now(UTC).date()
    return [contact_item(tag, i, today) for i in range(n)]


async def noop(ctx: dict[str, Any]) -> None:
    return None


# ---- helpers


@dataclass
class Env:
    redis_url: str
    database_url: str
    backend: str
    root: Path  # temp dir for state dirs (and the SQLite file)
    run: str  # unique token in this run's queue names, job ids, debtor ids and API key name
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    pool: ArqRedis
    poll_delay: float
    private_redis: bool  # our embedded Redis: its command counter counts only our commands
    max_jobs: int

    def settings(self, name: str) -> Settings:
        state = self.root / name
        return Settings(
            state_dir=state,
            redis_url=self.redis_url,
            database_url=self.database_url,
            queue_name=f"bench:{self.run}:{name}",
            rules_file=ALWAYS_OPEN_RULES,
            smtp_host=None,
            outbox_dir=state / "outbox",
            worker_max_jobs=self.max_jobs,
            sweeper_stale_after_s=NEVER_S,
            sending_timeout_s=NEVER_S,
            worker_metrics_port=None,
            log_level="WARNING",
        )


async def delete_keys(pool: ArqRedis, keys: Sequence[str]) -> None:
    for start in range(0, len(keys), 5000):
        chunk = keys[start : start + 5000]
        if chunk:
            await pool.unlink(*chunk)


def job_keys(job_ids: Sequence[str]) -> list[str]:
    return [
        p + j
        for j in job_ids
        for p in (job_key_prefix, result_key_prefix, retry_key_prefix, in_progress_key_prefix)
    ]


async def delete_rows(env: Env, debtor_prefix: str) -> None:
    """Delete the rows this run created (by debtor id prefix): never anybody else's."""
    like = debtor_prefix.replace("%", r"\%").replace("_", r"\_") + "%"
    async with env.sessions() as session, session.begin():
        mine = select(Contact.id).where(Contact.debtor_id.like(like, escape="\\"))
        await session.execute(delete(TimelineEvent).where(TimelineEvent.debtor_id.like(like, escape="\\")))
        await session.execute(delete(Attempt).where(Attempt.contact_id.in_(mine)))
        # E-mails carry an unsubscribe link (a chat-link row per message).
        await session.execute(delete(ChatLink).where(ChatLink.debtor_id.like(like, escape="\\")))
        await session.execute(delete(Contact).where(Contact.debtor_id.like(like, escape="\\")))
        await session.execute(delete(Case).where(Case.debtor_id.like(like, escape="\\")))
        await session.execute(delete(Debtor).where(Debtor.id.like(like, escape="\\")))


async def count_status(env: Env, ids: Sequence[str], status: str) -> int:
    total = 0
    async with env.sessions() as session:
        for start in range(0, len(ids), 500):
            chunk = list(ids[start : start + 500])
            total += (
                await session.execute(
                    select(sql_func.count())
                    .select_from(Contact)
                    .where(Contact.id.in_(chunk), Contact.status == status)
                )
            ).scalar_one()
    return total


def noop_worker(env: Env, queue_name: str) -> Worker:
    """The baseline: the product worker's arq options, with a no-op function and nothing else."""
    return Worker(
        functions=[func(noop, name="noop", keep_result=0)],
        redis_settings=RedisSettings.from_dsn(env.redis_url),
        queue_name=queue_name,
        max_jobs=env.max_jobs,
        keep_result=0,
        poll_delay=env.poll_delay,
        job_serializer=queue.json_serializer,
        job_deserializer=queue.json_deserializer,
        handle_signals=False,
        expires_extra_ms=queue.EXPIRES_EXTRA_MS,
        burst=True,
    )


@dataclass
class Timing:
    wall_s: float
    cpu_s: float  # CPU time of this process, all threads (the DB driver and file writes run in threads)


class Profiler:
    """cProfile (deterministic, all calls) or pyinstrument (sampling, wall clock; ``PYTHONPATH`` to an
    install outside the project, e.g. ``pip install --target /tmp/pyinst pyinstrument``)."""

    def __init__(self, kind: str, out: Path | None, *, show_all: bool = False) -> None:
        self.kind, self.out, self.show_all = kind, out, show_all
        self._cprofile: cProfile.Profile | None = None
        self._pyinstrument: Any = None
        if kind == "pyinstrument":
            from pyinstrument import Profiler as Sampler  # type: ignore[import-not-found]

            # async_mode="disabled": sample the loop thread whatever task runs, so waiting shows as select().
            self._pyinstrument = Sampler(interval=0.0005, async_mode="disabled")
        else:
            self._cprofile = cProfile.Profile()

    def start(self) -> None:
        if self._cprofile is not None:
            self._cprofile.enable()
        else:
            self._pyinstrument.start()

    def stop(self) -> None:
        if self._cprofile is not None:
            self._cprofile.disable()
        else:
            self._pyinstrument.stop()

    def report(self) -> None:
        if self._cprofile is not None:
            if self.out is not None:
                self._cprofile.dump_stats(str(self.out))
                _err(f"profile written to {self.out} (python -m pstats {self.out})")
            for key in ("tottime", "cumulative"):
                buf = io.StringIO()
                pstats.Stats(self._cprofile, stream=buf).strip_dirs().sort_stats(key).print_stats(40)
                _err(f"\n==== cProfile, top by {key} ====\n{buf.getvalue()}")
        else:
            if self.out is not None:
                self.out.write_text(self._pyinstrument.output_html())
                _err(f"profile written to {self.out}")
            _err(self._pyinstrument.output_text(unicode=False, color=False, show_all=self.show_all))


@contextlib.contextmanager
def timed(profiler: Profiler | None = None) -> Iterator[Timing]:
    timing = Timing(0.0, 0.0)
    if profiler is not None:
        profiler.start()
    wall, cpu = time.perf_counter(), time.process_time()
    try:
        yield timing
    finally:
        timing.wall_s, timing.cpu_s = time.perf_counter() - wall, time.process_time() - cpu
        if profiler is not None:
            profiler.stop()


def outcome(n: int, timing: Timing, commands: int | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "seconds": timing.wall_s,
        "rate": n / timing.wall_s,
        "cpu_ms_per_item": 1000 * timing.cpu_s / n,
        "redis_commands_per_item": None if commands is None else commands / n,
        **extra,
    }


async def redis_commands(env: Env) -> int | None:
    """Commands the (private) Redis has processed so far; None on a shared Redis."""
    if not env.private_redis:
        return None
    info = await env.pool.info("stats")
    return int(info["total_commands_processed"])


def delta(before: int | None, after: int | None) -> int | None:
    return None if before is None or after is None else after - before - 1  # minus the INFO itself


async def run_worker(worker: Worker, profiler: Profiler | None = None) -> Timing:
    """From start until the burst worker has drained its queue; the worker is closed afterwards."""
    try:
        with timed(profiler) as timing:
            await asyncio.wait_for(worker.async_run(), WORKER_TIMEOUT_S)
        return timing
    finally:
        await worker.close()


# ---- (a) dispatch


async def bench_dispatch(env: Env, rep: int, n: int, profiler: Profiler | None = None) -> dict[str, Any]:
    tag = f"BENCH-{env.run}-DSP{rep}"
    settings = env.settings(f"dispatch{rep}")
    requests = [ContactRequest.model_validate(item) for item in contact_items(tag, n)]
    ids: list[str] = []
    try:
        t0 = time.perf_counter()
        for start in range(0, n, intake.MAX_BATCH):
            results = await intake.accept(
                env.sessions,
                env.pool,
                settings.queue_name,
                requests[start : start + intake.MAX_BATCH],
                source="bench",
            )
            bad = [r for r in results if not r.ok or r.existing]
            if bad:
                raise RuntimeError(f"intake rejected {len(bad)} benchmark contacts, e.g. {bad[0]}")
            ids.extend(r.id for r in results if r.id is not None)
        accept_s = time.perf_counter() - t0
        queued = await env.pool.zcard(settings.queue_name)
        if queued != n:
            raise RuntimeError(f"expected {n} jobs in {settings.queue_name}, found {queued}")

        worker = build_worker(settings, env.redis_url, burst=True, poll_delay=env.poll_delay)
        before = await redis_commands(env)
        timing = await run_worker(worker, profiler)
        commands = delta(before, await redis_commands(env))

        sent = await count_status(env, ids, "sent")
        emls = len(list((settings.resolved_outbox_dir / "email").glob("*.eml")))
        if sent != n or emls != n:
            raise RuntimeError(f"dispatch: {sent}/{n} contacts sent, {emls}/{n} .eml files written")
        return outcome(n, timing, commands, accept_direct_rate=n / accept_s)
    finally:
        await env.pool.unlink(settings.queue_name, f"{settings.queue_name}:health-check")
        await delete_keys(env.pool, job_keys([queue.job_id_for(i) for i in ids]))
        await delete_rows(env, tag)
        shutil.rmtree(settings.state_dir, ignore_errors=True)


async def bench_noop(env: Env, rep: int, n: int, profiler: Profiler | None = None) -> dict[str, Any]:
    queue_name = f"bench:{env.run}:noop{rep}"
    job_ids = [f"bench:{env.run}:noop{rep}:{i}" for i in range(n)]
    try:
        for start in range(0, n, 200):  # setup, not timed: enqueue in parallel chunks
            await asyncio.gather(
                *(
                    env.pool.enqueue_job("noop", _job_id=j, _queue_name=queue_name)
                    for j in job_ids[start : start + 200]
                )
            )
        queued = await env.pool.zcard(queue_name)
        if queued != n:
            raise RuntimeError(f"expected {n} no-op jobs in {queue_name}, found {queued}")
        worker = noop_worker(env, queue_name)
        before = await redis_commands(env)
        timing = await run_worker(worker, profiler)
        commands = delta(before, await redis_commands(env))
        if worker.jobs_complete != n or worker.jobs_failed:
            raise RuntimeError(f"no-op worker: {worker.jobs_complete} complete, {worker.jobs_failed} failed")
        return outcome(n, timing, commands)
    finally:
        await env.pool.unlink(queue_name, f"{queue_name}:health-check")
        await delete_keys(env.pool, job_keys(job_ids))


# ---- (b) intake


@dataclass
class Server:
    url: str
    key: str
    settings: Settings
    http: aiohttp.ClientSession


@contextlib.asynccontextmanager
async def api_server(env: Env) -> AsyncIterator[Server]:
    settings = env.settings("intake")
    runner = web.AppRunner(create_app(settings, redis_url=env.redis_url), access_log=None)
    await runner.setup()
    key_name = f"bench-{env.run}"
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        key = await auth.create_api_key(env.sessions, name=key_name, scopes=["contacts:write"])
        timeout = aiohttp.ClientTimeout(total=WORKER_TIMEOUT_S)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            yield Server(url=f"http://127.0.0.1:{port}", key=key, settings=settings, http=http)
    finally:
        await runner.cleanup()
        async with env.sessions() as session, session.begin():
            await session.execute(delete(ApiKey).where(ApiKey.name == key_name))
        await env.pool.unlink(settings.queue_name)
        shutil.rmtree(settings.state_dir, ignore_errors=True)


async def bench_intake(
    env: Env, server: Server, label: str, n: int, profiler: Profiler | None = None
) -> dict[str, Any]:
    tag = f"BENCH-{env.run}-INT{label}"
    # The body is built before the clock starts: we measure the server, not the client's json.dumps.
    body = json.dumps({"contacts": contact_items(tag, n)}).encode()
    headers = {"Authorization": f"Bearer {server.key}", "Content-Type": "application/json"}
    ids: list[str] = []
    try:
        before = await redis_commands(env)
        with timed(profiler) as timing:
            async with server.http.post(
                f"{server.url}/v1/contacts:batch", data=body, headers=headers
            ) as resp:
                raw = await resp.read()
        commands = delta(before, await redis_commands(env))
        if resp.status != 200:
            raise RuntimeError(f"batch answered {resp.status}: {raw[:500]!r}")
        out = json.loads(raw)
        ids = [r["id"] for r in out["results"] if r.get("id")]
        if out["queued"] != n or out["rejected"] or out["existing"]:
            raise RuntimeError(
                f"batch: queued {out['queued']}, existing {out['existing']}, rejected {out['rejected']}"
            )
        return outcome(n, timing, commands, body_bytes=len(body))
    finally:
        await delete_keys(env.pool, job_keys([queue.job_id_for(i) for i in ids]))
        if ids:
            await env.pool.zrem(server.settings.queue_name, *[queue.job_id_for(i) for i in ids])
        await delete_rows(env, tag)


async def bench_enqueue(env: Env, label: str, n: int) -> dict[str, Any]:
    queue_name = f"bench:{env.run}:enqueue{label}"
    job_ids = [f"bench:{env.run}:enqueue{label}:{i}" for i in range(n)]
    try:
        before = await redis_commands(env)
        with timed() as timing:
            for job_id in job_ids:
                await env.pool.enqueue_job("noop", _job_id=job_id, _queue_name=queue_name)
        commands = delta(before, await redis_commands(env))
        queued = await env.pool.zcard(queue_name)
        if queued != n:
            raise RuntimeError(f"expected {n} jobs in {queue_name}, found {queued}")
        return outcome(n, timing, commands)
    finally:
        await env.pool.unlink(queue_name)
        await delete_keys(env.pool, job_keys(job_ids))


# ---- reporting


def describe(r: dict[str, Any]) -> str:
    cmds = r["redis_commands_per_item"]
    return f"{r['rate']:.0f}/s, {r['cpu_ms_per_item']:.3f} ms CPU each" + (
        "" if cmds is None else f", {cmds:.1f} Redis commands each"
    )


def summary(prod: list[dict[str, Any]], base: list[dict[str, Any]]) -> dict[str, Any]:
    def med(runs: list[dict[str, Any]], key: str) -> float | None:
        values = [r[key] for r in runs if r.get(key) is not None]
        return float(statistics.median(values)) if values else None

    return {
        "runs": [round(r["rate"], 2) for r in prod],
        "baseline_runs": [round(r["rate"], 2) for r in base],
        "paired_ratios": [round(p["rate"] / b["rate"], 4) for p, b in zip(prod, base, strict=True)],
        "cpu_ms_per_item": med(prod, "cpu_ms_per_item"),
        "baseline_cpu_ms_per_item": med(base, "cpu_ms_per_item"),
        "redis_commands_per_item": med(prod, "redis_commands_per_item"),
        "baseline_redis_commands_per_item": med(base, "redis_commands_per_item"),
    }


def median_rate(runs: list[dict[str, Any]]) -> float:
    return float(statistics.median(float(r["rate"]) for r in runs))


def verdict(ratio: float, target: float) -> str:
    return "ok" if ratio >= target else "MISSED"


async def paired(
    reps: int,
    product: Callable[[int], Awaitable[dict[str, Any]]],
    baseline: Callable[[int], Awaitable[dict[str, Any]]],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Product and baseline back to back, alternating which goes first, so drift hits both alike."""
    prod: list[dict[str, Any]] = []
    base: list[dict[str, Any]] = []
    for rep in range(reps):
        if rep % 2 == 0:
            base.append(await baseline(rep))
            prod.append(await product(rep))
        else:
            prod.append(await product(rep))
            base.append(await baseline(rep))
        _err(f"  repeat {rep + 1}/{reps}: product {describe(prod[-1])}; arq {describe(base[-1])}")
    return prod, base


# ---- main


@contextlib.contextmanager
def redis_for() -> Iterator[str]:
    configured = os.environ.get("ORCH_REDIS_URL")
    if configured:
        yield configured
        return
    server = embedded_redis.start(None)
    data_dir = None
    try:
        import redis as redis_sync

        client = redis_sync.Redis.from_url(server.url)
        config: dict[str, str] = client.config_get("dir")  # type: ignore[assignment]
        data_dir = config.get("dir")
        client.close()
        yield server.url
    finally:
        server.stop()
        if data_dir and Path(data_dir).name.startswith("orchestrator-redis-"):
            shutil.rmtree(data_dir, ignore_errors=True)


async def main_async(args: argparse.Namespace, redis_url: str, root: Path) -> int:
    database_url = os.environ.get("ORCH_DATABASE_URL") or f"sqlite+aiosqlite:///{root / 'bench.sqlite3'}"
    backend = "postgresql" if database_url.startswith("postgresql") else "sqlite"
    await db.upgrade(database_url)
    engine = db.create_engine(database_url)
    pool = await queue.connect(redis_url)
    env = Env(
        redis_url=redis_url,
        database_url=database_url,
        backend=backend,
        root=root,
        run=uuid.uuid4().hex[:10],
        engine=engine,
        sessions=db.session_factory(engine),
        pool=pool,
        poll_delay=args.poll_delay,
        private_redis=not os.environ.get("ORCH_REDIS_URL"),
        max_jobs=args.max_jobs or Settings().worker_max_jobs,
    )
    redis_shown = redis_url.split("@")[-1]
    db_shown = database_url.split("@")[-1] if backend == "postgresql" else "sqlite (temp file)"
    _err(
        f"run {env.run}: redis {redis_shown}, database {backend} {db_shown}, max_jobs {env.max_jobs}, "
        f"poll_delay {env.poll_delay}s, contacts {args.contacts}, batch {args.batch}, repeat {args.repeat}"
    )
    lines: list[str] = []
    report: dict[str, Any] = {
        "backend": {"redis": redis_shown, "database": backend},
        "params": {
            "contacts": args.contacts,
            "batch": args.batch,
            "repeat": args.repeat,
            "max_jobs": env.max_jobs,
            "poll_delay_s": env.poll_delay,
        },
    }
    try:
        if args.profile:
            return await profile(env, args)
        if args.only in (None, "dispatch"):
            _err("(a) dispatch vs arq no-op")
            d_prod, d_base = await paired(
                args.repeat,
                lambda r: bench_dispatch(env, r, args.contacts),
                lambda r: bench_noop(env, r, args.contacts),
            )
            dx, dy = median_rate(d_prod), median_rate(d_base)
            ratio = dx / dy
            lines.append(
                f"dispatch: {dx:.1f} contacts/s; arq no-op: {dy:.1f} jobs/s; ratio X/Y = {ratio:.3f} "
                f"(target >= {DISPATCH_TARGET}) {verdict(ratio, DISPATCH_TARGET)}"
            )
            report["dispatch"] = {
                "contacts_per_s": dx,
                "arq_noop_jobs_per_s": dy,
                "ratio": ratio,
                "target": DISPATCH_TARGET,
                "missed": ratio < DISPATCH_TARGET,
                **summary(d_prod, d_base),
                "accept_direct_contacts_per_s": statistics.median(r["accept_direct_rate"] for r in d_prod),
            }
        if args.only in (None, "intake"):
            _err("(b) intake batch API vs sequential enqueue_job")
            async with api_server(env) as server:
                # Warm-up (not measured): connections, the API key cache, first-request imports.
                await bench_intake(env, server, "warm", 50)
                await bench_enqueue(env, "warm", 50)
                i_prod, i_base = await paired(
                    args.repeat,
                    lambda r: bench_intake(env, server, str(r), args.batch),
                    lambda r: bench_enqueue(env, str(r), args.batch),
                )
            ix, iy = median_rate(i_prod), median_rate(i_base)
            ratio = ix / iy
            lines.append(
                f"intake: {ix:.1f} contacts/s; arq sequential enqueue_job: {iy:.1f} jobs/s; "
                f"ratio = {ratio:.3f} (target >= {INTAKE_TARGET}) {verdict(ratio, INTAKE_TARGET)}"
            )
            report["intake"] = {
                "contacts_per_s": ix,
                "arq_enqueue_job_per_s": iy,
                "ratio": ratio,
                "target": INTAKE_TARGET,
                "missed": ratio < INTAKE_TARGET,
                **summary(i_prod, i_base),
                "body_bytes": i_prod[0]["body_bytes"],
            }
    finally:
        # Anything left carrying this run's token (there should be nothing).
        leftovers = [k async for k in pool.scan_iter(match=f"*{env.run}*", count=1000)]
        if leftovers:
            await pool.unlink(*leftovers)
        await pool.aclose()
        await engine.dispose()

    print(f"backend: redis {redis_shown}, database {backend}; median of {args.repeat}")
    for line in lines:
        print(line)
    if args.json:
        print(json.dumps(report, separators=(",", ":")))
    return 0


async def profile(env: Env, args: argparse.Namespace) -> int:
    """One measured run of ``args.profile`` under a profiler: only the timed part (the worker run, or the
    batch request), in this process (worker or server, plus the harness's client)."""
    out = Path(args.profile_out) if args.profile_out else None
    profiler = Profiler(args.profiler, out, show_all=args.profile_all)
    if args.profile == "dispatch":
        result = await bench_dispatch(env, 0, args.contacts, profiler)
    elif args.profile == "noop":
        result = await bench_noop(env, 0, args.contacts, profiler)
    else:
        async with api_server(env) as server:
            await bench_intake(env, server, "warm", 50)
            result = await bench_intake(env, server, "prof", args.batch, profiler)
    _err(f"{args.profile} (profiled with {args.profiler}): {describe(result)}")
    profiler.report()
    return 0


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--contacts", type=int, default=2000, help="contacts dispatched per repeat (a)")
    p.add_argument(
        "--batch", type=int, default=10_000, help=f"items in one intake batch (b), at most {intake.MAX_BATCH}"
    )
    p.add_argument("--repeat", type=int, default=3, help="repeats; the median is reported")
    p.add_argument("--only", choices=("dispatch", "intake"), help="run one of the two benchmarks")
    p.add_argument("--json", action="store_true", help="also print one JSON line with all numbers")
    p.add_argument(
        "--max-jobs", type=int, default=None, help="worker max_jobs (default: Settings.worker_max_jobs)"
    )
    p.add_argument("--poll-delay", type=float, default=0.01, help="arq poll delay of both workers (s)")
    p.add_argument(
        "--profile", choices=("dispatch", "noop", "intake"), help="profile one run of a phase with cProfile"
    )
    p.add_argument("--profiler", choices=("cprofile", "pyinstrument"), default="cprofile")
    p.add_argument("--profile-all", action="store_true", help="pyinstrument: show library frames too")
    p.add_argument("--profile-out", help="write the profile to this file (pstats, or HTML for pyinstrument)")
    args = p.parse_args(argv)
    if not 1 <= args.batch <= intake.MAX_BATCH:
        p.error(f"--batch must be 1..{intake.MAX_BATCH}")
    if args.contacts < 1 or args.repeat < 1:
        p.error("--contacts and --repeat must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    # WARNING: the worker logs every send at INFO; thousands of lines on a terminal would be measured too.
    logs.configure(level="WARNING")
    runtime.tune_gc()  # as `orchestrator worker` / `web` do at start-up
    root = Path(tempfile.mkdtemp(prefix="orchestrator-bench-"))
    try:
        with redis_for() as redis_url:
            return asyncio.run(main_async(args, redis_url, root))
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
