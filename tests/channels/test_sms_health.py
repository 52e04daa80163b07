"""GatewayHealth against a real Redis: shares move with failures and successes, and every worker sees them.

Shares are measured the way the channel uses them: 1,000 calls of ``choose`` with a seeded RNG, counting how
often each gateway comes first.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest
from redis.asyncio import Redis

from channels.sms.health import HEALTH_KEY, GatewayHealth
from orchestrator import queue

GATEWAYS = ("linkmobility", "twilio")


@pytest.fixture
def key() -> str:
    return f"test:{uuid.uuid4().hex}:{HEALTH_KEY}"


@pytest.fixture
async def other_redis(redis_url: str) -> AsyncIterator[Any]:
    """A second, separate connection pool: what another worker process would have."""
    pool = await queue.connect(redis_url)
    yield pool
    await pool.aclose()


async def first_choice_share(
    health: GatewayHealth, gateway: str, gateways: Sequence[str] = GATEWAYS, n: int = 1000, seed: int = 7
) -> float:
    rng = random.Random(seed)
    firsts = Counter([(await health.choose(gateways, rng))[0] for _ in range(n)])
    return firsts[gateway] / n


async def test_fresh_gateways_share_by_base_weight(redis: Any, key: str) -> None:
    even = GatewayHealth(redis, key=key)
    assert 0.45 <= await first_choice_share(even, "linkmobility") <= 0.55
    skewed = GatewayHealth(redis, key=key, base_weights={"linkmobility": 3, "twilio": 1})
    assert 0.70 <= await first_choice_share(skewed, "linkmobility") <= 0.80


async def test_failures_take_share_away_within_a_few_failures(redis: Any, key: str) -> None:
    health = GatewayHealth(redis, key=key)
    shares = [await first_choice_share(health, "linkmobility")]
    for _ in range(5):
        await health.record_failure("linkmobility")
        shares.append(await first_choice_share(health, "linkmobility"))
    # Health after k failures is 0.7**k: the share is 0.7**k / (1 + 0.7**k).
    assert shares[0] > 0.45
    assert shares[1] < 0.47  # one failure already costs share (expected 0.41)
    assert shares[3] < 0.32  # three: expected 0.26
    assert shares[5] < 0.20  # five: expected 0.14
    assert shares == sorted(shares, reverse=True)


async def test_a_failing_gateway_keeps_a_floor_and_is_still_listed(redis: Any, key: str) -> None:
    health = GatewayHealth(redis, key=key, floor=0.05)
    for _ in range(40):
        await health.record_failure("linkmobility")
    states = {state.gateway: state for state in await health.states(GATEWAYS)}
    assert states["linkmobility"].error_score > 0.99
    assert states["linkmobility"].weight == pytest.approx(0.05)
    share = await first_choice_share(health, "linkmobility")
    assert 0.02 <= share <= 0.08  # expected 0.05 / 1.05: never zero
    order = await health.choose(GATEWAYS, random.Random(1))
    assert sorted(order) == sorted(GATEWAYS)


async def test_successes_bring_it_back(redis: Any, key: str) -> None:
    health = GatewayHealth(redis, key=key)
    for _ in range(5):
        await health.record_failure("linkmobility")
    assert await first_choice_share(health, "linkmobility") < 0.20
    for _ in range(20):
        await health.record_success("linkmobility")
    # Error score 0.83 * 0.9**20 = 0.10: share 0.47.
    assert await first_choice_share(health, "linkmobility") > 0.40


async def test_time_without_errors_brings_it_back(redis: Any, key: str) -> None:
    health = GatewayHealth(redis, key=key, half_life_s=0.3)
    for _ in range(8):
        await health.record_failure("linkmobility")
    before = (await health.states(["linkmobility"]))[0].error_score
    await asyncio.sleep(1.2)  # four half-lives: the score is divided by about 16
    after = (await health.states(["linkmobility"]))[0].error_score
    assert before > 0.9
    assert after < before / 8
    assert await first_choice_share(health, "linkmobility") > 0.40


async def test_state_is_shared_between_connections(redis: Any, other_redis: Any, key: str) -> None:
    worker_a = GatewayHealth(redis, key=key)
    worker_b = GatewayHealth(other_redis, key=key)
    for _ in range(5):
        await worker_a.record_failure("twilio")
    assert await first_choice_share(worker_b, "twilio") < 0.20
    for _ in range(30):
        await worker_b.record_success("twilio")
    assert await first_choice_share(worker_a, "twilio") > 0.40


async def test_concurrent_updates_are_atomic(redis: Any, other_redis: Any, key: str) -> None:
    worker_a = GatewayHealth(redis, key=key)
    worker_b = GatewayHealth(other_redis, key=key)
    await asyncio.gather(
        *(worker_a.record_failure("linkmobility") for _ in range(50)),
        *(worker_b.record_failure("linkmobility") for _ in range(50)),
        *(worker_b.record_success("twilio") for _ in range(30)),
    )
    counts = await redis.hgetall(key)
    assert int(counts[b"fail:linkmobility"]) == 100
    assert int(counts[b"ok:twilio"]) == 30
    # 100 failures in a row, whatever the interleaving: 1 - 0.7**100.
    assert (await worker_a.states(["linkmobility"]))[0].error_score > 0.999
    assert await redis.pttl(key) > 0


async def test_order_is_weighted_first_then_by_weight(redis: Any, key: str) -> None:
    health = GatewayHealth(redis, key=key, base_weights={"a": 5, "b": 3, "c": 1})
    seen_first: Counter[str] = Counter()
    rng = random.Random(3)
    for _ in range(300):
        order = await health.choose(["a", "b", "c"], rng)
        assert sorted(order) == ["a", "b", "c"]
        rest = order[1:]
        weights = {"a": 5, "b": 3, "c": 1}
        assert weights[rest[0]] >= weights[rest[1]]
        seen_first[order[0]] += 1
    assert seen_first["a"] > seen_first["b"] > seen_first["c"] > 0


async def test_seeded_rng_gives_a_repeatable_order(redis: Any, key: str) -> None:
    health = GatewayHealth(redis, key=key)
    first = [await health.choose(GATEWAYS, random.Random(11)) for _ in range(5)]
    second = [await health.choose(GATEWAYS, random.Random(11)) for _ in range(5)]
    assert first == second


async def test_a_standby_gateway_is_never_first_while_another_has_weight(redis: Any, key: str) -> None:
    health = GatewayHealth(redis, key=key, base_weights={"primary": 1, "standby": 0})
    for _ in range(20):
        await health.record_failure("primary")  # even a failing primary keeps its floor
    rng = random.Random(5)
    for _ in range(200):
        assert await health.choose(["primary", "standby"], rng) == ["primary", "standby"]
    only_standby = GatewayHealth(redis, key=key, base_weights={"x": 0, "y": 0})
    assert sorted(await only_standby.choose(["x", "y"], rng)) == ["x", "y"]


async def test_one_or_no_gateway(redis: Any, key: str) -> None:
    health = GatewayHealth(redis, key=key)
    assert await health.choose([]) == []
    assert await health.choose(["solo"]) == ["solo"]


async def test_reset_forgets(redis: Any, key: str) -> None:
    health = GatewayHealth(redis, key=key)
    await health.record_failure("linkmobility")
    await health.record_failure("twilio")
    await health.reset(["linkmobility"])
    scores = {s.gateway: s.error_score for s in await health.states(GATEWAYS)}
    assert scores == {"linkmobility": 0.0, "twilio": pytest.approx(0.3, abs=0.01)}
    await health.reset()
    assert await redis.exists(key) == 0


async def test_redis_unreachable_falls_back_to_base_weights() -> None:
    dead = Redis(host="127.0.0.1", port=1, socket_connect_timeout=1)
    try:
        health = GatewayHealth(dead, base_weights={"a": 1, "b": 0})
        await health.record_failure("a")  # best effort: no exception
        await health.record_success("b")
        assert await health.choose(["a", "b"], random.Random(1)) == ["a", "b"]
    finally:
        await dead.aclose()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"failure_step": 0}, "failure_step"),
        ({"success_step": 1.5}, "success_step"),
        ({"floor": 0}, "floor"),
        ({"half_life_s": 0}, "half_life_s"),
        ({"base_weights": {"a": -1}}, "base weight"),
    ],
)
async def test_invalid_settings_are_refused(redis: Any, kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        GatewayHealth(redis, **kwargs)
