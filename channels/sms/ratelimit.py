"""A rate limit per SMS gateway, shared by every worker process on every host through Redis.

The algorithm is GCRA (the generic cell rate algorithm, as in ATM networks and in redis-cell / Brandur's
"throttled") used in its *reservation* form, like Go's ``rate.Limiter.Reserve``: one Lua script, run
atomically by Redis, keeps the gateway's theoretical arrival time (TAT) under ``sms:ratelimit:<gateway>`` and

- reads the clock with ``TIME`` on the Redis server, so processes on different hosts agree on "now";
- computes when the caller may send (``max(TAT, now) - burst tolerance``) and, unless that is further away
  than ``max_wait_s``, books the slot by moving the TAT one emission interval (``1 / rate``) forward;
- answers how long the caller must wait. The caller sleeps that long and sends: excess waits, nothing is
  dropped, and two callers never get the same slot.

A caller that would have to wait longer than ``max_wait_s`` books nothing and gets
``TransientChannelError("rate_limited", retry_after_s=...)``, so its job is retried later instead of holding
a worker. A caller cancelled while it sleeps wastes its slot: the limit errs on the slow side.

``burst`` (default 1) is how many messages may go back to back after an idle spell; with 1 the sends are
spaced at least ``1 / rate`` apart as seen by Redis. A rate of 0 means no limit and never touches Redis.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from channels.base import TransientChannelError

__all__ = ["KEY_PREFIX", "RedisRateLimiter"]

log = logging.getLogger(__name__)

KEY_PREFIX = "sms:ratelimit:"

# KEYS[1]: the gateway's key. ARGV: emission interval, burst tolerance and the longest wait, all in integer
# microseconds. Returns {booked (1/0), wait in microseconds}. Times are kept in integer microseconds since
# the epoch (about 1.8e15: exact in Lua's doubles) and written with %.0f, never tostring (14 digits).
_GCRA_LUA = """
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local max_wait = tonumber(ARGV[3])
local tat = now
local stored = redis.call('GET', KEYS[1])
if stored then
  local value = tonumber(stored)
  if value and value > now then tat = value end
end
local wait = tat - tolerance - now
if wait < 0 then wait = 0 end
if wait > max_wait then
  return {0, wait}
end
local new_tat = tat + interval
local ttl_ms = math.ceil((new_tat - now) / 1000) + 1000
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', ttl_ms)
return {1, wait}
"""


class RedisRateLimiter:
    """``await limiter.acquire("linkmobility", 10.0)`` returns when this process may send one message."""

    def __init__(
        self,
        redis: Redis,
        *,
        max_wait_s: float = 10.0,
        burst: int = 1,
        key_prefix: str = KEY_PREFIX,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    ) -> None:
        if max_wait_s < 0:
            raise ValueError("max_wait_s must be >= 0")
        if burst < 1:
            raise ValueError("burst must be >= 1")
        self._redis = redis
        self._max_wait_us = int(max_wait_s * 1_000_000)
        self._burst = burst
        self._key_prefix = key_prefix
        self._sleep = sleep
        self._script = redis.register_script(_GCRA_LUA)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(max_wait_s={self._max_wait_us / 1e6}, burst={self._burst}, "
            f"key_prefix={self._key_prefix!r})"
        )

    def key(self, gateway: str) -> str:
        return f"{self._key_prefix}{gateway}"

    async def reserve(self, gateway: str, rate_per_s: float) -> float:
        """Book the next slot for ``gateway``; return the seconds to wait before using it (0: now).

        Raises ``TransientChannelError("rate_limited")`` (nothing booked) when the wait would exceed
        ``max_wait_s``, and ``TransientChannelError("rate_limiter_unavailable")`` when Redis is unreachable.
        """
        if rate_per_s < 0 or math.isnan(rate_per_s):
            raise ValueError(f"rate_per_s must be >= 0, got {rate_per_s}")
        if rate_per_s == 0 or math.isinf(rate_per_s):
            return 0.0
        # Rounded up to whole microseconds: a rounding error may only make us slower than the carrier allows.
        interval_us = max(1, math.ceil(1_000_000 / rate_per_s))
        tolerance_us = (self._burst - 1) * interval_us
        try:
            booked, wait_us = await self._script(
                keys=[self.key(gateway)], args=[interval_us, tolerance_us, self._max_wait_us]
            )
        except RedisError as exc:
            raise TransientChannelError(
                "rate_limiter_unavailable", f"cannot reach Redis for the {gateway} rate limit: {exc}"
            ) from exc
        wait_s = int(wait_us) / 1_000_000
        if not int(booked):
            raise TransientChannelError(
                "rate_limited",
                f"{gateway}: the next free slot at {rate_per_s:g}/s is {wait_s:.1f} s away",
                retry_after_s=wait_s,
            )
        return wait_s

    async def acquire(self, gateway: str, rate_per_s: float) -> None:
        """Wait until a slot at ``rate_per_s`` messages per second is free for ``gateway``; 0: no limit."""
        wait_s = await self.reserve(gateway, rate_per_s)
        if wait_s > 0:
            await self._sleep(wait_s)
