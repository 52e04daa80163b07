"""RedisRateLimiter against a real Redis: concurrent tasks in one process and two separate OS processes.

Burst allowance: with ``burst=1`` Redis books slots exactly ``1 / rate`` apart, but a caller proceeds only
when its reply has arrived and its sleep has ended, so the wall-clock times at which callers actually send
jitter by a few milliseconds (scheduling, the round trip to Redis, process start-up). Any 1-second window
may therefore hold ``rate`` sends plus ``burst`` plus one jittered send, never more: that is what
``_max_in_any_window`` is held to (``JITTER_ALLOWANCE = 1``).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from channels.base import TransientChannelError
from channels.sms.ratelimit import KEY_PREFIX, RedisRateLimiter

ROOT = Path(__file__).resolve().parents[2]
JITTER_ALLOWANCE = 1


def _max_in_any_window(stamps: list[float], window_s: float = 1.0) -> int:
    """The most timestamps that fall in any half-open window ``[t, t + window_s)``."""
    ordered = sorted(stamps)
    best = 0
    j = 0
    for i, start in enumerate(ordered):
        while j < len(ordered) and ordered[j] < start + window_s:
            j += 1
        best = max(best, j - i)
    return best


def _prefix() -> str:
    return f"test:{uuid.uuid4().hex}:{KEY_PREFIX}"


async def test_two_concurrent_workers_share_the_rate(redis: Any) -> None:
    rate, duration = 5.0, 3.0
    limiter_a = RedisRateLimiter(redis, key_prefix=(prefix := _prefix()))
    limiter_b = RedisRateLimiter(redis, key_prefix=prefix)
    stamps: list[float] = []
    deadline = time.time() + duration

    async def worker(limiter: RedisRateLimiter) -> int:
        sent = 0
        while True:
            await limiter.acquire("linkmobility", rate)
            now = time.time()
            if now >= deadline:
                return sent
            stamps.append(now)
            sent += 1

    sent_a, sent_b = await asyncio.gather(worker(limiter_a), worker(limiter_b))
    assert _max_in_any_window(stamps) <= rate + 1 + JITTER_ALLOWANCE
    # The rate is used, not starved: 15 slots in 3 s, give or take the edges.
    assert rate * duration - 2 <= len(stamps) <= rate * duration + 1 + JITTER_ALLOWANCE
    assert sent_a >= 5 and sent_b >= 5  # both workers got their turns


_PROCESS_SCRIPT = """
import asyncio, json, sys, time
from redis.asyncio import Redis
from channels.sms.ratelimit import RedisRateLimiter

url, prefix, rate, start_at, duration, out = sys.argv[1:7]

async def main():
    redis = Redis.from_url(url)
    limiter = RedisRateLimiter(redis, key_prefix=prefix, max_wait_s=30)
    await redis.ping()
    await asyncio.sleep(max(0.0, float(start_at) - time.time()))
    deadline = float(start_at) + float(duration)
    stamps = []
    while True:
        await limiter.acquire("twilio", float(rate))
        now = time.time()
        if now >= deadline:
            break
        stamps.append(now)
    await redis.aclose()
    with open(out, "w") as fh:
        json.dump(stamps, fh)

