"""Real parts at the edges: a real Redis (the machine's via ORCH_REDIS_URL, else the embedded one), the real
database (ORCH_DATABASE_URL for PostgreSQL, else SQLite), a real SMTP server (aiosmtpd) on port 0."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from email import message_from_bytes
from email import policy as email_policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from aiosmtpd.smtp import SMTP, Envelope, Session
from sqlalchemy import text

from orchestrator import auth, db, embedded_redis, queue
from orchestrator import contact_log as store
from orchestrator.db import write_session
from orchestrator.policy.rules import DEFAULT_RULES_FILE, load_rules
from orchestrator.settings import Settings
from orchestrator.web import create_app
from orchestrator.worker import build_worker


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    configured = os.environ.get("ORCH_REDIS_URL")
    if configured:
        yield configured
        return
    server = embedded_redis.start(None)
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = os.environ.get("ORCH_DATABASE_URL") or (
        f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('db') / 'test.sqlite3'}"
    )

    async def reset() -> None:
        if url.startswith("postgresql"):
            engine = db.create_engine(url)
            async with engine.begin() as conn:
                await conn.execute(text("DROP SCHEMA public CASCADE"))
                await conn.execute(text("CREATE SCHEMA public"))
            await engine.dispose()
        await db.upgrade(url)

    asyncio.run(reset())
    return url


@pytest.fixture
async def sessions(database_url: str) -> AsyncIterator[Any]:
    """A session factory on an emptied database."""
    engine = db.create_engine(database_url)
    factory = db.session_factory(engine)
    async with write_session(factory) as session:
        await store.delete_everything(session)
    yield factory
    await engine.dispose()


@dataclass
class SmtpRecorder:
    """The SMTP server's handler: keeps every message; answers the next ones as a test tells it to."""

    messages: list[tuple[Envelope, EmailMessage]] = field(default_factory=list)
    scripted: list[str] = field(default_factory=list)  # replies for the next DATA commands, e.g. "451 ..."
    delay_s: float = 0.0
    hang_up_in_data: bool = False  # take the message, then drop the connection before answering
    port: int = 0

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.hang_up_in_data:
            self.hang_up_in_data = False
            self._keep(envelope)
            assert server.transport is not None
            server.transport.abort()
            return "250 2.0.0 never seen by the client"
        if self.scripted:
            reply = self.scripted.pop(0)
            if not reply.startswith("250"):
                return reply
        self._keep(envelope)
        return "250 2.0.0 OK queued"

    def _keep(self, envelope: Envelope) -> None:
        data = envelope.content if isinstance(envelope.content, bytes) else str(envelope.content).encode()
        parsed = message_from_bytes(data, policy=email_policy.default)
        assert isinstance(parsed, EmailMessage)
        self.messages.append((envelope, parsed))

    def per_contact(self) -> dict[str, int]:
        """How many messages arrived for each contact id (from the X-Orchestrator-Contact header)."""
        counts: dict[str, int] = {}
        for _, message in self.messages:
            contact_id = str(message["X-Orchestrator-Contact"]).strip()
            counts[contact_id] = counts.get(contact_id, 0) + 1
        return counts

    def message_ids(self) -> list[str]:
        return [str(m["Message-ID"]) for _, m in self.messages]


@pytest.fixture
async def smtp_server() -> AsyncIterator[SmtpRecorder]:
    recorder = SmtpRecorder()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: SMTP(recorder, hostname="smtp.test", loop=loop), "127.0.0.1", 0)
    recorder.port = server.sockets[0].getsockname()[1]
    yield recorder
    server.close()
    await server.wait_closed()


@pytest.fixture(scope="session")
def uncapped_rules(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The packaged rule set with the R6 pressure cap lifted, so that tests about other things may send a
    debtor several messages in a row. Tests about the cap use the packaged rules (``rules_file=None``)."""
    text = DEFAULT_RULES_FILE.read_text(encoding="utf-8")
    text = re.sub(r'^version = ".*"$', 'version = "test-without-pressure-cap"', text, count=1, flags=re.M)
    text = re.sub(r"^max_per_day = \d+$", "max_per_day = 1000", text, count=1, flags=re.M)
    text = re.sub(r"^max_per_7_days = \d+$", "max_per_7_days = 1000", text, count=1, flags=re.M)
    path = tmp_path_factory.mktemp("rules") / "uncapped_rules.toml"
    path.write_text(text, encoding="utf-8")
    rules = load_rules(path)
    assert rules.pressure_cap.max_per_day == 1000 and rules.pressure_cap.max_per_7_days == 1000
    return path


@pytest.fixture
def settings(tmp_path: Path, redis_url: str, database_url: str, uncapped_rules: Path) -> Settings:
    return Settings(
        rules_file=uncapped_rules,
        state_dir=tmp_path / "state",
        redis_url=redis_url,
        database_url=database_url,
        queue_name=f"test:{uuid.uuid4().hex}",
        retry_base_delay_s=0.05,
        retry_max_delay_s=0.2,
        job_timeout_s=10,
        log_level="WARNING",
    )


@pytest.fixture
def smtp_settings(settings: Settings, smtp_server: SmtpRecorder) -> Settings:
    return settings.model_copy(
        update={"smtp_host": "127.0.0.1", "smtp_port": smtp_server.port, "smtp_security": "none"}
    )


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Any]:
    pool = await queue.connect(redis_url)
    yield pool
    await pool.aclose()


async def make_client(settings: Settings) -> TestClient[Any, Any]:
    assert settings.redis_url is not None
    client: TestClient[Any, Any] = TestClient(TestServer(create_app(settings, redis_url=settings.redis_url)))
    await client.start_server()
    return client


@pytest.fixture
async def client(settings: Settings, sessions: Any) -> AsyncIterator[TestClient[Any, Any]]:
    """An HTTP client on the real app, on an emptied database."""
    c = await make_client(settings)
    yield c
    await c.close()


PROBLEM = "application/problem+json"


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def assert_problem(response: Any, status: int) -> dict[str, Any]:
    """The response is an RFC 9457 problem with ``status`` and every required member filled in."""
    assert response.status == status, await response.text()
    assert response.content_type == PROBLEM
    body: dict[str, Any] = await response.json(content_type=PROBLEM)
    assert body["status"] == status
    for member in ("type", "title", "detail"):
        assert isinstance(body[member], str)
        assert body[member]
    return body


@pytest.fixture
async def api_key(sessions: Any) -> str:
    return await auth.create_api_key(
        sessions, name="tests", scopes=["contacts:write", "contacts:read", "cases:write"]
    )


async def drain(settings: Settings, **overrides: Any) -> None:
    """Run a real arq worker in burst mode until the queue is empty (deferred jobs included)."""
    assert settings.redis_url is not None
    worker = build_worker(settings, settings.redis_url, burst=True, poll_delay=0.02, **overrides)
    try:
        await asyncio.wait_for(worker.async_run(), 60)
    finally:
        await worker.close()


def start_worker_process(env: dict[str, str], log_path: Path | None = None) -> subprocess.Popen[bytes]:
    """``python -m orchestrator worker`` as a separate OS process, its output appended to ``log_path``."""
    if log_path is None:
        return subprocess.Popen(
            [sys.executable, "-m", "orchestrator", "worker"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    with log_path.open("ab") as log:  # the child keeps its own descriptor
        return subprocess.Popen(
            [sys.executable, "-m", "orchestrator", "worker"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL if it does not stop within 20 s."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


async def wait_until(predicate: Callable[[], Awaitable[bool]], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await predicate():
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
