"""An experiment's report, from exposures (who got which arm, when) and case events (what happened then).
Pure: the store fetches the rows, this computes. The API serves it as JSON and CSV.

An exposure counts for an outcome when a case event of that outcome's types arrives on the exposed contact's
case within ``window_days`` of the send. Rates are over *matured* exposures (their window has closed), so
that "no payment yet" never reads as "did not pay"; a success seen early is final and shown at once in the
counts the adaptive mode uses. Differences are against the holdout (the randomised baseline that always gets
the control) when there is one, else against the control arm.
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from orchestrator.experiments.spec import OUTCOMES, REPORTED_OUTCOMES, ExperimentSpec
from orchestrator.experiments.stats import newcombe_difference, wilson

__all__ = [
    "ALL_CHANNELS",
    "HOLDOUT",
    "Exposure",
    "OutcomeEvent",
    "adaptive_stats",
    "build_report",
    "report_csv",
]

HOLDOUT = "holdout"


@dataclass(frozen=True)
class Exposure:
    debtor_id: str
    arm: str
    variant: str
    holdout: bool
    case_id: str
    exposed_at: datetime
    channel: str | None = None  # the channel the message went on: the adaptive mode's segment


@dataclass(frozen=True)
class OutcomeEvent:
    case_id: str
    type: str
    at: datetime


def _hits(exposures: Sequence[Exposure], events: Iterable[OutcomeEvent], window: timedelta) -> list[set[str]]:
    """For each exposure, the outcomes (names) that happened on its case within the window."""
    by_case: dict[str, list[OutcomeEvent]] = defaultdict(list)
    for event in events:
        by_case[event.case_id].append(event)
    result: list[set[str]] = []
    for exposure in exposures:
        end = exposure.exposed_at + window
        types = {e.type for e in by_case.get(exposure.case_id, ()) if exposure.exposed_at <= e.at <= end}
        result.append({name for name, wanted in OUTCOMES.items() if types.intersection(wanted)})
    return result


def _group(exposure: Exposure) -> str:
    return HOLDOUT if exposure.holdout else exposure.arm


def build_report(
    spec: ExperimentSpec,
    exposures: Sequence[Exposure],
    events: Iterable[OutcomeEvent],
    now: datetime,
    *,
    status: str = "running",
) -> dict[str, Any]:
    window = timedelta(days=spec.window_days)
    hits = _hits(exposures, events, window)
    groups: list[tuple[str, str, bool]] = [(arm.name, arm.variant, False) for arm in spec.arms]
    if spec.holdout_share > 0 or any(e.holdout for e in exposures):
        groups.append((HOLDOUT, spec.control_arm.variant, True))
    counts: dict[str, dict[str, int]] = {name: defaultdict(int) for name, _, _ in groups}
    for exposure, found in zip(exposures, hits, strict=True):
        group = counts.setdefault(_group(exposure), defaultdict(int))
        group["exposed"] += 1
        if exposure.exposed_at + window <= now:
            group["matured"] += 1
            for outcome in found:
                group[outcome] += 1
        else:
            group["pending"] += 1
            for outcome in found:
                group[f"early:{outcome}"] += 1
    baseline = (
        HOLDOUT if any(g == HOLDOUT for g, _, _ in groups) and counts[HOLDOUT]["matured"] else spec.control
    )
    assert baseline is not None
    rows: list[dict[str, Any]] = []
    for name, variant, is_holdout in groups:
        group = counts[name]
        matured = group["matured"]
        outcomes: dict[str, Any] = {}
        for outcome in REPORTED_OUTCOMES:
            successes = group[outcome]
            low, high = wilson(successes, matured)
            outcomes[outcome] = {
                "successes": successes,
                "rate": successes / matured if matured else None,
                "ci95": [low, high],
                "early_successes": group[f"early:{outcome}"],
            }
        difference = None
        if name != baseline:
            base = counts[baseline]
            diff, low, high = newcombe_difference(
                group[spec.outcome], matured, base[spec.outcome], base["matured"]
            )
            difference = {
                "against": baseline,
                "outcome": spec.outcome,
                "difference": diff,
                "ci95": [low, high],
            }
        rows.append(
            {
                "arm": name,
                "variant": variant,
                "holdout": is_holdout,
                "is_baseline": name == baseline,
                "exposed": group["exposed"],
                "matured": matured,
                "pending": group["pending"],
                "outcomes": outcomes,
                "difference": difference,
            }
        )
    return {
        "experiment": spec.id,
        "name": spec.name,
        "status": status,
        "mode": spec.mode,
        "outcome": spec.outcome,
        "window_days": spec.window_days,
        "holdout_share": spec.holdout_share,
        "baseline": baseline,
        "generated_at": now.isoformat(),
        "arms": rows,
    }


ALL_CHANNELS = "*"


def adaptive_stats(
    spec: ExperimentSpec, exposures: Sequence[Exposure], events: Iterable[OutcomeEvent], now: datetime
) -> dict[str, dict[str, tuple[float, float]]]:
    """(successes, trials) per channel and arm on the experiment's outcome, for Thompson sampling; the key
    ``"*"`` holds every channel together.

    Outcomes arrive late (a payment comes days after the message), so an exposure whose window is still open
    is a *partial* trial, weighted by the share of its window that has passed; a success is final at once
    and counts as a whole trial. Counting only successes among open exposures would read every young arm as
    a 100 % success; counting open exposures as failures would punish the arms sent last. A tone works
    differently on SMS than in a letter (DOMAIN.md: the evidence for the debtor's name is from SMS), so each
    channel learns on its own. The holdout got the control, so it counts for the control arm."""
    window = timedelta(days=spec.window_days)
    found: dict[str, dict[str, list[float]]] = {ALL_CHANNELS: {arm.name: [0.0, 0.0] for arm in spec.arms}}
    for exposure, hits in zip(exposures, _hits(exposures, events, window), strict=True):
        success = spec.outcome in hits
        elapsed = (now - exposure.exposed_at) / window
        weight = 1.0 if success or elapsed >= 1 else max(0.0, elapsed)
        segments = [ALL_CHANNELS] if exposure.channel is None else [ALL_CHANNELS, exposure.channel]
        for segment in segments:
            entry = found.setdefault(segment, {}).setdefault(exposure.arm, [0.0, 0.0])
            entry[0] += float(success)
            entry[1] += weight
    return {segment: {arm: (s, n) for arm, (s, n) in arms.items()} for segment, arms in found.items()}


def report_csv(report: Mapping[str, Any]) -> str:
    """One row per arm: counts, each outcome's rate and 95 % interval, the difference to the baseline."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    header = ["experiment", "arm", "variant", "holdout", "baseline", "exposed", "matured", "pending"]
    for outcome in REPORTED_OUTCOMES:
        header += [f"{outcome}_successes", f"{outcome}_rate", f"{outcome}_ci95_low", f"{outcome}_ci95_high"]
    header += ["difference_outcome", "difference", "difference_ci95_low", "difference_ci95_high"]
    writer.writerow(header)

    def number(value: float | None) -> str:
        return "" if value is None else f"{value:.6f}"

    for row in report["arms"]:
        line: list[Any] = [
            report["experiment"],
            row["arm"],
            row["variant"],
            str(row["holdout"]).lower(),
            str(row["is_baseline"]).lower(),
            row["exposed"],
            row["matured"],
            row["pending"],
        ]
        for outcome in REPORTED_OUTCOMES:
            stat = row["outcomes"][outcome]
            line += [
                stat["successes"],
                number(stat["rate"]),
                number(stat["ci95"][0]),
                number(stat["ci95"][1]),
            ]
        diff = row["difference"]
        if diff is None:
            line += ["", "", "", ""]
        else:
            line += [
                diff["outcome"],
                number(diff["difference"]),
                number(diff["ci95"][0]),
                number(diff["ci95"][1]),
            ]
        writer.writerow(line)
    return out.getvalue()
