"""Health-weighted choice between SMS gateways, with the state in Redis so that every worker shares it.

The reference is GOV.UK Notify (``alphagov/notifications-api``): each SMS provider has a priority of 0-100,
``provider_to_use`` picks one with ``random.choices(providers, weights=priorities)``, a provider that is slow
or failing has its priority cut by 10 points (``dao_reduce_sms_provider_priority``, at most once per cooldown)
and a scheduled task moves every priority 10 points back towards its configured resting point each hour
(``dao_adjust_provider_priority_back_to_resting_points``). We keep that shape (configured base weights, a
weighted random first choice, quick demotion, slow drift back) but drive it from every send's outcome
rather than from a cron job, so a gateway that starts failing loses its traffic within a few messages:

- Each gateway has an *error score* ``e`` in [0, 1] (0: healthy), an exponentially weighted moving average of
  its outcomes that also decays towards 0 with time. A failure moves it ``failure_step`` of the way to 1,
  a success ``success_step`` of the way to 0, and with no outcomes it halves every ``half_life_s``. The
  steps are asymmetric (0.3 against 0.1 by default): demotion is quick, recovery gradual. From a clean
  state, ``k`` failures leave a health of ``(1 - failure_step) ** k``: 0.34 after three, 0.17 after five.
- A gateway's weight is ``base_weight * max(floor, 1 - e)``: never zero, so a demoted gateway still gets a
  trickle of traffic (and the successes that bring it back), and when every gateway is failing the choice
  falls back to the base weights. A base weight of 0 makes a gateway a standby: never the first choice
  while another has weight, but still in the list to fail over to.
- ``choose`` returns every gateway: the first drawn at random by weight, then the others by weight,
  highest first (ties keep the given order), which is the order ``SmsChannel`` tries them in.

Updates are one Lua script each (atomic, using the Redis server's ``TIME`` so hosts agree on the decay);
the state is one hash, ``sms:health`` by default, with fields ``e:<gateway>``, ``t:<gateway>`` (time of the
last update, microseconds) and running totals ``ok:<gateway>`` / ``fail:<gateway>`` for operators. The hash
expires a week after its last update. Redis errors never stop a send: recording is best effort, and
``choose`` falls back to the base weights.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.exceptions import RedisError

__all__ = ["HEALTH_KEY", "GatewayHealth", "GatewayState"]

log = logging.getLogger(__name__)

HEALTH_KEY = "sms:health"
_EXPIRE_MS = 7 * 24 * 3600 * 1000

# The decay of an error score from its last update to now (server time); shared by both scripts.
_DECAY_LUA = """
local function now_us()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local function decayed(key, gateway, now, half_life)
  local e = tonumber(redis.call('HGET', key, 'e:' .. gateway) or '0') or 0
  local t = tonumber(redis.call('HGET', key, 't:' .. gateway) or '') or now
  local dt = now - t
  if dt > 0 and half_life > 0 then e = e * 2 ^ (-dt / half_life) end
  return e
end
"""

# KEYS[1]: the hash. ARGV: gateway, outcome (1 failure, 0 success), step, half-life (µs), expiry (ms).
_RECORD_LUA = (
    "if redis.replicate_commands then redis.replicate_commands() end\n"
    + _DECAY_LUA
    + """
local gateway = ARGV[1]
local outcome = tonumber(ARGV[2])
local step = tonumber(ARGV[3])
local now = now_us()
local e = decayed(KEYS[1], gateway, now, tonumber(ARGV[4]))
e = e + step * (outcome - e)
if e < 0 then e = 0 elseif e > 1 then e = 1 end
redis.call('HSET', KEYS[1], 'e:' .. gateway, string.format('%.9f', e),
           't:' .. gateway, string.format('%.0f', now))
if outcome == 1 then
  redis.call('HINCRBY', KEYS[1], 'fail:' .. gateway, 1)
else
  redis.call('HINCRBY', KEYS[1], 'ok:' .. gateway, 1)
end
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return string.format('%.9f', e)
"""
)

# KEYS[1]: the hash. ARGV[1]: half-life (microseconds); ARGV[2..]: gateways. Returns their error scores now.
_READ_LUA = (
    _DECAY_LUA
    + """
