"""The report: outcomes attributed to the right arm, and rates and intervals that match a hand computation."""

from __future__ import annotations

import csv
import io
import math
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from orchestrator.experiments.report import (
    HOLDOUT,
    Exposure,
    OutcomeEvent,
    adaptive_stats,
    build_report,
    report_csv,
)
from orchestrator.experiments.spec import ExperimentSpec
from orchestrator.experiments.stats import newcombe_difference, wilson

T0 = datetime(2026, 10, 1, 10, 0, tzinfo=UTC)
NOW = T0 + timedelta(days=30)  # every 14-day window has closed


def spec(**overrides: Any) -> ExperimentSpec:
    raw: dict[str, Any] = {
        "id": "exp",
        "name": "Reminder tone",
        "kinds": ["reminder"],
        "arms": [{"name": "control", "variant": "neutral"}, {"name": "name", "variant": "personalisation"}],
        "holdout_share": 0.0,
        "outcome": "paid",
    }
    raw.update(overrides)
    return ExperimentSpec.model_validate(raw)


def exposures(arm: str, n: int, *, holdout: bool = False, at: datetime = T0) -> list[Exposure]:
    prefix = HOLDOUT if holdout else arm
    return [Exposure(f"{prefix}-{i}", arm, "v", holdout, f"case-{prefix}-{i}", at) for i in range(n)]


def paid(found: list[Exposure], count: int, after: timedelta = timedelta(days=3)) -> list[OutcomeEvent]:
    return [OutcomeEvent(e.case_id, "payment_received", e.exposed_at + after) for e in found[:count]]


def row(report: dict[str, Any], arm: str) -> dict[str, Any]:
    found: dict[str, Any] = next(r for r in report["arms"] if r["arm"] == arm)
    return found


def test_wilson_matches_the_hand_computation() -> None:
    # 20 of 100, z = 1.959964: centre = (0.2 + z²/200) / (1 + z²/100) = 0.211098,
    # half-width = z / (1 + z²/100) * sqrt(0.2 * 0.8 / 100 + z² / 40000) = 0.077731.
    low, high = wilson(20, 100)
    assert low == pytest.approx(0.133367, abs=1e-6)
    assert high == pytest.approx(0.288829, abs=1e-6)
    low, high = wilson(30, 100)
    assert (low, high) == (pytest.approx(0.218949, abs=1e-6), pytest.approx(0.395849, abs=1e-6))
    assert wilson(0, 0) == (0.0, 1.0)
    assert wilson(0, 10)[0] == 0.0
    assert wilson(10, 10)[1] == 1.0


def test_newcombe_difference_matches_the_hand_computation() -> None:
    # 30/100 against 20/100 (Wilson 0.218949-0.395849 and 0.133367-0.288829): d = 0.1;
    # low = d - sqrt((0.3 - 0.218949)² + (0.288829 - 0.2)²) = -0.020249,
    # high = d + sqrt((0.395849 - 0.3)² + (0.2 - 0.133367)²) = 0.216734.
    difference, low, high = newcombe_difference(30, 100, 20, 100)
    assert difference == pytest.approx(0.1)
    assert low == pytest.approx(0.1 - math.hypot(0.3 - 0.218949, 0.288829 - 0.2), abs=1e-5)
    assert high == pytest.approx(0.1 + math.hypot(0.395849 - 0.3, 0.2 - 0.133367), abs=1e-5)
    assert low == pytest.approx(-0.020249, abs=1e-5)
    assert high == pytest.approx(0.216734, abs=1e-5)


def test_rates_and_intervals_on_a_fixed_data_set() -> None:
    control, name = exposures("control", 100), exposures("name", 100)
    events = paid(control, 20) + paid(name, 30)
    report = build_report(spec(), control + name, events, NOW)
    assert report["baseline"] == "control"
    c, n = row(report, "control"), row(report, "name")
    assert (c["exposed"], c["matured"], c["pending"]) == (100, 100, 0)
    assert c["outcomes"]["paid"]["successes"] == 20
    assert c["outcomes"]["paid"]["rate"] == pytest.approx(0.2)
    assert c["outcomes"]["paid"]["ci95"] == [
        pytest.approx(0.133367, abs=1e-6),
        pytest.approx(0.288829, abs=1e-6),
    ]
    assert n["outcomes"]["paid"]["rate"] == pytest.approx(0.3)
    assert n["difference"]["against"] == "control"
    assert n["difference"]["difference"] == pytest.approx(0.1)
    assert n["difference"]["ci95"] == [pytest.approx(-0.020249, abs=1e-5), pytest.approx(0.216734, abs=1e-5)]
    assert c["difference"] is None and c["is_baseline"]
    # paid events also count as "resolved"; nothing was a dispute
    assert n["outcomes"]["resolved"]["successes"] == 30
    assert n["outcomes"]["dispute"]["successes"] == 0


