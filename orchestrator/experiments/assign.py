"""Which arm a debtor gets. Pure: the same experiment, debtor and statistics always give the same answer.

The unit of randomisation is the debtor, by a hash of (experiment, debtor): a debtor with several contacts
sees one arm, and a worker on another host computes the same arm. First the holdout: a fixed share of
debtors always gets the control, whatever the mode, so there is always a fair baseline. The rest:

- ``fixed``: the arms by their shares, from a second hash;
- ``adaptive``: Thompson sampling — one draw from each arm's Beta(1 + successes, 1 + failures) posterior, the
  highest wins. Arms that do well get more traffic; none is ever starved for good. The draw is seeded from
  the same hash, so it too is reproducible.

Only arms the legal guard allows for this contact are candidates (``allowed``): an arm asking for SMS is never
offered for a statutory notice. A hashed arm that is not allowed gives the control, and says so.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from orchestrator.experiments.spec import Arm, ExperimentSpec

__all__ = ["Assignment", "assign", "unit_interval"]


@dataclass(frozen=True)
class Assignment:
    experiment_id: str
    arm: str
    variant: str
    holdout: bool
    mode: str
    reason: str  # holdout | share | thompson_sampling | arm_not_allowed:<arm>
    channel: str | None = None
    send_hour: int | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "experiment": self.experiment_id,
            "arm": self.arm,
            "variant": self.variant,
            "holdout": self.holdout,
            "mode": self.mode,
            "reason": self.reason,
            "channel": self.channel,
            "send_hour": self.send_hour,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Assignment:
        return cls(
            experiment_id=str(data["experiment"]),
            arm=str(data["arm"]),
            variant=str(data["variant"]),
            holdout=bool(data["holdout"]),
            mode=str(data["mode"]),
            reason=str(data.get("reason", "")),
            channel=data.get("channel"),
            send_hour=data.get("send_hour"),
        )


def _digest(*parts: str) -> bytes:
    return hashlib.sha256("\x1f".join(parts).encode("utf-8")).digest()


def unit_interval(*parts: str) -> float:
    """A uniform number in [0, 1) from a hash of ``parts``."""
    return int.from_bytes(_digest(*parts)[:8], "big") / 2.0**64


def _result(spec: ExperimentSpec, arm: Arm, *, holdout: bool, reason: str) -> Assignment:
    return Assignment(
        experiment_id=spec.id,
        arm=arm.name,
        variant=arm.variant,
        holdout=holdout,
        mode=spec.mode,
        reason=reason,
        channel=arm.channel,
        send_hour=arm.send_hour,
    )


def _by_share(spec: ExperimentSpec, debtor_id: str) -> Arm:
    total = sum(arm.share for arm in spec.arms)
    point = unit_interval(spec.id, debtor_id, "arm") * total
    running = 0.0
    for arm in spec.arms:
        running += arm.share
        if point < running:
            return arm
    return spec.arms[-1]


def _thompson(
    spec: ExperimentSpec, debtor_id: str, candidates: list[Arm], stats: Mapping[str, tuple[float, float]]
) -> Arm:
    rng = random.Random(int.from_bytes(_digest(spec.id, debtor_id, "thompson"), "big"))
    best: tuple[float, Arm] | None = None
    for arm in candidates:
        successes, n = stats.get(arm.name, (0.0, 0.0))
        successes = max(0.0, min(successes, n))
        draw = rng.betavariate(1 + successes, 1 + n - successes)
        if best is None or draw > best[0]:
            best = (draw, arm)
    assert best is not None
    return best[1]


def assign(
    spec: ExperimentSpec,
    debtor_id: str,
    *,
    allowed: Collection[str] | None = None,
    stats: Mapping[str, tuple[float, float]] | None = None,
) -> Assignment:
    """The arm for ``debtor_id``. ``allowed``: the arm names the legal guard allows for this contact (all when
    None); ``stats``: (successes, trials) per arm on the experiment's outcome for this contact's segment (its
    channel), for the adaptive mode."""
    control = spec.control_arm
    if unit_interval(spec.id, debtor_id, "holdout") < spec.holdout_share:
        return _result(spec, control, holdout=True, reason="holdout")
    permitted = [arm for arm in spec.arms if allowed is None or arm.name in allowed or arm is control]
    if spec.mode == "adaptive":
        return _result(
            spec,
            _thompson(spec, debtor_id, permitted, stats or {}),
            holdout=False,
            reason="thompson_sampling",
        )
    arm = _by_share(spec, debtor_id)
    if arm not in permitted:
        return _result(spec, control, holdout=False, reason=f"arm_not_allowed:{arm.name}")
    return _result(spec, arm, holdout=False, reason="share")