local now = now_us()
local half_life = tonumber(ARGV[1])
local out = {}
for i = 2, #ARGV do
  out[#out + 1] = string.format('%.9f', decayed(KEYS[1], ARGV[i], now, half_life))
end
return out
"""
)


@dataclass(frozen=True)
class GatewayState:
    """One gateway as ``choose`` sees it now."""

    gateway: str
    error_score: float  # 0 healthy .. 1 failing everything
    weight: float  # base weight * max(floor, 1 - error_score)


class GatewayHealth:
    """Shared gateway health: ``record_success`` / ``record_failure`` after each submit, ``choose`` before."""

    def __init__(
        self,
        redis: Redis,
        *,
        base_weights: Mapping[str, float] | None = None,
        key: str = HEALTH_KEY,
        failure_step: float = 0.3,
        success_step: float = 0.1,
        half_life_s: float = 120.0,
        floor: float = 0.05,
    ) -> None:
        for label, value in (("failure_step", failure_step), ("success_step", success_step)):
            if not 0 < value <= 1:
                raise ValueError(f"{label} must be in (0, 1], got {value}")
        if not 0 < floor <= 1:
            raise ValueError(f"floor must be in (0, 1], got {floor}")
        if half_life_s <= 0:
            raise ValueError(f"half_life_s must be > 0, got {half_life_s}")
        weights = dict(base_weights or {})
        for gateway, weight in weights.items():
            if not weight >= 0:
                raise ValueError(f"base weight of {gateway!r} must be >= 0, got {weight}")
        self._redis = redis
        self._base = weights
        self._key = key
        self._failure_step = failure_step
        self._success_step = success_step
        self._half_life_us = int(half_life_s * 1_000_000)
        self._floor = floor
        self._record = redis.register_script(_RECORD_LUA)
        self._read = redis.register_script(_READ_LUA)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(key={self._key!r}, base_weights={self._base!r})"

    @property
    def key(self) -> str:
        return self._key

    def base_weight(self, gateway: str) -> float:
        """The configured weight of ``gateway``; 1.0 when none was configured."""
        return self._base.get(gateway, 1.0)

    async def record_success(self, gateway: str) -> None:
        await self._record_outcome(gateway, failed=False)

    async def record_failure(self, gateway: str) -> None:
        await self._record_outcome(gateway, failed=True)

    async def _record_outcome(self, gateway: str, *, failed: bool) -> None:
        step = self._failure_step if failed else self._success_step
        try:
            await self._record(
                keys=[self._key],
                args=[gateway, 1 if failed else 0, repr(step), self._half_life_us, _EXPIRE_MS],
            )
        except RedisError as exc:  # best effort: a send must not fail because its outcome was not counted
            log.warning(
                "sms health: cannot record %s for %s: %s", "failure" if failed else "success", gateway, exc
            )

    async def states(self, gateways: Sequence[str]) -> list[GatewayState]:
        """Each gateway's error score and weight now, in the given order (base weights if Redis fails)."""
        names = list(gateways)
        if not names:
            return []
        try:
            raw = await self._read(keys=[self._key], args=[self._half_life_us, *names])
            scores = [float(value) for value in raw]
        except RedisError as exc:
            log.warning("sms health: cannot read gateway health, using base weights: %s", exc)
            scores = [0.0] * len(names)
        return [
            GatewayState(
                gateway=name,
                error_score=score,
                weight=self.base_weight(name) * max(self._floor, 1.0 - score),
            )
            for name, score in zip(names, scores, strict=True)
        ]

    async def choose(self, gateways: Sequence[str], rng: random.Random | None = None) -> list[str]:
        """All of ``gateways`` in the order to try them: a weighted random first, then the rest by weight."""
        states = await self.states(gateways)
        if len(states) <= 1:
            return [state.gateway for state in states]
        weights = [state.weight for state in states]
        if sum(weights) <= 0:  # every gateway is a standby: treat them alike
            weights = [1.0] * len(states)
        draw = (rng or random).random() * sum(weights)
        first = len(states) - 1
        for index, weight in enumerate(weights):
            draw -= weight
            if draw < 0 and weight > 0:
                first = index
                break
        while weights[first] <= 0:  # only reachable through float rounding at the very end of the range
            first -= 1
        rest = sorted((i for i in range(len(states)) if i != first), key=lambda i: weights[i], reverse=True)
        return [states[i].gateway for i in (first, *rest)]

    async def reset(self, gateways: Sequence[str] | None = None) -> None:
        """Forget the recorded health of ``gateways`` (all of them when ``None``)."""
        if gateways is None:
            await self._redis.delete(self._key)
            return
        fields = [f"{prefix}:{gateway}" for gateway in gateways for prefix in ("e", "t", "ok", "fail")]
        if fields:
            await self._redis.hdel(self._key, *fields)  # type: ignore[misc]  # redis-py types sync|async
