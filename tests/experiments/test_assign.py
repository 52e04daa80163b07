"""Assignment: stable per debtor, shares as configured (10,000 debtors), the holdout always at its share,
arms the legal guard refuses never given, Thompson sampling moving traffic to the better arm."""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import pytest
from pydantic import ValidationError

from orchestrator.experiments.assign import Assignment, assign, unit_interval
from orchestrator.experiments.spec import ExperimentSpec
from orchestrator.rendering import Renderer

N = 10_000


def spec(**overrides: Any) -> ExperimentSpec:
    raw: dict[str, Any] = {
        "id": "reminder-tone-1",
        "name": "Reminder tone",
        "kinds": ["reminder"],
        "arms": [
            {"name": "control", "variant": "neutral", "share": 0.5},
            {"name": "name", "variant": "personalisation", "share": 0.3},
            {"name": "norm", "variant": "social_norm", "share": 0.2},
        ],
        "holdout_share": 0.1,
    }
    raw.update(overrides)
    return ExperimentSpec.model_validate(raw, context={"catalogue": Renderer().catalogue})


def within(observed: int, n: int, p: float, sds: float = 4.0) -> bool:
    """``observed`` successes out of ``n`` are within ``sds`` binomial standard deviations of ``n * p``."""
    return abs(observed - n * p) <= sds * math.sqrt(n * p * (1 - p))


def test_a_debtor_always_gets_the_same_arm() -> None:
    experiment = spec()
    for n in range(200):
        first = assign(experiment, f"D-{n}")
        assert all(assign(experiment, f"D-{n}") == first for _ in range(3))
    # and another experiment draws independently
    other = spec(id="reminder-tone-2")
    differ = sum(assign(experiment, f"D-{n}").arm != assign(other, f"D-{n}").arm for n in range(1000))
    assert differ > 300


def test_shares_over_ten_thousand_debtors_match_the_configuration() -> None:
    experiment = spec()
    results = [assign(experiment, f"debtor-{n}") for n in range(N)]
    holdout = sum(r.holdout for r in results)
    assert within(holdout, N, 0.1), holdout
    counts = Counter(r.arm for r in results if not r.holdout)
    rest = N - holdout
    for arm, share in (("control", 0.5), ("name", 0.3), ("norm", 0.2)):
        assert within(counts[arm], rest, share), (arm, counts[arm], rest * share)
    assert all(r.variant == "neutral" and r.arm == "control" for r in results if r.holdout)
    assert {r.reason for r in results} == {"holdout", "share"}


def test_unit_interval_is_uniform_enough() -> None:
    values = [unit_interval("x", str(n)) for n in range(N)]
    assert all(0 <= v < 1 for v in values)
    for decile in range(10):
        inside = sum(decile / 10 <= v < (decile + 1) / 10 for v in values)
        assert within(inside, N, 0.1), (decile, inside)


def test_an_arm_the_guard_refuses_gives_the_control_and_says_why() -> None:
    experiment = spec(holdout_share=0.0)
    results = [assign(experiment, f"D-{n}", allowed={"control", "name"}) for n in range(2000)]
    refused = [r for r in results if r.reason == "arm_not_allowed:norm"]
    assert refused
    assert all(r.arm == "control" and r.variant == "neutral" for r in refused)
    assert not any(r.arm == "norm" for r in results)


def test_adaptive_never_offers_a_refused_arm_and_keeps_the_holdout() -> None:
    experiment = spec(mode="adaptive")
    stats = {"control": (20, 100), "name": (30, 100), "norm": (90, 100)}  # norm looks best
    results = [assign(experiment, f"D-{n}", allowed={"control", "name"}, stats=stats) for n in range(N)]
    assert not any(r.arm == "norm" for r in results)
    assert within(sum(r.holdout for r in results), N, 0.1)


def test_thompson_sampling_moves_traffic_to_the_better_arm() -> None:
    experiment = spec(mode="adaptive", holdout_share=0.1)
    even = Counter(assign(experiment, f"D-{n}", stats={}).arm for n in range(3000))
    assert min(even.values()) > 600  # no evidence yet: every arm gets traffic
    stats = {"control": (200, 1000), "name": (330, 1000), "norm": (190, 1000)}
    results = [assign(experiment, f"D-{n}", stats=stats) for n in range(N)]
    adaptive = Counter(r.arm for r in results if not r.holdout)
    assert adaptive["name"] > 0.95 * sum(adaptive.values())
    assert within(sum(r.holdout for r in results), N, 0.1)
    assert all(r.reason == "thompson_sampling" for r in results if not r.holdout)


def test_assignment_round_trips_as_json() -> None:
    result = assign(spec(), "D-7")
    assert Assignment.from_json(result.as_json()) == result


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"arms": [{"name": "a", "variant": "neutral"}, {"name": "b", "variant": "shouting"}]},
            "unknown variant",
        ),
        (
            {
                "kinds": ["address_request"],
                "arms": [{"name": "a", "variant": "neutral"}, {"name": "b", "variant": "social_norm"}],
            },
            "not written for address_request",
        ),
        ({"arms": [{"name": "a", "variant": "neutral"}, {"name": "a", "variant": "simplicity"}]}, "unique"),
        (
            {"arms": [{"name": "a", "variant": "simplicity"}, {"name": "b", "variant": "social_norm"}]},
            "control",
        ),
        (
            {
                "arms": [
                    {"name": "a", "variant": "neutral", "channel": "sms"},
                    {"name": "b", "variant": "simplicity"},
                ]
            },
            "may not ask for a channel",
        ),
        ({"holdout_share": 0.9}, "less than or equal to 0.5"),
    ],
)
def test_invalid_experiments_are_refused_with_the_reason(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        spec(**overrides)