def test_outcomes_attribute_to_the_right_arm_and_window() -> None:
    control, name = exposures("control", 10), exposures("name", 10)
    events = [
        OutcomeEvent(name[0].case_id, "paid_in_full", T0 + timedelta(days=1)),  # counts for "name"
        OutcomeEvent(name[1].case_id, "payment_plan_agreed", T0 + timedelta(days=14)),  # on the last day
        OutcomeEvent(name[2].case_id, "payment_received", T0 + timedelta(days=15)),  # too late
        OutcomeEvent(name[3].case_id, "payment_received", T0 - timedelta(days=1)),  # before the message
        OutcomeEvent(control[0].case_id, "dispute_raised", T0 + timedelta(days=2)),
        OutcomeEvent(control[1].case_id, "complaint_received", T0 + timedelta(days=2)),
        OutcomeEvent("case-of-someone-else", "payment_received", T0 + timedelta(days=2)),
    ]
    report = build_report(spec(), control + name, events, NOW)
    n, c = row(report, "name"), row(report, "control")
    assert n["outcomes"]["paid"]["successes"] == 1
    assert n["outcomes"]["payment_plan_agreed"]["successes"] == 1
    assert n["outcomes"]["resolved"]["successes"] == 2
    assert c["outcomes"]["paid"]["successes"] == 0
    assert c["outcomes"]["dispute"]["successes"] == 1
    assert c["outcomes"]["complaint"]["successes"] == 1
    assert n["outcomes"]["dispute"]["successes"] == 0


def test_open_windows_are_pending_not_failures() -> None:
    early = exposures("name", 10, at=NOW - timedelta(days=3))
    report = build_report(spec(), early, paid(early, 2, after=timedelta(days=1)), NOW)
    n = row(report, "name")
    assert (n["matured"], n["pending"]) == (0, 10)
    assert n["outcomes"]["paid"]["rate"] is None
    assert n["outcomes"]["paid"]["early_successes"] == 2
    # the adaptive mode counts a success at once as a whole trial, a pending non-payment as the part of its
    # window that has passed (3 of 14 days): 2 + 8 * 3/14 trials
    stats = adaptive_stats(spec(), early, paid(early, 2, after=timedelta(days=1)), NOW)
    assert stats["*"]["name"] == (2.0, pytest.approx(2 + 8 * 3 / 14))
    assert stats["*"]["control"] == (0.0, 0.0)


def test_adaptive_statistics_per_channel() -> None:
    sms = [Exposure(f"s{i}", "name", "v", False, f"case-s{i}", T0, "sms") for i in range(10)]
    letters = [Exposure(f"l{i}", "name", "v", False, f"case-l{i}", T0, "letter") for i in range(10)]
    stats = adaptive_stats(spec(), sms + letters, paid(sms, 6) + paid(letters, 1), NOW)
    assert stats["sms"]["name"] == (6.0, 10.0)
    assert stats["letter"]["name"] == (1.0, 10.0)
    assert stats["*"]["name"] == (7.0, 20.0)


def test_the_holdout_is_the_baseline_when_there_is_one() -> None:
    experiment = spec(holdout_share=0.1, mode="adaptive")
    holdout = exposures("control", 50, holdout=True)
    control, name = exposures("control", 50), exposures("name", 100)
    events = paid(holdout, 10) + paid(control, 10) + paid(name, 40)
    report = build_report(experiment, holdout + control + name, events, NOW)
    assert report["baseline"] == HOLDOUT
    h = row(report, HOLDOUT)
    assert h["holdout"] and h["is_baseline"] and h["variant"] == "neutral"
    assert h["outcomes"]["paid"]["rate"] == pytest.approx(0.2)
    assert row(report, "name")["difference"]["against"] == HOLDOUT
    assert row(report, "name")["difference"]["difference"] == pytest.approx(0.2)
    # the holdout got the control: it counts for the control arm's posterior
    assert adaptive_stats(experiment, holdout + control + name, events, NOW) == {
        "*": {"control": (20.0, 100.0), "name": (40.0, 100.0)}
    }


def test_csv_has_a_row_per_arm_with_the_same_figures() -> None:
    control, name = exposures("control", 100), exposures("name", 100)
    report = build_report(spec(), control + name, paid(control, 20) + paid(name, 30), NOW)
    rows = list(csv.DictReader(io.StringIO(report_csv(report))))
    assert [r["arm"] for r in rows] == ["control", "name"]
    assert rows[0]["paid_rate"] == "0.200000"
    assert rows[0]["paid_ci95_low"] == "0.133367"
    assert rows[1]["difference"] == "0.100000"
    assert rows[1]["difference_ci95_low"] == "-0.020249"
    assert rows[0]["difference"] == ""
