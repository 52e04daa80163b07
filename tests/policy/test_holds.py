"""R4/R8 holds: a held case gets nothing, a closed one nothing more — except the messages about the hold or
the closing themselves (the rule file's [holds]); the variant an experiment asks for, where it is written."""

from __future__ import annotations

from dataclasses import replace

import pytest

from orchestrator.policy.decide import decide
from orchestrator.rendering import Renderer, available_templates
from tests.policy.test_decide import CHANNELS, RULES, Case

TEMPLATES = available_templates(Renderer())


@pytest.mark.parametrize(
    ("kind", "case_status", "reason", "outcome"),
    [
        ("reminder", "held", "dispute", "held"),
        ("inkassovarsel", "held", "dispute", "held"),
        ("payment_confirmation", "held", "dispute", "held"),
        ("dispute_acknowledgement", "held", "dispute", "send"),
        ("dispute_acknowledgement", "held", "bankruptcy", "send"),
        ("reminder", "closed", "paid_in_full", "suppressed"),
        ("payment_plan_offer", "closed", "paid_in_full", "suppressed"),
        ("payment_confirmation", "closed", "paid_in_full", "send"),
        ("dispute_acknowledgement", "closed", "case_closed", "send"),
        ("payment_confirmation", "open", None, "send"),
    ],
)
def test_only_the_messages_about_the_hold_pass_it(
    kind: str, case_status: str, reason: str | None, outcome: str
) -> None:
    decision = Case(
        kind=kind, case_status=case_status, case_status_reason=reason, templates=TEMPLATES
    ).decide()
    assert decision.outcome == outcome, decision.reasons
    if outcome == "send" and case_status != "open":
        assert f"sent_on_{case_status}_case:{kind}" in decision.reasons
    if outcome == "held":
        assert decision.status_reason == reason


def test_holds_are_configuration() -> None:
    assert RULES.holds.case_statuses("dispute_acknowledgement") == ("open", "held", "closed")
    assert RULES.holds.case_statuses("payment_confirmation") == ("open", "closed")
    assert RULES.holds.case_statuses("reminder") == ("open",)
    strict = RULES.model_copy(update={"holds": RULES.holds.model_copy(update={"sendable_while_held": ()})})
    case = Case(
        kind="dispute_acknowledgement", case_status="held", case_status_reason="dispute", templates=TEMPLATES
    )
    assert (
        decide(case.request(), channels=CHANNELS, templates=TEMPLATES, rules=strict, now=case.now).outcome
        == "held"
    )


def test_the_variant_goes_where_it_is_written_else_the_control() -> None:
    case = Case(kind="reminder", templates=TEMPLATES)
    request = replace(case.request(), variant="social_norm")
    decision = decide(request, channels=CHANNELS, templates=TEMPLATES, rules=RULES, now=case.now)
    assert (decision.variant, decision.template) == ("social_norm", "nb/reminder/social_norm/email")
    only_neutral = frozenset(t for t in TEMPLATES if t[2] == "neutral")
    decision = decide(request, channels=CHANNELS, templates=only_neutral, rules=RULES, now=case.now)
    assert decision.variant == "neutral"
    assert "variant_not_written_for_channel:social_norm" in decision.reasons
