"""``orchestrator simulate``: a synthetic portfolio through the real policy, templates and experiment code,
judged against an oracle that knows the response model's true rates."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from orchestrator.simulate import (
    NO_CONTACT_RATE,
    STRATEGIES,
    SimulationResult,
    channel_options,
    run_simulation,
    true_rate,
)

CLI_TIMEOUT_S = 120


@pytest.fixture(scope="module")
def big() -> SimulationResult:
    """30,000 debtors over 30 days (a month of reminders at a mid-sized agency); every 200th contact rendered
    and checked (the small run renders all)."""
    return run_simulation(debtors=30_000, rounds=30, seed=1, render_every=200)


@pytest.fixture(scope="module")
def small() -> SimulationResult:
    return run_simulation(debtors=300, rounds=6, seed=7, render_every=1)


def test_response_model_follows_the_evidence_table() -> None:
    assert true_rate(None, None) == NO_CONTACT_RATE.rate == 0.05  # Haynes: no text
    assert true_rate("sms", "neutral") == pytest.approx(0.23)  # Haynes: plain text
    assert true_rate("sms", "personalisation") == pytest.approx(0.33)  # Haynes: with the name
    assert true_rate("sms", "simplicity") == pytest.approx(0.27)  # John & Blume: +4
    assert true_rate("sms", "social_norm") < true_rate("sms", "neutral")  # backfired
    assert true_rate("sms", "loss_framing") < true_rate("sms", "neutral")  # Holzmeister
    assert true_rate("sms", "commission_framing") == true_rate("sms", "neutral")  # no evidence
    for channel in ("email", "letter"):
        assert true_rate(channel, "neutral") < true_rate("sms", "neutral")
        personal = true_rate(channel, "personalisation") - true_rate(channel, "neutral")
        assert 0 < personal < true_rate("sms", "personalisation") - true_rate("sms", "neutral")


def test_every_variant_written_for_the_kind_is_tested_and_sent(big: SimulationResult) -> None:
    assert big.unavailable == [], f"no {big.language} template for {big.unavailable}: never sent"
    assert big.arms[0] == "neutral" and len(big.arms) > 2
    assert set(big.strategies["fixed"].variants) == set(big.arms)
    assert set(big.strategies["neutral"].variants) == {"neutral"}
    assert big.strategies["no_contact"].contacted == 0


def test_the_holdout_stays_at_its_share(big: SimulationResult) -> None:
    for name in ("fixed", "adaptive"):
        observed = big.strategies[name].holdout_share
        assert observed is not None and abs(observed - 0.1) <= 0.02, (name, observed)
    assert big.strategies["oracle"].holdout_share is None  # the oracle has no holdout
    holdout = next(row for row in big.report["arms"] if row["holdout"])
    assert holdout["is_baseline"] and holdout["matured"] == holdout["exposed"] > 0


def test_the_oracle_is_the_best_strategy(big: SimulationResult) -> None:
    oracle = big.strategies["oracle"]
    assert oracle.ratio_to_oracle == 1.0
    for name in STRATEGIES:
        assert big.strategies[name].resolution_rate <= oracle.resolution_rate, name
    assert big.strategies["no_contact"].resolution_rate < big.strategies["neutral"].resolution_rate


def test_adaptive_beats_neutral_only_and_fixed_shares(big: SimulationResult) -> None:
    rates = {name: s.resolution_rate for name, s in big.strategies.items()}
    assert rates["adaptive"] > rates["neutral"], rates
    assert rates["adaptive"] > rates["fixed"], rates


def test_adaptive_reaches_90_percent_of_the_oracle(big: SimulationResult) -> None:
    adaptive = big.strategies["adaptive"]
    assert adaptive.ratio_to_oracle >= 0.9, (adaptive.ratio_to_oracle, adaptive.traffic_share)


def test_the_same_portfolio_reaches_the_policy_alike_in_every_strategy(big: SimulationResult) -> None:
    """The strategies differ in tone only: the policy picks the same channels, suppresses the same debtors."""
    contacted = {name: (s.contacted, s.suppressed, s.channels) for name, s in big.strategies.items()}
    assert len({repr(v) for name, v in contacted.items() if name != "no_contact"}) == 1
    assert big.strategies["neutral"].contacted + big.strategies["neutral"].suppressed == big.debtors


def test_every_rendered_message_passes_the_content_guard(small: SimulationResult) -> None:
    contacted = sum(s.contacted for s in small.strategies.values())
    assert contacted > 0 and small.rendered == contacted  # every contact rendered
    assert small.guard_violations == 0, small.problems
    assert small.render_failures == 0, small.problems
    assert all(s.too_long == 0 for s in small.strategies.values()), small.problems


def test_the_same_seed_gives_the_same_result(small: SimulationResult) -> None:
    again = run_simulation(debtors=300, rounds=6, seed=7, render_every=1)
    assert again.as_json() == small.as_json()
    other = run_simulation(debtors=300, rounds=6, seed=8, render_every=1000)
    assert other.strategies["oracle"].resolved != small.strategies["oracle"].resolved


def test_a_statutory_notice_goes_only_on_lawful_channels() -> None:
    result = run_simulation(debtors=300, rounds=5, kind="inkassovarsel", render_every=5)
    limits = channel_options()
    used = {channel for s in result.strategies.values() for channel in s.channels}
    assert used and all(limits[channel].limits.statutory != "never" for channel in used), used
    assert result.guard_violations == 0 and result.render_failures == 0, result.problems


def test_cli_prints_the_table() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCH_")}
    args = ["simulate", "--debtors", "200", "--rounds", "4", "--seed", "3", "--render-every", "20"]
    done = subprocess.run(
        [sys.executable, "-m", "orchestrator", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    header = next(line for line in lines if line.startswith("strategy"))
    assert header.split() == [
        "strategy",
        "resolved",
        "rate",
        "vs",
        "oracle",
        "contacted",
        "suppressed",
        "holdout",
    ]
    for name in STRATEGIES:
        assert any(line.split()[:1] == [name] for line in lines), name
    assert "0 content-guard violations" in done.stdout


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    # A separate process: the CLI configures logging for the whole process.
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCH_")}
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", "simulate", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
        check=False,
    )


def test_cli_json_parses() -> None:
    done = _cli("--debtors", "150", "--rounds", "3", "--render-every", "25", "--json")
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert set(data["strategies"]) == set(STRATEGIES)
    assert data["debtors"] == 150 and data["kind"] == "reminder" and data["language"] == "nb"
    assert data["report"]["mode"] == "adaptive" and data["report"]["outcome"] == "resolved"
    assert data["response_model"]["no_contact"]["rate"] == 0.05


def test_cli_refuses_a_bad_holdout() -> None:
    done = _cli("--debtors", "10", "--holdout", "0.7")
    assert done.returncode == 2
    assert "holdout_share" in done.stderr