asyncio.run(main())
"""


@pytest.mark.slow
def test_two_processes_share_the_rate(redis_url: str, tmp_path: Path) -> None:
    rate, duration = 8.0, 3.0
    prefix = _prefix()
    start_at = time.time() + 3.0  # both processes have imported everything and wait for this moment
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONWARNINGS": "error"}
    outs = [tmp_path / f"stamps-{i}.json" for i in range(2)]
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                _PROCESS_SCRIPT,
                redis_url,
                prefix,
                str(rate),
                repr(start_at),
                str(duration),
                str(out),
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for out in outs
    ]
    for proc in procs:
        output, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0, output.decode(errors="replace")
    per_process = [json.loads(out.read_text()) for out in outs]
    merged = [stamp for stamps in per_process for stamp in stamps]
    assert all(stamps for stamps in per_process), "both processes must have sent"
    assert _max_in_any_window(merged) <= rate + 1 + JITTER_ALLOWANCE
    assert rate * duration - 2 <= len(merged) <= rate * duration + 1 + JITTER_ALLOWANCE


async def test_excess_waits_rather_than_drops(redis: Any) -> None:
    limiter = RedisRateLimiter(redis, key_prefix=_prefix())
    started = time.monotonic()
    for _ in range(3):
        await limiter.acquire("gw", 4.0)  # slots at 0, 0.25, 0.5 s
    elapsed = time.monotonic() - started
    assert 0.45 <= elapsed < 1.5


async def test_burst_lets_a_few_through_at_once(redis: Any) -> None:
    limiter = RedisRateLimiter(redis, key_prefix=_prefix(), burst=3)
    waits = [await limiter.reserve("gw", 2.0) for _ in range(4)]
    assert waits[:3] == [0.0, 0.0, 0.0]
    assert 0.3 < waits[3] <= 0.5


async def test_zero_rate_is_unlimited_and_never_touches_redis(redis: Any) -> None:
    prefix = _prefix()
    limiter = RedisRateLimiter(redis, key_prefix=prefix, max_wait_s=0)
    started = time.monotonic()
    for _ in range(200):
        await limiter.acquire("gw", 0)
    assert time.monotonic() - started < 0.5
    assert await redis.exists(f"{prefix}gw") == 0


async def test_max_wait_raises_transient_with_retry_after_and_books_nothing(redis: Any) -> None:
    prefix = _prefix()
    limiter = RedisRateLimiter(redis, key_prefix=prefix, max_wait_s=0.5)
    await limiter.acquire("gw", 1.0)  # the slot now; the next one is a second away
    with pytest.raises(TransientChannelError) as excinfo:
        await limiter.acquire("gw", 1.0)
    assert excinfo.value.reason == "rate_limited"
    assert excinfo.value.retry_after_s is not None
    assert 0.5 < excinfo.value.retry_after_s <= 1.0
    # The refused call booked nothing: the next slot is still about a second away, not two.
    patient = RedisRateLimiter(redis, key_prefix=prefix, max_wait_s=5)
    assert 0.5 < await patient.reserve("gw", 1.0) <= 1.0


async def test_state_lives_under_the_gateway_key_and_expires(redis: Any) -> None:
    prefix = _prefix()
    limiter = RedisRateLimiter(redis, key_prefix=prefix)
    assert limiter.key("linkmobility") == f"{prefix}linkmobility"
    await limiter.acquire("linkmobility", 10.0)
    ttl_ms = await redis.pttl(f"{prefix}linkmobility")
    assert 0 < ttl_ms <= 1100 + 100
    # The default prefix is the documented one.
    assert RedisRateLimiter(redis).key("twilio") == "sms:ratelimit:twilio"


async def test_redis_unreachable_is_transient() -> None:
    redis = Redis(host="127.0.0.1", port=1, socket_connect_timeout=1)
    try:
        limiter = RedisRateLimiter(redis)
        with pytest.raises(TransientChannelError) as excinfo:
            await limiter.acquire("gw", 5.0)
        assert excinfo.value.reason == "rate_limiter_unavailable"
    finally:
        await redis.aclose()


async def test_invalid_settings_are_refused(redis: Any) -> None:
    with pytest.raises(ValueError, match="burst"):
        RedisRateLimiter(redis, burst=0)
    with pytest.raises(ValueError, match="max_wait_s"):
        RedisRateLimiter(redis, max_wait_s=-1)


async def test_negative_rate_is_refused(redis: Any) -> None:
    with pytest.raises(ValueError, match="rate_per_s"):
        await RedisRateLimiter(redis, key_prefix=_prefix()).acquire("gw", -1)
