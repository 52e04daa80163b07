"""What an experiment is: arms (a tone variant, and where the legal guard allows a channel or a send hour), a
randomised holdout that always gets the control, a mode (fixed shares or adaptive), and the outcome it is
measured on. Validated against the variant catalogue so that an experiment can never ask for a variant that
is not written for its kinds.
"""

from __future__ import annotations

from typing import Annotated, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from orchestrator.schemas import ChannelName, Kind
from orchestrator.variants import CONTROL_VARIANT, Catalogue

__all__ = ["OUTCOMES", "Arm", "ExperimentSpec", "OutcomeName", "outcome_types"]

OutcomeName = Literal["paid", "payment_plan_agreed", "resolved", "dispute", "complaint"]
# Which case events (POST /v1/cases/{id}/events, or the self-service page) count as each outcome.
OUTCOMES: Final[dict[str, tuple[str, ...]]] = {
    "paid": ("payment_received", "paid_in_full"),
    "payment_plan_agreed": ("payment_plan_agreed",),
    "resolved": ("payment_received", "paid_in_full", "payment_plan_agreed"),
    "dispute": ("dispute_raised",),
    "complaint": ("complaint_received",),
}
REPORTED_OUTCOMES: Final[tuple[OutcomeName, ...]] = (
    "paid",
    "payment_plan_agreed",
    "resolved",
    "dispute",
    "complaint",
)
_Slug = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]*$", min_length=1, max_length=60)]


def outcome_types(outcome: str) -> tuple[str, ...]:
    return OUTCOMES[outcome]


class Arm(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: _Slug
    variant: _Slug = Field(
        description="A tone variant from the catalogue (templates/messages/variants.toml)."
    )
    share: Annotated[float, Field(gt=0, le=1000)] = Field(
        1.0, description="Fixed mode: this arm's weight among the arms (weights are normalised)."
    )
    channel: ChannelName | None = Field(
        None,
        description="Ask for this channel. Only for contacts enqueued with channel 'auto', and only where "
        "the legal guard allows it; elsewhere the arm is not offered.",
    )
    send_hour: Annotated[int, Field(ge=0, le=23)] | None = Field(
        None,
        description="Send at this hour (Europe/Oslo) on the first day it is still ahead; contact windows "
        "still apply.",
    )


class ExperimentSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    id: _Slug
    name: Annotated[str, Field(min_length=1, max_length=200)]
    kinds: Annotated[list[Kind], Field(min_length=1)]
    languages: list[Literal["nb", "nn", "en"]] | None = Field(
        None, description="Only contacts in these languages; all when absent."
    )
    arms: Annotated[list[Arm], Field(min_length=2, max_length=12)]
    control: _Slug | None = Field(
        None,
        description="The arm the holdout gets and differences are measured against (default: the "
        "first arm with the neutral variant).",
    )
    holdout_share: Annotated[float, Field(ge=0, le=0.5)] = Field(
        0.1, description="Share of debtors who always get the control, whatever the mode: the fair baseline."
    )
    mode: Literal["fixed", "adaptive"] = Field(
        "fixed", description="fixed: arms by their shares; adaptive: Thompson sampling on the outcome."
    )
    outcome: OutcomeName = Field("paid", description="The outcome the experiment is judged (and adapts) on.")
    window_days: Annotated[int, Field(ge=1, le=120)] = Field(
        14, description="An outcome counts when its case event comes within this many days of the send."
    )

    @field_validator("arms")
    @classmethod
    def _unique_arms(cls, arms: list[Arm]) -> list[Arm]:
        names = [arm.name for arm in arms]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"arm names must be unique; repeated: {', '.join(duplicates)}")
        return arms

    @model_validator(mode="after")
    def _control_and_catalogue(self, info: ValidationInfo) -> ExperimentSpec:
        names = [arm.name for arm in self.arms]
        if self.control is None:
            neutral = [arm.name for arm in self.arms if arm.variant == CONTROL_VARIANT]
            if not neutral:
                raise ValueError(
                    f"name a control arm, or include an arm with the {CONTROL_VARIANT!r} variant"
                )
            object.__setattr__(self, "control", neutral[0])
        elif self.control not in names:
            raise ValueError(f"control {self.control!r} is not one of the arms ({', '.join(names)})")
        if self.control_arm.channel is not None or self.control_arm.send_hour is not None:
            # The holdout's baseline must be sendable to everyone the experiment covers.
            raise ValueError(f"the control arm {self.control!r} may not ask for a channel or a send hour")
        catalogue = (info.context or {}).get("catalogue") if info is not None else None
        if isinstance(catalogue, Catalogue):
            for arm in self.arms:
                spec = catalogue.variants.get(arm.variant)
                if spec is None:
                    known = ", ".join(sorted(catalogue.variants))
                    raise ValueError(f"arm {arm.name!r}: unknown variant {arm.variant!r} (known: {known})")
                unwritten = [kind for kind in self.kinds if not spec.applies_to(kind)]
                if unwritten:
                    raise ValueError(
                        f"arm {arm.name!r}: variant {arm.variant!r} is not written for {', '.join(unwritten)}"
                    )
        return self

    @property
    def control_arm(self) -> Arm:
        return next(arm for arm in self.arms if arm.name == self.control)

    def arm(self, name: str) -> Arm | None:
        return next((arm for arm in self.arms if arm.name == name), None)

    def applies_to(self, kind: str, language: str) -> bool:
        return kind in self.kinds and (self.languages is None or language in self.languages)
